"""Mobile apps get their client from the OpenAPI document: generate a typed Python client from the
live ``/schema/openapi.json`` with ``openapi-python-client`` (into a temporary directory, never
committed), import it, upload a video into MinIO with nothing else but httpx for the PUTs, and read
what processing found (hashes, type, media facts) and the preview through it."""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests import samples
from tests.api.helpers import MIB, crc64_b64, new_account
from tests.conftest import Backend, real_backend

pytestmark = pytest.mark.real

PACKAGE = "upload_plane_api"
PART = 5 * MIB


def generate(schema: bytes, into: Path) -> Any:
    (into / "openapi.json").write_bytes(schema)
    bindir = Path(sys.executable).parent
    generator = bindir / "openapi-python-client"
    assert generator.exists(), "openapi-python-client is not installed (pip install -e '.[dev]')"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff step
    done = subprocess.run(
        [str(generator), "generate", "--path", "openapi.json", "--output-path", PACKAGE, "--meta", "none"],
        cwd=into,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(into))
    try:
        return importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(into))


@pytest.fixture(scope="module")
def real(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """MariaDB + MinIO, processing in-process (the job code the workers run)."""
    with real_backend(request, "openapi_client", processing="auto") as backend:
        yield backend


def op(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def test_a_generated_client_uploads_into_minio(real: Backend, http: httpx.Client, tmp_path: Path) -> None:
    schema = http.get(f"{real.base_url}/schema/openapi.json")
    assert schema.status_code == 200
    api = generate(schema.content, tmp_path)
    models = importlib.import_module(f"{PACKAGE}.models")
    try:
        username, password = new_account(real)
        anonymous = api.Client(base_url=real.base_url)
        signed_in = op("auth.api_v1_auth_login_login").sync(
            client=anonymous, body=models.LoginRequest(username=username, password=password)
        )
        assert isinstance(signed_in, models.TokenResponse), signed_in
        user = api.AuthenticatedClient(base_url=real.base_url, token=signed_in.access_token)

        case = op("cases.api_v1_cases_create").sync(client=user, body=models.CaseCreate(title="from a phone"))
        log = op("cases.api_v1_cases_case_id_logs_create_log").sync(
            case.id, client=user, body=models.LogCreate(name="phone")
        )
        data = samples.mp4(6, 640, 360, bitrate="16M")
        assert len(data) > 2 * PART
        upload = op("uploads.api_v1_logs_log_id_uploads_start").sync(
            log.id,
            client=user,
            body=models.UploadCreate(
                filename="clip.mp4",
                size=len(data),
                content_type="video/mp4",
                sha256=hashlib.sha256(data).hexdigest(),
                crc64nvme=crc64_b64(data),
                part_size=PART,
            ),
        )
        assert isinstance(upload, models.UploadOut), upload
        chunks = {
            n: data[(n - 1) * upload.part_size : n * upload.part_size]
            for n in range(1, upload.part_count + 1)
        }
        signed = op("uploads.api_v1_uploads_upload_id_parts_sign").sync(
            upload.id,
            client=user,
            body=models.SignRequest(
                part_numbers=list(chunks),
                checksums_crc64nvme=models.SignRequestChecksumsCrc64NvmeType0.from_dict(
                    {str(n): crc64_b64(b) for n, b in chunks.items()}
                ),
            ),
        )
        assert isinstance(signed, models.SignResponse), signed
        for part in signed.parts:
            put = http.put(part.url, content=chunks[part.part_number], headers=part.headers.to_dict())
            assert put.status_code == 200, put.text

        file = op("uploads.api_v1_uploads_upload_id_complete_complete").sync(
            upload.id, client=user, body=models.CompleteRequest()
        )
        assert isinstance(file, models.FileOut), file
        assert (file.status, file.size, file.verified_by) == ("available", len(data), "store")
        link = op("files.api_v1_files_file_id_download_download").sync(file.id, client=user, redirect=False)
        assert isinstance(link, models.DownloadOut), link
        assert http.get(link.url).content == data

        read = op("files.api_v1_files_file_id_read")
        deadline = time.monotonic() + 120
        while not isinstance(file.processing, models.ProcessingOut) or file.processing.status != "done":
            assert time.monotonic() < deadline, file.processing
            time.sleep(0.2)  # polling interval while waiting for the condition above
            file = read.sync(file.id, client=user)
            assert isinstance(file, models.FileOut), file
        assert (file.detected_type, file.type_matches, file.has_preview) == ("video/mp4", True, True)
        assert (file.sha256_source, file.sha256_verified) == ("client", True)
        assert isinstance(file.media, models.MediaOut)
        assert (file.media.width, file.media.height, file.media.codec) == (640, 360, "h264")
        assert 5.5 < file.media.duration_seconds < 6.5
        preview = op("files.api_v1_files_file_id_preview_preview").sync(file.id, client=user, redirect=False)
        assert isinstance(preview, models.DownloadOut), preview
        poster = Image.open(io.BytesIO(http.get(preview.url).content))
        assert poster.format == "JPEG" and max(poster.size) <= 512

        missing = read.sync("no-such-file", client=user)
        assert isinstance(missing, models.Problem) and missing.code == "NOT_FOUND"

        # Many small files: one request starts them (each answered alone), one PUT each, one
        # request completes them.
        photos = [os.urandom(1000 + i) for i in range(3)]
        entries = [
            models.BatchFile(
                filename=f"IMG_{i}.jpg", size=len(p), content_type="image/jpeg",
                sha256=hashlib.sha256(p).hexdigest(),
            )
            for i, p in enumerate(photos)
        ]  # fmt: skip
        entries.append(models.BatchFile(filename="", size=1))  # refused alone
        started = op("uploads.api_v1_logs_log_id_uploads_batch_start_batch").sync(
            log.id, client=user, body=models.BatchStart(files=entries), idempotency_key="phone-batch-1"
        )
        assert isinstance(started, models.BatchStarted), started
        assert (started.started, started.refused) == (3, 1)
        assert started.items[3].error.code == "VALIDATION_ERROR"
        for item, photo in zip(started.items, photos, strict=False):
            assert item.upload.kind == "put"
            put = http.put(item.put.url, content=photo, headers=item.put.headers.to_dict())
            assert put.status_code == 200, put.text
        ids = [models.BatchCompleteUpload(id=item.upload.id) for item in started.items[:3]]
        done = op("uploads.api_v1_uploads_batch_complete_complete_batch").sync(
            client=user, body=models.BatchComplete(uploads=ids)
        )
        assert isinstance(done, models.BatchCompleted), done
        assert [(i.status, i.file.size, i.file.verified_by) for i in done.items] == [
            ("done", len(p), "store") for p in photos
        ]

        no_preview = op("files.api_v1_files_file_id_preview_preview").sync("no-such-file", client=user)
        assert isinstance(no_preview, models.Problem) and no_preview.code == "NOT_FOUND"
    finally:
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]
