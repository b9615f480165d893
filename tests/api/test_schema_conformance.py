"""What Schemathesis found (``tests/real/test_fuzz.py``), pinned down on both backends: any method on
any path answers without a server error, and every answer is one the OpenAPI document declares."""

from __future__ import annotations

import os

import httpx

from tests.api.helpers import (
    admin,
    assert_problem,
    client,
    new_account,
    new_log,
    new_user,
    put_parts,
    sign_in,
    start_upload,
)
from tests.api.test_contract import concrete, openapi
from tests.conftest import Backend

STATE_CHANGING = ("post", "put", "patch", "delete")
#: Public routes that never look at the session cookie.
COOKIE_FREE = {"/api/v1/auth/login", "/api/v1/auth/refresh"}


def test_options_answers_on_every_path_whoever_asks(backend: Backend) -> None:
    """Litestar's automatic OPTIONS handler runs the route's guards, but OPTIONS requests are not
    authenticated: the admin-only guard of /users found no user and answered 500."""
    with new_user(backend) as user, admin(backend) as adm:
        callers = {
            "anonymous": {},
            "user": {"Authorization": user.headers["Authorization"]},
            "admin": {"Authorization": adm.headers["Authorization"]},
        }
    paths = openapi(backend)["paths"]
    assert "/api/v1/users/{user_id}/password" in paths
    for path in paths:
        for who, headers in callers.items():
            resp = httpx.options(f"{backend.base_url}{concrete(path)}", headers=headers)
            assert resp.status_code == 204, (who, path, resp.status_code, resp.text[:200])
            assert "OPTIONS" in resp.headers["allow"], (who, path)


def test_an_undeclared_method_is_405_with_the_allow_header(backend: Backend) -> None:
    """RFC 9110 requires ``Allow`` on a 405; the problem+json mapping used to drop Litestar's."""
    with new_user(backend) as user:
        token = user.headers["Authorization"]
    for path, operations in openapi(backend)["paths"].items():
        resp = httpx.request("TRACE", f"{backend.base_url}{concrete(path)}", headers={"Authorization": token})
        assert_problem(resp, 405, "METHOD_NOT_ALLOWED")
        allowed = {m.strip() for m in resp.headers["allow"].split(",")}
        assert {m.upper() for m in operations} <= allowed, (path, resp.headers["allow"])


def test_every_state_changing_route_declares_the_cross_site_refusal(backend: Backend) -> None:
    """A change authenticated by the session cookie alone, without proof that it comes from this site,
    is refused with 403 CROSS_SITE_REQUEST on every route, and every such route documents the 403."""
    cookie = sign_in(backend, *new_account(backend)).cookies["upload_plane_session"]
    checked = []
    for path, operations in openapi(backend)["paths"].items():
        for method, operation in operations.items():
            if method not in STATE_CHANGING or path in COOKIE_FREE:
                continue
            resp = httpx.request(
                method.upper(),
                f"{backend.base_url}{concrete(path)}",
                cookies={"upload_plane_session": cookie},
                json={},
            )
            assert_problem(resp, 403, "CROSS_SITE_REQUEST")
            assert "403" in operation["responses"], (method, path, sorted(operation["responses"]))
            checked.append((method, path))
    assert len(checked) >= 15, checked


def test_bodies_that_may_be_left_out_are_documented_so(backend: Backend, http: httpx.Client) -> None:
    """Logout and complete take no body at all; their document said one was required, and logout's 204
    was documented as a JSON ``null`` although it has no content."""
    paths = openapi(backend)["paths"]
    logout = paths["/api/v1/auth/logout"]["post"]
    complete = paths["/api/v1/uploads/{upload_id}/complete"]["post"]
    assert logout["requestBody"]["required"] is False
    assert complete["requestBody"]["required"] is False
    assert "content" not in logout["responses"]["204"], logout["responses"]["204"]
    assert paths["/api/v1/cases"]["post"]["requestBody"]["required"] is True

    with client(backend) as anon:
        out = anon.post("/auth/logout")
    assert out.status_code == 204 and out.content == b"" and "content-type" not in out.headers
    data = os.urandom(100)
    with new_user(backend) as api:
        upload = start_upload(api, new_log(api)["id"], data)
        put_parts(http, api, upload, data, [1])
        done = api.post(f"/uploads/{upload['id']}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "available"
