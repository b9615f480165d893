"""The database: one engine and one pool, ORM sessions for the admin paths, and the hot path's
connections that run precompiled statements (``statements.py``) on the driver.

**One pool.** Every connection comes from SQLAlchemy's pool (``UPLOAD_PLANE_DB_POOL_SIZE`` connections
per process, all kept). Each MySQL/MariaDB connection is set up once when it is
made: strict ``sql_mode``, UTC, ``READ COMMITTED`` (each compare-and-set reads the latest committed
row and no gap locks are taken), and autocommit at the driver. A transaction is always explicit:
the ORM's begins with ``BEGIN`` (an engine event) and ends with its commit or rollback, the hot
path's with ``Connection.transaction()``; a single hot-path statement commits by itself, one round
trip. A connection is returned to the pool without a ``ROLLBACK`` unless the server says a
transaction is still open (``_rollback_if_open``), so a checkout costs no round trip. SQLite (the
embedded default) keeps its driver's own transaction handling; the hot path commits its writes.

**Sessions.** A request has one ORM session, created on first use and closed when the request
ends; its handler commits it on success. Services that talk to the store never hold a transaction
across a store call: they take a connection for each short unit of work (``Database.connect``).

Error classification (``translate_db_error``): only a database that cannot be reached, refuses the
connection, or gives up on a transaction (lost connection, pool exhausted, deadlock, lock timeout,
read-only) is ``DatabaseUnavailable`` (503, nothing changed). A value the database refuses (too long,
wrong character set) is the client's problem (400); a constraint is a conflict (409); anything else
is a bug (500) and is logged as one.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    MissingGreenlet,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection, QueuePool
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.concurrency import in_greenlet
from sqlmodel.ext.asyncio.session import AsyncSession

from .errors import (
    Conflict,
    DatabaseFailed,
    DatabaseUnavailable,
    DomainError,
    ValidationFailed,
)
from .settings import Settings
from .statements import Compiled, Query, Statement

log = logging.getLogger("upload_plane.db")
T = TypeVar("T")

Observer = Callable[[str, float, bool], None]
"""Told of every hot-path statement: its kind (``statements.statement_kind``: ``select uploads``,
``begin``, ...), seconds taken and whether it succeeded (metrics)."""

#: What every MySQL/MariaDB connection runs once, whatever the server's defaults: strict value
#: checking (a value that does not fit is an error, never silently cut), UTC for any server-side
#: time function (stored datetimes are naive UTC set by the application), and READ COMMITTED.
MYSQL_SESSION_SETUP = (
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', SESSION time_zone = '+00:00'",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
)
_SERVER_STATUS_IN_TRANS = 1  # the MySQL protocol's "a transaction is open" status flag

# MySQL/MariaDB error numbers meaning "the database is not there for us right now".
_UNAVAILABLE_ERRNOS = frozenset(
    {
        1040,  # too many connections
        1044,  # access denied to the database
        1045,  # access denied for the user
        1053,  # server shutdown in progress
        1129,  # host blocked
        1130,  # host not allowed
        1152,  # aborted connection
        1205,  # lock wait timeout: the transaction was rolled back
        1213,  # deadlock: the transaction was rolled back
        1290,  # read-only server
        1317,  # query interrupted
        1836,  # read-only mode
        1927,  # connection killed
        1969,  # statement timeout (MariaDB max_statement_time)
        3024,  # statement timeout (MySQL max_execution_time)
        3118,  # account locked (MySQL)
        4031,  # disconnected for inactivity
        4151,  # account locked (MariaDB)
    }
)
# Values the database refuses: too long, not representable in the column's character set, ...
_DATA_ERRNOS = frozenset({1265, 1264, 1267, 1270, 1271, 1292, 1366, 1406, 1300})


def mysql_collation(dialect: sa.Dialect) -> str:
    """The collation every table is pinned to: utf8mb4, binary (exact, case-sensitive) and without
    padding, so ``'admin '`` is not ``'admin'`` and a path id matches only itself. MariaDB and MySQL
    name it differently."""
    return "utf8mb4_nopad_bin" if getattr(dialect, "is_mariadb", False) else "utf8mb4_0900_bin"


def pinned_table_options(dialect: sa.Dialect) -> dict[str, Any]:
    """What a migration gives every table it makes: utf8mb4 with the pinned collation on MySQL and
    MariaDB, whatever the database's default (nothing elsewhere)."""
    if dialect.name != "mysql":
        return {}
    return {"mysql_charset": "utf8mb4", "mysql_collate": mysql_collation(dialect)}


