"""Fixed-window rate limits counted in the database, so every replica counts against one limit.

A counter row is keyed by the limit, the subject (an account, an address, a user) and the window;
``hit`` adds to it with one statement and returns the new count. Counters commit by themselves
(autocommit), so a request that fails afterwards (a wrong password) still counts. Old windows are
deleted now and then.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import RateLimited
from .sql import Connection

_PRUNE_PROBABILITY = 0.01


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    max: int
    window: int  # seconds
    what: str  # what is counted, for the refusal: "failed sign-ins for this account"


def _window(limit: Limit, now: datetime) -> tuple[int, datetime]:
    index = int(now.timestamp()) // limit.window
    return index, datetime.fromtimestamp((index + 1) * limit.window, UTC)


def _key(limit: Limit, subject: str, index: int) -> str:
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]  # any subject, fixed length
    return f"{limit.name}:{digest}:{index}"


class RateLimits:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def count(self, limit: Limit, subject: str, now: datetime) -> int:
        index, _ = _window(limit, now)
        row = await self.conn.one(
            "SELECT count FROM rate_counters WHERE `key` = %s", _key(limit, subject, index)
        )
        return int(row[0]) if row is not None else 0

    async def check(self, limit: Limit, subject: str, now: datetime) -> None:
        """``RateLimited`` (with the seconds until the window ends) once ``limit`` is reached."""
        if await self.count(limit, subject, now) >= limit.max:
            raise self._refusal(limit, now)

    async def hit(self, limit: Limit, subject: str, now: datetime) -> int:
        """Count one more; the new count."""
        index, ends = _window(limit, now)
        count = await self.conn.count_up(_key(limit, subject, index), ends)
        if random.random() < _PRUNE_PROBABILITY:  # noqa: S311 - not for security
            await self.conn.run("DELETE FROM rate_counters WHERE expires_at < %s", now)
        return count

    async def take(self, limit: Limit, subject: str, now: datetime) -> None:
        """Count one more, refusing it (``RateLimited``) when it goes over the limit."""
        if await self.hit(limit, subject, now) > limit.max:
            raise self._refusal(limit, now)

    @staticmethod
    def _refusal(limit: Limit, now: datetime) -> RateLimited:
        _, ends = _window(limit, now)
        wait = max(1, int((ends - now).total_seconds()) + 1)
        return RateLimited(
            f"too many {limit.what} (at most {limit.max} in {limit.window} s); retry in {wait} s",
            retry_after=wait,
            limit=limit.name,
        )
