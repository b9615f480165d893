"""argon2id password hashing, off the event loop.

Hashing is deliberately expensive (by default 64 MiB, 3 passes, 4 lanes: RFC 9106's second
recommendation; ``UPLOAD_PLANE_PASSWORD_HASH_COST``) and runs on all cores. So it runs in a small
pool of its own threads, at most ``concurrency`` hashes at a time, and at a lower scheduling
priority (``nice`` +10; Linux applies it per thread, and argon2's lane threads inherit it): a burst
of logins queues behind itself instead of starving the event loop that answers everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..settings import DEFAULT_PASSWORD_HASH_COST as DEFAULT_COST
from ..settings import argon2_cost

HASHING_NICENESS = 10


@functools.lru_cache(maxsize=8)
def _hasher(cost: str) -> tuple[PasswordHasher, str]:
    """The hasher for ``UPLOAD_PLANE_PASSWORD_HASH_COST``, and a hash it made that is verified
    against when the username does not exist, so both paths cost the same."""
    memory, passes, lanes = argon2_cost(cost)
    hasher = PasswordHasher(time_cost=passes, memory_cost=memory, parallelism=lanes)
    return hasher, hasher.hash("not-a-real-password")


def hash_password(password: str, cost: str = DEFAULT_COST) -> str:
    return _hasher(cost)[0].hash(password)


def verify_password(password_hash: str | None, password: str, cost: str = DEFAULT_COST) -> bool:
    """Whether ``password`` is the one ``password_hash`` was made from (with the parameters the hash
    names, whatever the setting is now)."""
    hasher, dummy = _hasher(cost)
    try:
        return hasher.verify(password_hash or dummy, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def _lower_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: run at normal priority
        os.setpriority(os.PRIO_PROCESS, 0, HASHING_NICENESS)


class PasswordHashing:
    """The hashing pool (built once at start-up, shut down at exit), and the admission of whole
    logins: since a login waits for its hash anyway, at most twice as many logins as can hash at once
    do their database work at a time; the rest wait (costing nothing) instead of crowding the event
    loop with work that would only queue for the pool."""

    def __init__(self, concurrency: int, cost: str = DEFAULT_COST) -> None:
        workers = max(1, concurrency)
        self.cost = cost
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self.admission = asyncio.Semaphore(2 * workers)

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, hash_password, password, self.cost
        )

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, verify_password, password_hash, password, self.cost
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
