"""The database without the ORM, for the request hot path (authentication, upload start, sign,
complete, abort, and the state machine's compare-and-set).

Measured on the target machine, a simple SELECT costs about 430 µs of CPU through the ORM, 350 µs as
a Core statement, 190 µs as ``exec_driver_sql`` and 115 µs on the driver itself; a lifecycle needs
about fifteen statements. So the hot path talks to the driver: asyncmy for MySQL/MariaDB, aiosqlite
for the embedded default, from a small pool of its own whose connections are in autocommit mode
(a read is one round trip; a unit that must be atomic says so with ``transaction()``).

Statements are written once, with ``%s`` placeholders, in SQL both databases accept (backticks for
reserved words such as ``key``). Datetimes go in as aware UTC and come back aware UTC. Driver errors
are raised as SQLAlchemy's ``DBAPIError`` so ``db.translate_db_error`` classifies them as for the ORM.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from .db import MYSQL_SESSION_SETUP, engine_url, ensure_sqlite_dir, is_sqlite
from .settings import Settings

Row = tuple[Any, ...]
Observer = Callable[[str, float, bool], None]
"""Told of every statement: its text, seconds taken and whether it succeeded (``metrics.py``)."""
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


class Connection(Protocol):
    """One pooled connection, in autocommit mode."""

    dialect: str

    async def one(self, sql: str, *params: Any) -> Row | None: ...

    async def all(self, sql: str, *params: Any) -> list[Row]: ...

    async def run(self, sql: str, *params: Any) -> int:
        """Execute; the number of rows it changed."""
        ...

    async def count_up(self, key: str, expires_at: datetime) -> int:
        """Add one to the rate counter ``key`` (created at 1, expiring at ``expires_at``) in one
        statement; its new value."""
        ...

    def transaction(self) -> Any:
        """``async with conn.transaction():`` — BEGIN, then COMMIT, or ROLLBACK on an exception."""
        ...


def utc(value: Any) -> datetime | None:
    """A datetime column's value as an aware UTC datetime (MySQL: naive UTC; SQLite: text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a datetime: {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _wrapped(exc: Exception, sql: str, dbapi_base: type[Exception]) -> DBAPIError:
    wrapped = DBAPIError.instance(sql, None, exc, dbapi_base)
    assert isinstance(wrapped, DBAPIError)  # a driver error always wraps as one
    return wrapped


async def _fetched(cursor: Any, fetch: int) -> Any:
    """``fetch`` 1: one row (or ``None``); 2: every row; 0: the number of rows changed."""
    if fetch == 1:
        return await cursor.fetchone()
    if fetch == 2:
        return list(await cursor.fetchall())
    return cursor.rowcount


# -- MySQL / MariaDB ------------------------------------------------------------------------------


class _MySQLConnection:
    dialect = "mysql"

    def __init__(self, raw: Any, errors: Any, observe: Observer | None) -> None:
        self.raw = raw
        self.errors = errors
        self.observe = observe
        self.broken = False

    @staticmethod
    def _param(value: Any) -> Any:
        if isinstance(value, str):
            return str(value)  # a StrEnum as its plain value
        if isinstance(value, datetime):
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    async def _execute(self, sql: str, params: Sequence[Any], fetch: int) -> Any:
        started = time.perf_counter()
        ok = False
        try:
            async with self.raw.cursor() as cursor:
                await cursor.execute(sql, [self._param(p) for p in params])
                result = await _fetched(cursor, fetch)
            ok = True
            return result
        except self.errors.Error as exc:
            errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
            self.broken = errno >= 2000 or errno in (1927, 4031)
            raise _wrapped(exc, sql, self.errors.Error) from exc
        finally:
            if self.observe is not None:
                self.observe(sql, time.perf_counter() - started, ok)

    async def one(self, sql: str, *params: Any) -> Row | None:
        row = await self._execute(sql, params, 1)
        return tuple(row) if row is not None else None

    async def all(self, sql: str, *params: Any) -> list[Row]:
        return [tuple(r) for r in await self._execute(sql, params, 2)]

    async def run(self, sql: str, *params: Any) -> int:
        return int(await self._execute(sql, params, 0))

    async def count_up(self, key: str, expires_at: datetime) -> int:
        # LAST_INSERT_ID(expr) makes the new count the statement's insert id: no second round trip.
        sql = (
            "INSERT INTO rate_counters (`key`, count, expires_at) VALUES (%s, LAST_INSERT_ID(1), %s) "
            "ON DUPLICATE KEY UPDATE count = LAST_INSERT_ID(count + 1)"
        )
        started = time.perf_counter()
        ok = False
        try:
            async with self.raw.cursor() as cursor:
                await cursor.execute(sql, [key, self._param(expires_at)])
                ok = True
                return int(cursor.lastrowid)
        except self.errors.Error as exc:
            raise _wrapped(exc, sql, self.errors.Error) from exc
        finally:
            if self.observe is not None:
                self.observe(sql, time.perf_counter() - started, ok)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        await self._execute("BEGIN", (), 0)
        try:
            yield
        except BaseException:
            try:
                await self._execute("ROLLBACK", (), 0)
            except DBAPIError:
                self.broken = True
            raise
        await self._execute("COMMIT", (), 0)