PINNED_COLLATIONS = frozenset({"utf8mb4_nopad_bin", "utf8mb4_0900_bin"})


async def schema_charset_problems(engine: AsyncEngine) -> list[str]:
    """Text columns of this database that are not utf8mb4 with the pinned collation (MySQL and
    MariaDB; empty elsewhere). Such a column turns unicode input into errors or wrong matches."""
    if engine.dialect.name != "mysql":
        return []
    query = sa.text(
        "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND CHARACTER_SET_NAME IS NOT NULL ORDER BY TABLE_NAME, COLUMN_NAME"
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        f"{table}.{column} is {charset} ({collation})"
        for table, column, charset, collation in rows
        if charset != "utf8mb4" or collation not in PINNED_COLLATIONS
    ]


# -- the hot path's connections ---------------------------------------------------------------------


class Connection:
    """A pooled connection for one short unit of work, running precompiled statements on the driver.

    ``one``/``all`` run a ``Query`` and return its records; ``run`` returns the number of rows a
    statement matched (``run_many``: for many rows of parameters at once); ``value`` the first
    column of the first row (or, for a MySQL upsert that sets ``LAST_INSERT_ID(expr)``, that value).
    Outside ``transaction()`` each statement commits alone. Driver errors are raised as
    SQLAlchemy's ``DBAPIError`` for ``translate_db_error``.
    """

    def __init__(self, fairy: PoolProxiedConnection, dialect: sa.Dialect, observe: Observer | None) -> None:
        self.fairy = fairy
        self.raw: Any = fairy.driver_connection
        self.dialect = dialect
        self.observe = observe
        self.broken = False  # give it back to nobody: the pool drops it
        self.in_transaction = False
        self.dbapi_error: type[Exception] = dialect.loaded_dbapi.Error

    @property
    def dialect_name(self) -> str:
        return str(self.dialect.name)

    async def one(self, query: Query[T], **params: Any) -> T | None:
        compiled = query.compiled(self.dialect)
        rows = await self._execute(compiled, params, fetch=1)
        return query.into(compiled.row(rows[0])) if rows else None

    async def all(self, query: Query[T], **params: Any) -> list[T]:
        compiled = query.compiled(self.dialect)
        return [query.into(compiled.row(r)) for r in await self._execute(compiled, params, fetch=2)]

    async def run(self, statement: Statement, **params: Any) -> int:
        return int(await self._execute(statement.compiled(self.dialect), params, fetch=0))

    async def run_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run ``statement`` for every row of parameters in one call to the driver (its
        ``executemany``): an INSERT goes as one multi-row INSERT (MySQL, up to the driver's
        statement size), any other statement once per row. The rows matched, in all. No expanding
        parameters (``IN`` lists)."""
        if not rows:
            return 0
        compiled = statement.compiled(self.dialect)
        if len(rows) == 1:
            return int(await self._execute(compiled, dict(rows[0]), fetch=0))
        if any(expanding for *_, expanding in compiled.params):
            raise ValueError("run_many cannot spread IN lists")
        args = [compiled.args(row)[1] for row in rows]
        return int(await self._observed(compiled.kind, compiled.sql, args, fetch=4))

    async def value(self, statement: Statement, **params: Any) -> Any:
        compiled = statement.compiled(self.dialect)
        if compiled.insert_id:
            return await self._execute(compiled, params, fetch=3)
        rows = await self._execute(compiled, params, fetch=1)
        return rows[0][0] if rows else None

    async def _execute(self, compiled: Compiled, params: dict[str, Any], fetch: int) -> Any:
        sql, args = compiled.args(params)
        return await self._observed(compiled.kind, sql, args, fetch)

    async def _observed(self, kind: str, sql: str, args: Sequence[Any], fetch: int) -> Any:
        started = time.perf_counter()
        ok = False
        try:
            result = await self._send(sql, args, fetch)
            ok = True
            return result
        finally:
            if self.observe is not None:
                self.observe(kind, time.perf_counter() - started, ok)

    async def _send(self, sql: str, args: Sequence[Any], fetch: int) -> Any:
        """``fetch`` 0: rows matched; 1: at most one row; 2: every row; 3: the insert id; 4: the rows
        matched by running the statement for each of ``args`` (then a list of argument lists)."""
        raise NotImplementedError

    def transaction(self) -> Any:
        """``async with conn.transaction():`` — BEGIN, then COMMIT, or ROLLBACK on an exception."""
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        await self._begin()
        self.in_transaction = True
        try:
            yield
        except BaseException:
            self.in_transaction = False
            try:
                await self._end(commit=False)
            except Exception:
                self.broken = True
            raise
        self.in_transaction = False
        await self._end(commit=True)

    async def _begin(self) -> None:
        raise NotImplementedError

    async def _end(self, commit: bool) -> None:
        raise NotImplementedError

    def left_open(self) -> bool:
        """Whether the driver still has a transaction open."""
        raise NotImplementedError


class _MySQL(Connection):
    async def _send(self, sql: str, args: Sequence[Any], fetch: int) -> Any:
        try:
            async with self.raw.cursor() as cursor:
                if fetch == 4:
                    await cursor.executemany(sql, args)
                    return cursor.rowcount
                await cursor.execute(sql, args or None)
                if fetch == 0:
                    return cursor.rowcount
                if fetch == 1:
                    row = await cursor.fetchone()
                    return [row] if row is not None else []
                if fetch == 2:
                    return await cursor.fetchall()
                return cursor.lastrowid
        except self.dbapi_error as exc:
            errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
            self.broken = self.broken or errno >= 2000 or errno in (1927, 4031)
            raise _wrapped(exc, sql, self.dbapi_error) from exc
        except BaseException:
            self.broken = True  # cancelled mid-answer: the protocol state is unknown
            raise

    async def _begin(self) -> None:
        await self._observed("begin", "BEGIN", (), 0)

    async def _end(self, commit: bool) -> None:
        if commit:
            await self._observed("commit", "COMMIT", (), 0)
        else:
            await self._observed("rollback", "ROLLBACK", (), 0)

    def left_open(self) -> bool:
        return bool(getattr(self.raw, "server_status", 0) & _SERVER_STATUS_IN_TRANS)


class _SQLite(Connection):
    """aiosqlite in its driver's own transaction mode: a write outside ``transaction()`` is committed
    at once; ``transaction()`` takes the write lock up front (``BEGIN IMMEDIATE``)."""

    async def _send(self, sql: str, args: Sequence[Any], fetch: int) -> Any:
        try:
            run = self.raw.executemany if fetch == 4 else self.raw.execute
            async with run(sql, args) as cursor:
                if fetch in (0, 4):
                    result: Any = cursor.rowcount
                elif fetch == 1:
                    row = await cursor.fetchone()
                    result = [row] if row is not None else []
                elif fetch == 2:
                    result = await cursor.fetchall()
                else:
                    result = cursor.lastrowid
            if not self.in_transaction and self.raw.in_transaction:
                await self.raw.commit()
            return result
        except sqlite3.Error as exc:
            await self._undo()
            raise _wrapped(exc, sql, sqlite3.Error) from exc

    async def _undo(self) -> None:
        if not self.in_transaction and self.raw.in_transaction:
            try:
                await self.raw.rollback()
            except sqlite3.Error:
                self.broken = True

    async def _begin(self) -> None:
        await self.raw.execute("BEGIN IMMEDIATE")

    async def _end(self, commit: bool) -> None:
        await (self.raw.commit() if commit else self.raw.rollback())

    def left_open(self) -> bool:
        return bool(self.raw.in_transaction)


def _wrapped(exc: Exception, sql: str, dbapi_base: type[Exception]) -> DBAPIError:
    wrapped = DBAPIError.instance(sql, None, exc, dbapi_base)
    assert isinstance(wrapped, DBAPIError)  # a driver error always wraps as one
    return wrapped


# -- the engine -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    observe: Observer | None = field(default=None)
    #: Hot-path checkouts waiting for a connection to come back to the full pool (``_returned``).
    _waiting: deque[asyncio.Future[None]] = field(default_factory=deque)

    @property
    def dialect(self) -> sa.Dialect:
        return self.engine.dialect

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        """A hot-path connection from the pool, for a short unit of work (no store call inside).

        A free, live connection is taken from the pool and given back without leaving the event
        loop (about 13 µs of CPU, a quarter of the async checkout); only when one must be made or
        recycled does the checkout need SQLAlchemy's greenlet (it says so with ``MissingGreenlet``
        before doing any I/O). When every connection is in use, the checkout waits on the event
        loop for the next one given back (``_returned``), not in SQLAlchemy's greenlet: under a
        burst, a request in seven waits so."""
        pool: Any = self.engine.sync_engine.pool
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            fairy = await self._checkout(pool)
        except dbapi_error as exc:  # the server refused a new connection: classified as any error
            raise _wrapped(exc, "CONNECT", dbapi_error) from exc
        conn = (_MySQL if self.engine.dialect.name == "mysql" else _SQLite)(
            fairy, self.engine.dialect, self.observe
        )
        try:
            yield conn
        finally:
            if conn.broken or conn.left_open():
                # Dead, cancelled mid-answer, or a transaction left open: nobody gets it again.
                await greenlet_spawn(fairy.invalidate)
            if _closes_on_return(pool):
                await greenlet_spawn(fairy.close)  # an overflow connection: the pool closes it
            else:
                fairy.close()

    async def _checkout(self, pool: Any) -> PoolProxiedConnection:
        deadline: float | None = None
        while True:
            if pool.checkedin():
                try:
                    fairy: PoolProxiedConnection = pool.connect()
                except MissingGreenlet:  # to be recycled: made anew, which takes I/O
                    return await self.engine.raw_connection()
                if not _broken(fairy.driver_connection):
                    return fairy
                await greenlet_spawn(fairy.invalidate)  # its server went away while it was pooled
                fairy.close()
                return await self.engine.raw_connection()  # the pool makes a new one
            if not _full(pool):
                return await self.engine.raw_connection()  # one more is made
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + pool.timeout()
            await self._returned(loop, deadline)

    async def _returned(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Until a connection is given back to the pool (``_wake_one``) or ``deadline``
        (``PoolTimeout``: 503, as SQLAlchemy's own wait)."""
        waiter = loop.create_future()
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException as exc:  # timed out, or the request was cancelled
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken, but not taking the connection: the next waiter does
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise PoolTimeout("no database connection was given back in time") from None
            raise

    def _wake_one(self, *_: Any) -> None:
        """The pool's ``checkin`` event (every connection given back, ORM sessions' too): the
        longest-waiting checkout tries again."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def ping(self) -> None:
        try:
            async with self.connect() as conn:
                await conn.value(PING)
        except (DBAPIError, PoolTimeout) as exc:
            raise DatabaseUnavailable("The database did not answer") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """An ORM session outside any request (CLI): committed on success, errors translated."""
        async with self.sessions() as session:
            try:
                yield session
                await session.commit()
            except SQLAlchemyError as exc:
                await session.rollback()
                raise translate_db_error(exc) from exc


PING = Statement(sa.select(sa.literal(1)))


def _full(pool: Any) -> bool:
    """Whether the pool may make no more connections (a ``QueuePool`` with all of them in use)."""
    if not isinstance(pool, QueuePool):
        return False
    limit: int = pool._max_overflow  # -1: unlimited
    return limit != -1 and pool.overflow() >= limit


def _closes_on_return(pool: Any) -> bool:
    """Whether the pool will close (not keep) the next connection given back: it holds as many
    idle ones as it keeps (an overflow connection), which takes I/O, so SQLAlchemy's greenlet."""
    size = getattr(pool, "size", None)
    return size is None or pool.checkedin() >= size()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def ensure_sqlite_dir(url: str) -> None:
    if is_sqlite(url):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def engine_url(url: str) -> sa.URL:
    """The URL with the connection character set pinned to utf8mb4 on MySQL/MariaDB (a server's
    default may be latin1; the schema and every value we send are utf8mb4)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "mysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def create_database(settings: Settings) -> Database:
    """The one engine: its pool serves the ORM sessions and the hot path alike."""
    url = settings.database_url
    ensure_sqlite_dir(url)
    kwargs: dict[str, Any] = {
        # Checked in without a ROLLBACK round trip; ``_rollback_if_open`` ends what is still open.
        "pool_reset_on_return": None,
        "pool_timeout": settings.db_pool_timeout,
    }
    if is_sqlite(url):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(
            # Every connection the pool makes it keeps: an overflow connection would be closed on
            # its return and made again under the next burst (a TCP and TLS-less handshake, the
            # session set-up, and the server's own work each time). Requests wait for a free one
            # instead (they hold one only for a short unit of work).
            pool_size=settings.db_pool_size,
            max_overflow=0,
            # No pre-ping: it would cost a round trip on every checkout. A connection that died
            # while pooled fails its next use with a disconnect error: that request answers 503
            # and the connection is dropped.
            pool_pre_ping=False,
            pool_recycle=1800,
            connect_args={"autocommit": True},
        )
    engine = create_async_engine(engine_url(url), **kwargs)
    # The hot path's checkout tries the pool without leaving the event loop first; when the pooled
    # connection it gets must be made anew, SQLAlchemy refuses (MissingGreenlet) after the driver
    # made its connect coroutine, which is then dropped unawaited: expected, so not worth a warning.
    warnings.filterwarnings(
        "ignore", "coroutine '_connect' was never awaited", RuntimeWarning, r"sqlalchemy\.util\.concurrency"
    )
    sync = engine.sync_engine
    if is_sqlite(url):
        event.listen(sync, "connect", _sqlite_pragmas)
    else:
        event.listen(sync, "connect", _mysql_session_setup)
        event.listen(sync, "begin", _mysql_begin)
        event.listen(sync.pool, "checkout", _refuse_broken)
    event.listen(sync.pool, "reset", _rollback_if_open)
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    database = Database(engine=engine, sessions=sessions)
    event.listen(sync.pool, "checkin", database._wake_one)
    return database


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _mysql_session_setup(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    for statement in MYSQL_SESSION_SETUP:
        cursor.execute(statement)
    cursor.close()


def _broken(raw: Any) -> bool:
    """A connection whose server went away while it sat in the pool (a restart: its socket saw the
    end). asyncmy knows from its own socket state: no round trip, unlike a pre-ping."""
    return bool(getattr(raw, "_stream_broken", False))


def _refuse_broken(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """Checkout: a broken connection is not handed out; the pool drops it and makes a new one.
    Outside SQLAlchemy's greenlet (``Database.connect``'s fast path, which checks for itself) a new
    one could not be made here."""
    if in_greenlet() and _broken(getattr(dbapi_conn, "driver_connection", None)):
        raise DisconnectionError("the server closed this pooled connection")


def _mysql_begin(conn: sa.Connection) -> None:
    """The ORM's transactions begin explicitly: the driver is in autocommit mode."""
    conn.exec_driver_sql("BEGIN")


