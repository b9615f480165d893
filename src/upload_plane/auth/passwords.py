"""argon2id password hashing, off the event loop.

Hashing is deliberately expensive (64 MiB, 3 passes, 4 lanes: argon2-cffi's defaults, RFC 9106's
second recommendation) and runs on all cores. So it runs in a small pool of its own threads, at most
``concurrency`` hashes at a time, and at a lower scheduling priority (``nice`` +10; Linux applies it
per thread, and argon2's lane threads inherit it): a burst of logins queues behind itself instead of
starving the event loop that answers everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verified against when the username does not exist, so both paths cost the same.
_DUMMY_HASH = _hasher.hash("not-a-real-password")
HASHING_NICENESS = 10


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
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

    def __init__(self, concurrency: int) -> None:
        workers = max(1, concurrency)
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self.admission = asyncio.Semaphore(2 * workers)

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, hash_password, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, verify_password, password_hash, password
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
