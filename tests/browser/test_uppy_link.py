"""Real Uppy (its npm bundle: ``AwsS3`` with ``companionEndpoint``) on the upload-link page, in
headless Chromium, against MariaDB + MinIO.

Acceptance (issue 11, 2): "Real Uppy (its bundle, AwsS3 with companionEndpoint) in headless Chromium
uploads through an upload link: a 1 MiB file (the /s3/params path) and a 40 MiB file (multipart,
forced with shouldUseMultipart); both become available files of that log with correct sizes, and
audit events name the link."
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import MIB, client, new_account, sign_in
from tests.browser.conftest import random_file
from tests.conftest import Backend

pytestmark = pytest.mark.real


def test_uppy_uploads_through_an_upload_link(web: Backend, page: Any, tmp_path: Path) -> None:
    name, password = new_account(web)
    token = sign_in(web, name, password).json()["access_token"]
    with client(web, token) as api:
        case = api.post("/cases", json={"title": "Partner agency delivery"}).json()
        log = api.post(f"/cases/{case['id']}/logs", json={"name": "cctv"}).json()
        link = api.post(
            f"/logs/{log['id']}/upload-links",
            json={"expires_in": 3600, "max_files": 10, "max_bytes": 100 * MIB},
        ).json()
    small = random_file(tmp_path / "statement.pdf", 1 * MIB)
    big = random_file(tmp_path / "cctv-export.mp4", 40 * MIB)

    seen: list[tuple[str, str]] = []
    page.on("request", lambda r: seen.append((r.method, r.url)))
    page.goto(link["url"])
    page.get_by_role("heading", name="Upload to “cctv”").wait_for()
    page.locator(".uppy-Dashboard-input").first.set_input_files([str(small), str(big)])
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    page.get_by_text("2 files uploaded").wait_for(timeout=120_000)

    endpoint = f"/links/{link['token']}/s3"
    assert any(m == "GET" and f"{endpoint}/params" in u for m, u in seen), "the small file used /s3/params"
    assert any(m == "POST" and u.endswith(f"{endpoint}/multipart") for m, u in seen), "the big one multipart"

    with client(web, token) as api:
        deadline = time.monotonic() + 30
        while True:
            files = {f["filename"]: f for f in api.get(f"/logs/{log['id']}/files").json()["items"]}
            if all(
                files.get(n, {}).get("status") == "available" for n in ("statement.pdf", "cctv-export.mp4")
            ):
                break
            assert time.monotonic() < deadline, files
            page.wait_for_timeout(100)  # polling interval while the form upload is settled
        assert files["statement.pdf"]["size"] == 1 * MIB
        assert files["cctv-export.mp4"]["size"] == 40 * MIB
        assert {f["upload_link_id"] for f in files.values()} == {link["id"]}
        # the link's uploads are recorded as its issuer's (who vouched for them), planned as Uppy cut them
        uploads = {
            u["filename"]: u for u in api.get("/uploads", params={"log_id": log["id"]}).json()["items"]
        }
        assert (uploads["cctv-export.mp4"]["part_size"], uploads["cctv-export.mp4"]["part_count"]) == (
            5 * MIB,
            8,
        )
        assert uploads["statement.pdf"]["part_count"] == 1
        events = api.get(f"/cases/{case['id']}/audit", params={"limit": 100}).json()["items"]
        listed = api.get(f"/logs/{log['id']}/upload-links").json()["items"][0]
    by_link = sorted(
        (e["action"], e["actor"]) for e in events if e["details"].get("upload_link_id") == link["id"]
    )
    actor = f"upload link {link['hint']}"
    assert by_link == [
        ("upload.completed", actor),
        ("upload.completed", actor),
        ("upload.started", actor),
        ("upload.started", actor),
    ], by_link
    assert (listed["files_used"], listed["bytes_used"]) == (2, 41 * MIB)


def test_a_revoked_link_page_says_so(web: Backend, page: Any) -> None:
    name, password = new_account(web)
    token = sign_in(web, name, password).json()["access_token"]
    with client(web, token) as api:
        case = api.post("/cases", json={"title": "revoked"}).json()
        log = api.post(f"/cases/{case['id']}/logs", json={"name": "x"}).json()
        link = api.post(f"/logs/{log['id']}/upload-links", json={"expires_in": 3600}).json()
        assert api.delete(f"/upload-links/{link['id']}").status_code == 200
    page.goto(link["url"])
    page.get_by_role("heading", name="This link cannot be used").wait_for()
    assert "revoked" in page.get_by_role("alert").inner_text()
