"""The CLI against MariaDB + MinIO, as users meet it: killed mid-upload and started again, the API
going away and coming back mid-upload, and a download whose object was altered in the store."""

from __future__ import annotations

import base64
import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from awscrt import checksums

from tests.api.helpers import MIB, client, login, new_account, new_log
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
from tests.real.processes import serve_process
from tests.services import MinIO, free_port

pytestmark = pytest.mark.real

PART = 5 * MIB
DEADLINE = 120.0


def crc64_of(path: Path) -> str:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            crc = checksums.crc64nvme(chunk, crc)
    return base64.b64encode(int(crc).to_bytes(8, "big")).decode()


def wait_for(condition: Callable[[], Any], what: str, proc: subprocess.Popen[str] | None = None) -> Any:
    """Poll ``condition`` until it returns something true (failing if ``proc`` ends first)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the CLI ended ({proc.returncode}) before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling interval


def open_upload(api: httpx.Client, log_id: str) -> dict[str, Any] | None:
    """The caller's one open upload in the log, with the store's part state."""
    items = api.get("/uploads", params={"status": "uploading", "log_id": log_id}).json()["items"]
    if not items:
        return None
    assert len(items) == 1, items
    return dict(api.get(f"/uploads/{items[0]['id']}").json())


def held_parts(api: httpx.Client, log_id: str, at_least: int) -> dict[str, Any] | None:
    upload = open_upload(api, log_id)
    return upload if upload and len(upload["parts"]["uploaded"]) >= at_least else None


def check_file(api: httpx.Client, http: httpx.Client, result: dict[str, Any], source: Path) -> None:
    """The API reports the local file's checksums, verified by the store, and the object is the file."""
    file = api.get(f"/files/{result['file_id']}").json()
    assert file["status"] == "available"
    assert file["sha256"] == sha256_of(source) == result["sha256"]
    assert file["crc64nvme"] == crc64_of(source) == result["crc64nvme"]
    assert file["verified_by"] == "store" == result["verified_by"]
    link = api.get(f"/files/{result['file_id']}/download", params={"redirect": "false"}).json()
    assert http.get(link["url"]).content == source.read_bytes()


def test_an_upload_killed_with_sigkill_resumes_with_only_the_missing_parts(
    real: Backend, http: httpx.Client, tmp_path: Path
) -> None:
    name, password = new_account(real)
    with login(real, name, password) as api:
        log_id = new_log(api)["id"]
        env = cli_env(tmp_path, real.base_url, personal_token(api))
        source = random_file(tmp_path / "evidence.bin", 24 * PART + 12345)  # 25 parts
        args = ("upload", str(source), "--log", log_id, "--part-size", "5M")
        first = subprocess.Popen(
            command(*args, "--limit-rate", "25M", "--json"), env=env, text=True, stderr=subprocess.PIPE
        )
        try:
            wait_for(lambda: held_parts(api, log_id, 4), "4 parts in the store", first)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        before = open_upload(api, log_id)
        assert before is not None and before["part_count"] == 25
        held = {p["part_number"] for p in before["parts"]["uploaded"]}
        assert 4 <= len(held) < 25, held
        state_files = list((tmp_path / "state" / "upload-plane" / "uploads").glob("*.json"))
        assert len(state_files) == 1 and json.loads(state_files[0].read_text())["upload_id"] == before["id"]

        [result] = cli_json(*args, env=env)["files"]
        assert result["upload_id"] == before["id"] and result["resumed"] is True
        assert result["parts_skipped"] == len(held)
        assert result["parts_uploaded"] == 25 - len(held)
        check_file(api, http, result, source)
        assert not list(state_files[0].parent.glob("*.json")), "the state file outlived the upload"


def test_the_cli_waits_out_an_api_outage_and_finishes(
    real: Backend, minio: MinIO, http: httpx.Client, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "api.log"
    name, password = new_account(real)
    with (
        serve_process(real, minio, log, port=port) as url,
        login(Backend("real", real.settings, url), name, password) as api,
    ):
        log_id = new_log(api)["id"]
        token = personal_token(api)
        env = cli_env(tmp_path, url, token)
        source = random_file(tmp_path / "bodycam.bin", 60 * PART)  # more parts than one signed window
        upload = command(
            "upload", str(source), "--log", log_id, "--part-size", "5M", "--limit-rate", "40M", "--json"
        )
        proc = subprocess.Popen(upload, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: held_parts(api, log_id, 2), "2 parts in the store", proc)
    # the API is down now; the CLI keeps sending the parts it has URLs for, then retries the API
    notices: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    threading.Thread(target=lambda: [notices.put(line) for line in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    first = wait_for(lambda: _next_line(notices), "a retry notice", proc)
    assert "retrying in" in first and "ConnectError" in first, first
    with serve_process(real, minio, log, port=port) as url:
        out, _ = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, (proc.returncode, out)
        [result] = json.loads(out)["files"]
        assert result["parts_uploaded"] == 60 and result["parts_skipped"] == 0
        with client(Backend("real", real.settings, url), token) as api:
            check_file(api, http, result, source)


def _next_line(lines: queue.Queue[str]) -> str | None:
    try:
        return lines.get_nowait()
    except queue.Empty:
        return None


def test_a_download_whose_object_was_altered_in_the_store_fails_and_leaves_nothing(
    real: Backend, minio: MinIO, tmp_path: Path
) -> None:
    name, password = new_account(real)
    with login(real, name, password) as api:
        env = cli_env(tmp_path, real.base_url, personal_token(api))
        source = random_file(tmp_path / "up" / "statement.pdf", 2 * PART + 17)
        [result] = cli_json("upload", str(source), "--log", new_log(api)["id"], env=env)["files"]
        out = tmp_path / "down"
        out.mkdir()
        good = cli_json("download", result["file_id"], "-o", str(out / "copy.pdf"), env=env)
        assert good["verified"] == ["size", "sha256", "crc64nvme"]
        assert (out / "copy.pdf").read_bytes() == source.read_bytes()

        key = api.get(f"/files/{result['file_id']}").json()["key"]
        altered = bytearray(source.read_bytes())
        altered[PART] ^= 0xFF  # same size, one byte different
        minio.client().put_object(Bucket=real.settings.s3_bucket, Key=key, Body=bytes(altered))
        bad = cli("download", result["file_id"], "-o", str(out / "altered.pdf"), env=env)
        assert_one_line_error(bad, "INTEGRITY_ERROR", 5)
        assert "sha256" in bad.stderr
        assert sorted(p.name for p in out.iterdir()) == ["copy.pdf"], "a failed download left a file"
