"""The client commands end to end on both backends (the CLI as a subprocess, the library in-process):
login keeps a personal access token (0600), ls/create, uploading files and directories, verified
downloads, Ctrl-C and resume, a changed file starting over, and one-line errors with exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import MIB, login, new_account, new_log
from tests.cli_helpers import (
    assert_one_line_error,
    cli,
    cli_env,
    cli_json,
    command,
    personal_token,
    random_file,
    sha256_of,
)
from tests.conftest import Backend
from upload_plane.client import Client
from upload_plane.client.api import Api, Retry
from upload_plane.client.state import ResumeStore
from upload_plane.client.transfer import Progress
from upload_plane.client.upload import UploadResult, collect, upload_files


def test_login_ls_create_upload_download_and_logout(backend: Backend, tmp_path: Path) -> None:
    name, password = new_account(backend)
    env = cli_env(tmp_path, backend.base_url)
    signed_in = cli("login", "--username", name, env=env, stdin=f"{password}\n")
    assert signed_in.returncode == 0, signed_in.stderr
    credentials = tmp_path / "config" / "upload-plane" / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials.parent.stat().st_mode) == 0o700
    stored = credentials.read_text()
    assert password not in stored
    token = json.loads(stored)["logins"][backend.base_url]["token"]
    assert token.startswith("uppat_")
    with login(backend, name, password) as api:
        assert [t["name"] for t in api.get("/tokens").json()["items"]] == [
            f"upload-plane CLI on {os.uname()[1]}"
        ]

    assert cli_json("ls", "cases", env=env) == []
    case_id = cli("create", "case", "Burglary 12", env=env).stdout.strip()
    log_id = cli_json("create", "log", case_id, "photos", env=env)["id"]
    assert [c["id"] for c in cli_json("ls", "cases", env=env)] == [case_id]
    assert [lg["name"] for lg in cli_json("ls", "logs", case_id, env=env)] == ["photos"]

    folder = tmp_path / "scene"
    sources = {
        "scene/a.jpg": random_file(folder / "a.jpg", 1000),
        "scene/inner/b.bin": random_file(folder / "inner" / "b.bin", 6 * MIB + 1),
        "scene/inner/empty.txt": random_file(folder / "inner" / "empty.txt", 0),
        "note.txt": random_file(tmp_path / "note.txt", 10),
    }
    results = cli_json("upload", str(folder), str(tmp_path / "note.txt"), "--log", log_id, env=env)["files"]
    assert sorted(r["filename"] for r in results) == sorted(sources)
    for r in results:
        # MinIO checks every file: a small one (empty included) against the SHA-256 its one PUT
        # signs, a large one against its CRC64NVME at complete. moto checks none.
        expected = "store" if backend.name == "real" else None
        assert r["verified_by"] == expected, r
        assert r["parts_skipped"] == 0 and r["parts_uploaded"] == max(1, -(-r["size"] // (8 * MIB)))
    listed = cli_json("ls", "files", log_id, env=env)
    assert sorted(f["filename"] for f in listed) == sorted(sources)
    assert all(f["status"] == "available" for f in listed)

    table = cli("ls", "files", log_id, env=env).stdout
    assert "scene/inner/b.bin" in table and table.splitlines()[0].split() == [
        "ID",
        "SIZE",
        "STATUS",
        "VERIFIED",
        "FILENAME",
    ]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for r in results:
        got = cli_json("download", r["file_id"], "-o", str(downloads), env=env)
        assert Path(got["path"]).read_bytes() == sources[r["filename"]].read_bytes()
        assert got["sha256"] == r["sha256"]
    again = cli("download", results[0]["file_id"], "-o", str(downloads), env=env)
    assert_one_line_error(again, "FILE_EXISTS", 1)  # a file named after the upload is never replaced

    out = cli("logout", env=env)
    assert out.returncode == 0, out.stderr
    assert_one_line_error(cli("ls", "cases", env=env), "NOT_SIGNED_IN", 3)
    revoked = cli("ls", "cases", env={**env, "UPLOAD_PLANE_TOKEN": token})
    assert_one_line_error(revoked, "UNAUTHENTICATED", 3)


def test_errors_are_one_line_with_an_exit_status(backend: Backend, tmp_path: Path) -> None:
    name, password = new_account(backend)
    env = cli_env(tmp_path, backend.base_url)
    assert_one_line_error(cli("login", "--username", name, env=env, stdin="wrong\n"), "UNAUTHENTICATED", 3)
    assert_one_line_error(cli("ls", "cases", env=env), "NOT_SIGNED_IN", 3)
    bad = {**env, "UPLOAD_PLANE_TOKEN": "uppat_not-a-real-token"}
    assert_one_line_error(cli("ls", "cases", env=bad), "UNAUTHENTICATED", 3)
    with login(backend, name, password) as api:
        env = {**env, "UPLOAD_PLANE_TOKEN": personal_token(api)}
    source = random_file(tmp_path / "x.bin", 100)
    assert_one_line_error(cli("upload", str(source), "--log", "no-such-log", env=env), "NOT_FOUND", 4)
    assert_one_line_error(cli("upload", str(tmp_path / "nope"), "--log", "x", env=env), "NO_SUCH_FILE", 4)
    assert_one_line_error(cli("download", "no-such-file", env=env), "NOT_FOUND", 4)
    assert_one_line_error(cli("ls", "logs", "no-such-case", env=env), "NOT_FOUND", 4)
    usage = cli("upload", str(source), env=env)  # --log missing: argparse's usage message, exit 2
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_ctrl_c_then_resume_and_a_changed_file_starts_over(backend: Backend, tmp_path: Path) -> None:
    name, password = new_account(backend)
    with login(backend, name, password) as api:
        log_id = new_log(api)["id"]
        env = cli_env(tmp_path, backend.base_url, personal_token(api))
        source = random_file(tmp_path / "video.bin", 12 * 5 * MIB)
        args = ("upload", str(source), "--log", log_id, "--part-size", "5M")

        def interrupted_after(parts: int) -> str:
            proc = subprocess.Popen(
                command(*args, "--limit-rate", "20M"), env=env, text=True, stderr=subprocess.PIPE
            )
            deadline = time.monotonic() + 120
            while True:
                items = api.get("/uploads", params={"status": "uploading", "log_id": log_id}).json()["items"]
                if items:
                    upload = api.get(f"/uploads/{items[0]['id']}").json()
                    if len(upload["parts"]["uploaded"]) >= parts:
                        break
                assert proc.poll() is None and time.monotonic() < deadline, "the upload did not get going"
                time.sleep(0.05)  # polling interval
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 130, err
            assert err.strip().splitlines()[-1].startswith("upload-plane: INTERRUPTED:"), err
            return str(upload["id"])

        first = interrupted_after(2)
        held = len(api.get(f"/uploads/{first}").json()["parts"]["uploaded"])
        [resumed] = cli_json(*args, env=env)["files"]
        assert resumed["upload_id"] == first and resumed["resumed"]
        assert resumed["parts_skipped"] == held and resumed["parts_uploaded"] == 12 - held

        second = interrupted_after(1)
        os.utime(source, ns=(time.time_ns(), time.time_ns()))  # "changed": a new upload, the old one aborted
        [fresh] = cli_json(*args, env=env)["files"]
        assert fresh["upload_id"] != second and not fresh["resumed"] and fresh["parts_uploaded"] == 12
        assert api.get(f"/uploads/{second}").json()["status"] == "aborted"


class Died(Exception):
    """The client process ended here (as a SIGKILL would end it)."""


class AnswerNeverArrives(httpx.AsyncBaseTransport):
    """Every request reaches the API; the answer to the first upload start never reaches the client.
    ``lost``: the connection drops (the client retries); ``died``: the client dies right then."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.inner = httpx.AsyncHTTPTransport()
        self.started: list[str] = []  # the uploads the lost answers named

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/uploads") and not self.started:
            await response.aread()
            self.started.append(json.loads(response.content)["id"])
            await response.aclose()
            if self.how == "died":
                raise Died("killed after the start reached the API")
            raise httpx.ReadError("connection reset before the answer arrived", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def upload_with(
    backend: Backend, token: str, log_id: str, source: Path, state: Path, transport: httpx.AsyncBaseTransport
) -> list[UploadResult]:
    async def run() -> list[UploadResult]:
        async with Api(backend.base_url, token, retry=Retry(attempts=5, base=0.01, cap=0.05)) as api:
            await api.http.aclose()
            api.http = httpx.AsyncClient(
                base_url=api.http.base_url, headers=api.http.headers, transport=transport
            )
            return await upload_files(api, log_id, collect([source]), resume=ResumeStore(state))

    return asyncio.run(run())


@pytest.mark.parametrize("how", ["lost", "died"])
def test_a_start_whose_answer_never_arrived_is_the_same_upload_when_sent_again(
    backend: Backend, tmp_path: Path, how: str
) -> None:
    """The start is sent with an Idempotency-Key kept in the resume state before the start is sent:
    retried after a lost answer, or sent again by the next run after the client died, it names the
    same upload. (Without the key, the first upload stayed open in the store for good.)"""
    name, password = new_account(backend)
    with login(backend, name, password) as api:
        token, log_id = personal_token(api), new_log(api)["id"]
        source = random_file(tmp_path / "clip.bin", 6 * MIB + 5)
        lossy = AnswerNeverArrives(how)
        if how == "died":
            with pytest.raises(Died):
                upload_with(backend, token, log_id, source, tmp_path / "state", lossy)
            [result] = upload_with(
                backend, token, log_id, source, tmp_path / "state", httpx.AsyncHTTPTransport()
            )
        else:
            [result] = upload_with(backend, token, log_id, source, tmp_path / "state", lossy)
        assert lossy.started == [result.upload_id]
        uploads: list[dict[str, Any]] = api.get("/uploads", params={"log_id": log_id}).json()["items"]
        assert [(u["id"], u["status"]) for u in uploads] == [(result.upload_id, "completed")]
        assert api.get(f"/files/{result.file_id}").json()["sha256"] == sha256_of(source)


class DiesWhenAFileIsDone(Progress):
    """The client dies right after a file's upload ended, before it could report it."""

    def finish(self, key: str) -> None:
        raise Died(f"killed after {key} was done")


def test_a_client_that_died_before_reporting_a_done_upload_reports_the_same_file_when_run_again(
    backend: Backend, tmp_path: Path
) -> None:
    """The resume state of a finished upload is kept until its result was reported, so a client that
    died in between completes the same upload again (an answer, not a second copy of the file)."""
    name, password = new_account(backend)
    with login(backend, name, password) as api:
        token, log_id = personal_token(api), new_log(api)["id"]
        source = random_file(tmp_path / "clip.bin", 5 * MIB + 7)
        state = ResumeStore(tmp_path / "state")

        def run(progress: Progress | None = None, report: Any = None) -> list[UploadResult]:
            async def upload() -> list[UploadResult]:
                async with Api(backend.base_url, token) as client:
                    return await upload_files(
                        client, log_id, collect([source]), resume=state, progress=progress, report=report
                    )

            return asyncio.run(upload())

        with pytest.raises(Died):
            run(DiesWhenAFileIsDone())
        [first] = api.get("/uploads", params={"log_id": log_id}).json()["items"]
        assert first["status"] == "completed"
        reported: list[list[UploadResult]] = []
        [again] = run(report=reported.append)
        assert [r.upload_id for r in reported[0]] == [again.upload_id] == [first["id"]]
        assert again.resumed and again.parts_uploaded == 0
        assert len(api.get("/uploads", params={"log_id": log_id}).json()["items"]) == 1
        assert [f["id"] for f in api.get(f"/logs/{log_id}/files").json()["items"]] == [again.file_id]
        [third] = run()  # reported and forgotten: a new run uploads the file again, as asked
        assert third.upload_id != first["id"] and not third.resumed


def test_the_library_facade(backend: Backend, http: httpx.Client, tmp_path: Path) -> None:
    name, password = new_account(backend)
    with login(backend, name, password) as api:
        client = Client(backend.base_url, personal_token(api))
    case = client.create_case("Library case")
    log = client.create_log(case.id, "scripts")
    source = random_file(tmp_path / "in" / "dump.img", 5 * MIB + 3)
    [result] = client.upload(source, log_id=log.id)
    assert [f.id for f in client.files(log.id)] == [result.file_id]
    assert [lg.id for lg in client.logs(case.id)] == [log.id]
    got = client.download(result.file_id, tmp_path / "copy.img")
    assert Path(got.path).read_bytes() == source.read_bytes()
    assert client.file(result.file_id).sha256 == got.sha256 == result.sha256


@pytest.mark.parametrize("option", ["--parallel", "--part-size"])
def test_option_values_are_checked(option: str, tmp_path: Path) -> None:
    done = cli("upload", "x", "--log", "l", option, "0", env=cli_env(tmp_path, "http://127.0.0.1:9"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
