"""Browser tier: Playwright drives Debian's Chromium (``/usr/bin/chromium``, headless) against the
API on the private MariaDB and MinIO of the real tier. Playwright never downloads a browser here.

Chromium, the Python ``playwright`` package and the web demo's npm packages (``make web-deps``)
must be present; where one is missing the tier is skipped with a reason that says how to get it,
except with ``REQUIRE_REAL_SERVICES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Backend, real_backend
from tests.services import REPO_ROOT, real_services_required

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # the page (127.0.0.1:API) PUTs parts to the store (127.0.0.1:MinIO): loopback to loopback
    "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests",
]
WEB_DEPS = REPO_ROOT / "web-demo" / "node_modules" / "uppy" / "dist" / "uppy.min.mjs"

pytestmark = pytest.mark.real


def _missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium not found at {CHROMIUM}: apt-get install chromium (or set CHROMIUM_BIN)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: make .venv/.installed (it is a dev dependency)"
    if not WEB_DEPS.exists():
        return "the web demo's npm packages are missing: make web-deps (npm ci in web-demo/)"
    return None


@pytest.fixture(scope="module")
def chromium(web: Backend) -> Iterator[Any]:
    """Chromium for one module. Playwright's sync API runs an event loop in this thread while it is
    started, so it is stopped again after each module (later tests call ``asyncio.run``), and the
    API (``web``, which also runs ``asyncio.run`` when it starts) is up before it."""
    reason = _missing()
    if reason:
        if real_services_required():
            pytest.fail(f"REQUIRE_REAL_SERVICES=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def web(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The API on MariaDB + MinIO, serving the web demo."""
    with real_backend(request, "browser_tests") as backend:
        yield backend


#: Reports every Content-Security-Policy violation of the page to the test, across navigations.
REPORT_CSP_VIOLATIONS = """
self.addEventListener('securitypolicyviolation', (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`
  self.__cspViolation(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} in ${where}`)
})
"""


def watch_csp(context: Any) -> list[str]:
    """The Content-Security-Policy violations of every page of ``context``, as they happen."""
    violations: list[str] = []
    context.expose_function("__cspViolation", lambda text: violations.append(str(text)))
    context.add_init_script(REPORT_CSP_VIOLATIONS)
    return violations


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A page whose uncaught errors and Content-Security-Policy violations fail the test: every
    page the service serves must work under its CSP."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    violations = watch_csp(context)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())  # "leave the page?" on reload mid-upload
    # File choosers are intercepted from the start: Playwright turns interception on without waiting
    # when the first listener comes, so a key press sent right after `expect_file_chooser` could
    # reach Chromium first and open a native chooser, which no test sees (1 run in 3 here).
    page.on("filechooser", lambda _chooser: None)
    # Chromium also logs each violation on the console (a worker's too, as far as Playwright
    # passes them on; a worker whose hashing were blocked would fail the upload tests anyway).
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
    assert not violations, f"Content-Security-Policy violations: {violations}"


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as out:
        left = size
        while left:
            n = min(left, 8 << 20)
            out.write(os.urandom(n))
            left -= n
    return path
