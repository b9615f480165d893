"""Screenshots of the web demo and the upload-link page, as people see them (``make screenshots``).

Starts a private MariaDB and MinIO (the test tier's launchers) and the API, signs in as an
investigator in Debian's Chromium (headless, driven by Playwright), and writes to
web-demo/screenshots/:

- ``demo-desktop-uploading.png`` / ``demo-phone-uploading.png``: files under way (some parts of the
  big one are held back at the store's door so the moment can be photographed);
- ``demo-desktop-done.png`` / ``demo-phone-done.png``: the same log when everything is verified and
  processed: thumbnails, hashes and their status, a file whose bytes are not its declared type and
  one whose declared SHA-256 is wrong, both in red;
- ``demo-desktop-file.png``: the file panel of a camera photo (preview, hashes, detected type, EXIF);
- ``demo-desktop-mismatch.png``: the file panel of the file with the wrong SHA-256;
- ``link-desktop.png`` / ``link-phone.png``: the page behind an upload link (Uppy), files chosen;
- ``link-desktop-done.png``: the same after the upload.

    .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import samples  # noqa: E402
from tests.services import mariadb_and_minio  # noqa: E402

from upload_plane.app import create_app  # noqa: E402
from upload_plane.embedded import prepare, serve_in_thread  # noqa: E402

OUT = REPO / "web-demo" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
MIB = 1024 * 1024
PASSWORD = "screenshots-password"


def make_file(folder: Path, name: str, size: int) -> Path:
    path = folder / name
    with path.open("wb") as out:
        left = size
        while left:
            n = min(left, 8 * MIB)
            out.write(os.urandom(n))
            left -= n
    return path


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def photo(folder: Path, name: str, width: int, height: int, hue: int) -> Path:
    """A camera JPEG with EXIF (make, model, time taken, GPS) and something to look at."""
    from PIL import Image, ImageDraw

    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    tint = Image.new("RGB", (width, height), ((hue * 3) % 256, (hue * 5 + 90) % 256, (hue * 7 + 160) % 256))
    image = Image.blend(image, tint, 0.55)
    draw = ImageDraw.Draw(image)
    for i in range(6):
        box = (width * i // 7, height // 3 + (i % 2) * height // 8, width * (i + 1) // 7, height * 5 // 6)
        draw.rectangle(box, fill=((40 * i + hue) % 256, 70, 120 + 20 * i))
    return written(folder / name, samples.jpeg_with_gps(image=image))


def document(pages: int, title: str) -> bytes:
    """A PDF of ``pages`` typed pages (Pillow draws them; the first page is the preview)."""
    import io

    from PIL import Image, ImageDraw

    sheets = []
    for n in range(pages):
        sheet = Image.new("RGB", (620, 877), "white")
        draw = ImageDraw.Draw(sheet)
        draw.text((50, 50), f"{title} - page {n + 1} of {pages}", fill=(20, 20, 20))
        for line in range(34):
            width = 420 + (line * 37) % 100
            draw.rectangle((50, 90 + line * 22, 50 + width, 98 + line * 22), fill=(150, 155, 165))
        sheets.append(sheet)
    out = io.BytesIO()
    sheets[0].save(out, "PDF", save_all=True, append_images=sheets[1:])
    return out.getvalue()


def seed(base: str, work: Path) -> dict[str, Any]:
    """An investigator with a case, two logs, a witness photo, and a partner's upload link."""
    with httpx.Client(base_url=f"{base}/api/v1", timeout=30) as api:
        token = api.post("/auth/login", json={"username": "admin", "password": PASSWORD}).json()[
            "access_token"
        ]
        api.headers["Authorization"] = f"Bearer {token}"
        api.post("/users", json={"username": "m.keller", "password": PASSWORD, "role": "user"})
        login = api.post("/auth/login", json={"username": "m.keller", "password": PASSWORD}).json()
        api.headers["Authorization"] = f"Bearer {login['access_token']}"
        case = api.post("/cases", json={"title": "Harbour Street burglary", "reference": "2026-0117"}).json()
        other = api.post("/cases", json={"title": "Riverside collision", "reference": "2026-0142"}).json()
        log = api.post(f"/cases/{case['id']}/logs", json={"name": "Bodycam footage"}).json()
        api.post(f"/cases/{case['id']}/logs", json={"name": "Witness statements"})
        api.post(f"/cases/{case['id']}/logs", json={"name": "Phone extraction"})
        api.post(f"/cases/{other['id']}/logs", json={"name": "Dashcam"})
        cctv = api.post(f"/cases/{case['id']}/logs", json={"name": "CCTV from partners"}).json()
        # A witness's photo sent with a SHA-256 that is not its bytes' (the server finds out).
        data = (work / "witness-photo.jpg").read_bytes()
        upload = api.post(
            f"/logs/{log['id']}/uploads",
            json={"filename": "witness-photo.jpg", "size": len(data), "content_type": "image/jpeg",
                  "sha256": hashlib.sha256(b"what the witness's app claimed").hexdigest()},
        ).json()  # fmt: skip
        part = api.post(f"/uploads/{upload['id']}/parts", json={"part_numbers": [1]}).json()["parts"][0]
        httpx.put(part["url"], content=data, headers=part["headers"])
        api.post(f"/uploads/{upload['id']}/complete", json={})
        link = api.post(
            f"/logs/{cctv['id']}/upload-links",
            json={"expires_in": 7 * 24 * 3600, "max_files": 20, "max_bytes": 20 * 1024 * MIB},
        ).json()
    return {"log": log, "link": link}


