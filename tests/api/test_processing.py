"""Processing after the upload, run in-process (no Redis), on both backends: every kind of file
ends ``done`` with its detected type, media facts and preview, mismatches are flagged and audited,
the preview route answers as documented, and a hostile file fails its own job only.

The same job code runs on workers over Redis in ``tests/real/test_processing.py``.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests import samples
from tests.api.helpers import assert_problem, complete, new_log, new_user, put_parts, upload_file
from tests.conftest import Backend, embedded_backend, real_backend
from tests.services import real_services_required

DEADLINE = 120.0

# The videos are made, and described, by Debian's ffmpeg (.ci/run installs it).
pytestmark = pytest.mark.skipif(
    not (shutil.which("ffmpeg") and shutil.which("ffprobe")) and not real_services_required(),
    reason="needs ffmpeg and ffprobe: apt-get install ffmpeg",
)


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.real)])
def processing(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A server that runs the jobs in-process (no queue configured)."""
    if request.param == "embedded":
        with embedded_backend(tmp_path_factory.mktemp("processing"), processing="auto") as b:
            yield b
    else:
        with real_backend(request, "processing_api", processing="auto") as b:
            yield b


def processed(api: httpx.Client, file_id: str, deadline: float = DEADLINE) -> dict[str, Any]:
    """The file once its processing has ended (``done`` or ``failed``)."""
    until = time.monotonic() + deadline
    while True:
        resp = api.get(f"/files/{file_id}")
        assert resp.status_code == 200, resp.text
        file = dict(resp.json())
        if file["processing"] and file["processing"]["status"] in ("done", "failed"):
            return file
        assert time.monotonic() < until, f"not processed in {deadline} s: {file['processing']}"
        time.sleep(0.2)  # polling interval while waiting for the condition above


def preview_of(api: httpx.Client, http: httpx.Client, file_id: str) -> Image.Image:
    resp = api.get(f"/files/{file_id}/preview")
    assert resp.status_code == 307, resp.text
    got = http.get(resp.headers["location"])
    assert got.status_code == 200
    image = Image.open(io.BytesIO(got.content))
    image.load()
    return image


def send(
    http: httpx.Client, api: httpx.Client, log_id: str, data: bytes, name: str, declared: str, **extra: Any
) -> dict[str, Any]:
    """Upload ``data`` as ``name`` declared as ``declared``; the file."""
    return upload_file(http, api, log_id, data, filename=name, content_type=declared, **extra)


def audit_of(api: httpx.Client, case_id: str, file_id: str) -> list[dict[str, Any]]:
    resp = api.get(f"/cases/{case_id}/audit", params={"limit": 500})
    assert resp.status_code == 200, resp.text
    return [e for e in resp.json()["items"] if e["subject_id"] == file_id]


def test_each_kind_of_file_is_hashed_identified_and_previewed(
    processing: Backend, http: httpx.Client
) -> None:
    cases = samples.every_kind()
    with new_user(processing) as api:
        log = new_log(api)
        uploaded = [
            (upload_file(http, api, log["id"], data, filename=name, content_type=declared), data, detected)
            for name, data, declared, detected in cases
        ]
        for file, data, detected in uploaded:
            got = processed(api, file["id"])
            assert got["processing"]["status"] == "done", got["processing"]
            assert got["processing"]["error"] is None and got["processing"]["finished_at"]
            assert got["detected_type"] == detected, got
            assert got["sha256"] == hashlib.sha256(data).hexdigest()
            assert got["sha256_source"] == "client" and got["sha256_verified"] is True
            assert got["type_matches"] is (None if detected == "application/octet-stream" else True)
            assert got["has_preview"] is (detected != "application/octet-stream")
            if got["has_preview"]:
                preview = preview_of(api, http, file["id"])
                assert max(preview.size) <= 512
        media = {f["filename"]: processed(api, f["id"])["media"] for f, _, _ in uploaded}
    assert media["photo.png"]["width"] == 800 and media["photo.png"]["height"] == 600
    camera = media["camera.jpg"]
    assert (camera["width"], camera["height"]) == (1200, 1600)  # orientation 6 applied
    assert camera["camera"] == "Canon EOS 5D Mark IV"
    assert camera["taken_at"] == "2026-03-14T09:26:53"
    assert camera["gps"]["latitude"] == pytest.approx(samples.LATITUDE, abs=1e-4)
    assert camera["gps"]["longitude"] == pytest.approx(samples.LONGITUDE, abs=1e-4)
    assert (media["phone.heic"]["width"], media["phone.heic"]["height"]) == (1024, 768)
    clip = media["clip.mp4"]
    assert clip["duration_seconds"] == pytest.approx(2.0, abs=0.1)
    assert (clip["width"], clip["height"], clip["codec"]) == (320, 240, "h264")
    assert media["report.pdf"]["pages"] == 3
    assert media["blob.bin"] is None