class MySQLPool:
    def __init__(self, settings: Settings) -> None:
        self.url = sa.engine.make_url(engine_url(settings.database_url))
        self.size = max(2, settings.db_pool_size)
        self.timeout = settings.db_pool_timeout
        self.observe: Observer | None = None
        self._pool: Any = None
        self._lock = asyncio.Lock()

    async def _open(self) -> Any:
        import asyncmy
        import asyncmy.errors

        async with self._lock:
            if self._pool is None:
                url = self.url
                try:
                    self._pool = await asyncmy.create_pool(
                        host=url.host or "127.0.0.1",
                        port=url.port or 3306,
                        user=url.username or "",
                        password=url.password or "",
                        db=url.database or "",
                        charset=str(url.query.get("charset", "utf8mb4")),
                        autocommit=True,
                        init_command=MYSQL_SESSION_SETUP,
                        minsize=0,
                        maxsize=self.size,
                        pool_recycle=1800,
                        connect_timeout=5,
                    )
                except asyncmy.errors.Error as exc:
                    raise _wrapped(exc, "CONNECT", asyncmy.errors.Error) from exc
                except OSError as exc:
                    raise _wrapped(
                        asyncmy.errors.OperationalError(2003, str(exc)), "CONNECT", asyncmy.errors.Error
                    ) from exc
        return self._pool

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        import asyncmy.errors

        pool = self._pool or await self._open()
        try:
            async with asyncio.timeout(self.timeout):
                raw = await pool.acquire()
        except TimeoutError as exc:
            raise sa.exc.TimeoutError(f"no database connection free within {self.timeout} s") from exc
        except asyncmy.errors.Error as exc:
            raise _wrapped(exc, "CONNECT", asyncmy.errors.Error) from exc
        except OSError as exc:
            raise _wrapped(
                asyncmy.errors.OperationalError(2003, str(exc)), "CONNECT", asyncmy.errors.Error
            ) from exc
        conn = _MySQLConnection(raw, asyncmy.errors, self.observe)
        try:
            yield conn
        finally:
            if conn.broken:
                raw.close()  # never hand a dead or half-done connection to the next request
            pool.release(raw)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None


# -- SQLite (the embedded default) ----------------------------------------------------------------


@lru_cache(maxsize=512)
def _qmark(sql: str) -> str:
    return re.sub(r"%s", "?", sql)


class _SQLiteConnection:
    dialect = "sqlite"

    def __init__(self, raw: Any, observe: Observer | None) -> None:
        self.raw = raw
        self.observe = observe

    @staticmethod
    def _param(value: Any) -> Any:
        if isinstance(value, str):
            return str(value)  # a StrEnum as its plain value
        if isinstance(value, datetime):
            return value.astimezone(UTC).replace(tzinfo=None).strftime(_SQLITE_TIME)
        return value

    async def _execute(self, sql: str, params: Sequence[Any], fetch: int) -> Any:
        started = time.perf_counter()
        ok = False
        try:
            async with self.raw.execute(_qmark(sql), [self._param(p) for p in params]) as cursor:
                result = await _fetched(cursor, fetch)
            ok = True
            return result
        except sqlite3.Error as exc:
            raise _wrapped(exc, sql, sqlite3.Error) from exc
        finally:
            if self.observe is not None:
                self.observe(sql, time.perf_counter() - started, ok)

    async def one(self, sql: str, *params: Any) -> Row | None:
        row = await self._execute(sql, params, 1)
        return tuple(row) if row is not None else None

    async def all(self, sql: str, *params: Any) -> list[Row]:
        return [tuple(r) for r in await self._execute(sql, params, 2)]

    async def run(self, sql: str, *params: Any) -> int:
        return int(await self._execute(sql, params, 0))

    async def count_up(self, key: str, expires_at: datetime) -> int:
        row = await self._execute(
            "INSERT INTO rate_counters (`key`, count, expires_at) VALUES (%s, 1, %s) "
            "ON CONFLICT (`key`) DO UPDATE SET count = count + 1 RETURNING count",
            (key, expires_at),
            1,
        )
        return int(row[0])

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        await self._execute("BEGIN IMMEDIATE", (), 0)
        try:
            yield
        except BaseException:
            await self._execute("ROLLBACK", (), 0)
            raise
        await self._execute("COMMIT", (), 0)


class SQLitePool:
    """A few aiosqlite connections (each runs in a thread of its own); plenty for trying it out."""

    SIZE = 4

    def __init__(self, settings: Settings) -> None:
        ensure_sqlite_dir(settings.database_url)
        self.path = sa.engine.make_url(settings.database_url).database or ":memory:"
        self.timeout = settings.db_pool_timeout
        self.observe: Observer | None = None
        self._free: asyncio.Queue[Any] | None = None
        self._all: list[Any] = []
        self._lock = asyncio.Lock()

    async def _open(self) -> asyncio.Queue[Any]:
        import aiosqlite

        async with self._lock:
            if self._free is None:
                free: asyncio.Queue[Any] = asyncio.Queue()
                for _ in range(self.SIZE):
                    raw = await aiosqlite.connect(self.path, timeout=30, isolation_level=None)
                    for pragma in ("foreign_keys=ON", "journal_mode=WAL", "busy_timeout=30000"):
                        await raw.execute(f"PRAGMA {pragma}")
                    self._all.append(raw)
                    free.put_nowait(raw)
                self._free = free
        return self._free

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        free = self._free or await self._open()
        try:
            async with asyncio.timeout(self.timeout):
                raw = await free.get()
        except TimeoutError as exc:
            raise sa.exc.TimeoutError(f"no database connection free within {self.timeout} s") from exc
        try:
            yield _SQLiteConnection(raw, self.observe)
        finally:
            free.put_nowait(raw)

    async def close(self) -> None:
        for raw in self._all:
            await raw.close()
        self._all, self._free = [], None


class Pool(Protocol):
    observe: Observer | None

    def connect(self) -> Any:
        """``async with pool.connect() as conn:`` — a connection for a short unit of work."""
        ...

    async def close(self) -> None: ...


def create_pool(settings: Settings) -> Pool:
    return SQLitePool(settings) if is_sqlite(settings.database_url) else MySQLPool(settings)