def sign_in(page: Any, base: str, log_id: str) -> None:
    page.goto(f"{base}/#/logs/{log_id}")
    page.get_by_label("Username").fill("m.keller")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    page.get_by_role("heading", name="Bodycam footage").wait_for()


def demo(
    browser: Any, base: str, store: str, log_id: str, files: list[Path], viewport: dict[str, int], tag: str
) -> None:
    context = browser.new_context(viewport=viewport, device_scale_factor=1 if viewport is DESKTOP else 2)
    page = context.new_page()
    sign_in(page, base, log_id)
    held: list[Any] = []
    passed: list[str] = []

    def gate(route: Any) -> None:
        big = "body-cam-0412.mp4" in route.request.url
        if route.request.method == "PUT" and big and len(passed) >= 5:
            held.append(route)  # keep the big file under way for the picture
            return
        if route.request.method == "PUT" and big:
            passed.append(route.request.url)
        route.continue_()

    page.route(f"{store}/**", gate)
    page.set_input_files("#file-input", [str(f) for f in files])
    page.locator(".transfer[data-state='done']").nth(len(files) - 2).wait_for(timeout=120_000)
    page.locator(".transfer[data-name='body-cam-0412.mp4'][data-sent-parts='5']").wait_for(timeout=120_000)
    page.wait_for_timeout(700)  # let the speed and ETA readouts settle on a value
    if viewport is PHONE:  # one screen, where the transfers are
        page.locator("#transfers-panel").scroll_into_view_if_needed()
        page.evaluate(
            "window.scrollBy(0, document.querySelector('#transfers-panel').getBoundingClientRect().top - 8)"
        )
    page.screenshot(path=str(OUT / f"demo-{tag}-uploading.png"), full_page=viewport is DESKTOP)
    page.unroute(f"{store}/**")
    for route in held:
        with contextlib.suppress(Exception):  # a held request the page has given up on
            route.continue_()
    page.locator(".transfer[data-state='done']").nth(len(files) - 1).wait_for(timeout=120_000)
    page.locator("tr[data-verified='store']").nth(len(files) - 1).wait_for(timeout=30_000)
    processed = "['done', 'failed'].includes(r.dataset.processing)"
    page.wait_for_function(  # every file processed: thumbnails and verdicts shown
        f"[...document.querySelectorAll('#files tr')].every(r => {processed})", timeout=180_000
    )
    page.wait_for_timeout(800)  # the thumbnails load
    if viewport is PHONE:
        page.evaluate(
            "window.scrollBy(0, document.querySelector('#transfers-panel').getBoundingClientRect().top - 8)"
        )
    page.screenshot(path=str(OUT / f"demo-{tag}-done.png"), full_page=viewport is DESKTOP)
    if viewport is DESKTOP:
        for name, shot in (("scene-photo-01.jpg", "file"), ("witness-photo.jpg", "mismatch")):
            page.locator(f"tr:has-text('{name}') [data-details]").click()
            page.locator("#file-dialog[open] .facts").wait_for()
            page.wait_for_timeout(600)  # the preview loads
            page.screenshot(path=str(OUT / f"demo-desktop-{shot}.png"))
            page.locator("#file-dialog-close").click()
    context.close()


def link_page(
    browser: Any, link: dict[str, Any], files: list[Path], viewport: dict[str, int], tag: str
) -> None:
    context = browser.new_context(viewport=viewport, device_scale_factor=1 if viewport is DESKTOP else 2)
    page = context.new_page()
    page.goto(link["url"])
    page.get_by_role("heading", name="Upload to “CCTV from partners”").wait_for()
    page.locator(".uppy-Dashboard-input").first.set_input_files([str(f) for f in files])
    page.wait_for_timeout(500)
    page.screenshot(path=str(OUT / f"link-{tag}.png"), full_page=True)
    if tag == "desktop":
        page.locator(".uppy-StatusBar-actionBtn--upload").click()
        page.get_by_text("uploaded. Thank you").wait_for(timeout=120_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUT / f"link-{tag}-done.png"), full_page=True)
    context.close()


def main() -> int:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        services = stack.enter_context(
            mariadb_and_minio(
                work, "screens", s3_bucket="evidence", jwt_secret="screenshots-secret-0123456789-0123456789"
            )
        )
        settings, minio = services.settings, services.minio
        prepare(settings, PASSWORD)
        base = stack.enter_context(serve_in_thread(create_app(settings)))
        photo(work, "witness-photo.jpg", 1600, 1200, 200)
        seeded = seed(base, work)
        files = [
            written(work / "body-cam-0412.mp4", samples.mp4(30, 1280, 720, bitrate="24M")),
            written(work / "body-cam-0413.mp4", samples.mp4(8, 1280, 720, bitrate="20M")),
            photo(work, "scene-photo-01.jpg", 4000, 3000, 10),
            photo(work, "scene-photo-02.jpg", 3000, 4000, 90),
            written(work / "officer-notes.pdf", document(3, "Officer notes, 12 April")),
            written(work / "holiday-snap.jpg", document(2, "Invoice")),  # a PDF that calls itself a photo
        ]
        partner = [
            make_file(work, "store-camera-2-2026-04-12.mp4", 38 * MIB),
            make_file(work, "export-log.txt", 18_000),
        ]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                demo(browser, base, minio.endpoint, seeded["log"]["id"], files, DESKTOP, "desktop")
                demo(browser, base, minio.endpoint, seeded["log"]["id"], files[:3], PHONE, "phone")
                link_page(browser, seeded["link"], partner, PHONE, "phone")
                link_page(browser, seeded["link"], partner, DESKTOP, "desktop")
            finally:
                browser.close()
    for shot in sorted(OUT.glob("*.png")):
        print(f"wrote {shot.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
