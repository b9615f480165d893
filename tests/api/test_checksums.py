"""Whole-file checksums. On MinIO the store checks a declared full-object CRC64NVME: a part whose
bytes differ from its signed checksum is refused, a whole-file value that does not match the parts
fails complete (409, the upload stays open), and a file is marked ``verified_by: "store"`` only when
the store's own answer says so. On moto, which checks nothing, uploads still work and say they were
not verified, and bytes that do not match the declaration never become an available file."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    MIB,
    assert_problem,
    complete,
    crc64_b64,
    die_holding_a_claim,
    download,
    new_log,
    new_user,
    run_reaper,
    store,
    upload_row,
    without_processing,
)
from tests.conftest import Backend

PART = 5 * MIB


def start(api: httpx.Client, data: bytes, **extra: Any) -> dict[str, Any]:
    body = {"filename": "evidence.bin", "size": len(data), "part_size": PART, **extra}
    resp = api.post(f"/logs/{new_log(api)['id']}/uploads", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def parts_of(data: bytes) -> dict[int, bytes]:
    return {i + 1: data[i * PART : (i + 1) * PART] for i in range(max(1, -(-len(data) // PART)))}


def sign(api: httpx.Client, upload: dict[str, Any], crcs: dict[int, str]) -> dict[int, dict[str, Any]]:
    body = {"part_numbers": list(crcs), "checksums_crc64nvme": {str(n): c for n, c in crcs.items()}}
    resp = api.post(f"/uploads/{upload['id']}/parts", json=body)
    assert resp.status_code == 200, resp.text
    return {p["part_number"]: p for p in resp.json()["parts"]}


def put(http: httpx.Client, part: dict[str, Any], body: bytes) -> httpx.Response:
    return http.put(part["url"], content=body, headers=part["headers"])


@pytest.mark.parametrize("declared_at", ["start", "complete"])
def test_a_declared_crc64nvme_is_checked_by_minio_and_recorded(
    backend: Backend, http: httpx.Client, declared_at: str
) -> None:
    data = os.urandom(2 * PART + 1234)
    whole, sha = crc64_b64(data), hashlib.sha256(data).hexdigest()
    with new_user(backend) as api:
        declared = (
            {"crc64nvme": whole, "sha256": sha}
            if declared_at == "start"
            else {"checksum_algorithm": "CRC64NVME"}
        )
        upload = start(api, data, **declared)
        assert upload["checksum_algorithm"] == "CRC64NVME"
        chunks = parts_of(data)
        signed = sign(api, upload, {n: crc64_b64(b) for n, b in chunks.items()})
        assert signed[1]["headers"]["x-amz-checksum-crc64nvme"] == crc64_b64(chunks[1])
        assert "x-amz-checksum-crc64nvme" in signed[1]["url"]
        for n, body in chunks.items():
            assert put(http, signed[n], body).status_code == 200
        state = api.get(f"/uploads/{upload['id']}").json()["parts"]
        if backend.name == "real":  # MinIO lists each part's checksum
            assert [p["checksum_crc64nvme"] for p in state["uploaded"]] == [
                crc64_b64(b) for b in chunks.values()
            ]
        at_complete = {} if declared_at == "start" else {"crc64nvme": whole, "sha256": sha}
        done = api.post(f"/uploads/{upload['id']}/complete", json=at_complete)
        assert done.status_code == 200, done.text
        file = done.json()
        assert (file["crc64nvme"], file["sha256"]) == (whole, sha)
        assert file["verified_by"] == ("store" if backend.name == "real" else None)
        assert api.get(f"/files/{file['id']}").json()["verified_by"] == file["verified_by"]
        assert download(http, api, file["id"]) == data


async def complete_in_the_store(backend: Backend, upload: dict[str, Any], whole: str) -> None:
    """The store assembles the upload and checks the whole file, and the API never hears of it (the
    worker that asked died, or the answer was lost)."""
    row = await upload_row(backend, upload["id"])
    async with store(backend) as storage:
        parts = await storage.list_parts(row.key, row.s3_upload_id)
        await storage.complete_multipart(row.key, row.s3_upload_id, parts, whole)


@pytest.mark.parametrize("declared_at", ["start", "complete"])
def test_a_complete_whose_store_answer_was_lost_records_the_stores_check(
    backend: Backend, http: httpx.Client, declared_at: str
) -> None:
    """The next complete finds the object already assembled, and the store's check is read from
    the object's own CRC64NVME (the store's answer that said so never arrived)."""
    data = os.urandom(PART + 999)
    whole, sha = crc64_b64(data), hashlib.sha256(data).hexdigest()
    with new_user(backend) as api:
        declared = {"crc64nvme": whole, "sha256": sha}
        upload = start(
            api, data, **(declared if declared_at == "start" else {"checksum_algorithm": "CRC64NVME"})
        )
        chunks = parts_of(data)
        signed = sign(api, upload, {n: crc64_b64(b) for n, b in chunks.items()})
        for n, body in chunks.items():
            assert put(http, signed[n], body).status_code == 200
        asyncio.run(complete_in_the_store(backend, upload, whole))
        done = api.post(f"/uploads/{upload['id']}/complete", json={} if declared_at == "start" else declared)
        assert done.status_code == 200, done.text
        file = done.json()
        assert (file["status"], file["crc64nvme"], file["sha256"]) == ("available", whole, sha)
        assert file["verified_by"] == ("store" if backend.name == "real" else None)
        assert download(http, api, file["id"]) == data


def test_a_completer_that_died_after_the_store_completed_is_finished_with_what_it_declared(
    backend: Backend, http: httpx.Client
) -> None:
    """The CLI declares the whole file's checksums at complete; they are recorded with the complete's
    claim. When that completer dies after the store assembled the object, the reaper finishes the
    upload with them (CRC64NVME store-verified on MinIO), and the client's complete sent again gets
    that file; other values are refused."""
    data = os.urandom(PART + 4321)
    whole, sha = crc64_b64(data), hashlib.sha256(data).hexdigest()
    with new_user(backend) as api:
        upload = start(api, data, checksum_algorithm="CRC64NVME")
        chunks = parts_of(data)
        signed = sign(api, upload, {n: crc64_b64(b) for n, b in chunks.items()})
        for n, body in chunks.items():
            assert put(http, signed[n], body).status_code == 200
        asyncio.run(die_holding_a_claim(backend, upload["id"], "completing", sha256=sha, crc64nvme=whole))
        asyncio.run(complete_in_the_store(backend, upload, whole))
        report = asyncio.run(run_reaper(backend))
        assert (report.completed, report.errors) == (1, 0), report
        reaped = api.get(f"/files/{upload['file_id']}").json()
        assert (reaped["status"], reaped["sha256"], reaped["crc64nvme"]) == ("available", sha, whole)
        assert reaped["verified_by"] == ("store" if backend.name == "real" else None)

        done = api.post(f"/uploads/{upload['id']}/complete", json={"crc64nvme": whole, "sha256": sha})
        assert done.status_code == 200, done.text
        assert done.json() == without_processing(reaped)  # complete answers the file as it completed
        other = api.post(f"/uploads/{upload['id']}/complete", json={"crc64nvme": whole, "sha256": "0" * 64})
        assert_problem(other, 400, "VALIDATION_ERROR")  # a recorded value stands
        wrong = api.post(f"/uploads/{upload['id']}/complete", json={"crc64nvme": crc64_b64(b"other")})
        assert_problem(wrong, 400, "VALIDATION_ERROR")
        assert download(http, api, reaped["id"]) == data


def test_every_part_of_a_checked_upload_needs_its_checksum(backend: Backend) -> None:
    data = os.urandom(PART + 10)
    with new_user(backend) as api:
        upload = start(api, data, crc64nvme=crc64_b64(data))
        resp = api.post(f"/uploads/{upload['id']}/parts", json={"part_numbers": [1, 2]})
        assert_problem(resp, 400, "VALIDATION_ERROR")
        half = {"part_numbers": [1, 2], "checksums_crc64nvme": {"1": crc64_b64(data[:PART])}}
        assert_problem(api.post(f"/uploads/{upload['id']}/parts", json=half), 400, "VALIDATION_ERROR")
        sha = {"part_numbers": [1], "checksums_sha256": {"1": "A" * 43 + "="}}
        assert_problem(api.post(f"/uploads/{upload['id']}/parts", json=sha), 400, "VALIDATION_ERROR")
        plain = start(api, data)
        stray = {"part_numbers": [1], "checksums_crc64nvme": {"1": crc64_b64(b"x")}}
        assert_problem(api.post(f"/uploads/{plain['id']}/parts", json=stray), 400, "VALIDATION_ERROR")
        assert_problem(
            complete(api, plain["id"])
            if False
            else api.post(f"/uploads/{plain['id']}/complete", json={"crc64nvme": crc64_b64(data)}),
            400,
            "VALIDATION_ERROR",
        )
        later = start(api, data, checksum_algorithm="CRC64NVME")
        assert_problem(api.post(f"/uploads/{later['id']}/complete", json={}), 400, "VALIDATION_ERROR")
        other = crc64_b64(b"something else")
        assert_problem(
            api.post(f"/uploads/{upload['id']}/complete", json={"crc64nvme": other}), 400, "VALIDATION_ERROR"
        )


def test_a_whole_file_value_that_does_not_match_fails_and_the_upload_stays_open(
    backend: Backend, http: httpx.Client
) -> None:
    data = os.urandom(PART + 300)
    wrong = data[:-1] + bytes([data[-1] ^ 1])  # a corrupted local copy
    with new_user(backend) as api:
        upload = start(api, data, crc64nvme=crc64_b64(data), sha256=hashlib.sha256(data).hexdigest())
        chunks, bad = parts_of(data), parts_of(wrong)
        signed = sign(api, upload, {n: crc64_b64(b) for n, b in bad.items()})
        for n, body in bad.items():
            assert put(http, signed[n], body).status_code == 200  # each part matches its own checksum
        result = complete(api, upload["id"])
        if backend.name == "real":
            assert_problem(result, 409, "CHECKSUM_MISMATCH")
            assert api.get(f"/uploads/{upload['id']}").json()["status"] == "uploading"
            # Resumable: the right bytes for the bad part, and the store accepts the whole.
            fixed = sign(api, upload, {2: crc64_b64(chunks[2])})
            assert put(http, fixed[2], chunks[2]).status_code == 200
            done = complete(api, upload["id"])
            assert done.status_code == 200, done.text
            assert done.json()["verified_by"] == "store"
            assert download(http, api, upload["file_id"]) == data
        else:
            # moto assembles anything; the object's own checksum then shows it is not the declared
            # file, which never becomes available (and is not kept).
            assert_problem(result, 409, "OBJECT_MISMATCH")
            assert api.get(f"/files/{upload['file_id']}").json()["status"] == "failed"


def test_a_part_overwritten_after_signing_never_becomes_an_available_file(
    backend: Backend, http: httpx.Client
) -> None:
    """An uploader who can sign (credentials) replaces part 1 with other bytes of the same length,
    with their correct CRC64NVME: the store holds them, but the declared whole value stands."""
    data = os.urandom(PART + 50)
    with new_user(backend) as api:
        upload = start(api, data, crc64nvme=crc64_b64(data))
        chunks = parts_of(data)
        signed = sign(api, upload, {n: crc64_b64(b) for n, b in chunks.items()})
        for n, body in chunks.items():
            assert put(http, signed[n], body).status_code == 200
        other = os.urandom(PART)
        again = sign(api, upload, {1: crc64_b64(other)})
        assert put(http, again[1], other).status_code == 200
        result = complete(api, upload["id"])
        assert result.status_code == 409, result.text
        assert result.json()["code"] in ("CHECKSUM_MISMATCH", "OBJECT_MISMATCH")
        file = api.get(f"/files/{upload['file_id']}").json()
        assert file["status"] != "available"
