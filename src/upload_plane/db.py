"""Async engine and sessions, and the one translation of database errors into domain errors.

A request has one session, created on first use (by authentication or by a handler) and closed when
the request ends; the request's handler commits it on success. Services that talk to the store commit
at their claim points, so no connection is held while the store answers (see ``uploads/service.py``).

Error classification (``translate_db_error``): only a database that cannot be reached, refuses the
connection, or gives up on a transaction (lost connection, pool exhausted, deadlock, lock timeout,
read-only) is ``DatabaseUnavailable`` (503, nothing changed). A value the database refuses (too long,
wrong character set) is the client's problem (400); a constraint is a conflict (409); anything else
is a bug (500) and is logged as one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from .errors import (
    Conflict,
    DatabaseFailed,
    DatabaseUnavailable,
    DomainError,
    ValidationFailed,
)
from .settings import Settings

log = logging.getLogger("upload_plane.db")

#: What a session runs first on MySQL/MariaDB, whatever the server's defaults: strict value
#: checking (a value that does not fit is an error, never silently cut) and UTC for any server-side
#: time function. Stored datetimes are naive UTC set by the application.
MYSQL_SESSION_SETUP = (
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', SESSION time_zone = '+00:00'"
)

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


@dataclass(frozen=True, slots=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (DBAPIError, PoolTimeout) as exc:
            raise DatabaseUnavailable("The database did not answer") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session outside any request (CLI, reaper): committed on success, errors translated."""
        async with self.sessions() as session:
            try:
                yield session
                await session.commit()
            except SQLAlchemyError as exc:
                await session.rollback()
                raise translate_db_error(exc) from exc


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
    url = settings.database_url
    kwargs: dict[str, Any] = {}
    ensure_sqlite_dir(url)
    if is_sqlite(url):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_size,
            # No pre-ping: it would cost a round trip on every checkout, and a request checks out
            # again after each store call. A connection that died while pooled fails its next use
            # with a disconnect error: that request answers 503 and the pool is invalidated.
            pool_pre_ping=False,
            pool_recycle=1800,
            pool_timeout=settings.db_pool_timeout,
            # Each state change is a compare-and-set on the latest committed row, and waiting
            # requests must see other requests' commits without ending their own snapshot.
            isolation_level="READ COMMITTED",
        )
    engine = create_async_engine(engine_url(url), **kwargs)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine.sync_engine, "connect", _mysql_session_setup)
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    return Database(engine=engine, sessions=sessions)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _mysql_session_setup(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute(MYSQL_SESSION_SETUP)
    cursor.close()


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
