"""The in-memory world of the service-level tests: SQLite, the in-memory store behind a counting
wrapper, a user who manages a case with one log, and an admin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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
from upload_plane.uploads.abort import abort_upload
from upload_plane.uploads.complete import complete_upload
from upload_plane.uploads.context import ClaimWaiters, Uploads
from upload_plane.uploads.queries import FileRecord, UploadRecord
from upload_plane.uploads.start import NewUpload, start_upload

T = TypeVar("T")
DATA = b"evidence " * 1000


class Ops:
    """The upload operations as a request performs them, for short test code."""

    def __init__(self, ctx: Uploads) -> None:
        self.ctx = ctx

    async def start(
        self, who: Principal, log_id: str, *, idempotency_key: str | None = None, **wanted: Any
    ) -> UploadRecord:
        return await start_upload(self.ctx, who, log_id, NewUpload(**wanted), idempotency_key=idempotency_key)

    async def complete(self, who: Principal, upload_id: str, *args: Any, **kw: Any) -> FileRecord:
        return await complete_upload(self.ctx, who, upload_id, *args, **kw)

    async def abort(self, who: Principal, upload_id: str) -> None:
        await abort_upload(self.ctx, who, upload_id)


@dataclass
class World:
    db: Database
    settings: Settings
    store: MemoryStorage
    storage: CountingStorage
    user: Principal
    admin: Principal
    log_id: str
    waiters: ClaimWaiters = field(default_factory=ClaimWaiters)

    @property
    def ctx(self) -> Uploads:
        """What the application's requests share (the store as this test has it now)."""
        return Uploads(self.db, self.storage, self.settings, self.waiters)

    @asynccontextmanager
    async def services(self) -> AsyncIterator[tuple[Ops, FileService]]:
        """The services as one request gets them."""
        yield Ops(self.ctx), FileService(self.ctx)

    async def call(self, fn: Callable[[Ops, FileService], Awaitable[T]]) -> T:
        async with self.services() as (uploads, files):
            return await fn(uploads, files)

    async def started(self) -> UploadRecord:
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
    yield World(db, settings, store, CountingStorage(store), who, boss, log.id)
    await db.dispose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
