"""The web demo in headless Chromium against MariaDB + MinIO.

Acceptance (issue 11, 1): "In headless Chromium, the web demo uploads a 64 MiB file; a page reload
mid-upload is followed by a resume that uploads only the missing parts; the completed file's SHA-256
equals the source's and the store verified its CRC64NVME."
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import MIB, client, new_account, record_server_errors, sign_in
from tests.browser.conftest import random_file
from tests.conftest import Backend

pytestmark = pytest.mark.real


def sign_in_page(page: Any, web: Backend, username: str, password: str, path: str = "/") -> None:
    page.goto(f"{web.base_url}{path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Password").press("Enter")  # the keyboard is enough
    page.get_by_role("button", name="New case").wait_for()


def new_case_and_log(web: Backend, username: str, password: str) -> dict[str, Any]:
    token = sign_in(web, username, password).json()["access_token"]
    with client(web, token) as api:
        case = api.post("/cases", json={"title": "2026-0117 Harbour street", "reference": "HS-17"}).json()
        log = api.post(f"/cases/{case['id']}/logs", json={"name": "bodycam"}).json()
    return {"case": case, "log": log, "token": token}


def wait_for(page: Any, predicate: Any, what: str, timeout: float = 60.0) -> Any:
    """Poll ``predicate`` until it holds. The interval is spent inside Playwright, which is where
    its sync API runs the page's event and route handlers that the predicate looks at."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(50)  # polling interval while waiting for the condition


def test_a_64_mib_upload_survives_a_reload_and_resumes_with_only_the_missing_parts(
    web: Backend, page: Any, tmp_path: Path
) -> None:
    name, password = new_account(web)
    made = new_case_and_log(web, name, password)
    source = random_file(tmp_path / "interview.mp4", 64 * MIB)
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    store = web.settings.s3_endpoint_url

    # Let three part PUTs through to the store and hold back every later one, so the page is
    # reloaded with exactly three parts in the store and the rest in flight (lost by the reload).
    passed: list[str] = []
    held: list[Any] = []

    def gate(route: Any) -> None:
        if route.request.method != "PUT":
            route.continue_()
        elif len(passed) < 3:
            passed.append(route.request.url)
            route.continue_()
        else:
            held.append(route)  # never answered: the reload cancels it

    page.route(f"{store}/**", gate)
    sign_in_page(page, web, name, password, f"/#/logs/{made['log']['id']}")
    page.get_by_role("heading", name="bodycam").wait_for()
    page.set_input_files("#file-input", str(source))
    row = page.locator(".transfer[data-name='interview.mp4']")
    row.and_(page.locator("[data-sent-parts='3']")).wait_for(timeout=60_000)
    wait_for(page, lambda: len(held) >= 1, "a fourth part to be held back")
    upload_id = row.get_attribute("data-upload-id")
    assert upload_id

    with client(web, made["token"]) as api:
        before = api.get(f"/uploads/{upload_id}").json()["parts"]
    assert len(before["uploaded"]) == 3, before  # whichever three reached the store first

    page.reload()  # the held parts die with the page
    page.unroute(f"{store}/**")
    with client(web, made["token"]) as api:
        missing = api.get(f"/uploads/{upload_id}").json()["parts"]["missing"]
    assert missing == before["missing"] and len(missing) == 5, (before, missing)  # held back: never stored
    puts_after_reload: list[str] = []
    page.on("request", lambda r: puts_after_reload.append(r.url) if r.method == "PUT" else None)

    # The unfinished upload is listed; pick the same file again.
    resume = page.get_by_role("button", name="Resume interview.mp4: pick the file again")
    resume.wait_for()
    with page.expect_file_chooser() as chooser:
        resume.click()
    chooser.value.set_files(str(source))
    page.locator(".transfer[data-name='interview.mp4'][data-state='done']").wait_for(timeout=120_000)

    sent = sorted(int(httpx.URL(u).params["partNumber"]) for u in puts_after_reload)
    assert sent == missing, f"after the reload the page sent parts {sent}, the store was missing {missing}"

    with client(web, made["token"]) as api:
        upload = api.get(f"/uploads/{upload_id}").json()
        file = api.get(f"/files/{upload['file_id']}").json()
        link = api.get(f"/files/{file['id']}/download", params={"redirect": "false"}).json()
    assert file["status"] == "available"
    assert file["sha256"] == sha256
    assert file["verified_by"] == "store", file
    with httpx.Client(timeout=60, event_hooks={"response": [record_server_errors]}) as http:
        assert hashlib.sha256(http.get(link["url"]).content).hexdigest() == sha256

    # The files table shows it verified, with its checksum and a download link (once the page has
    # listed the files again after the upload ended: the row was there while it was uploading).
    listed = page.locator(f"tr[data-file='{file['id']}'][data-status='available']")
    listed.wait_for()
    assert listed.get_attribute("data-verified") == "store"
    assert sha256[:16] in listed.inner_text()
    assert listed.get_by_role("link", name="Download interview.mp4").count() == 1
    # The page's download link, as a user clicks it: a same-origin request with the session cookie
    # (cross-site ones are refused), audited, redirected to the store; the same bytes come back.
    with page.expect_download(timeout=60_000) as download:
        listed.get_by_role("link", name="Download interview.mp4").click()
    saved = tmp_path / "downloaded.mp4"
    download.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == sha256


