"""The upload flow through the API, on both backends: round trips, resume, failures."""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api.helpers import (
    MIB,
    admin,
    assert_problem,
    complete,
    download,
    new_log,
    new_user,
    put_parts,
    sign,
    start_upload,
    store,
    upload_file,
)
from tests.conftest import Backend
from upload_plane.storage import StoredObject

PART = 5 * MIB


@pytest.mark.parametrize(
    ("size", "expected_parts"),
    [
        pytest.param(0, 1, id="0B"),
        pytest.param(1, 1, id="1B"),
        pytest.param(PART, 1, id="exactly-one-part"),
        pytest.param(PART + 1, 2, id="one-part-plus-one-byte"),
        pytest.param(50 * MIB, 10, id="50MiB"),
    ],
)
def test_round_trip_is_byte_identical(
    backend: Backend, http: httpx.Client, size: int, expected_parts: int
) -> None:
    data = os.urandom(size)
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], data, part_size=PART)
        assert upload["part_count"] == expected_parts
        assert upload["part_size"] == PART
        assert upload["status"] == "uploading"
        put_parts(http, api, upload, data, list(range(1, expected_parts + 1)))
        resp = complete(api, upload["id"])
        assert resp.status_code == 200, resp.text
        file = resp.json()
        assert file["status"] == "available"
        assert file["size"] == size
        assert file["sha256"] == hashlib.sha256(data).hexdigest()
        assert download(http, api, file["id"]) == data
        listed = api.get(f"/logs/{log['id']}/files", params={"status": "available"}).json()["items"]
        assert [f["id"] for f in listed] == [file["id"]]


def test_signed_parts_carry_exact_sizes_and_headers(backend: Backend) -> None:
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], b"x" * (2 * PART + 7), part_size=PART)
        signed = sign(api, upload["id"], [3, 1])
        assert [signed[n]["size"] for n in (1, 3)] == [PART, 7]
        assert signed[3]["headers"] == {"Content-Length": "7"}
        assert signed[3]["method"] == "PUT"
        assert "partNumber=3" in signed[3]["url"] and "content-length" in signed[3]["url"]


def test_resume_uploads_only_missing_parts(backend: Backend, http: httpx.Client) -> None:
    data = os.urandom(6 * PART + 123)
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], data, part_size=PART)
        assert upload["part_count"] == 7
        # The first client sends three parts out of order, in parallel, then goes away.
        put_parts(http, api, upload, data, [6, 2, 4], parallel=3)
        token = api.headers["Authorization"]

    with httpx.Client(base_url=f"{backend.base_url}/api/v1", headers={"Authorization": token}) as api2:
        resumable = api2.get("/uploads", params={"status": "uploading", "log_id": log["id"]}).json()
        assert [u["id"] for u in resumable["items"]] == [upload["id"]]
        state = api2.get(f"/uploads/{upload['id']}").json()
        assert state["parts"]["missing"] == [1, 3, 5, 7]
        assert [p["part_number"] for p in state["parts"]["uploaded"]] == [2, 4, 6]
        assert state["parts"]["bytes_uploaded"] == 3 * PART
        put_parts(http, api2, upload, data, state["parts"]["missing"], parallel=4)
        assert api2.get(f"/uploads/{upload['id']}").json()["parts"]["missing"] == []
        resp = complete(api2, upload["id"])
        assert resp.status_code == 200, resp.text
        assert download(http, api2, resp.json()["id"]) == data


def test_complete_with_missing_parts_names_them(backend: Backend, http: httpx.Client) -> None:
    data = os.urandom(3 * PART)
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], data, part_size=PART)
        put_parts(http, api, upload, data, [2])
        body = assert_problem(complete(api, upload["id"]), 409, "PARTS_MISSING")
        assert body["missing_parts"] == [1, 3]
        # Nothing changed: the upload still accepts the missing parts and completes.
        assert api.get(f"/uploads/{upload['id']}").json()["status"] == "uploading"
        put_parts(http, api, upload, data, [1, 3])
        assert complete(api, upload["id"]).status_code == 200


