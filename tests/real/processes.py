"""API servers in processes of their own, started as production starts them (`upload-plane serve`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import Backend
from tests.services import MinIO, free_port

LOGIN_LIMITS = (
    "login_attempts_per_address",
    "login_failures_per_account_address",
    "login_failures_per_account",
)


def environment(backend: Backend, minio: MinIO, **env: str) -> dict[str, str]:
    """The environment of a service process on ``backend``'s database and bucket (``env``: more
    ``UPLOAD_PLANE_*`` settings, by lower-case name)."""
    settings = backend.settings
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("UPLOAD_PLANE_")},
        "UPLOAD_PLANE_DATABASE_URL": settings.database_url,
        "UPLOAD_PLANE_S3_ENDPOINT_URL": minio.endpoint,
        "UPLOAD_PLANE_S3_BUCKET": settings.s3_bucket,
        "UPLOAD_PLANE_S3_ACCESS_KEY_ID": minio.access_key,
        "UPLOAD_PLANE_S3_SECRET_ACCESS_KEY": minio.secret_key,
        "UPLOAD_PLANE_JWT_SECRET": settings.jwt_secret,
        "UPLOAD_PLANE_PROCESSING": settings.processing,  # off unless the test turned it on
        "UPLOAD_PLANE_PASSWORD_HASH_COST": settings.password_hash_cost,
        # The tests' generous login limits (login counters live in the shared database: a server with
        # the defaults would refuse 127.0.0.1 after the other tests' logins); limit tests set theirs.
        **{f"UPLOAD_PLANE_{name.upper()}": str(getattr(settings, name)) for name in LOGIN_LIMITS},
        "UPLOAD_PLANE_PROCESSING_HEARTBEAT": str(settings.processing_heartbeat),
        "UPLOAD_PLANE_METRICS_PUBLIC": "true",  # tests read /metrics; serve refuses it open otherwise
        **{f"UPLOAD_PLANE_{k.upper()}": v for k, v in env.items()},
    }


class ApiProcess:
    """One ``upload-plane serve`` process on a fixed port, which a test may kill and start again."""

    def __init__(self, backend: Backend, minio: MinIO, log: Path, port: int | None = None, **env: str):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.environment = environment(backend, minio, **env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers ``/health``."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "upload_plane.cli",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.environment,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)  # polling interval while waiting for the condition above

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_dead(self, timeout: float = 30) -> int:
        """Wait for the process to end (a failpoint killed it); its return code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as when a machine or container dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@contextmanager
def api_process(
    backend: Backend, minio: MinIO, log: Path, *, port: int | None = None, **env: str
) -> Iterator[ApiProcess]:
    server = ApiProcess(backend, minio, log, port, **env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def serve_process(
    backend: Backend, minio: MinIO, log: Path, *, port: int | None = None, **env: str
) -> Iterator[str]:
    """``upload-plane serve`` in its own process, as production runs it (on ``port``, or a free
    one); yields its base URL."""
    with api_process(backend, minio, log, port=port, **env) as server:
        yield server.url


class WorkerProcess:
    """One ``upload-plane worker`` process (jobs from Redis), which a test may SIGKILL and start again."""

    def __init__(self, backend: Backend, minio: MinIO, queue_url: str, log: Path, **env: str) -> None:
        self.log = log
        self.environment = environment(backend, minio, queue_url=queue_url, **env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "upload_plane.cli", "worker"],
                env=self.environment,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the job it runs is abandoned mid-way, as when a machine dies."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
