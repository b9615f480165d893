"""API servers in processes of their own, started as production starts them (`upload-plane serve`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import Backend
from tests.services import MinIO, free_port


@contextmanager
def serve_process(
    backend: Backend, minio: MinIO, log: Path, *, port: int | None = None, **env: str
) -> Iterator[str]:
    """``upload-plane serve`` in its own process, as production runs it (on ``port``, or a free
    one); yields its base URL."""
    port = port or free_port()
    settings = backend.settings
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("UPLOAD_PLANE_")},
        "UPLOAD_PLANE_DATABASE_URL": settings.database_url,
        "UPLOAD_PLANE_S3_ENDPOINT_URL": minio.endpoint,
        "UPLOAD_PLANE_S3_BUCKET": settings.s3_bucket,
        "UPLOAD_PLANE_S3_ACCESS_KEY_ID": minio.access_key,
        "UPLOAD_PLANE_S3_SECRET_ACCESS_KEY": minio.secret_key,
        "UPLOAD_PLANE_JWT_SECRET": settings.jwt_secret,
        **{f"UPLOAD_PLANE_{k.upper()}": v for k, v in env.items()},
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "upload_plane.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)  # polling interval while waiting for the condition above
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