def test_concurrent_and_repeated_completes_return_the_same_file(backend: Backend, http: httpx.Client) -> None:
    """What clients see. That the store saw one CompleteMultipartUpload is counted at the store by
    tests/real/test_races.py and tests/unit/test_state_machine.py."""
    data = os.urandom(PART + 10)
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], data, part_size=PART)
        put_parts(http, api, upload, data, [1, 2])
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda _: complete(api, upload["id"]), range(4)))
        assert [r.status_code for r in results] == [200] * 4, [r.text for r in results]
        assert len({r.json()["id"] for r in results}) == 1
        again = complete(api, upload["id"])
        assert again.status_code == 200 and again.json()["id"] == results[0].json()["id"]
        assert download(http, api, again.json()["id"]) == data


@pytest.mark.parametrize("bad", [0, 3, 10_001, -1])
def test_part_numbers_out_of_range_are_refused(backend: Backend, bad: int) -> None:
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], b"y" * (PART + 1), part_size=PART)
        resp = api.post(f"/uploads/{upload['id']}/parts", json={"part_numbers": [1, bad]})
        assert_problem(resp, 400, "VALIDATION_ERROR")


def test_size_above_limit_is_413(backend: Backend) -> None:
    with new_user(backend) as api:
        log = new_log(api)
        too_big = backend.settings.max_file_size + 1
        resp = api.post(f"/logs/{log['id']}/uploads", json={"filename": "huge.bin", "size": too_big})
        assert_problem(resp, 413, "FILE_TOO_LARGE")
        assert api.get("/uploads", params={"log_id": log["id"]}).json()["items"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"filename": "a", "size": -1},
        {"filename": "a"},
        {"filename": "a", "size": 1, "sha256": "not-hex"},
        {"filename": "a", "size": 1, "content_type": "no slash"},
        {"filename": "a", "size": 1, "surprise": True},
    ],
)
def test_bad_init_bodies_are_400(backend: Backend, body: dict[str, object]) -> None:
    with new_user(backend) as api:
        log = new_log(api)
        assert_problem(api.post(f"/logs/{log['id']}/uploads", json=body), 400, "VALIDATION_ERROR")


def test_unknown_ids_are_404(backend: Backend) -> None:
    missing = "01a20000-0000-7000-8000-000000000000"
    with new_user(backend) as api:
        for method, path in [
            ("GET", f"/cases/{missing}"),
            ("GET", f"/logs/{missing}"),
            ("GET", f"/logs/{missing}/files"),
            ("POST", f"/cases/{missing}/logs"),
            ("GET", f"/files/{missing}"),
            ("GET", f"/files/{missing}/download"),
            ("GET", f"/uploads/{missing}"),
            ("DELETE", f"/uploads/{missing}"),
        ]:
            assert_problem(
                api.request(method, path, json={"name": "x"} if method == "POST" else None), 404, "NOT_FOUND"
            )
        assert_problem(api.post(f"/uploads/{missing}/parts", json={"part_numbers": [1]}), 404, "NOT_FOUND")
        assert_problem(api.post(f"/uploads/{missing}/complete", json={}), 404, "NOT_FOUND")
        assert_problem(
            api.post(f"/logs/{missing}/uploads", json={"filename": "a", "size": 1}), 404, "NOT_FOUND"
        )


def test_requests_without_a_valid_token_are_401(backend: Backend) -> None:
    with httpx.Client(base_url=f"{backend.base_url}/api/v1") as anon:
        assert_problem(anon.get("/cases"), 401, "UNAUTHENTICATED")
        assert_problem(anon.post("/cases", json={"title": "x"}), 401, "UNAUTHENTICATED")
        bad = {"Authorization": "Bearer not-a-token"}
        assert_problem(anon.get("/me", headers=bad), 401, "UNAUTHENTICATED")
        wrong = anon.post("/auth/login", json={"username": "admin", "password": "wrong-password"})
        assert_problem(wrong, 401, "UNAUTHENTICATED")