def _rollback_if_open(dbapi_conn: Any, _record: Any, state: Any) -> None:
    """A connection going back to the pool with a transaction still open (an ORM session dropped
    without its close) is rolled back; a clean one costs nothing."""
    raw = getattr(dbapi_conn, "driver_connection", None)
    if raw is None:
        return
    if isinstance(raw, sqlite3.Connection) or hasattr(raw, "in_transaction"):
        open_ = bool(raw.in_transaction)
    else:
        open_ = bool(getattr(raw, "server_status", 0) & _SERVER_STATUS_IN_TRANS)
    if open_ and state.asyncio_safe:
        dbapi_conn.rollback()


def _errno(exc: DBAPIError) -> int | None:
    args: Sequence[Any] = getattr(exc.orig, "args", ()) or ()
    return args[0] if args and isinstance(args[0], int) else None


def translate_db_error(exc: SQLAlchemyError) -> DomainError:
    """The one mapping of database errors to domain errors (see the module docstring)."""
    if isinstance(exc, PoolTimeout | DisconnectionError):
        return DatabaseUnavailable("The database did not answer in time; nothing was changed")
    if not isinstance(exc, DBAPIError):
        log.error("database layer error: %r", exc)
        return DatabaseFailed("An unexpected database error occurred; it has been logged")
    errno = _errno(exc)
    if isinstance(exc, IntegrityError):
        return Conflict("The change conflicts with existing data")
    if exc.connection_invalidated or (errno is not None and (errno in _UNAVAILABLE_ERRNOS or errno >= 2000)):
        return DatabaseUnavailable("The database did not answer; nothing was changed")
    if isinstance(exc, DataError) or errno in _DATA_ERRNOS:
        log.warning("the database refused a value (errno %s): %s", errno, exc.orig)
        return ValidationFailed("A value was not accepted by the database; nothing was changed")
    if errno is None and isinstance(exc, OperationalError | InterfaceError):
        # No MySQL error number: SQLite (locked, busy, cannot open) or a driver-level disconnect.
        return DatabaseUnavailable("The database did not answer; nothing was changed")
    log.error("unexpected database error (errno %s): %s", errno, exc.orig)
    return DatabaseFailed("An unexpected database error occurred; it has been logged")


_REQUEST_SESSION = "upload_plane.db_session"


def request_session(scope: MutableMapping[str, Any], db: Database) -> AsyncSession:
    """The request's one session, created on first use and kept in its ASGI scope, so that
    authentication and the handler share it; ``close_request_session`` ends it."""
    session: AsyncSession | None = scope.get(_REQUEST_SESSION)
    if session is None:
        session = scope[_REQUEST_SESSION] = db.sessions()
    return session


async def close_request_session(scope: MutableMapping[str, Any]) -> None:
    """Close the request's session if it has one; what was not committed is rolled back."""
    session: AsyncSession | None = scope.pop(_REQUEST_SESSION, None)
    if session is not None:
        await session.close()
