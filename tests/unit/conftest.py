"""The in-memory world of the service-level tests: SQLite, the in-memory store behind a counting
wrapper, a user who manages a case with one log, and an admin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from sqlmodel import select

from tests.fakes import CountingStorage, MemoryStorage
from upload_plane.auth.principal import Principal
from upload_plane.cases.service import CaseService
from upload_plane.db import Database, create_database
from upload_plane.files.service import FileService
from upload_plane.migrate import upgrade
from upload_plane.models import File, Upload, User
from upload_plane.settings import Settings
from upload_plane.sql import Pool, create_pool
from upload_plane.uploads.rows import UploadRow
from upload_plane.uploads.service import UploadService

T = TypeVar("T")
DATA = b"evidence " * 1000


@dataclass
class World:
    db: Database
    pool: Pool
    settings: Settings
    store: MemoryStorage
    storage: CountingStorage
    user: Principal
    admin: Principal
    log_id: str

    @asynccontextmanager
    async def services(self) -> AsyncIterator[tuple[UploadService, FileService]]:
        """The services as one request gets them."""
        uploads = UploadService(self.pool, self.storage, self.settings)
        yield uploads, FileService(self.pool, self.storage, self.settings, uploads)

    async def call(self, fn: Callable[[UploadService, FileService], Awaitable[T]]) -> T:
        async with self.services() as (uploads, files):
            return await fn(uploads, files)

    async def started(self) -> UploadRow:
        """An upload with every part in the store, ready to complete."""
        upload = await self.call(
            lambda u, _: u.start(
                self.user,
                self.log_id,
                filename="e.bin",
                size=len(DATA),
                content_type=None,
                sha256=None,
                part_size=None,
            )
        )
        self.store.put_part(upload.s3_upload_id, 1, DATA)
        return upload

    async def rows(self, upload_id: str) -> tuple[Upload | None, File | None]:
        async with self.db.sessions() as session:
            upload = (await session.exec(select(Upload).where(Upload.id == upload_id))).first()
            file = None
            if upload is not None:
                file = (await session.exec(select(File).where(File.id == upload.file_id))).first()
            return upload, file


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await anyio.to_thread.run_sync(upgrade, url)
    settings = Settings(database_url=url)
    db = create_database(settings)
    store = MemoryStorage()
    async with db.sessions() as session:
        user = User(username="investigator", password_hash="x", role="user")
        admin = User(username="boss", password_hash="x", role="admin")
        session.add_all([user, admin])
        await session.flush()
        who, boss = Principal.of(user), Principal.of(admin)
        case = await CaseService(session).create_case(who, "case", None, "")
        log = await CaseService(session).create_log(who, case.id, "log", "")
        await session.commit()
    pool = create_pool(settings)
    yield World(db, pool, settings, store, CountingStorage(store), who, boss, log.id)
    await pool.close()
    await db.dispose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