def test_other_users_see_nothing(backend: Backend, http: httpx.Client) -> None:
    data = os.urandom(100)
    with new_user(backend) as owner, new_user(backend) as stranger:
        log = new_log(owner)
        file = upload_file(http, owner, log["id"], data)
        pending = start_upload(owner, log["id"], data)
        for path in [
            f"/cases/{log['case_id']}",
            f"/cases/{log['case_id']}/logs",
            f"/logs/{log['id']}",
            f"/logs/{log['id']}/files",
            f"/files/{file['id']}",
            f"/files/{file['id']}/download",
            f"/uploads/{pending['id']}",
        ]:
            assert_problem(stranger.get(path), 404, "NOT_FOUND")
        assert_problem(
            stranger.post(f"/logs/{log['id']}/uploads", json={"filename": "a", "size": 1}), 404, "NOT_FOUND"
        )
        assert_problem(
            stranger.post(f"/uploads/{pending['id']}/parts", json={"part_numbers": [1]}), 404, "NOT_FOUND"
        )
        assert_problem(stranger.post(f"/uploads/{pending['id']}/complete", json={}), 404, "NOT_FOUND")
        assert_problem(stranger.delete(f"/uploads/{pending['id']}"), 404, "NOT_FOUND")
        assert stranger.get("/cases").json()["items"] == []
        # ...while an admin sees everything.
        with admin(backend) as adm:
            assert adm.get(f"/files/{file['id']}").status_code == 200


def test_aborted_upload_cannot_be_signed_or_completed(backend: Backend, http: httpx.Client) -> None:
    data = os.urandom(10)
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], data)
        put_parts(http, api, upload, data, [1])
        assert api.delete(f"/uploads/{upload['id']}").status_code == 204
        assert api.delete(f"/uploads/{upload['id']}").status_code == 204  # idempotent
        assert_problem(
            api.post(f"/uploads/{upload['id']}/parts", json={"part_numbers": [1]}),
            409,
            "UPLOAD_NOT_UPLOADING",
        )
        assert_problem(complete(api, upload["id"]), 409, "UPLOAD_NOT_UPLOADING")
        file = api.get(f"/files/{upload['file_id']}").json()
        assert file["status"] == "failed"
        assert_problem(api.get(f"/files/{file['id']}/download"), 409, "FILE_NOT_AVAILABLE")


def test_download_without_redirect_and_content_disposition(backend: Backend, http: httpx.Client) -> None:
    data = b"evidence"
    with new_user(backend) as api:
        log = new_log(api)
        file = upload_file(http, api, log["id"], data, filename="Zeugenaussage für Gericht.txt")
        link = api.get(f"/files/{file['id']}/download", params={"redirect": "false"})
        assert link.status_code == 200
        got = http.get(link.json()["url"])
        assert got.content == data
        disposition = got.headers["content-disposition"]
        assert disposition.startswith("attachment;")
        assert "filename*=UTF-8''Zeugenaussage%20f%C3%BCr%20Gericht.txt" in disposition


def test_pagination_walks_every_case_once(backend: Backend) -> None:
    with new_user(backend) as api:
        created = {api.post("/cases", json={"title": f"c{i}"}).json()["id"] for i in range(7)}
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = api.get("/cases", params=params).json()
            seen += [c["id"] for c in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(created)
        assert len(seen) == len(created)
        assert_problem(api.get("/cases", params={"limit": 501}), 400, "VALIDATION_ERROR")
        assert_problem(api.get("/cases", params={"cursor": "%%%"}), 400, "VALIDATION_ERROR")


def test_only_admins_delete_files_and_the_object_goes_too(backend: Backend, http: httpx.Client) -> None:
    data = os.urandom(300)
    with new_user(backend) as owner, new_user(backend) as stranger, admin(backend) as adm:
        log = new_log(owner)
        file = upload_file(http, owner, log["id"], data)
        stored_url = owner.get(f"/files/{file['id']}/download").headers["location"]
        assert_problem(owner.delete(f"/files/{file['id']}"), 403, "FORBIDDEN")
        assert_problem(stranger.delete(f"/files/{file['id']}"), 404, "NOT_FOUND")
        assert http.get(stored_url).status_code == 200

        assert adm.delete(f"/files/{file['id']}").status_code == 204
        assert_problem(owner.get(f"/files/{file['id']}"), 404, "NOT_FOUND")
        assert_problem(adm.delete(f"/files/{file['id']}"), 404, "NOT_FOUND")
        assert asyncio.run(_head(backend, file["key"])) is None  # object gone
        assert owner.get(f"/logs/{log['id']}/files").json()["items"] == []

        pending = start_upload(owner, log["id"], data)
        put_parts(http, owner, pending, data, [1])
        assert adm.delete(f"/files/{pending['file_id']}").status_code == 204
        assert_problem(owner.get(f"/uploads/{pending['id']}"), 404, "NOT_FOUND")


async def _head(backend: Backend, key: str) -> StoredObject | None:
    async with store(backend) as storage:
        return await storage.head_object(key)
