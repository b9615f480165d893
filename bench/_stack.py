"""Shared by the data-path benchmarks: a private MariaDB + MinIO, ``upload-plane serve`` as its own
process, a signed-in user with a log, and a random file in a temporary directory.

Not a benchmark itself (``run_all.py`` skips files starting with ``_``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.services import MinIO, find_binary, free_port, mariadb_and_minio  # noqa: E402

from upload_plane.embedded import prepare  # noqa: E402
from upload_plane.settings import MIB, Settings  # noqa: E402

ADMIN_PASSWORD = "bench-admin-password"
JWT_SECRET = "bench-secret-0123456789-0123456789-0123456789"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Stack:
    api_url: str
    api_pid: int
    token: str
    log_id: str
    minio: MinIO
    bucket: str
    workdir: Path
    settings: Settings
    mariadb_pid: int = 0


def services_missing() -> str | None:
    if not find_binary("mariadbd", "MARIADBD_BIN") or not find_binary("minio", "MINIO_BIN"):
        return "needs mariadbd (apt-get install mariadb-server) and MinIO (make minio)"
    return None


def settings_env(settings: Settings) -> dict[str, str]:
    """This process's environment with every setting as its ``UPLOAD_PLANE_*`` variable."""
    env = dict(os.environ)
    for name in Settings.__dataclass_fields__:
        value = getattr(settings, name)
        env[f"UPLOAD_PLANE_{name.upper()}"] = ",".join(value) if isinstance(value, tuple) else str(value)
    env["UPLOAD_PLANE_METRICS_PUBLIC"] = "true"  # a private bench: /metrics needs no token
    return env


@contextmanager
def api_process(settings: Settings, workdir: Path) -> Iterator[tuple[str, int]]:
    """``upload-plane serve`` (one worker: the API is this one process); yields its URL and pid."""
    env = settings_env(settings)
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "upload-plane"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with (workdir / "api.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (workdir / "api.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the API did not start; {workdir / 'api.log'} ends with:\n{tail}")
            time.sleep(0.1)  # polling interval while waiting for readiness
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def stack(workdir: Path, **settings_changes: object) -> Iterator[Stack]:
    with ExitStack() as stack_:
        services = stack_.enter_context(
            mariadb_and_minio(workdir, "bench", s3_bucket="bench", jwt_secret=JWT_SECRET)
        )
        settings, minio = services.settings.with_(**settings_changes), services.minio
        prepare(settings, ADMIN_PASSWORD)
        url, pid = stack_.enter_context(api_process(settings, workdir))
        with httpx.Client(base_url=f"{url}/api/v1", timeout=60) as api:
            login = api.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
            token = api.post("/tokens", json={"name": "bench", "expires_in_days": 1}).json()["token"]
            case = api.post("/cases", json={"title": "bench"}).json()
            log = api.post(f"/cases/{case['id']}/logs", json={"name": "bench"}).json()
        yield Stack(
            url, pid, token, log["id"], minio, settings.s3_bucket, workdir, settings, services.mariadb.pid
        )


def random_file(path: Path, size: int) -> Path:
    """``size`` random bytes (written in 64 MiB blocks)."""
    block = 64 * MIB
    with path.open("wb") as out:
        left = size
        while left:
            n = min(block, left)
            out.write(os.urandom(n))
            left -= n
    return path


def _status_kib(pid: int, field: str, program: bytes = b"") -> int:
    """A ``/proc/PID/status`` memory field in KiB; 0 once the process is gone, or while its command
    line does not contain ``program`` yet (a child between fork and exec shows its parent's memory)."""
    proc = Path(f"/proc/{pid}")
    try:
        before = (proc / "cmdline").read_bytes()
        status = (proc / "status").read_text()
        after = (proc / "cmdline").read_bytes()
    except OSError:
        return 0
    if program not in before or program not in after:
        return 0
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def peak_rss_kib(pid: int) -> int:
    """The process's high-water mark (``VmHWM``), as the kernel keeps it."""
    return _status_kib(pid, "VmHWM")


def rss_kib(pid: int) -> int:
    """The process's resident set now (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a live process has used (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CliRun:
    seconds: float  # wall clock of the whole process
    cpu_seconds: float  # its user + system CPU
    peak_rss_kib: int  # the highest VmRSS sampled every 20 ms
    output: dict[str, Any]  # its --json document


def run_cli(s: Stack, *args: str) -> CliRun:
    """Run ``upload-plane ARGS --json`` as a user would. Its peak RSS is the highest ``VmRSS`` sampled
    every 20 ms (its part buffers live for the whole transfer, so sampling finds them; ``VmHWM`` and
    ``ru_maxrss`` can report the pages of this large parent after the fork)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOAD_PLANE_")}
    env.update(
        UPLOAD_PLANE_API_URL=s.api_url,
        UPLOAD_PLANE_TOKEN=s.token,
        XDG_STATE_HOME=str(s.workdir / "state"),
        XDG_CONFIG_HOME=str(s.workdir / "config"),
    )
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "upload-plane"), *args, "--json"],
            env=env,
            stdout=out,
            stderr=err,
        )
        peak, marker = 0, f"\0{args[0]}\0".encode()
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _status_kib(proc.pid, "VmRSS", marker))
            time.sleep(0.02)  # sampling interval
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(
            f"upload-plane {' '.join(args)} failed ({proc.returncode}): {stderr.decode()[-2000:]}"
        )
    return CliRun(elapsed, usage.ru_utime + usage.ru_stime, peak, json.loads(stdout))


def write_result(name: str, result: dict[str, Any]) -> None:
    """Print the one JSON line and keep it in bench/results/NAME.json."""
    line = json.dumps(result)
    print(line)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
