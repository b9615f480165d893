"""Every page the service serves works under its Content-Security-Policy, in headless Chromium:
the API docs (Swagger UI, started from a file) here; the web demo and the upload-link page in their
own tests, whose ``page`` fixture fails on any CSP violation. And the policy is enforced: an inline
script the page did not ship is refused and reported, so a violation cannot go unseen."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import watch_csp
from tests.conftest import Backend

pytestmark = pytest.mark.real


def test_the_api_docs_render_under_the_policy(web: Backend, page: Any) -> None:
    response = page.goto(f"{web.base_url}/docs")
    assert response is not None and response.ok
    assert "script-src 'self' 'wasm-unsafe-eval'" in response.headers["content-security-policy"]
    page.locator(".opblock-tag-section").first.wait_for(timeout=30_000)  # the operations, by tag
    page.get_by_text("/api/v1/auth/login").first.wait_for()
    assert page.locator(".opblock").count() > 40


def test_the_policy_refuses_inline_script_and_says_so(web: Backend, chromium: Any) -> None:
    context = chromium.new_context()
    violations = watch_csp(context)
    try:
        page = context.new_page()
        page.goto(f"{web.base_url}/")
        page.evaluate(
            """() => {
              const s = document.createElement('script')
              s.textContent = 'window.__ran = true'
              document.body.appendChild(s)
            }"""
        )
        page.wait_for_function("() => true")
        assert page.evaluate("() => window.__ran === undefined")  # refused
        deadline = 50
        while not violations and deadline:
            page.wait_for_timeout(100)  # polling interval while the report arrives
            deadline -= 1
        assert any(v.startswith("script-src") for v in violations), violations
    finally:
        context.close()
