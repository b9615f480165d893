"""Batches over HTTP on both backends (SQLite + moto, MariaDB + MinIO): small files started as one
conditional PUT each, PUT straight to the store, completed by one request; refusals per file that
change nothing else; repeats that answer the same uploads; a PUT URL that can never write again once
its file is recorded."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    assert_problem,
    download,
    new_log,
    new_user,
    put_parts,
    start_upload,
    store,
)
from tests.api.test_uppy_contract import endpoint, new_link
from tests.conftest import Backend, embedded_backend, real_backend

MIB = 1024 * 1024


def small_files(n: int, *, size: int = 2000) -> list[tuple[dict[str, Any], bytes]]:
    out = []
    for i in range(n):
        data = os.urandom(size + i)
        entry = {
            "filename": f"DCIM/IMG_{i:04d}.jpg",
            "size": len(data),
            "content_type": "image/jpeg",
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        out.append((entry, data))
    return out


def start(
    api: httpx.Client, path: str, entries: list[dict[str, Any]], key: str | None = None
) -> dict[str, Any]:
    resp = api.post(path, json={"files": entries}, headers={"Idempotency-Key": key} if key else {})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def put(http: httpx.Client, item: dict[str, Any], data: bytes) -> int:
    return http.put(item["put"]["url"], content=data, headers=item["put"]["headers"]).status_code


def complete(api: httpx.Client, ids: list[str], path: str = "/uploads/batch/complete") -> dict[str, Any]:
    resp = api.post(path, json={"uploads": [{"id": i} for i in ids]})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_small_files_go_as_one_put_each_and_download_byte_identical(
    backend: Backend, http: httpx.Client
) -> None:
    files = small_files(12)
    with new_user(backend) as api:
        log = new_log(api)
        started = start(api, f"/logs/{log['id']}/uploads/batch", [e for e, _ in files])
        assert (started["started"], started["refused"]) == (12, 0)
        items = started["items"]
        assert [i["index"] for i in items] == list(range(12))
        assert {i["upload"]["kind"] for i in items} == {"put"}
        assert all(i["parts"] is None for i in items)
        with ThreadPoolExecutor(6) as pool:
            sent = list(
                pool.map(lambda pair: put(http, *pair), zip(items, [d for _, d in files], strict=True))
            )
        assert sent == [200] * 12
        done = complete(api, [i["upload"]["id"] for i in items])
        assert (done["done"], done["missing"], done["refused"]) == (12, 0, 0)
        for item, (entry, data) in zip(done["items"], files, strict=True):
            file = item["file"]
            assert (file["filename"], file["size"], file["sha256"], file["status"]) == (
                entry["filename"], len(data), entry["sha256"], "available",
            )  # fmt: skip
            # MinIO checked the signed SHA-256 on the PUT; moto checks nothing and says so.
            assert file["verified_by"] == ("store" if backend.name == "real" else None)
            assert download(http, api, file["id"]) == data
        trail = api.get(f"/cases/{log['case_id']}/audit", params={"limit": 500}).json()["items"]
        actions = [e["action"] for e in trail if e["subject_id"] in {i["upload"]["id"] for i in items}]
        assert sorted(actions) == ["upload.completed"] * 12 + ["upload.started"] * 12
    assert done["items"][0]["file"]["key"].startswith(f"cases/{log['case_id']}/logs/{log['id']}/")


@pytest.mark.anyio
async def test_a_put_url_replayed_after_its_file_is_recorded_is_refused_by_the_store(
    backend: Backend, http: httpx.Client
) -> None:
    [(entry, data)] = small_files(1)
    with new_user(backend) as api:
        log = new_log(api)
        [item] = start(api, f"/logs/{log['id']}/uploads/batch", [entry])["items"]
        assert item["put"]["headers"]["If-None-Match"] == "*"
        assert put(http, item, data) == 200
        [done] = complete(api, [item["upload"]["id"]])["items"]
        async with store(backend) as s3:
            before = await s3.head_object(item["upload"]["key"])
        for replay in (os.urandom(len(data)), data):  # other bytes, or the same again
            assert put(http, item, replay) == 412
        async with store(backend) as s3:
            assert await s3.head_object(item["upload"]["key"]) == before
        assert download(http, api, done["file"]["id"]) == data


def test_the_same_batch_sent_again_answers_the_same_uploads_even_at_once(
    backend: Backend, http: httpx.Client
) -> None:
    files = small_files(30)
    entries = [e for e, _ in files]
    key = secrets.token_urlsafe(16)
    with new_user(backend) as api:
        log = new_log(api)
        path = f"/logs/{log['id']}/uploads/batch"
        with ThreadPoolExecutor(4) as pool:  # a client that sent it again before the first answered
            answers = list(pool.map(lambda _: start(api, path, entries, key), range(4)))
        ids = [[i["upload"]["id"] for i in a["items"]] for a in answers]
        assert all(one == ids[0] for one in ids), "each send must answer the same uploads"
        assert len(set(ids[0])) == 30
        put(http, answers[0]["items"][0], files[0][1])
        complete(api, ids[0][:1])
        again = start(api, path, [*entries[:29], {**entries[29], "size": 1}], key)
        assert [i["upload"]["id"] for i in again["items"][:29]] == ids[0][:29]
        assert again["items"][0]["upload"]["status"] == "completed" and again["items"][0]["put"] is None
        assert again["items"][1]["put"] is not None  # a fresh URL for an open one
        assert again["items"][29]["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        listed = api.get(f"/logs/{log['id']}/files", params={"limit": 500}).json()["items"]
        assert len(listed) == 30


def test_a_batch_complete_answers_each_upload(backend: Backend, http: httpx.Client) -> None:
    files = small_files(3)
    big = os.urandom(6 * MIB)
    with new_user(backend) as api, new_user(backend) as other:
        log = new_log(api)
        items = start(api, f"/logs/{log['id']}/uploads/batch", [e for e, _ in files])["items"]
        multipart = start_upload(api, log["id"], big, part_size=5 * MIB)
        put_parts(http, api, multipart, big, [1, 2])
        for item, (_, data) in zip(items[:2], files, strict=False):
            assert put(http, item, data) == 200
        theirs = start(other, f"/logs/{new_log(other)['id']}/uploads/batch", [files[0][0]])["items"][0]
        ids = [*(i["upload"]["id"] for i in items), multipart["id"], theirs["upload"]["id"], "no-such-upload"]
        done = complete(api, ids)
        assert [i["status"] for i in done["items"]] == [
            "done",
            "done",
            "missing",
            "done",
            "refused",
            "refused",
        ]
        assert done["items"][2]["missing_parts"] == [1]
        assert done["items"][2]["error"]["code"] == "PARTS_MISSING"
        assert done["items"][3]["file"]["size"] == len(big)
        assert [i["error"]["code"] for i in done["items"][4:]] == ["NOT_FOUND", "NOT_FOUND"]
        assert [i["error"]["status"] for i in done["items"][4:]] == [404, 404]
        # Handed back: the missing one completes once its PUT lands; the others answer the same.
        assert put(http, items[2], files[2][1]) == 200
        again = complete(api, ids[:4])
        first = [i["file"]["id"] if i["file"] else None for i in done["items"][:4]]
        first[2] = items[2]["upload"]["file_id"]
        assert [i["file"]["id"] for i in again["items"]] == first


def test_what_a_batch_cannot_be_is_refused_whole(backend: Backend) -> None:
    [(entry, _)] = small_files(1)
    with new_user(backend) as api, new_user(backend) as stranger:
        log = new_log(api)
        path = f"/logs/{log['id']}/uploads/batch"
        assert_problem(api.post(path, json={"files": []}), 400, "VALIDATION_ERROR")
        assert_problem(api.post(path, json={"files": [entry] * 1001}), 400, "VALIDATION_ERROR")
        assert_problem(api.post(path, json={"files": [{**entry, "color": "red"}]}), 400, "VALIDATION_ERROR")
        assert_problem(stranger.post(path, json={"files": [entry]}), 404, "NOT_FOUND")
        complete_path = "/uploads/batch/complete"
        assert_problem(api.post(complete_path, json={"uploads": []}), 400, "VALIDATION_ERROR")
        assert_problem(
            api.post(complete_path, json={"uploads": [{"id": "x"}] * 1001}), 400, "VALIDATION_ERROR"
        )
        listed = api.get(f"/logs/{log['id']}/files").json()["items"]
        assert listed == []


# -- a batch of 1,000 through an upload link, 10 of them invalid ---------------------------------------

ALLOWED = ("image/*", "video/*", "application/octet-stream")
MAX_FILE = 50 * MIB


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.real)])
def strict(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A server with an allow-list of types and a size limit (and room for thousands of starts)."""
    changes = {"allowed_content_types": ALLOWED, "max_file_size": MAX_FILE, "upload_start_rate": 100_000}
    if request.param == "embedded":
        with embedded_backend(tmp_path_factory.mktemp("strict"), **changes) as b:
            yield b
    else:
        with real_backend(request, "batch_tests", **changes) as b:
            yield b


