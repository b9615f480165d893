"""What Schemathesis found (``tests/real/test_fuzz.py``), pinned down on both backends: any method on
any path answers without a server error, and every answer is one the OpenAPI document declares."""

from __future__ import annotations

import os
from urllib.parse import quote

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
from tests.api.test_uppy_contract import endpoint, new_link
from tests.conftest import Backend

STATE_CHANGING = ("post", "put", "patch", "delete")
#: Public routes that never look at the session cookie (nor do the upload-link routes, under
#: ``/links/{token}``: the token in the path is their credential).
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
            if method not in STATE_CHANGING or path in COOKIE_FREE or path.startswith("/links/"):
                continue
            resp = httpx.request(
                method.upper(),
                f"{backend.base_url}{concrete(path)}",
                cookies={"upload_plane_session": cookie},
                # The Uppy routes read their query and body before the session (a dependency):
                # both must be valid to reach the refusal.
                params={"key": "k"},
                json={"filename": "f"} if path == "/s3/multipart" else {},
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


def test_a_link_that_does_not_work_is_refused_as_documented_on_every_link_route(backend: Backend) -> None:
    """Schemathesis: ``GET /links/{token}`` answered an unknown token with an undocumented 404, and
    settle and abort through a revoked link with an undocumented 410. Every link route answers an
    unknown token 404 and a revoked link 410 (even for an upload started through it), and documents
    both."""
    with new_user(backend) as manager:
        log = new_log(manager)
        revoked = new_link(manager, log["id"])
        started = httpx.post(
            f"{backend.base_url}{endpoint(revoked)}/s3/multipart",
            json={"filename": "f.bin", "metadata": {"size": 10}},
        )
        assert started.status_code == 200, started.text
        assert manager.delete(f"/upload-links/{revoked['id']}").status_code == 200
    upload_id, key = started.json()["uploadId"], started.json()["key"]
    unknown = "uplnk_" + "x" * 36
    paths = {p: ops for p, ops in openapi(backend)["paths"].items() if p.startswith("/links/{token}")}
    assert len(paths) == 9, sorted(paths)
    for path, operations in paths.items():
        for method, operation in operations.items():
            for token, status, code in (
                (unknown, 404, "NOT_FOUND"),
                (revoked["token"], 410, "UPLOAD_LINK_REVOKED"),
            ):
                route = path.replace("{token}", token).replace("{part_number}", "1")
                resp = httpx.request(
                    method.upper(),
                    f"{backend.base_url}{route.replace('{upload_id}', quote(upload_id, safe=''))}",
                    params={"key": key, "filename": "f"},
                    json={"filename": "f", "metadata": {"size": 1}, "parts": []},
                )
                assert_problem(resp, status, code)
                assert str(status) in operation["responses"], (method, path, sorted(operation["responses"]))


def test_uppy_refuses_a_file_type_that_is_not_a_media_type(backend: Backend) -> None:
    """Schemathesis: a ``type`` with a line break reached the store's Content-Type header and the
    start answered 500. Uppy's ``type`` now follows the API's media-type grammar (or is empty, as
    browsers send for unknown files); anything else is 400 and starts nothing."""
    hostile = ("text/plain\r\nX-Injected: yes", "text/plain\n", "vidéo/mp4", "no slash", "a/b; c")
    with new_user(backend) as manager:
        log = new_log(manager)
        link = new_link(manager, log["id"])
        token = manager.headers["Authorization"]
        for base, headers, meta in (
            ("", {"Authorization": token}, {"log_id": log["id"]}),
            (endpoint(link), {}, {}),
        ):
            for type_ in hostile:
                started = httpx.post(
                    f"{backend.base_url}{base}/s3/multipart",
                    headers=headers,
                    json={"filename": "f.bin", "type": type_, "metadata": {"size": 10, **meta}},
                )
                assert_problem(started, 400, "VALIDATION_ERROR")
                form = httpx.get(
                    f"{backend.base_url}{base}/s3/params",
                    headers=headers,
                    params={"filename": "f.bin", "type": type_, "metadata[size]": "10", **_meta_query(meta)},
                )
                assert_problem(form, 400, "VALIDATION_ERROR")
            for type_ in ("", "video/mp4", 'text/plain; charset="utf-8"'):
                started = httpx.post(
                    f"{backend.base_url}{base}/s3/multipart",
                    headers=headers,
                    json={"filename": "f.bin", "type": type_, "metadata": {"size": 10, **meta}},
                )
                assert started.status_code == 200, (type_, started.text)
        assert manager.get(f"/logs/{log['id']}/upload-links").json()["items"][0]["files_used"] == 3
        assert len(manager.get("/uploads", params={"log_id": log["id"]}).json()["items"]) == 6


def _meta_query(meta: dict[str, str]) -> dict[str, str]:
    return {f"metadata[{name}]": value for name, value in meta.items()}


def test_uppy_query_parameters_keep_their_documented_bounds(backend: Backend) -> None:
    """``key``, ``filename`` and ``type`` of the Uppy routes had bounds (a msgspec ``Meta``) that
    Litestar neither enforced nor documented on a query parameter; they are now both."""
    operations = openapi(backend)["paths"]
    params = {p["name"]: p["schema"] for p in operations["/s3/params"]["get"]["parameters"]}
    assert params["filename"]["minLength"] == 1 and params["filename"]["maxLength"] == 1024
    assert params["type"]["maxLength"] == 255 and "pattern" in params["type"]
    keys = {p["name"]: p["schema"] for p in operations["/s3/multipart/{upload_id}"]["get"]["parameters"]}
    assert keys["key"]["maxLength"] == 1024
    with new_user(backend) as api:
        log = new_log(api)
        auth = {"Authorization": api.headers["Authorization"]}
    for params_ in ({"filename": ""}, {"filename": "f" * 1025}, {"filename": "f", "type": "t" * 256}):
        resp = httpx.get(
            f"{backend.base_url}/s3/params", headers=auth, params={**params_, "metadata[log_id]": log["id"]}
        )
        assert_problem(resp, 400, "VALIDATION_ERROR")
    for method in ("GET", "DELETE"):
        resp = httpx.request(
            method, f"{backend.base_url}/s3/multipart/c1.x.y", headers=auth, params={"key": "k" * 1025}
        )
        assert_problem(resp, 400, "VALIDATION_ERROR")


def test_a_final_line_break_does_not_slip_past_a_pattern(backend: Backend) -> None:
    """Schemathesis (on the Uppy start, then found on the API's own): Python's ``$`` also matches
    before a final line break, so ``"text/plain\\n"`` passed the media-type pattern and the store
    call failed (500). Each pattern now refuses it (400) and nothing is started."""
    fields = {
        "content_type": "text/plain",
        "crc64nvme": "AAAAAAAAAAA=",
        "sha256": "0" * 64,
    }
    with new_user(backend) as api:
        log = new_log(api)
        for name, value in fields.items():
            body = {"filename": "f.bin", "size": 10, name: value + "\n"}
            assert_problem(api.post(f"/logs/{log['id']}/uploads", json=body), 400, "VALIDATION_ERROR")
        assert api.get("/uploads", params={"log_id": log["id"]}).json()["items"] == []
        for name, value in fields.items():
            body = {"filename": "f.bin", "size": 10, name: value}
            assert api.post(f"/logs/{log['id']}/uploads", json=body).status_code == 201, (name, value)


def test_the_uppy_form_route_documents_the_metadata_it_reads(backend: Backend, http: httpx.Client) -> None:
    """Schemathesis (the long run): ``GET /s3/params`` reads ``metadata[size]`` and
    ``metadata[log_id]`` from the query, which the document did not declare, so a request carrying
    them did not conform to it. Both routes declare them now, and hold them to what they say."""
    paths = openapi(backend)["paths"]
    for path in ("/s3/params", "/links/{token}/s3/params"):
        params = {p["name"]: p for p in paths[path]["get"]["parameters"]}
        assert params["metadata[size]"]["schema"]["minimum"] == 0, params["metadata[size]"]
        assert "metadata[log_id]" in params, sorted(params)
    with new_user(backend) as api:
        log = new_log(api)
        auth = {"Authorization": api.headers["Authorization"]}
    base = {"filename": "f.bin", "metadata[log_id]": log["id"]}
    for size in ("-1", "1.5", "ten"):
        resp = httpx.get(
            f"{backend.base_url}/s3/params", headers=auth, params={**base, "metadata[size]": size}
        )
        assert_problem(resp, 400, "VALIDATION_ERROR")
    missing = httpx.get(f"{backend.base_url}/s3/params", headers=auth, params=base)
    assert "metadata.size is required" in assert_problem(missing, 400, "VALIDATION_ERROR")["detail"]
    form = httpx.get(f"{backend.base_url}/s3/params", headers=auth, params={**base, "metadata[size]": "3"})
    assert form.status_code == 200, form.text
    posted = http.post(form.json()["url"], data=form.json()["fields"], files={"file": ("f.bin", b"abc")})
    assert posted.status_code in (200, 201, 204), posted.text[:300]
