"""Contract-level guarantees: body limits, OpenAPI completeness, key safety, recovery, outages."""

from __future__ import annotations

import asyncio
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from tests.api.helpers import (
    MIB,
    assert_problem,
    backend_db,
    complete,
    complete_behind_the_apis_back,
    db_snapshot,
    download,
    new_log,
    new_user,
    put_parts,
    sign,
    start_upload,
    upload_row,
)
from tests.conftest import Backend, embedded_backend
from tests.unit.test_rules import HOSTILE_NAMES
from upload_plane.models import Upload, utcnow

SIZE_LIMIT = 1 * MIB


def openapi(backend: Backend) -> dict[str, Any]:
    resp = httpx.get(f"{backend.base_url}/schema/openapi.json")
    assert resp.status_code == 200
    return dict(resp.json())


def concrete(path: str) -> str:
    """A path of the template that routes: part 1 for a part number, a made-up id for the rest."""
    path = path.replace("{part_number}", "1")
    return re.sub(r"\{[^}]+\}", "01a20000-0000-7000-8000-000000000000", path)


def test_no_endpoint_accepts_a_body_over_the_json_limit(backend: Backend) -> None:
    """File bytes cannot be routed through the API: every body-taking route refuses > 1 MiB."""
    body = b"{" + b" " * (SIZE_LIMIT + 1) + b"}"
    with new_user(backend) as api:
        token = api.headers["Authorization"]
    checked = 0
    for path, ops in openapi(backend)["paths"].items():
        for method in ops:
            if method.upper() not in ("POST", "PUT", "PATCH", "DELETE"):
                continue
            for content_type in ("application/json", "application/octet-stream"):
                resp = httpx.request(
                    method.upper(),
                    f"{backend.base_url}{concrete(path)}",
                    content=body,
                    headers={"Authorization": token, "Content-Type": content_type},
                )
                assert resp.status_code == 413, (method, path, resp.status_code, resp.text[:200])
                assert_problem(resp, 413, "REQUEST_TOO_LARGE")
                checked += 1
    assert checked >= 10


def test_openapi_lists_every_route_with_schemas(backend: Backend) -> None:
    doc = openapi(backend)
    paths = doc["paths"]
    expected = {
        ("post", "/api/v1/auth/login"),
        ("get", "/api/v1/me"),
        ("post", "/api/v1/users"),
        ("get", "/api/v1/users"),
        ("get", "/api/v1/users/{user_id}/sessions"),
        ("delete", "/api/v1/users/{user_id}/sessions/{session_id}"),
        ("get", "/api/v1/users/{user_id}/tokens"),
        ("delete", "/api/v1/users/{user_id}/tokens/{token_id}"),
        ("post", "/api/v1/users/{user_id}/revoke"),
        ("post", "/api/v1/cases"),
        ("get", "/api/v1/cases"),
        ("get", "/api/v1/cases/{case_id}"),
        ("patch", "/api/v1/cases/{case_id}"),
        ("post", "/api/v1/cases/{case_id}/logs"),
        ("get", "/api/v1/cases/{case_id}/logs"),
        ("get", "/api/v1/logs/{log_id}"),
        ("get", "/api/v1/logs/{log_id}/files"),
        ("get", "/api/v1/files/{file_id}"),
        ("get", "/api/v1/files/{file_id}/download"),
        ("delete", "/api/v1/files/{file_id}"),
        ("post", "/api/v1/logs/{log_id}/uploads"),
        ("get", "/api/v1/uploads"),
        ("get", "/api/v1/uploads/{upload_id}"),
        ("post", "/api/v1/uploads/{upload_id}/parts"),
        ("post", "/api/v1/uploads/{upload_id}/complete"),
        ("delete", "/api/v1/uploads/{upload_id}"),
        ("post", "/api/v1/logs/{log_id}/upload-links"),
        ("get", "/api/v1/logs/{log_id}/upload-links"),
        ("delete", "/api/v1/upload-links/{link_id}"),
        ("get", "/links/{token}"),
        ("get", "/s3/params"),
        ("post", "/s3/multipart"),
        ("get", "/s3/multipart/{upload_id}/{part_number}"),
        ("get", "/links/{token}/s3/multipart/{upload_id}/{part_number}"),
        ("get", "/health"),
        ("get", "/ready"),
    }
    listed = {(m, p) for p, ops in paths.items() for m in ops}
    assert expected <= listed, expected - listed
    schemas = doc["components"]["schemas"]
    for method, path in expected:
        op = paths[path][method]
        bodiless = ("/api/v1/uploads/{upload_id}/complete", "/api/v1/users/{user_id}/revoke")
        if method in ("post", "patch") and path not in bodiless:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[-1] in schemas, (method, path)
        ok = [code for code in op["responses"] if code.startswith("2")]
        assert ok, (method, path)
        if method != "delete" and path not in ("/health", "/ready"):
            content = op["responses"][ok[0]].get("content", {})
            assert content, (method, path)
    assert "bearer" in doc["components"]["securitySchemes"]


