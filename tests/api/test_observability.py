"""Observability on both backends: ``GET /metrics`` after a full upload (request latency by route
template, store calls by operation, statements, presigned URLs, uploads by state), the in-process
reaper's actions, the ``X-Request-ID`` round trip, and the metrics token."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.helpers import (
    assert_store_agrees,
    complete,
    expire_upload,
    new_log,
    new_user,
    put_parts,
    start_upload,
)
from tests.conftest import Backend, embedded_backend, real_backend
from upload_plane.uploads.reaper import ReapReport
from upload_plane.uploads.state import UploadStatus

COMPLETE_ROUTE = "/api/v1/uploads/{upload_id}/complete"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str, **headers: str) -> Samples:
    """Every sample of ``/metrics``: (name, labels) -> value."""
    resp = httpx.get(f"{base_url}/metrics", headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def by_state(earlier: Samples, later: Samples) -> dict[str, float]:
    """How ``upload_plane_uploads{status}`` changed between two scrapes, for every status."""
    name = "upload_plane_uploads"
    return {
        s.value: value(later, name, status=s.value) - value(earlier, name, status=s.value)
        for s in UploadStatus
    }


def changed(**counts: float) -> dict[str, float]:
    """``by_state``'s answer when only ``counts`` changed."""
    return {**{s.value: 0.0 for s in UploadStatus}, **counts}


def test_metrics_after_a_full_upload(backend: Backend, http: httpx.Client) -> None:
    data = os.urandom(2 * 5 * 1024 * 1024 + 99)
    before = scrape(backend.base_url)
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], data, part_size=5 * 1024 * 1024)
        started = scrape(backend.base_url)
        put_parts(http, api, upload, data, list(range(1, upload["part_count"] + 1)))
        assert complete(api, upload["id"]).status_code == 200
    after = scrape(backend.base_url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Request latency by route template: this complete counted once, under the template.
    http_count = "upload_plane_http_request_duration_seconds_count"
    assert grew(http_count, method="POST", route=COMPLETE_ROUTE, status="200") == 1
    routes = {dict(labels).get("route", "") for name, labels in after if name == http_count}
    assert not any(upload["id"] in route for route in routes), routes
    # Store calls by operation: exactly one CreateMultipartUpload and one CompleteMultipartUpload.
    store_count = "upload_plane_store_call_duration_seconds_count"
    assert grew(store_count, operation="create_multipart", outcome="ok") == 1
    assert grew(store_count, operation="complete_multipart", outcome="ok") == 1
    assert grew(store_count, operation="list_parts", outcome="ok") >= 1
    # Statements by verb and table, presigned URLs, uploads by state, reaper actions.
    db_count = "upload_plane_db_statement_duration_seconds_count"
    assert grew(db_count, operation="update uploads", outcome="ok") >= 2  # created, completed
    assert grew(db_count, operation="insert uploads", outcome="ok") == 1
    assert grew("upload_plane_presigned_urls_total", kind="part") == upload["part_count"]
    # Uploads by state, read from the database at each scrape: this upload was uploading once
    # started, and is completed now (nothing else changes uploads while the test runs).
    assert by_state(before, started) == changed(uploading=1)
    assert by_state(before, after) == changed(completed=1)


def test_request_ids_come_back_and_unusable_ones_are_replaced(backend: Backend) -> None:
    given = httpx.get(f"{backend.base_url}/health", headers={"X-Request-ID": "trace-7f3a.b_9"})
    assert given.headers["x-request-id"] == "trace-7f3a.b_9"
    made = httpx.get(f"{backend.base_url}/health")
    other = httpx.get(f"{backend.base_url}/health")
    assert re.fullmatch(r"[0-9a-f]{16}", made.headers["x-request-id"])
    assert made.headers["x-request-id"] != other.headers["x-request-id"]
    for unusable in (b"has space", b"x" * 65, b"semi;colon", "ünï".encode()):
        resp = httpx.get(f"{backend.base_url}/health", headers={b"X-Request-ID": unusable})
        assert re.fullmatch(r"[0-9a-f]{16}", resp.headers["x-request-id"]), unusable
    # Answers the application never routed carry one too, and count as "unmatched".
    missing = httpx.get(f"{backend.base_url}/no/such/{os.urandom(4).hex()}")
    assert missing.status_code == 404 and missing.headers["x-request-id"]
    samples = scrape(backend.base_url)
    assert (
        value(
            samples,
            "upload_plane_http_request_duration_seconds_count",
            method="GET",
            route="unmatched",
            status="404",
        )
        >= 1
    )


def test_the_metrics_token_guards_metrics(tmp_path: Path) -> None:
    with embedded_backend(tmp_path, metrics_token="scrape-secret-0123456789") as backend:
        anonymous = httpx.get(f"{backend.base_url}/metrics")
        assert anonymous.status_code == 401
        assert anonymous.json()["code"] == "UNAUTHENTICATED"
        wrong = httpx.get(f"{backend.base_url}/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        scrape(backend.base_url, Authorization="Bearer scrape-secret-0123456789")


@pytest.fixture(params=["embedded", pytest.param("real", marks=pytest.mark.real)])
def reaping(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A server of this test's own (its counters start at 0) whose in-process reaper runs every second."""
    if request.param == "embedded":
        with embedded_backend(tmp_path, reaper_interval=1) as backend:
            yield backend
    else:
        with real_backend(request, f"reaper_metrics_{secrets.token_hex(4)}", reaper_interval=1) as backend:
            yield backend


def test_the_reaper_counter_counts_what_the_in_process_reaper_did(reaping: Backend) -> None:
    before = scrape(reaping.base_url)
    reaper = "upload_plane_reaper_actions_total"
    assert {a: value(before, reaper, action=a) for a in ReapReport().as_dict()} == dict.fromkeys(
        ReapReport().as_dict(), 0.0
    )
    with new_user(reaping) as api:
        log = new_log(api)
        expiring = [start_upload(api, log["id"], os.urandom(100 + n)) for n in range(2)]
        kept = start_upload(api, log["id"], os.urandom(50))
        for upload in expiring:
            asyncio.run(expire_upload(reaping, upload["id"]))
        deadline = time.monotonic() + 30
        while value(after := scrape(reaping.base_url), reaper, action="expired") < len(expiring):
            assert time.monotonic() < deadline, "the in-process reaper ended nothing in 30 s"
            time.sleep(0.2)  # polling interval while waiting for the reaper's next run
        acted = {a: value(after, reaper, action=a) for a in ReapReport().as_dict()}
        assert acted == {**dict.fromkeys(acted, 0.0), "expired": 2}, acted
        assert by_state(before, after) == changed(uploading=1, expired=2)
        assert [asyncio.run(assert_store_agrees(reaping, u)) for u in expiring] == ["expired", "expired"]
        assert asyncio.run(assert_store_agrees(reaping, kept)) == "uploading"
