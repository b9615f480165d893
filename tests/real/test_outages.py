"""With the database or MinIO stopped, API calls answer 503 problem+json and change nothing; after
restart, the interrupted uploads resume and complete (lifecycle at scale, acceptance point 6).

The servers really go away: a MariaDB or MinIO of the test's own is stopped (SIGTERM, as an operator
or an orchestrator stops it) or killed (SIGKILL, a crash) while an upload is part-way, and later
started again on the same port and data directory. (``test_database_outage.py`` locks the API's
database account instead, which leaves the server itself up.)

"Changes nothing" is checked where the state lives: for a database outage, in the store (the open
upload's parts, no object, and MinIO's own count of the requests that change something); for a
store outage, in the database (uploads, files and audit events).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlmodel import func, select

from tests.api.helpers import (
    MIB,
    admin,
    assert_problem,
    assert_store_agrees,
    backend_db,
    complete,
    download,
    new_log,
    new_user,
    put_parts,
    remember_s3_upload_id,
    sign,
    start_upload,
    store,
    upload_file,
    upload_row,
)
from tests.conftest import Backend, real_settings, serve
from tests.services import MariaDB, MinIO, ServerProcess
from upload_plane.models import AuditEvent, File, Upload

pytestmark = pytest.mark.real

PART_SIZE = 5 * MIB
DATA_SIZE = 2 * PART_SIZE + MIB  # three parts; the outage comes after the first


def process_of(server: MariaDB | MinIO) -> ServerProcess:
    assert server.process is not None and server.process.running
    return server.process


def take_down(process: ServerProcess, how: str) -> None:
    if how == "stop":
        process.stop()
    else:
        process.kill()
    assert not process.running


def begin_upload(backend: Backend, http: httpx.Client) -> tuple[httpx.Client, dict[str, Any], bytes]:
    """A user with an upload of three parts, the first of them in the store."""
    data = secrets.token_bytes(DATA_SIZE)
    api = new_user(backend)
    upload = start_upload(api, new_log(api)["id"], data, part_size=PART_SIZE)
    assert upload["part_count"] == 3
    put_parts(http, api, upload, data, [1])
    remember_s3_upload_id(backend, upload)
    return api, upload, data


def resume_and_finish(
    backend: Backend, http: httpx.Client, api: httpx.Client, upload: dict[str, Any], data: bytes
) -> None:
    """What a returning client does: ask which parts the store holds, send the others, complete;
    then the file reads back identical and the rows agree with the store."""
    state = api.get(f"/uploads/{upload['id']}")
    assert state.status_code == 200, state.text
    parts = state.json()["parts"]
    assert [p["part_number"] for p in parts["uploaded"]] == [1]
    assert parts["missing"] == [2, 3]
    put_parts(http, api, upload, data, parts["missing"])
    done = complete(api, upload["id"])
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "available"
    assert download(http, api, upload["file_id"]) == data
    assert asyncio.run(assert_store_agrees(backend, upload)) == "completed"


def ready(backend: Backend) -> httpx.Response:
    return httpx.get(f"{backend.base_url}/ready", timeout=30)


async def db_state(backend: Backend) -> dict[str, Any]:
    """Every upload and file row as the state machine sees it, and the number of audit events."""
    async with backend_db(backend) as session:
        uploads = await session.exec(
            select(Upload.id, Upload.status, Upload.s3_upload_id, Upload.claim_token, Upload.claimed_at)
        )
        files = await session.exec(select(File.id, File.status, File.etag))
        events = await session.exec(select(func.count()).select_from(AuditEvent))
        return {
            "uploads": sorted(tuple(map(str, row)) for row in uploads.all()),
            "files": sorted(tuple(map(str, row)) for row in files.all()),
            "audit events": events.one(),
        }


# --- the database stops ---------------------------------------------------------------------------


@pytest.fixture
def db_outage_backend(private_mariadb: MariaDB, minio: MinIO) -> Iterator[Backend]:
    """An API server on a MariaDB of the test's own (the session's MinIO)."""
    settings = real_settings(private_mariadb.create_database("outage_stop"), minio)
    with serve(settings) as url:
        yield Backend("real", settings, url)


def store_writes(minio: MinIO) -> dict[str, int]:
    """How many requests of each kind that changes something (not Get/Head/List) reached the store,
    by MinIO's own count (metrics v3: live; v2's counters are cached for 10 s)."""
    with urllib.request.urlopen(f"{minio.endpoint}/minio/metrics/v3/api/requests", timeout=10) as resp:
        text = resp.read().decode()
    counts = {
        name: int(float(value))
        for name, value in re.findall(r'^minio_api_requests_total\{name="(\w+)".*\} (\S+)$', text, re.M)
    }
    return {name: n for name, n in counts.items() if not name.startswith(("Get", "Head", "List"))}


async def store_state(backend: Backend, upload: dict[str, Any], s3_upload_id: str) -> tuple[Any, Any]:
    """The open upload's parts and the upload's object, as the store has them."""
    async with store(backend) as storage:
        return await storage.list_parts(upload["key"], s3_upload_id), await storage.head_object(upload["key"])


@pytest.mark.expects_5xx
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_stopped_database_is_503_changes_nothing_and_uploads_resume_after_restart(
    db_outage_backend: Backend, private_mariadb: MariaDB, minio: MinIO, http: httpx.Client, how: str
) -> None:
    backend = db_outage_backend
    database = process_of(private_mariadb)
    api, upload, data = begin_upload(backend, http)
    s3_upload_id = asyncio.run(upload_row(backend, upload["id"])).s3_upload_id
    assert s3_upload_id
    in_store = asyncio.run(store_state(backend, upload, s3_upload_id))
    assert [p.part_number for p in in_store[0]] == [1] and in_store[1] is None
    rows = asyncio.run(db_state(backend))
    writes = store_writes(minio)
    assert writes["NewMultipartUpload"] >= 1 and writes["PutObjectPart"] >= 1  # counted live

    take_down(database, how)
    calls = {
        "start": lambda: api.post(
            f"/logs/{upload['log_id']}/uploads",
            json={"filename": "more.bin", "size": DATA_SIZE, "part_size": PART_SIZE},
        ),
        "sign": lambda: api.post(f"/uploads/{upload['id']}/parts", json={"part_numbers": [2, 3]}),
        "progress": lambda: api.get(f"/uploads/{upload['id']}"),
        "list": lambda: api.get("/uploads", params={"status": "uploading"}),
        "complete": lambda: complete(api, upload["id"]),
        "abort": lambda: api.delete(f"/uploads/{upload['id']}"),
        "file": lambda: api.get(f"/files/{upload['file_id']}"),
        "download": lambda: api.get(f"/files/{upload['file_id']}/download"),
        "log files": lambda: api.get(f"/logs/{upload['log_id']}/files"),
        "cases": lambda: api.get("/cases"),
        "new case": lambda: api.post("/cases", json={"title": "during the outage"}),
        "me": lambda: api.get("/me"),
        "login": lambda: httpx.post(
            f"{backend.base_url}/api/v1/auth/login", json={"username": "admin", "password": "x"}, timeout=60
        ),
    }
    for name, call in calls.items():
        resp = call()
        assert resp.headers.get("retry-after"), name
        assert_problem(resp, 503, "DATABASE_UNAVAILABLE")
    not_ready = ready(backend)
    assert not_ready.status_code == 503, not_ready.text
    assert not_ready.json()["checks"]["database"] != "ok"
    assert not_ready.json()["checks"]["storage"] == "ok"
    # Nothing reached the store that changes something, and what it holds is as it was.
    assert store_writes(minio) == writes
    assert asyncio.run(store_state(backend, upload, s3_upload_id)) == in_store

    database.start()  # the same port and data directory
    assert asyncio.run(db_state(backend)) == rows
    assert ready(backend).status_code == 200
    resume_and_finish(backend, http, api, upload, data)
    api.close()


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_uploads_resume_at_once_after_a_database_restart_the_api_did_not_notice(
    db_outage_backend: Backend, private_mariadb: MariaDB, http: httpx.Client, how: str
) -> None:
    """The database goes away and comes back between two calls: the API's pooled connections are
    all dead, yet the next calls of the upload flow are served (no 5xx: not marked expects_5xx)."""
    backend = db_outage_backend
    database = process_of(private_mariadb)
    api, upload, data = begin_upload(backend, http)
    take_down(database, how)
    database.start()
    resume_and_finish(backend, http, api, upload, data)
    api.close()


# --- the store stops ------------------------------------------------------------------------------


@pytest.fixture
def store_outage_backend(mariadb: MariaDB, private_minio: MinIO) -> Iterator[Backend]:
    """An API server on a MinIO of the test's own (a database of its own on the session's MariaDB)."""
    name = f"outage_store_{secrets.token_hex(4)}"
    settings = real_settings(mariadb.create_database(name), private_minio)
    try:
        with serve(settings) as url:
            yield Backend("real", settings, url)
    finally:
        mariadb.execute(f"DROP DATABASE IF EXISTS {name}")


@pytest.mark.expects_5xx
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_stopped_store_is_503_changes_nothing_and_uploads_resume_after_restart(
    store_outage_backend: Backend, private_minio: MinIO, http: httpx.Client, how: str
) -> None:
    backend = store_outage_backend
    minio = process_of(private_minio)
    administrator = admin(backend)
    kept = upload_file(http, administrator, new_log(administrator)["id"], b"evidence kept")
    api, upload, data = begin_upload(backend, http)
    before = asyncio.run(db_state(backend))
    assert len(before["uploads"]) == 2

    take_down(minio, how)
    calls = {
        "start": lambda: api.post(
            f"/logs/{upload['log_id']}/uploads",
            json={"filename": "more.bin", "size": DATA_SIZE, "part_size": PART_SIZE},
        ),
        "progress": lambda: api.get(f"/uploads/{upload['id']}"),
        "complete": lambda: complete(api, upload["id"]),
        "abort": lambda: api.delete(f"/uploads/{upload['id']}"),
        "delete a file": lambda: administrator.delete(f"/files/{kept['id']}"),
    }
    for name, call in calls.items():
        resp = call()
        assert resp.headers.get("retry-after"), name
        assert_problem(resp, 503, "STORAGE_UNAVAILABLE")
    # Signing is local (no store call): part URLs are still handed out, and fail at the store.
    signed = sign(api, upload["id"], [2])
    with pytest.raises(httpx.TransportError):
        http.put(signed[2]["url"], content=data[PART_SIZE : 2 * PART_SIZE], headers=signed[2]["headers"])
    not_ready = ready(backend)
    assert not_ready.status_code == 503, not_ready.text
    assert not_ready.json()["checks"]["storage"] != "ok"
    assert not_ready.json()["checks"]["database"] == "ok"
    assert asyncio.run(db_state(backend)) == before

    minio.start()  # the same port and data directory
    assert ready(backend).status_code == 200
    resume_and_finish(backend, http, api, upload, data)
    api.close()
    # The file whose delete failed is whole, and can be deleted now.
    assert download(http, administrator, kept["id"]) == b"evidence kept"
    assert administrator.delete(f"/files/{kept['id']}").status_code == 204
    administrator.close()
