"""Plain helpers for API tests: an authenticated client and the upload flow, step by step."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from tests.conftest import ADMIN_PASSWORD, PRODUCTION_HASH_COST, Backend
from tests.store import StoreChecker
from upload_plane.auth import passwords
from upload_plane.db import create_database
from upload_plane.errors import StoredUploadGone
from upload_plane.models import File, Upload, UploadLink, utcnow
from upload_plane.settings import Settings
from upload_plane.storage import S3Storage
from upload_plane.uploads import state
from upload_plane.uploads.context import Uploads
from upload_plane.uploads.reaper import Reaper, ReapReport
from upload_plane.uploads.state import UploadStatus

MIB = 1024 * 1024
PROBLEM = "application/problem+json"


#: Every 5xx answer a test client saw during the current test (``tests/conftest.py`` fails any test
#: that saw one, unless it is marked ``expects_5xx``): no hostile input may cause a server error.
SERVER_ERRORS: list[str] = []


def record_server_errors(response: httpx.Response) -> None:
    if response.status_code >= 500:
        SERVER_ERRORS.append(
            f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        )


def client(backend: Backend, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=f"{backend.base_url}/api/v1",
        headers=headers,
        timeout=60,
        event_hooks={"response": [record_server_errors]},
    )


def login(backend: Backend, username: str, password: str) -> httpx.Client:
    with client(backend) as anon:
        resp = anon.post("/auth/login", json={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    return client(backend, resp.json()["access_token"])


def admin(backend: Backend) -> httpx.Client:
    return login(backend, "admin", ADMIN_PASSWORD)


def new_user(backend: Backend, role: str = "user") -> httpx.Client:
    """A fresh user with its own token, so tests never see each other's data."""
    name = f"user-{secrets.token_hex(6)}"
    password = secrets.token_urlsafe(12)
    with admin(backend) as adm:
        resp = adm.post("/users", json={"username": name, "password": password, "role": role})
        assert resp.status_code == 201, resp.text
    return login(backend, name, password)


def new_log(api: httpx.Client) -> dict[str, Any]:
    case = api.post("/cases", json={"title": f"case {secrets.token_hex(4)}"})
    assert case.status_code == 201, case.text
    log = api.post(f"/cases/{case.json()['id']}/logs", json={"name": "bodycam"})
    assert log.status_code == 201, log.text
    return dict(log.json())


