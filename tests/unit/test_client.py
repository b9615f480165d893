"""The client's pieces on their own: checksums, retries, problem documents, state files, paths."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import stat
from pathlib import Path

import httpx
import pytest
from awscrt import checksums

from upload_plane.client.api import Api, ApiError, Retry, problem_of, retry_after_seconds, with_retries
from upload_plane.client.checksums import FileDigest, crc_b64
from upload_plane.client.commands import byte_count, exit_status
from upload_plane.client.download import target_path
from upload_plane.client.state import CredentialStore, Login, ResumeState, ResumeStore
from upload_plane.client.transfer import first_error
from upload_plane.client.upload import collect


@pytest.mark.parametrize("sizes", [[0], [1], [5, 0, 7], [4096, 1, 70_000], [1 << 20, 1 << 20, 3]])
def test_whole_file_checksums_from_parts_equal_one_pass(sizes: list[int]) -> None:
    parts = [os.urandom(n) for n in sizes]
    whole = b"".join(parts)
    digest = FileDigest()
    part_crcs = [digest.add_part(p) for p in parts]
    assert digest.sha256 == hashlib.sha256(whole).hexdigest()
    assert digest.crc64nvme == crc_b64(int(checksums.crc64nvme(whole)))
    assert part_crcs == [int(checksums.crc64nvme(p)) for p in parts]
    streamed = FileDigest()
    for i in range(0, len(whole), 999):
        streamed.add(whole[i : i + 999])
    assert (streamed.sha256, streamed.crc64nvme, streamed.size) == (
        digest.sha256,
        digest.crc64nvme,
        len(whole),
    )


def test_crc_wire_form_is_base64_of_8_big_endian_bytes() -> None:
    assert crc_b64(1) == base64.b64encode(b"\0" * 7 + b"\1").decode()


def test_backoff_is_full_jitter_capped_and_retry_after_wins() -> None:
    retry = Retry(base=0.5, cap=4.0)
    for attempt in range(10):
        assert 0 <= retry.delay(attempt) <= min(4.0, 0.5 * 2**attempt)
    assert retry.delay(3, retry_after=7.5) == 7.5
    assert retry.delay(3, retry_after=10_000) == retry.max_retry_after
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "3"})) == 3.0
    assert retry_after_seconds(httpx.Response(429)) is None


def test_problem_documents_become_one_error_type() -> None:
    body = {
        "status": 409,
        "code": "PARTS_MISSING",
        "detail": "2 of 3 parts are missing",
        "missing_parts": [2],
    }
    error = problem_of(httpx.Response(409, json=body))
    assert (error.status, error.code, error.detail, error.body["missing_parts"]) == (
        409,
        "PARTS_MISSING",
        "2 of 3 parts are missing",
        [2],
    )
    plain = problem_of(httpx.Response(502, text="<html>bad gateway</html>"))
    assert (plain.status, plain.code) == (502, "HTTP_502")


def test_transient_answers_are_retried_until_one_is_final() -> None:
    answers = iter(
        [httpx.ConnectError("refused"), httpx.Response(503), httpx.Response(429), httpx.Response(200)]
    )
    notices: list[str] = []

    async def attempt() -> httpx.Response:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    quick = Retry(attempts=5, base=0.001, cap=0.001)
    final = asyncio.run(with_retries(attempt, quick, "GET /x", lambda what, wait, n: notices.append(what)))
    assert final.status_code == 200
    assert notices == ["GET /x: ConnectError: refused", "GET /x: HTTP 503", "GET /x: HTTP 429"]


def test_no_answer_after_every_try_is_unreachable() -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

    async def call() -> None:
        async with Api(
            f"http://127.0.0.1:{port}", "t", retry=Retry(attempts=3, base=0.001, cap=0.001)
        ) as api:
            await api.cases()

    with pytest.raises(ApiError) as caught:
        asyncio.run(call())
    assert caught.value.code == "UNREACHABLE" and caught.value.status == 0
    assert exit_status(caught.value) == 6


def test_resume_state_is_written_atomically_and_privately(tmp_path: Path) -> None:
    store = ResumeStore(tmp_path / "uploads")
    state = ResumeState("http://api", "/data/a.bin", "log-1", 10, 123, "up-1", 5, 2, {"1": "AAAAAAAAAAE="})
    store.save(state)
    assert store.load("http://api", "/data/a.bin", "log-1") == state
    assert store.load("http://api", "/data/a.bin", "log-2") is None
    [written] = list((tmp_path / "uploads").iterdir())  # no temporary file left behind
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "uploads").stat().st_mode) == 0o700
    written.write_text('{"api_url": "http://api", "pa')  # hand-edited or damaged: ignored
    assert store.load("http://api", "/data/a.bin", "log-1") is None
    store.forget(state)
    store.forget(state)  # idempotent
    assert not list((tmp_path / "uploads").iterdir())


def test_credentials_per_api_with_the_last_login_as_default(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "cfg" / "credentials.json")
    assert store.default_api_url() is None and store.get("http://a") is None
    store.put(Login("http://a", "ann", "uppat_a", "t1", "2030-01-01T00:00:00Z"))
    store.put(Login("http://b", "bob", "uppat_b", "t2", "2030-01-01T00:00:00Z"))
    assert store.default_api_url() == "http://b"
    assert store.get("http://a") == Login("http://a", "ann", "uppat_a", "t1", "2030-01-01T00:00:00Z")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    store.remove("http://b")
    assert store.default_api_url() is None and store.get("http://b") is None
    assert json.loads(store.path.read_text())["logins"].keys() == {"http://a"}


def test_collect_walks_directories_in_order_with_relative_names(tmp_path: Path) -> None:
    (tmp_path / "case" / "z").mkdir(parents=True)
    for name in ("case/b.txt", "case/a.txt", "case/z/c.txt", "single.bin"):
        (tmp_path / name).write_bytes(b"x")
    os.mkfifo(tmp_path / "case" / "pipe")  # not a regular file: skipped
    found = collect([tmp_path / "case", tmp_path / "single.bin"])
    assert [f.name for f in found] == ["case/a.txt", "case/b.txt", "case/z/c.txt", "single.bin"]
    assert all(f.path.is_absolute() for f in found)
    with pytest.raises(ApiError) as caught:
        collect([tmp_path / "missing"])
    assert caught.value.code == "NO_SUCH_FILE"


def test_download_targets_never_leave_the_directory(tmp_path: Path) -> None:
    assert target_path("../../etc/passwd", tmp_path) == tmp_path / "passwd"
    assert target_path("..\\..\\boot.ini", tmp_path) == tmp_path / "boot.ini"
    assert target_path(".bashrc", tmp_path) == tmp_path / "bashrc"
    assert target_path("..", tmp_path) == tmp_path / "download"
    assert target_path("x.bin", tmp_path / "named.bin") == tmp_path / "named.bin"
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(ApiError) as caught:
        target_path("x.bin", tmp_path)
    assert caught.value.code == "FILE_EXISTS"


def test_byte_counts_and_exit_statuses() -> None:
    assert [byte_count(t) for t in ("8388608", "8M", "8MiB", "1g", "64k")] == [8 << 20] * 3 + [
        1 << 30,
        64 << 10,
    ]
    assert exit_status(ApiError(401, "UNAUTHENTICATED", "")) == 3
    assert exit_status(ApiError(404, "NOT_FOUND", "")) == 4
    assert exit_status(ApiError(409, "CHECKSUM_MISMATCH", "")) == 5
    assert exit_status(ApiError(503, "STORAGE_UNAVAILABLE", "")) == 6
    assert exit_status(ApiError(409, "PARTS_MISSING", "")) == 1


def test_the_first_real_failure_comes_out_of_a_task_group() -> None:
    boom = ApiError(0, "FILE_CHANGED", "x")
    group = BaseExceptionGroup("g", [asyncio.CancelledError(), ExceptionGroup("h", [boom])])
    assert first_error(group) is boom