def test_hostile_filenames_keep_keys_under_the_log(backend: Backend) -> None:
    # Empty names and names with NUL are refused (tests/api/test_hostile_corpora.py); the rest are names.
    with new_user(backend) as api:
        log = new_log(api)
        for name in [n for n in HOSTILE_NAMES if n and "\x00" not in n]:
            resp = api.post(f"/logs/{log['id']}/uploads", json={"filename": name, "size": 3})
            assert resp.status_code == 201, (name[:40], resp.text[:300])
            upload = resp.json()
            prefix = f"cases/{log['case_id']}/logs/{log['id']}/{upload['file_id']}/"
            assert upload["key"].startswith(prefix)
            assert upload["key"][len(prefix) :]
            assert upload["filename"] == name
            assert api.get(f"/files/{upload['file_id']}").json()["filename"] == name


def test_a_part_of_the_wrong_size_never_becomes_a_file(backend: Backend, http: httpx.Client) -> None:
    """MinIO refuses a body that differs from the signed Content-Length; moto accepts it, and then
    complete refuses with PART_SIZE_MISMATCH. Either way no file is made from the wrong part."""
    data = os.urandom(5 * MIB + 5)
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], data, part_size=5 * MIB)
        put_parts(http, api, upload, data, [1])
        part = sign(api, upload["id"], [2])[2]
        resp = http.put(part["url"], content=b"123456")  # 6 bytes where 5 were signed
        if backend.name == "real":
            assert resp.status_code == 403, resp.text
            assert_problem(complete(api, upload["id"]), 409, "PARTS_MISSING")
        else:
            assert resp.status_code == 200
            body = assert_problem(complete(api, upload["id"]), 409, "PART_SIZE_MISMATCH")
            assert body["parts"] == [{"part_number": 2, "expected_size": 5, "size": 6}]
        assert api.get(f"/files/{upload['file_id']}").json()["status"] == "uploading"
        put_parts(http, api, upload, data, [2])
        done = complete(api, upload["id"])
        assert done.status_code == 200
        assert download(http, api, done.json()["id"]) == data


def test_complete_whose_response_was_lost_is_recovered(backend: Backend, http: httpx.Client) -> None:
    """The store completed the upload but the API never recorded it (crash, lost response):
    the next complete finds the object with HeadObject and finishes the file."""
    data = os.urandom(1000)
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], data)
        put_parts(http, api, upload, data, [1])
        row = asyncio.run(upload_row(backend, upload["id"]))
        asyncio.run(complete_behind_the_apis_back(backend, row.key, row.s3_upload_id))
        resp = complete(api, upload["id"])
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "available"
        assert download(http, api, resp.json()["id"]) == data


@pytest.fixture
def fragile_backend(tmp_path: Path) -> Any:
    """An embedded backend of its own, so a test may take its store away."""
    with embedded_backend(tmp_path) as b:
        yield b