def test_many_files_pause_resume_and_cancel(web: Backend, page: Any, tmp_path: Path) -> None:
    name, password = new_account(web)
    made = new_case_and_log(web, name, password)
    files = [random_file(tmp_path / f"photo-{i}.jpg", (i + 1) * 300_000) for i in range(5)]
    big = random_file(tmp_path / "disk.img", 40 * MIB)
    sign_in_page(page, web, name, password, f"/#/logs/{made['log']['id']}")
    page.get_by_role("heading", name="bodycam").wait_for()

    # Hold the big file's parts so it can be paused and resumed while under way.
    held: list[Any] = []
    page.route(
        f"{web.settings.s3_endpoint_url}/**",
        lambda route: held.append(route) if "disk.img" in route.request.url else route.continue_(),
    )
    page.set_input_files("#file-input", [str(big), *map(str, files)])
    big_row = page.locator(".transfer[data-name='disk.img']")
    wait_for(page, lambda: len(held) >= 1, "the big file's first part")
    page.get_by_role("button", name="Pause disk.img").click()
    big_row.and_(page.locator("[data-state='paused']")).wait_for()
    page.unroute(f"{web.settings.s3_endpoint_url}/**")
    page.get_by_role("button", name="Resume disk.img").click()
    page.locator(".transfer[data-state='done']").nth(5).wait_for(timeout=120_000)
    assert page.locator("#overall-label").inner_text() == "6 of 6 files uploaded"

    # Cancel: the upload is aborted and its file is not listed.
    third = random_file(tmp_path / "cancel-me.bin", 30 * MIB)
    page.route(f"{web.settings.s3_endpoint_url}/**", lambda route: held.append(route))
    page.set_input_files("#file-input", str(third))
    page.get_by_role("button", name="Cancel cancel-me.bin").click()
    page.locator(".transfer[data-name='cancel-me.bin'][data-state='canceled']").wait_for()
    with client(web, made["token"]) as api:
        listed = api.get(f"/logs/{made['log']['id']}/files").json()["items"]

        def aborted() -> bool:
            ups = api.get("/uploads", params={"log_id": made["log"]["id"]}).json()["items"]
            return any(u["filename"] == "cancel-me.bin" and u["status"] == "aborted" for u in ups)

        wait_for(page, aborted, "the cancelled upload to be aborted")
    names = {f["filename"]: f for f in listed}
    assert {f"photo-{i}.jpg" for i in range(5)} | {"disk.img"} <= set(names)
    assert all(names[n]["verified_by"] == "store" for n in names if n != "cancel-me.bin")
    assert page.locator("tr[data-status='available']").count() == 6


def test_many_small_files_go_in_a_batch_one_put_each(web: Backend, page: Any, tmp_path: Path) -> None:
    """Dropped at once, small files go in one batch: one request starts them, each goes to the store
    in one PUT signing its SHA-256 (no multipart upload, no part URL), one request completes them."""
    name, password = new_account(web)
    made = new_case_and_log(web, name, password)
    files = [random_file(tmp_path / f"frame-{i:02d}.jpg", 1000 + 997 * i) for i in range(24)]
    sign_in_page(page, web, name, password, f"/#/logs/{made['log']['id']}")
    page.get_by_role("heading", name="bodycam").wait_for()
    api_calls: list[str] = []
    page.on(
        "request",
        lambda r: api_calls.append(f"{r.method} {httpx.URL(r.url).path}") if "/api/v1/" in r.url else None,
    )
    page.set_input_files("#file-input", [str(f) for f in files])
    page.locator(".transfer[data-state='done']").wait_for(timeout=120_000)
    assert page.locator(".transfer").count() == 1  # one row for the batch
    assert page.locator("#overall-label").inner_text() == "24 of 24 files uploaded"
    uploads_calls = [c for c in api_calls if c.startswith("POST") and "/uploads" in c]
    assert uploads_calls == [
        f"POST /api/v1/logs/{made['log']['id']}/uploads/batch", "POST /api/v1/uploads/batch/complete",
    ]  # fmt: skip
    with client(web, made["token"]) as api:
        uploads = api.get("/uploads", params={"log_id": made["log"]["id"]}).json()["items"]
        listed = {f["filename"]: f for f in api.get(f"/logs/{made['log']['id']}/files").json()["items"]}
    assert {(u["kind"], u["status"]) for u in uploads} == {("put", "completed")} and len(uploads) == 24
    for source in files:
        file = listed[source.name]
        assert file["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert file["verified_by"] == "store" and file["size"] == source.stat().st_size


def test_the_demo_works_from_the_keyboard(web: Backend, page: Any) -> None:
    name, password = new_account(web)
    made = new_case_and_log(web, name, password)
    page.goto(f"{web.base_url}/#/logs/{made['log']['id']}")
    page.wait_for_function("document.activeElement && document.activeElement.id === 'username'")
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="bodycam").wait_for()
    page.wait_for_load_state("networkidle")  # the log's files and resumable uploads are loaded
    drop = page.get_by_role(
        "button", name="Add files: drop files or folders here, or press Enter to choose files"
    )
    drop.focus()
    page.wait_for_function("document.activeElement && document.activeElement.id === 'drop'")
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    assert chooser.value.is_multiple()
    for control in ("New case", "Choose files", "Choose a folder", "Sign out"):
        assert page.get_by_role("button", name=control, exact=True).count() == 1