def test_a_batch_of_1000_with_10_invalid_entries_starts_990_and_changes_nothing_else(
    strict: Backend,
) -> None:
    entries: list[dict[str, Any]] = [e for e, _ in small_files(1000, size=100)]
    invalid = {
        17: ({"filename": ""}, "VALIDATION_ERROR"),  # bad names
        101: ({"filename": "a\x00b.jpg"}, "VALIDATION_ERROR"),
        250: ({"filename": "x" * 16_001}, "VALIDATION_ERROR"),
        333: ({"content_type": "text/html"}, "CONTENT_TYPE_NOT_ALLOWED"),  # disallowed types
        480: ({"content_type": "application/x-msdownload"}, "CONTENT_TYPE_NOT_ALLOWED"),
        512: ({"content_type": "text/plain; charset=utf-8"}, "CONTENT_TYPE_NOT_ALLOWED"),
        600: ({"size": MAX_FILE + 1}, "FILE_TOO_LARGE"),  # too large
        777: ({"size": 10 * MAX_FILE}, "FILE_TOO_LARGE"),
    }
    for i, (change, _) in invalid.items():
        entries[i] = {**entries[i], **change}
    with new_user(strict) as manager:
        log = new_log(manager)
        link = new_link(manager, log["id"], max_files=990)  # the last 2 valid files do not fit
        with httpx.Client(base_url=strict.base_url, timeout=120) as anon:
            resp = anon.post(f"{endpoint(link)}/uploads/batch", json={"files": entries})
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert (answer["started"], answer["refused"]) == (990, 10)
        refused = {i["index"]: i["error"]["code"] for i in answer["items"] if i["status"] == "refused"}
        over_budget = {998: "LINK_FILES_EXHAUSTED", 999: "LINK_FILES_EXHAUSTED"}
        assert refused == {**{i: code for i, (_, code) in invalid.items()}, **over_budget}
        started = [i for i in answer["items"] if i["status"] == "started"]
        assert all(i["put"] and i["upload"]["status"] == "uploading" for i in started)
        # Nothing else: 990 files, the link's budget moved by exactly them, one event each, and
        # nothing at all in the store.
        listed = manager.get(f"/logs/{log['id']}/files", params={"limit": 500})
        files = listed.json()["items"]
        while listed.json()["next_cursor"]:
            listed = manager.get(
                f"/logs/{log['id']}/files", params={"limit": 500, "cursor": listed.json()["next_cursor"]}
            )
            files += listed.json()["items"]
        assert sorted(f["id"] for f in files) == sorted(i["upload"]["file_id"] for i in started)
        [after] = [lk for lk in manager.get(f"/logs/{log['id']}/upload-links").json()["items"]]
        assert (after["files_used"], after["bytes_used"]) == (990, sum(i["upload"]["size"] for i in started))
        events = manager.get(f"/cases/{log['case_id']}/audit", params={"limit": 500}).json()
        seen, cursor = list(events["items"]), events["next_cursor"]
        while cursor:
            page = manager.get(
                f"/cases/{log['case_id']}/audit", params={"limit": 500, "cursor": cursor}
            ).json()
            seen, cursor = seen + page["items"], page["next_cursor"]
        started_events = [e for e in seen if e["action"] == "upload.started"]
        assert len(started_events) == 990
        assert {e["subject_id"] for e in started_events} == {i["upload"]["id"] for i in started}
        assert {e["actor"] for e in started_events} == {f"upload link {link['token'][:10]}"}
    assert asyncio.run(keys_under(strict, f"cases/{log['case_id']}/")) == []


async def keys_under(backend: Backend, prefix: str) -> list[str]:
    async with store(backend) as s3:
        return await s3.keys(prefix)