@pytest.mark.expects_5xx
def test_storage_outage_is_503_and_changes_nothing(fragile_backend: Backend, http: httpx.Client) -> None:
    backend = fragile_backend
    data = os.urandom(100)
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], data)
        put_parts(http, api, upload, data, [1])
        before = asyncio.run(db_snapshot(backend))
        s3_host = backend.settings.s3_endpoint_url
        from tests.conftest import stop_embedded_s3

        stop_embedded_s3(s3_host)
        assert_problem(
            api.post(f"/logs/{log['id']}/uploads", json={"filename": "a", "size": 1}),
            503,
            "STORAGE_UNAVAILABLE",
        )
        assert_problem(complete(api, upload["id"]), 503, "STORAGE_UNAVAILABLE")
        assert_problem(api.get(f"/uploads/{upload['id']}"), 503, "STORAGE_UNAVAILABLE")
        assert_problem(api.delete(f"/uploads/{upload['id']}"), 503, "STORAGE_UNAVAILABLE")
        assert asyncio.run(db_snapshot(backend)) == before
        state = api.get(f"/files/{upload['file_id']}").json()
        assert state["status"] == "uploading"
        ready = httpx.get(f"{backend.base_url}/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "ok"


def test_status_counts_a_wrong_size_part_as_missing(backend: Backend, http: httpx.Client) -> None:
    """Whether the store refuses a body that differs from the signed size (MinIO) or keeps it
    (moto), a resuming client is told to send that part again."""
    data = os.urandom(5 * MIB + 5)
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], data, part_size=5 * MIB)
        put_parts(http, api, upload, data, [2])
        part = sign(api, upload["id"], [1])[1]
        put = http.put(part["url"], content=b"short")
        assert put.status_code == (403 if backend.name == "real" else 200)
        state = api.get(f"/uploads/{upload['id']}").json()["parts"]
        assert state["missing"] == [1]
        assert [p["part_number"] for p in state["uploaded"]] == [2]
        assert state["bytes_uploaded"] == 5


def test_content_type_allow_list(tmp_path: Path) -> None:
    allowed = ("video/*", "image/jpeg")
    with embedded_backend(tmp_path, allowed_content_types=allowed) as backend, new_user(backend) as api:
        uploads = f"/logs/{new_log(api)['id']}/uploads"
        ok = {"filename": "a.mp4", "size": 1, "content_type": "video/mp4"}
        assert api.post(uploads, json=ok).status_code == 201
        bad = {"filename": "a.exe", "size": 1, "content_type": "application/x-msdownload"}
        assert_problem(api.post(uploads, json=bad), 415, "CONTENT_TYPE_NOT_ALLOWED")
        untyped = {"filename": "a.bin", "size": 1}  # defaults to application/octet-stream
        assert_problem(api.post(uploads, json=untyped), 415, "CONTENT_TYPE_NOT_ALLOWED")


async def _stick_in_completing(backend: Backend, upload_id: str, since_minutes: int) -> None:
    """Leave the row as a completer that crashed between claiming and finishing would."""
    async with backend_db(backend) as session:
        row = (await session.exec(select(Upload).where(Upload.id == upload_id))).one()
        row.status = "completing"
        row.claimed_at = utcnow() - timedelta(minutes=since_minutes)
        session.add(row)
        await session.commit()


def test_a_crashed_completer_is_taken_over(backend: Backend, http: httpx.Client) -> None:
    data = os.urandom(5000)
    with new_user(backend) as api:
        upload = start_upload(api, new_log(api)["id"], data)
        put_parts(http, api, upload, data, [1])
        asyncio.run(_stick_in_completing(backend, upload["id"], since_minutes=10))
        status = api.get(f"/uploads/{upload['id']}").json()
        assert status["status"] == "completing"
        assert status["parts"]["missing"] == []
        resp = complete(api, upload["id"])
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "available"
        assert download(http, api, resp.json()["id"]) == data