def test_mismatches_are_flagged_and_audited(processing: Backend, http: httpx.Client) -> None:
    pdf = samples.pdf(1)
    wrong = hashlib.sha256(b"not these bytes").hexdigest()
    with new_user(processing) as api:
        log = new_log(api)
        disguised = send(http, api, log["id"], pdf, "holiday.png", "image/png")
        lying = send(http, api, log["id"], samples.png(), "a.png", "image/png", sha256=wrong)
        got = processed(api, disguised["id"])
        assert (got["detected_type"], got["type_matches"]) == ("application/pdf", False)
        assert got["processing"]["status"] == "done"
        events = audit_of(api, log["case_id"], disguised["id"])
        mismatch = [e for e in events if e["action"] == "file.type_mismatch"]
        assert len(mismatch) == 1
        assert mismatch[0]["details"]["declared_type"] == "image/png"
        assert mismatch[0]["details"]["detected_type"] == "application/pdf"

        got = processed(api, lying["id"])
        assert got["sha256"] == wrong and got["sha256_source"] == "client"
        assert got["sha256_verified"] is False
        assert got["sha256_server"] == hashlib.sha256(samples.png()).hexdigest()
        events = audit_of(api, log["case_id"], lying["id"])
        integrity = [e for e in events if e["action"] == "file.integrity_mismatch"]
        assert len(integrity) == 1 and not [e for e in events if e["action"] == "file.verified"]
        assert integrity[0]["details"]["declared_sha256"] == wrong
        assert integrity[0]["details"]["computed_sha256"] == got["sha256_server"]
        # flagged, not deleted: it is evidence
        assert api.get(f"/files/{lying['id']}/download").status_code == 307


def test_a_file_without_a_declared_hash_gets_the_servers(processing: Backend, http: httpx.Client) -> None:
    data = samples.random_binary(300_000)
    with new_user(processing) as api:
        log = new_log(api)
        upload = api.post(f"/logs/{log['id']}/uploads", json={"filename": "x.bin", "size": len(data)}).json()
        put_parts(http, api, upload, data, [1])
        assert complete(api, upload["id"]).status_code == 200
        got = processed(api, upload["file_id"])
        assert got["sha256"] == hashlib.sha256(data).hexdigest()
        assert (got["sha256_source"], got["sha256_verified"]) == ("server", None)
        events = audit_of(api, log["case_id"], upload["file_id"])
        verified = [e for e in events if e["action"] == "file.verified"]
        assert len(verified) == 1 and verified[0]["details"]["sha256_source"] == "server"


def test_preview_route(processing: Backend, http: httpx.Client) -> None:
    with new_user(processing) as api, new_user(processing) as stranger:
        log = new_log(api)
        image = send(http, api, log["id"], samples.png(), "p.png", "image/png")
        blob = send(http, api, log["id"], samples.random_binary(), "b.bin", "application/octet-stream")
        processed(api, image["id"])
        processed(api, blob["id"])
        body = api.get(f"/files/{image['id']}/preview", params={"redirect": "false"})
        assert body.status_code == 200 and set(body.json()) == {"url", "expires_at"}
        assert http.get(body.json()["url"]).headers["content-type"] == "image/jpeg"
        assert_problem(api.get(f"/files/{blob['id']}/preview"), 404, "PREVIEW_NOT_AVAILABLE")
        assert_problem(stranger.get(f"/files/{image['id']}/preview"), 404, "NOT_FOUND")
        listed = api.get(f"/logs/{log['id']}/files").json()["items"]
        assert {f["id"]: f["has_preview"] for f in listed} == {image["id"]: True, blob["id"]: False}


def test_hostile_files_fail_their_own_job_only(processing: Backend, http: httpx.Client) -> None:
    with new_user(processing) as api:
        log = new_log(api)
        bomb = send(http, api, log["id"], samples.png_bomb(), "bomb.png", "image/png")
        broken = send(http, api, log["id"], samples.truncated_mp4(), "cut.mp4", "video/mp4")
        fine = send(http, api, log["id"], samples.png(), "fine.png", "image/png")
        got = processed(api, bomb["id"])
        assert got["processing"]["status"] == "failed"
        assert "pixels" in got["processing"]["error"], got["processing"]
        assert got["sha256_verified"] is True and got["detected_type"] == "image/png"  # what it did find
        got = processed(api, broken["id"])
        assert got["processing"]["status"] == "failed" and got["processing"]["error"]
        assert processed(api, fine["id"])["processing"]["status"] == "done"


def metric(base_url: str, name: str, **labels: str) -> float | None:
    """A sample of the API's ``/metrics``, ``None`` if it is not there."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_metrics_show_the_queue_and_the_jobs(processing: Backend, http: httpx.Client) -> None:
    before = metric(processing.base_url, "upload_plane_processing_job_duration_seconds_count", outcome="done")
    with new_user(processing) as api:
        log = new_log(api)
        processed(api, send(http, api, log["id"], samples.png(), "m.png", "image/png")["id"])
    base = processing.base_url
    after = metric(base, "upload_plane_processing_job_duration_seconds_count", outcome="done")
    assert after is not None and after >= (before or 0) + 1
    assert (metric(base, "upload_plane_processing_files", status="done") or 0) >= 1
    for state in ("queued", "active", "scheduled", "outbox"):
        assert metric(base, "upload_plane_processing_queue_jobs", state=state) is not None, state
    assert metric(base, "upload_plane_processing_failures_total", kind="too_large") is not None
