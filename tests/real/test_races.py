"""Races between complete, abort, delete and re-sent parts, over HTTP on MariaDB + MinIO.

Each race runs many rounds with real concurrency (threads released together against the served app)
and then checks the rows against the store, not only the status codes the clients saw. Counts of
CompleteMultipartUpload come from a counting wrapper around the real gateway (the ``counted`` server).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import update

from tests.api.helpers import (
    MIB,
    admin,
    assert_store_agrees,
    backend_db,
    complete,
    complete_behind_the_apis_back,
    download,
    new_log,
    new_user,
    put_parts,
    remember_s3_upload_id,
    sign,
    start_upload,
)
from tests.conftest import Backend
from tests.real.conftest import Counted
from upload_plane.models import Upload, utcnow
from upload_plane.uploads.state import CLAIM_STALE_AFTER

pytestmark = pytest.mark.real

ROUNDS = 25


def together(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """Run ``calls`` in threads released at the same moment; their responses in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def ready_upload(http: httpx.Client, api: httpx.Client, log_id: str, data: bytes) -> dict[str, Any]:
    upload = start_upload(api, log_id, data)
    put_parts(http, api, upload, data, list(range(1, upload["part_count"] + 1)))
    return upload


def test_abort_racing_complete_never_loses_an_update(real: Backend, http: httpx.Client) -> None:
    outcomes: dict[str, int] = {}
    with new_user(real) as api, new_user(real) as other:
        log = new_log(api)
        assert other.headers["Authorization"] != api.headers["Authorization"]
        for _ in range(ROUNDS):
            data = os.urandom(2000)
            upload = ready_upload(http, api, log["id"], data)
            remember_s3_upload_id(real, upload)
            done, aborted = together(
                lambda u=upload: complete(api, u["id"]), lambda u=upload: api.delete(f"/uploads/{u['id']}")
            )
            assert done.status_code in (200, 409), done.text
            assert aborted.status_code in (204, 409), aborted.text
            status = asyncio.run(assert_store_agrees(real, upload))
            if aborted.status_code == 204:
                assert status == "aborted" and done.status_code == 409, (done.text, status)
                assert done.json()["upload_status"] in ("aborting", "aborted")
            else:
                assert aborted.json()["upload_status"] in ("completing", "completed")
                assert done.status_code == 200 and status == "completed"
                assert download(http, api, done.json()["id"]) == data
            key = f"complete {done.status_code} / abort {aborted.status_code}"
            outcomes[key] = outcomes.get(key, 0) + 1
    assert sum(outcomes.values()) == ROUNDS, outcomes


def test_complete_racing_an_admins_delete_is_never_a_500(real: Backend, http: httpx.Client) -> None:
    with new_user(real) as api, admin(real) as adm:
        log = new_log(api)
        for _ in range(ROUNDS):
            upload = ready_upload(http, api, log["id"], os.urandom(1500))
            remember_s3_upload_id(real, upload)
            done, deleted = together(
                lambda u=upload: complete(api, u["id"]), lambda u=upload: adm.delete(f"/files/{u['file_id']}")
            )
            assert deleted.status_code == 204, deleted.text
            # Either complete finished first (200) and the delete followed, or the delete held the
            # upload first and complete found it gone (404) or still being deleted (409).
            assert done.status_code in (200, 404, 409), done.text
            assert asyncio.run(assert_store_agrees(real, upload)) is None
            assert api.get(f"/files/{upload['file_id']}").status_code == 404


def test_a_part_sent_again_during_complete_is_a_conflict_not_a_store_failure(
    real: Backend, http: httpx.Client
) -> None:
    seen: set[int] = set()
    with new_user(real) as api:
        log = new_log(api)
        for _ in range(ROUNDS):
            data = os.urandom(5 * MIB + 1000)
            upload = start_upload(api, log["id"], data, part_size=5 * MIB)
            put_parts(http, api, upload, data, [1, 2])
            remember_s3_upload_id(real, upload)
            part = sign(api, upload["id"], [2])[2]
            again = os.urandom(len(data) - 5 * MIB)  # the client sends part 2 again, other bytes
            resent, done = together(
                lambda p=part, b=again: http.put(p["url"], content=b, headers=p["headers"]),
                lambda u=upload: complete(api, u["id"]),
            )
            seen.add(done.status_code)
            assert done.status_code in (200, 409), done.text
            if done.status_code == 409:
                # The client's race, seen at different moments: the store refused parts that changed
                # under it (PARTS_CHANGED), or ListParts caught the part mid-rewrite (missing, or of
                # the wrong size). Each is a retryable 409, never a store failure.
                retryable = ("PARTS_CHANGED", "PART_SIZE_MISMATCH", "PARTS_MISSING")
                assert done.json()["code"] in retryable, done.text
            if done.status_code != 200:
                done = complete(api, upload["id"])  # a retry succeeds
            assert done.status_code == 200, done.text
            stored = download(http, api, done.json()["id"])
            assert stored in (data, data[: 5 * MIB] + again)
            assert resent.status_code in (200, 404), resent.text  # 404: the upload was completed first
            assert asyncio.run(assert_store_agrees(real, upload)) == "completed"
    assert 200 in seen


