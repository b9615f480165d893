"""The README's curl walkthrough, run verbatim against a real ``upload-plane dev``.

The block after ``<!-- walkthrough -->`` in README.md is extracted and run with bash, as a reader would
run it, against the embedded server started as a subprocess in a temporary working directory (so its
``./.data`` stays out of the checkout). If the README and the API drift apart, this test says so.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from upload_plane.embedded import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- walkthrough -->"
SUCCESS_LINE = "WALKTHROUGH OK"
ADMIN_PASSWORD = "readme-walkthrough-password"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
RUN_TIMEOUT = 120.0


def walkthrough_block(readme: str) -> str:
    """The fenced bash block that directly follows the marker line."""
    match = re.search(re.escape(MARKER) + r"\n```bash\n(.*?)\n```", readme, re.DOTALL)
    if match is None:
        raise AssertionError(f"README.md has no ```bash block directly after {MARKER!r}")
    return match.group(1)


def wait_healthy(base_url: str, server: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.poll() is not None:
            raise AssertionError(
                f"upload-plane dev exited with {server.returncode}:\n{log_path.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"upload-plane dev not healthy after {START_TIMEOUT:.0f}s:\n{log_path.read_text()[-4000:]}"
            )
        time.sleep(0.1)


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGINT)  # uvicorn shuts down, then the embedded S3 stops
    try:
        server.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[str]:
    """``upload-plane dev`` on a free port, cwd in a temp dir; yields its base URL."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    workdir = tmp_path / "server"
    workdir.mkdir()
    log_path = tmp_path / "server.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("UPLOAD_PLANE_")}
    env["UPLOAD_PLANE_DEV_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "upload_plane.cli", "dev", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_healthy(base_url, server, log_path)
            yield base_url
        finally:
            stop(server)


def test_walkthrough_block_is_present() -> None:
    script = walkthrough_block(README.read_text())
    assert script.startswith("API=${API:-http://127.0.0.1:8000}\n")
    assert "set -euo pipefail" in script
    assert SUCCESS_LINE in script


def test_readme_walkthrough_runs_verbatim(dev_server: str, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed; the README walkthrough needs curl (and bash, python3)")
    bash = shutil.which("bash")
    assert bash is not None, "bash is not installed"
    script = walkthrough_block(README.read_text())
    env = dict(os.environ, API=dev_server, PASS=ADMIN_PASSWORD)
    if shutil.which("python3") is None:  # e.g. only a versioned interpreter is installed
        bindir = tmp_path / "bin"
        bindir.mkdir()
        (bindir / "python3").symlink_to(sys.executable)
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [bash, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"the walkthrough failed with {result.returncode}\n{output}"
    assert SUCCESS_LINE in result.stdout, output


def test_make_run_processes_files_without_redis(dev_server: str) -> None:
    """The embedded default (what ``make run`` starts, no ``UPLOAD_PLANE_QUEUE_URL``, no Redis)
    runs the processing jobs itself: a photo uploaded without a declared hash gets the server's
    SHA-256 and a preview."""
    import hashlib

    import httpx

    from tests import samples

    data = samples.jpeg_with_gps(800, 600)
    with httpx.Client(base_url=f"{dev_server}/api/v1", timeout=60) as api:
        login = api.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        case = api.post("/cases", json={"title": "make run"}).json()
        log = api.post(f"/cases/{case['id']}/logs", json={"name": "photos"}).json()
        body = {"filename": "scene.jpg", "size": len(data), "content_type": "image/jpeg"}
        upload = api.post(f"/logs/{log['id']}/uploads", json=body).json()
        part = api.post(f"/uploads/{upload['id']}/parts", json={"part_numbers": [1]}).json()["parts"][0]
        assert httpx.put(part["url"], content=data, headers=part["headers"]).status_code == 200
        assert api.post(f"/uploads/{upload['id']}/complete", json={}).status_code == 200
        deadline = time.monotonic() + 60
        while (file := api.get(f"/files/{upload['file_id']}").json())["processing"]["status"] != "done":
            assert time.monotonic() < deadline, file["processing"]
            time.sleep(0.2)  # polling interval while waiting for the condition above
        assert (file["sha256"], file["sha256_source"]) == (hashlib.sha256(data).hexdigest(), "server")
        assert file["has_preview"] and file["media"]["camera"] == "Canon EOS 5D Mark IV"
        preview = api.get(f"/files/{upload['file_id']}/preview")
        assert preview.status_code == 307
        assert httpx.get(preview.headers["location"]).headers["content-type"] == "image/jpeg"