def start_upload(api: httpx.Client, log_id: str, data: bytes, **extra: Any) -> dict[str, Any]:
    body = {"filename": "evidence.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    body.update(extra)
    resp = api.post(f"/logs/{log_id}/uploads", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def part_bytes(data: bytes, upload: dict[str, Any], n: int) -> bytes:
    size = upload["part_size"]
    return data[(n - 1) * size : n * size]


def sign(api: httpx.Client, upload_id: str, numbers: list[int]) -> dict[int, dict[str, Any]]:
    resp = api.post(f"/uploads/{upload_id}/parts", json={"part_numbers": numbers})
    assert resp.status_code == 200, resp.text
    return {p["part_number"]: p for p in resp.json()["parts"]}


def put_parts(
    http: httpx.Client,
    api: httpx.Client,
    upload: dict[str, Any],
    data: bytes,
    numbers: list[int],
    parallel: int = 4,
) -> None:
    """Sign and PUT ``numbers`` straight to the store, ``parallel`` at a time, in the given order."""
    signed = sign(api, upload["id"], numbers)

    def put(n: int) -> None:
        part = signed[n]
        body = part_bytes(data, upload, n)
        assert len(body) == part["size"]
        resp = http.put(part["url"], content=body, headers=part["headers"])
        assert resp.status_code == 200, f"part {n}: {resp.status_code} {resp.text[:300]}"

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(put, numbers))


def complete(api: httpx.Client, upload_id: str) -> httpx.Response:
    return api.post(f"/uploads/{upload_id}/complete", json={})


def download(http: httpx.Client, api: httpx.Client, file_id: str) -> bytes:
    resp = api.get(f"/files/{file_id}/download")
    assert resp.status_code == 307, resp.text
    got = http.get(resp.headers["location"])
    assert got.status_code == 200, got.text[:300]
    return got.content


def upload_file(
    http: httpx.Client, api: httpx.Client, log_id: str, data: bytes, **extra: Any
) -> dict[str, Any]:
    upload = start_upload(api, log_id, data, **extra)
    put_parts(http, api, upload, data, list(range(1, upload["part_count"] + 1)))
    resp = complete(api, upload["id"])
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def assert_problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers["content-type"]
    body = dict(resp.json())
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["detail"]
    return body


@asynccontextmanager
async def backend_db(backend: Backend) -> AsyncIterator[AsyncSession]:
    """A session on the backend's database, beside the API (to inspect or stage rows)."""
    db = create_database(backend.settings)
    try:
        async with db.sessions() as session:
            yield session
    finally:
        await db.dispose()


async def upload_row(backend: Backend, upload_id: str) -> Upload:
    async with backend_db(backend) as session:
        return (await session.exec(select(Upload).where(Upload.id == upload_id))).one()


async def db_snapshot(backend: Backend) -> list[tuple[str, str, str]]:
    """Every upload with its status and its file's status, read straight from the database."""
    async with backend_db(backend) as session:
        rows = await session.exec(
            select(Upload.id, Upload.status, File.status).join(File, File.id == Upload.file_id)
        )
        return sorted((str(a), str(b), str(c)) for a, b, c in rows.all())


@asynccontextmanager
async def store(backend: Backend) -> AsyncIterator[StoreChecker]:
    """The backend's store as boto3 sees it (``tests/store.py``), never through the code under test."""
    storage = StoreChecker(backend.settings)
    try:
        yield storage
    finally:
        await storage.aclose()


def sql_rows(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of a statement on a backend's database (``%s`` placeholders on MariaDB), or, for a
    change, ``[(rows changed,)]``; committed."""

    async def run() -> list[tuple[Any, ...]]:
        db = create_database(settings)
        try:
            async with db.engine.begin() as conn:
                result = await conn.exec_driver_sql(sql, params)
                return [tuple(r) for r in result.all()] if result.returns_rows else [(result.rowcount,)]
        finally:
            await db.dispose()

    return asyncio.run(run())


async def assert_store_agrees(backend: Backend, upload: dict[str, Any]) -> str | None:
    """The rows of ``upload`` and the store agree; returns the upload's status (``None``: deleted).

    A file is ``available`` iff its upload is ``completed`` iff its object exists with the planned
    size; an open upload has its multipart upload and no object; an ended one has neither; deleted
    rows leave nothing in the store; no claim is left behind.
    """
    async with store(backend) as storage:
        stored = await storage.head_object(upload["key"])
        try:
            await storage.list_parts(upload["key"], (await _s3_upload_id(backend, upload)) or "gone")
            open_in_store = True
        except StoredUploadGone:
            open_in_store = False
    async with backend_db(backend) as session:
        row = (await session.exec(select(Upload).where(Upload.id == upload["id"]))).first()
        file = (await session.exec(select(File).where(File.id == upload["file_id"]))).first()
    if row is None:
        assert file is None, "a file row outlived its upload"
        assert stored is None and not open_in_store, "deleted rows left data in the store"
        return None
    assert file is not None
    assert row.claim_token is None and row.claimed_at is None, f"claim left behind: {row.status}"
    if row.status == "completed":
        assert file.status == "available"
        assert stored is not None and stored.size == row.size, stored
        assert not open_in_store
    elif row.status in ("aborted", "expired"):
        assert file.status == "failed"
        assert stored is None and not open_in_store
    else:
        assert row.status == "uploading", row.status
        assert file.status == "uploading"
        assert stored is None and open_in_store
    return str(row.status)


_S3_IDS: dict[str, str] = {}


async def _s3_upload_id(backend: Backend, upload: dict[str, Any]) -> str | None:
    """The store's upload id, remembered so it can be checked after the rows are deleted."""
    if upload["id"] not in _S3_IDS:
        async with backend_db(backend) as session:
            row = (await session.exec(select(Upload).where(Upload.id == upload["id"]))).first()
        if row is None:
            return None
        _S3_IDS[upload["id"]] = row.s3_upload_id
    return _S3_IDS[upload["id"]]


def remember_s3_upload_id(backend: Backend, upload: dict[str, Any]) -> None:
    asyncio.run(_s3_upload_id(backend, upload))


def sign_in(backend: Backend, username: str, password: str) -> httpx.Response:
    """The raw login answer: access and refresh tokens, and the session cookie."""
    with client(backend) as anon:
        resp = anon.post("/auth/login", json={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    return resp


def new_account(backend: Backend, role: str = "user") -> tuple[str, str]:
    """A fresh username and password (created by the admin)."""
    name = f"user-{secrets.token_hex(6)}"
    password = secrets.token_urlsafe(12)
    with admin(backend) as adm:
        resp = adm.post("/users", json={"username": name, "password": password, "role": role})
        assert resp.status_code == 201, resp.text
    return name, password


def at_production_cost(backend: Backend, name: str, password: str) -> None:
    """Store ``name``'s password hashed at the production cost (the test servers hash cheaply), for
    the tests whose logins must take as long as they do in production."""
    hashed = passwords.hash_password(password, PRODUCTION_HASH_COST)
    mark = "%s" if backend.settings.database_url.startswith("mysql") else "?"
    changed = sql_rows(
        backend.settings, f"UPDATE users SET password_hash = {mark} WHERE username = {mark}", hashed, name
    )
    assert changed == [(1,)], changed


def browser(backend: Backend, cookie: str) -> httpx.Client:
    """A client that authenticates with the session cookie only, as a same-origin page does."""
    c = client(backend)
    c.cookies.set("upload_plane_session", cookie)
    return c


def crc64nvme(data: bytes, previous: int = 0) -> int:
    from awscrt import checksums

    return int(checksums.crc64nvme(data, previous))


def crc64_b64(data: bytes) -> str:
    """The S3 wire form of a CRC64NVME: base64 of its 8 big-endian bytes."""
    return base64.b64encode(crc64nvme(data).to_bytes(8, "big")).decode()


async def complete_behind_the_apis_back(backend: Backend, key: str, s3_upload_id: str) -> None:
    """Complete a multipart upload in the store directly, as if the API's answer had been lost."""
    async with store(backend) as storage:
        parts = await storage.list_parts(key, s3_upload_id)
        await storage.complete_multipart(key, s3_upload_id, parts)


#: What a refused request must not change: every table (but rate counters, and the audit events of
#: refused sign-ins, which a refusal writes on purpose) and, in the store, every object and every
#: multipart upload open on an upload's key.
_UNCHANGED_TABLES = (
    "users", "cases", "case_members", "logs", "files", "uploads", "auth_sessions", "refresh_tokens",
    "personal_access_tokens", "upload_links", "upload_link_uploads",
)  # fmt: skip


async def world(backend: Backend) -> dict[str, Any]:
    """The database and the store, as plain data to compare before and after."""
    from sqlmodel import SQLModel

    db = create_database(backend.settings)
    tables = SQLModel.metadata.tables
    snapshot: dict[str, Any] = {}
    try:
        async with db.engine.connect() as conn:
            for name in _UNCHANGED_TABLES + tuple(EXTRA_TABLES):
                snapshot[name] = sorted(map(repr, (await conn.execute(tables[name].select())).all()))
            events = tables["audit_events"]
            refused = events.select().where(events.c.action != "login.failed")
            snapshot["audit_events"] = sorted(map(repr, (await conn.execute(refused)).all()))
            keys = list(
                (
                    await conn.execute(tables["uploads"].select().with_only_columns(tables["uploads"].c.key))
                ).scalars()
            )
    finally:
        await db.dispose()
    async with store(backend) as storage:
        snapshot["multipart"] = {k: sorted(await storage.list_multipart_uploads(k)) for k in keys}
        client = storage.client  # the test reads the whole bucket

        def objects() -> list[tuple[str, int, str]]:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=backend.settings.s3_bucket)
            found = [o for page in pages for o in page.get("Contents", [])]
            return sorted((o["Key"], o["Size"], o["ETag"]) for o in found)

        snapshot["objects"] = await asyncio.to_thread(objects)
    return snapshot


#: Tables added by later migrations that refusals must not change either.
EXTRA_TABLES: list[str] = []


async def expire(backend: Backend, model: type[UploadLink] | type[Upload], row_id: str) -> None:
    """Move an upload link's or an upload's expiry into the past, as time would."""
    async with backend_db(backend) as session:
        row = await session.get(model, row_id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.add(row)
        await session.commit()


async def expire_link(backend: Backend, link_id: str) -> None:
    await expire(backend, UploadLink, link_id)


async def expire_upload(backend: Backend, upload_id: str) -> None:
    await expire(backend, Upload, upload_id)


async def reap_a_dead_claim(backend: Backend, upload_id: str, status: str) -> ReapReport:
    """Leave ``upload_id`` claimed ``status`` by a worker that died an hour ago, and run the reaper
    once (it settles dead claims from what the store holds)."""
    async with backend_db(backend) as session:
        await session.exec(
            update(Upload)
            .where(col(Upload.id) == upload_id)
            .values(status=status, claim_token="a-dead-worker", claimed_at=utcnow() - timedelta(hours=1))
        )
        await session.commit()
    return await run_reaper(backend)


async def run_reaper(backend: Backend) -> ReapReport:
    """One run of the reaper on the backend (``upload-plane reap``)."""
    db, storage = create_database(backend.settings), S3Storage(backend.settings)
    try:
        return await Reaper(Uploads(db, storage, backend.settings)).run()
    finally:
        await storage.aclose()
        await db.dispose()


async def die_holding_a_claim(backend: Backend, upload_id: str, to: str, **declared: str | None) -> None:
    """A worker claims the upload (``completing``, ``aborting`` ...) as a request does, with what
    it declares, and dies: its claim is an hour old."""
    db = create_database(backend.settings)
    try:
        async with db.connect() as conn:
            held = await state.claim(
                conn,
                upload_id,
                [UploadStatus.UPLOADING],
                UploadStatus(to),
                utcnow() - timedelta(hours=1),
                **declared,
            )
    finally:
        await db.dispose()
    assert held is not None


#: What ``GET /files/{id}`` adds to a file once processing (``processing/``) has looked at it;
#: the answer of ``complete`` is the file as it completed, without them.
PROCESSING_FIELDS = {
    "processing": None,
    "sha256_source": None,
    "sha256_verified": None,
    "sha256_server": None,
    "detected_type": None,
    "type_matches": None,
    "media": None,
    "has_preview": False,
}


def without_processing(file: dict[str, Any]) -> dict[str, Any]:
    """``file`` as ``complete`` answers it: the processing fields at their defaults."""
    return {**file, **PROCESSING_FIELDS}