def test_concurrent_and_repeated_completes_send_one_complete_to_the_store(
    counted: Counted, http: httpx.Client
) -> None:
    backend, storage = counted.backend, counted.storage
    with new_user(backend) as api:
        log = new_log(api)
        for _ in range(3):
            data = os.urandom(5 * MIB + 10)
            upload = start_upload(api, log["id"], data, part_size=5 * MIB)
            put_parts(http, api, upload, data, [1, 2])
            before = storage.count("complete_multipart")
            first = together(*[lambda u=upload: complete(api, u["id"]) for _ in range(30)])
            again = together(*[lambda u=upload: complete(api, u["id"]) for _ in range(30)])
            assert [r.status_code for r in first + again] == [200] * 60, [r.text for r in first + again][:3]
            assert {r.json()["id"] for r in first + again} == {upload["file_id"]}
            assert storage.count("complete_multipart") - before == 1
            assert asyncio.run(assert_store_agrees(backend, upload)) == "completed"
            assert download(http, api, upload["file_id"]) == data


async def _make_claim_stale(backend: Backend, upload_id: str) -> None:
    async with backend_db(backend) as session:
        stale = utcnow() - CLAIM_STALE_AFTER - timedelta(seconds=1)
        await session.exec(update(Upload).where(Upload.id == upload_id).values(claimed_at=stale))
        await session.commit()


def test_a_taken_over_completer_that_wakes_up_late_changes_nothing(
    counted: Counted, http: httpx.Client
) -> None:
    backend, storage = counted.backend, counted.storage
    data = os.urandom(3000)
    with new_user(backend) as api:
        upload = ready_upload(http, api, new_log(api)["id"], data)
        gate = storage.hold("complete_multipart")
        with ThreadPoolExecutor(max_workers=1) as pool:
            late = pool.submit(complete, api, upload["id"])
            gate.wait_reached()  # the first completer holds its claim and is stuck before the store
            asyncio.run(_make_claim_stale(backend, upload["id"]))
            winner = complete(api, upload["id"])  # takes the stale claim over and completes
            assert winner.status_code == 200, winner.text
            before = asyncio.run(_rows(backend, upload["id"]))
            gate.release()
            late_answer = late.result(timeout=60)
        # The late completer's CompleteMultipartUpload reached MinIO, which refused it (NoSuchUpload);
        # its finish did not match its claim any more: it answers the winner's file, changes nothing.
        assert late_answer.status_code == 200, late_answer.text
        assert late_answer.json()["id"] == winner.json()["id"]
        assert asyncio.run(_rows(backend, upload["id"])) == before
        assert asyncio.run(assert_store_agrees(backend, upload)) == "completed"
        assert download(http, api, upload["file_id"]) == data


async def _rows(backend: Backend, upload_id: str) -> dict[str, Any]:
    from sqlmodel import select

    from upload_plane.models import File

    async with backend_db(backend) as session:
        row = (await session.exec(select(Upload).where(Upload.id == upload_id))).one()
        file = (await session.exec(select(File).where(File.id == row.file_id))).one()
        return {"upload": row.model_dump(), "file": file.model_dump()}


def test_abort_after_a_complete_whose_answer_was_lost_does_not_fail_the_file(
    real: Backend, http: httpx.Client
) -> None:
    """The store completed the upload (the API never heard); abort must not mark the file failed
    while its object exists (MinIO answers NoSuchUpload to the late AbortMultipartUpload)."""
    data = os.urandom(4000)
    with new_user(real) as api:
        upload = ready_upload(http, api, new_log(api)["id"], data)
        remember_s3_upload_id(real, upload)
        asyncio.run(_complete_behind_the_apis_back(real, upload))
        resp = api.delete(f"/uploads/{upload['id']}")
        assert resp.status_code == 409, resp.text
        assert resp.json()["code"] == "UPLOAD_NOT_UPLOADING"
        assert resp.json()["upload_status"] == "completed"
        assert asyncio.run(assert_store_agrees(real, upload)) == "completed"
        assert download(http, api, upload["file_id"]) == data


async def _complete_behind_the_apis_back(backend: Backend, upload: dict[str, Any]) -> None:
    from sqlmodel import select

    async with backend_db(backend) as session:
        row = (await session.exec(select(Upload).where(Upload.id == upload["id"]))).one()
    await complete_behind_the_apis_back(backend, row.key, row.s3_upload_id)
