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

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite

from .db import Connection
from .errors import RateLimited
from .models import RateCounter
from .statements import Query, Statement

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


_COUNTERS: sa.Table = RateCounter.__table__  # type: ignore[attr-defined]
_KEY = sa.bindparam("key", type_=_COUNTERS.c.key.type)
_ENDS = sa.bindparam("expires_at", type_=_COUNTERS.c.expires_at.type)


def _count_up(dialect: str) -> sa.Executable:
    """Add ``n`` (default 1) to a counter (created at ``n``) in one statement that also answers the
    new count: MySQL makes it the statement's insert id (``LAST_INSERT_ID(expr)``), SQLite returns it."""
    n = sa.bindparam("n", 1, type_=_COUNTERS.c.count.type)
    if dialect == "mysql":
        insert = mysql.insert(_COUNTERS).values(key=_KEY, count=sa.func.last_insert_id(n), expires_at=_ENDS)
        return insert.on_duplicate_key_update(count=sa.func.last_insert_id(_COUNTERS.c.count + n))
    upsert = sqlite.insert(_COUNTERS).values(key=_KEY, count=n, expires_at=_ENDS)
    return upsert.on_conflict_do_update(
        index_elements=[_COUNTERS.c.key], set_={"count": _COUNTERS.c.count + n}
    ).returning(_COUNTERS.c.count)


COUNT_UP = Statement(_count_up, insert_id_on=("mysql",))
COUNT: Query[int] = Query(
    sa.select(_COUNTERS.c.count).where(_COUNTERS.c.key == _KEY), lambda row: int(row["count"])
)
FORGET = Statement(sa.delete(_COUNTERS).where(_COUNTERS.c.key == _KEY))
PRUNE = Statement(
    sa.delete(_COUNTERS).where(
        _COUNTERS.c.expires_at < sa.bindparam("now", type_=_COUNTERS.c.expires_at.type)
    )
)


class RateLimits:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def count(self, limit: Limit, subject: str, now: datetime) -> int:
        index, _ = _window(limit, now)
        return await self.conn.one(COUNT, key=_key(limit, subject, index)) or 0

    async def check(self, limit: Limit, subject: str, now: datetime) -> None:
        """``RateLimited`` (with the seconds until the window ends) once ``limit`` is reached."""
        if await self.count(limit, subject, now) >= limit.max:
            raise self.refusal(limit, now)

    async def hit(self, limit: Limit, subject: str, now: datetime, n: int = 1) -> int:
        """Count ``n`` more; the new count."""
        index, ends = _window(limit, now)
        count = int(await self.conn.value(COUNT_UP, key=_key(limit, subject, index), expires_at=ends, n=n))
        if random.random() < _PRUNE_PROBABILITY:  # noqa: S311 - not for security
            await self.conn.run(PRUNE, now=now)
        return count

    async def take(self, limit: Limit, subject: str, now: datetime) -> None:
        """Count one more, refusing it (``RateLimited``) when it goes over the limit."""
        if await self.hit(limit, subject, now) > limit.max:
            raise self.refusal(limit, now)

    async def take_up_to(self, limit: Limit, subject: str, now: datetime, n: int) -> int:
        """Count ``n`` more at once (a batch, each counted); how many of them fit under the limit
        (the first ones; ``refusal`` says why the others do not)."""
        if n < 1:
            return 0
        count = await self.hit(limit, subject, now, n)
        return max(0, min(n, limit.max - (count - n)))

    async def reset(self, limit: Limit, subject: str, now: datetime) -> None:
        """Forget what ``subject`` has counted in the current window (a sign-in that succeeded)."""
        index, _ = _window(limit, now)
        await self.conn.run(FORGET, key=_key(limit, subject, index))

    @staticmethod
    def refusal(limit: Limit, now: datetime) -> RateLimited:
        _, ends = _window(limit, now)
        wait = max(1, int((ends - now).total_seconds()) + 1)
        return RateLimited(
            f"too many {limit.what} (at most {limit.max} in {limit.window} s); retry in {wait} s",
            retry_after=wait,
            limit=limit.name,
        )
