"""Async engine and sessions. The request owns the transaction: commit on success, rollback on error.

Database errors are translated to domain errors here and nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from .errors import Conflict, DatabaseUnavailable, DomainError
from .settings import Settings


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
        except DBAPIError as exc:
            raise DatabaseUnavailable("The database did not answer") from exc


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def ensure_sqlite_dir(url: str) -> None:
    if is_sqlite(url):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


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
            pool_pre_ping=True,
            pool_recycle=1800,
            pool_timeout=10,
        )
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    return Database(engine=engine, sessions=sessions)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


async def transaction(db: Database) -> AsyncIterator[AsyncSession]:
    """One session and one transaction per request: committed when the handler succeeds."""
    async with db.sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            try:
                await session.commit()
            except DBAPIError as exc:
                await session.rollback()
                raise translate_db_error(exc) from exc


def translate_db_error(exc: DBAPIError) -> DomainError:
    if isinstance(exc, IntegrityError):
        return Conflict("The change conflicts with existing data")
    if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
        return DatabaseUnavailable("The database did not answer; nothing was changed")
    return DatabaseUnavailable("The database refused the operation; nothing was changed")
