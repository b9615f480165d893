"""Races between complete, abort, delete and re-sent parts, over HTTP on MariaDB + MinIO.

Each race runs many rounds with real concurrency (threads released together against the served app)
and then checks the rows against the store, not only the status codes the clients saw. What reached
the store (CompleteMultipartUpload, AbortMultipartUpload, DeleteObject) is counted by a counting
wrapper around the real gateway (the ``counted`` server): the winner's call, never the loser's. A
race between two sides must have seen each side win, or it was not exercised; where one side always
wins when both are sent together, every other round holds it at a gate so the other gets ahead.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
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
from tests.fakes import CountingStorage, multipart_etag
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


STORE_CALLS = ("complete_multipart", "abort_multipart", "delete_object")
#: A race runs ROUNDS rounds, and more (up to MAX_ROUNDS) until each side has won one: a race that
#: one side won every time was not exercised.
MAX_ROUNDS = 4 * ROUNDS


def keep_racing(rounds: int, winners: Counter[str]) -> bool:
    return rounds < ROUNDS or (rounds < MAX_ROUNDS and len(winners) < 2)


def store_calls(storage: CountingStorage) -> Counter[str]:
    """The calls that end or remove an upload that have reached the store so far."""
    return Counter({operation: storage.count(operation) for operation in STORE_CALLS})


def test_abort_racing_complete_never_loses_an_update(counted: Counted, http: httpx.Client) -> None:
    backend, storage = counted.backend, counted.storage
    winners: Counter[str] = Counter()
    with new_user(backend) as api:
        log = new_log(api)
        while keep_racing(winners.total(), winners):
            data = os.urandom(2000)
            upload = ready_upload(http, api, log["id"], data)
            remember_s3_upload_id(backend, upload)
            before = store_calls(storage)
            done, aborted = together(
                lambda u=upload: complete(api, u["id"]), lambda u=upload: api.delete(f"/uploads/{u['id']}")
            )
            assert done.status_code in (200, 409), done.text
            assert aborted.status_code in (204, 409), aborted.text
            status = asyncio.run(assert_store_agrees(backend, upload))
            if aborted.status_code == 204:
                assert status == "aborted" and done.status_code == 409, (done.text, status)
                assert done.json()["upload_status"] in ("aborting", "aborted")
                winner = "abort"
            else:
                assert aborted.json()["upload_status"] in ("completing", "completed")
                assert done.status_code == 200 and status == "completed"
                assert download(http, api, done.json()["id"]) == data
                winner = "complete"
            winners[winner] += 1
            # Only the winner's call reached the store; the loser waited for the winner's claim,
            # found the upload ended, and changed nothing.
            assert store_calls(storage) - before == Counter({f"{winner}_multipart": 1}), winner
    assert set(winners) == {"abort", "complete"}, f"one side won all {MAX_ROUNDS} rounds: {winners}"


def test_complete_racing_an_admins_delete_is_never_a_500(counted: Counted, http: httpx.Client) -> None:
    """Sent together, complete wins (the delete first asks whether the store is reachable, then
    claims the upload); so every other round the delete is held at that question until complete is
    sent, and then mostly wins."""
    backend, storage = counted.backend, counted.storage
    winners: Counter[str] = Counter()
    with new_user(backend) as api, admin(backend) as adm:
        log = new_log(api)
        while keep_racing(rounds := winners.total(), winners):
            upload = ready_upload(http, api, log["id"], os.urandom(1500))
            remember_s3_upload_id(backend, upload)
            before = store_calls(storage)
            if rounds % 2 == 0:
                done, deleted = together(
                    lambda u=upload: complete(api, u["id"]),
                    lambda u=upload: adm.delete(f"/files/{u['file_id']}"),
                )
            else:
                gate = storage.hold("ping")
                with ThreadPoolExecutor(max_workers=1) as pool:
                    deleting = pool.submit(adm.delete, f"/files/{upload['file_id']}")
                    gate.wait_reached()
                    gate.release()
                    done = complete(api, upload["id"])
                    deleted = deleting.result(timeout=60)
            assert deleted.status_code == 204, deleted.text
            # Either complete finished first (200) and the delete followed, or the delete held the
            # upload first and complete found it gone (404) or still being deleted (409).
            assert done.status_code in (200, 404, 409), done.text
            winners["complete" if done.status_code == 200 else "delete"] += 1
            assert asyncio.run(assert_store_agrees(backend, upload)) is None
            assert api.get(f"/files/{upload['file_id']}").status_code == 404
            # The delete abandoned the multipart upload and removed the object and its preview
            # (there or not), once each; complete reached the store only if it won.
            assert store_calls(storage) - before == Counter(
                complete_multipart=int(done.status_code == 200), abort_multipart=1, delete_object=2
            )
    assert set(winners) == {"complete", "delete"}, f"one side won all {MAX_ROUNDS} rounds: {winners}"


def test_a_part_sent_again_during_complete_is_a_conflict_not_a_store_failure(
    counted: Counted, http: httpx.Client
) -> None:
    """Sent together, the part lands before complete lists the parts (the new bytes are completed)
    or after the upload was completed (404, the first bytes stay); so every other round complete is
    held after listing the parts, before CompleteMultipartUpload, while the part is sent again:
    the store refuses the listing, and the client gets a retryable 409."""
    backend, storage = counted.backend, counted.storage
    first_answers: Counter[str] = Counter()
    with new_user(backend) as api:
        log = new_log(api)
        for round_number in range(ROUNDS):
            data = os.urandom(5 * MIB + 1000)
            upload = start_upload(api, log["id"], data, part_size=5 * MIB)
            put_parts(http, api, upload, data, [1, 2])
            remember_s3_upload_id(backend, upload)
            part = sign(api, upload["id"], [2])[2]
            again = os.urandom(len(data) - 5 * MIB)  # the client sends part 2 again, other bytes
            sent = storage.count("complete_multipart")
            if round_number % 2 == 0:
                resent, done = together(
                    lambda p=part, b=again: http.put(p["url"], content=b, headers=p["headers"]),
                    lambda u=upload: complete(api, u["id"]),
                )
            else:
                gate = storage.hold("complete_multipart")
                with ThreadPoolExecutor(max_workers=1) as pool:
                    completing = pool.submit(complete, api, upload["id"])
                    gate.wait_reached()  # the parts are listed; CompleteMultipartUpload is next
                    resent = http.put(part["url"], content=again, headers=part["headers"])
                    gate.release()
                    done = completing.result(timeout=60)
                assert resent.status_code == 200, resent.text
                assert done.status_code == 409 and done.json()["code"] == "PARTS_CHANGED", done.text
            first = done
            first_answers[str(first.status_code)] += 1
            assert done.status_code in (200, 409), done.text
            if done.status_code == 409:
                # The client's race, seen at different moments: the store refused parts that changed
                # under it (PARTS_CHANGED), or ListParts caught the part mid-rewrite (missing, or of
                # the wrong size). Each is a retryable 409, never a store failure.
                retryable = ("PARTS_CHANGED", "PART_SIZE_MISMATCH", "PARTS_MISSING")
                assert done.json()["code"] in retryable, done.text
                done = complete(api, upload["id"])  # a retry succeeds
            assert done.status_code == 200, done.text
            assert resent.status_code in (200, 404), resent.text  # 404: the upload was completed first
            # The file holds the part the store held when it was completed: the first bytes if the
            # part came too late (404), else the bytes sent again; its ETag is the stored bytes'.
            stored = download(http, api, done.json()["id"])
            assert stored == (data if resent.status_code == 404 else data[: 5 * MIB] + again)
            assert done.json()["etag"] == multipart_etag([stored[: 5 * MIB], stored[5 * MIB :]])
            assert asyncio.run(assert_store_agrees(backend, upload)) == "completed"
            # CompleteMultipartUpload reached the store once, and once more if the store refused it.
            refused = first.status_code == 409 and first.json()["code"] == "PARTS_CHANGED"
            assert storage.count("complete_multipart") - sent == 1 + refused, first.text
    assert first_answers["200"] and first_answers["409"], first_answers


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
        sent = storage.count("complete_multipart")
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
        assert storage.count("complete_multipart") - sent == 2  # the winner's, and the late refusal
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
