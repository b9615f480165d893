"""Credentials that end when they should, on both backends (the real one: MariaDB + MinIO).

A password set (admin route or CLI) or a disable ends every sign-in, cookie, refresh token and
personal access token of the user, and enabling the user again brings none back; a personal access
token cannot create tokens; admins list and revoke any user's sign-ins and tokens, from the API and
the CLI; each leaves its audit event. And the edges of credentials: oversized ones are refused at
once, a login only as JSON and not from another site, no cookie GET that records something from
another site, security headers on every answer, upload links that stop with their issuer's role.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, select, update

from tests.api.helpers import (
    admin,
    assert_problem,
    backend_db,
    browser,
    client,
    new_account,
    new_log,
    put_parts,
    sign_in,
    start_upload,
    world,
)
from tests.api.test_uppy_contract import anonymous, endpoint, new_link
from tests.conftest import Backend
from tests.test_cli import cli
from upload_plane.headers import SECURITY_HEADERS
from upload_plane.models import AuditEvent, User


@dataclass
class Everything:
    """One of each credential of one user."""

    name: str
    password: str
    user_id: str
    access: str
    refresh: str
    cookie: str
    pat: str


def everything(backend: Backend) -> Everything:
    name, password = new_account(backend)
    signed = sign_in(backend, name, password)
    access = signed.json()["access_token"]
    with client(backend, access) as api:
        user_id = api.get("/me").json()["id"]
        made = api.post("/tokens", json={"name": "ci", "expires_in_days": 30})
        assert made.status_code == 201, made.text
    return Everything(
        name,
        password,
        user_id,
        access,
        signed.json()["refresh_token"],
        signed.cookies["upload_plane_session"],
        made.json()["token"],
    )


def assert_all_dead(backend: Backend, creds: Everything) -> None:
    """The access token, the PAT and the cookie are refused (401), and the refresh token too."""
    for token in (creds.access, creds.pat):
        with client(backend, token) as api:
            assert_problem(api.get("/me"), 401, "UNAUTHENTICATED")
    with browser(backend, creds.cookie) as page:
        assert_problem(page.get("/me"), 401, "UNAUTHENTICATED")
    with client(backend) as anon:
        refused = anon.post("/auth/refresh", json={"refresh_token": creds.refresh})
        assert_problem(refused, 401, "UNAUTHENTICATED")


def assert_all_alive(backend: Backend, creds: Everything) -> None:
    for token in (creds.access, creds.pat):
        with client(backend, token) as api:
            assert api.get("/me").status_code == 200
    with browser(backend, creds.cookie) as page:
        assert page.get("/me").status_code == 200


async def _events(backend: Backend, subject_id: str) -> list[AuditEvent]:
    async with backend_db(backend) as session:
        stmt = select(AuditEvent).where(AuditEvent.subject_id == subject_id).order_by(col(AuditEvent.id))
        return list((await session.exec(stmt)).all())


def events_of(backend: Backend, subject_id: str) -> list[str]:
    return [e.action for e in asyncio.run(_events(backend, subject_id))]


def test_a_password_set_ends_every_credential_of_the_user(backend: Backend) -> None:
    creds = everything(backend)
    bystander = everything(backend)
    assert_all_alive(backend, creds)
    with admin(backend) as adm:
        done = adm.put(f"/users/{creds.user_id}/password", json={"password": "a-brand-new-password"})
        assert done.status_code == 204, done.text
    assert_all_dead(backend, creds)
    assert_all_alive(backend, bystander)  # nobody else's
    with client(backend) as anon:
        old = anon.post("/auth/login", json={"username": creds.name, "password": creds.password})
        assert_problem(old, 401, "UNAUTHENTICATED")
    assert sign_in(backend, creds.name, "a-brand-new-password").status_code == 200
    events = asyncio.run(_events(backend, creds.user_id))
    (revoked,) = [e for e in events if e.action == "user.credentials_revoked"]
    assert '"reason": "password_set"' in revoked.details
    assert '"sessions": 1' in revoked.details and '"tokens": 1' in revoked.details
    assert revoked.actor == "admin"
    assert events_of(backend, creds.user_id).count("user.password_set") == 1


def test_disable_then_enable_brings_no_credential_back(backend: Backend) -> None:
    creds = everything(backend)
    with admin(backend) as adm:
        assert adm.patch(f"/users/{creds.user_id}", json={"disabled": True}).status_code == 200
        assert adm.patch(f"/users/{creds.user_id}", json={"disabled": False}).status_code == 200
    assert_all_dead(backend, creds)
    assert sign_in(backend, creds.name, creds.password).status_code == 200  # a new sign-in works
    actions = events_of(backend, creds.user_id)
    assert actions.count("user.credentials_revoked") == 1  # the disable; the enable revokes nothing
    assert actions.count("user.updated") == 2


async def _disable_behind_the_services_back(backend: Backend, user_id: str) -> None:
    async with backend_db(backend) as session:
        await session.exec(update(User).where(col(User.id) == user_id).values(disabled=True))
        await session.commit()


def test_enabling_a_user_disabled_without_ending_their_credentials_brings_none_back(
    backend: Backend,
) -> None:
    """A user disabled by an older version (which left the credentials to the disabled flag)."""
    creds = everything(backend)
    asyncio.run(_disable_behind_the_services_back(backend, creds.user_id))
    with admin(backend) as adm:
        assert adm.patch(f"/users/{creds.user_id}", json={"disabled": False}).status_code == 200
    assert_all_dead(backend, creds)
    events = asyncio.run(_events(backend, creds.user_id))
    (event,) = [e for e in events if e.action == "user.credentials_revoked"]
    assert '"reason": "enabled"' in event.details and '"sessions": 1' in event.details


def test_a_personal_access_token_cannot_create_tokens(backend: Backend) -> None:
    creds = everything(backend)
    with client(backend, creds.pat) as script:
        refused = script.post("/tokens", json={"name": "longer", "expires_in_days": 366})
        assert_problem(refused, 403, "CREDENTIAL_NOT_ALLOWED")
        assert script.get("/me").status_code == 200  # otherwise it works
        assert [t["name"] for t in script.get("/tokens").json()["items"]] == ["ci"]
    with browser(backend, creds.cookie) as page:  # a password sign-in may (the web demo, the CLI)
        made = page.post(
            "/tokens", json={"name": "page", "expires_in_days": 1}, headers={"Origin": backend.base_url}
        )
        assert made.status_code == 201, made.text


def test_admins_list_and_revoke_any_users_sign_ins_and_tokens(backend: Backend) -> None:
    creds = everything(backend)
    phone = sign_in(backend, creds.name, creds.password).json()  # a second sign-in
    with client(backend, creds.access) as api:
        second_pat = api.post("/tokens", json={"name": "laptop", "expires_in_days": 7}).json()
    with admin(backend) as adm:
        sessions = adm.get(f"/users/{creds.user_id}/sessions").json()["items"]
        assert len(sessions) == 2 and all(s["revoked_at"] is None for s in sessions)
        assert {"id", "created_at", "expires_at", "address", "user_agent"} <= set(sessions[0])
        tokens = adm.get(f"/users/{creds.user_id}/tokens").json()["items"]
        assert sorted(t["name"] for t in tokens) == ["ci", "laptop"]
        assert creds.pat not in str(tokens)
        # One sign-in (the newest: the phone's) and one token.
        newest = sessions[0]["id"]
        assert adm.delete(f"/users/{creds.user_id}/sessions/{newest}").status_code == 204
        assert adm.delete(f"/users/{creds.user_id}/sessions/{newest}").status_code == 204  # idempotent
        assert adm.delete(f"/users/{creds.user_id}/tokens/{second_pat['id']}").status_code == 204
        with client(backend, phone["access_token"]) as api:
            assert_problem(api.get("/me"), 401, "UNAUTHENTICATED")
        with client(backend, second_pat["token"]) as api:
            assert_problem(api.get("/me"), 401, "UNAUTHENTICATED")
        assert_all_alive(backend, creds)  # the other sign-in and token still work
        # Another user's ids under this user are not found.
        other = everything(backend)
        other_tokens = adm.get(f"/users/{other.user_id}/tokens").json()["items"]
        assert_problem(adm.delete(f"/users/{creds.user_id}/tokens/{other_tokens[0]['id']}"), 404, "NOT_FOUND")
        assert_problem(adm.get("/users/no-such-user/sessions"), 404, "NOT_FOUND")
        # Everything at once.
        ended = adm.post(f"/users/{creds.user_id}/revoke")
        assert ended.status_code == 200, ended.text
        assert ended.json() == {"sessions_revoked": 1, "tokens_revoked": 1}
        assert adm.post(f"/users/{creds.user_id}/revoke").json() == {
            "sessions_revoked": 0,
            "tokens_revoked": 0,
        }
    assert_all_dead(backend, creds)
    assert_all_alive(backend, other)
    # Not for anyone but admins: the routes do not exist for them.
    with client(backend, other.access) as api:
        assert_problem(api.get(f"/users/{creds.user_id}/sessions"), 404, "NOT_FOUND")
        assert_problem(api.post(f"/users/{creds.user_id}/revoke"), 404, "NOT_FOUND")
    actions = events_of(backend, creds.user_id)
    assert actions.count("user.credentials_revoked") == 2
    assert "session.revoked" in events_of(backend, newest)
    assert "token.revoked" in events_of(backend, second_pat["id"])


def upload_plane(backend: Backend, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The operator's command on the backend's database."""
    env = {"UPLOAD_PLANE_DATABASE_URL": backend.settings.database_url}
    return cli(*args, env=env, cwd=Path.cwd(), stdin=stdin)


def test_the_cli_revokes_a_users_credentials_and_a_passwd_ends_them_too(backend: Backend) -> None:
    creds = everything(backend)
    done = upload_plane(backend, "users", "revoke", creds.name)
    assert done.returncode == 0, done.stderr
    assert "1 sign-in(s) and 1 personal access token(s) revoked" in done.stdout
    assert_all_dead(backend, creds)
    again = everything(backend)
    changed = upload_plane(backend, "users", "passwd", again.name, stdin="set-from-the-cli-1\n")
    assert changed.returncode == 0, changed.stderr
    assert_all_dead(backend, again)
    assert sign_in(backend, again.name, "set-from-the-cli-1").status_code == 200
    unknown = upload_plane(backend, "users", "revoke", "no-such-user-at-all")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
    actions = [
        e.actor
        for e in asyncio.run(_events(backend, creds.user_id))
        if e.action == "user.credentials_revoked"
    ]
    assert actions == ["system"]


# -- oversized credentials ------------------------------------------------------------------------------


def test_oversized_credentials_are_refused_at_once(backend: Backend) -> None:
    huge = "A" * 5000
    with client(backend, huge) as api:
        assert_problem(api.get("/me"), 401, "UNAUTHENTICATED")
    with client(backend, "uppat_" + huge) as api:
        assert_problem(api.get("/me"), 401, "UNAUTHENTICATED")
    with browser(backend, huge) as page:
        assert_problem(page.get("/me"), 401, "UNAUTHENTICATED")
    creds = everything(backend)
    with anonymous(backend) as anon:
        signed = anon.get(
            f"/s3/multipart/{'c1.' + huge}/1",
            params={"key": "k"},
            headers={"Cookie": f"upload_plane_session={creds.cookie}"},
        )
        assert_problem(signed, 401, "UNAUTHENTICATED")
        assert_problem(anon.get(f"/links/uplnk_{huge}"), 404, "NOT_FOUND")
        # Longer than any request this service needs: refused before the framework parses it.
        assert_problem(anon.get(f"/api/v1/cases/{'x' * 9000}"), 414, "URI_TOO_LONG")
        assert_problem(anon.get("/api/v1/cases", params={"cursor": "x" * 20_000}), 414, "URI_TOO_LONG")
        cookies = {"Cookie": "; ".join(f"c{i}={'v' * 1000}" for i in range(10))}
        assert_problem(anon.get("/health", headers=cookies), 401, "UNAUTHENTICATED")
        assert_problem(
            anon.get("/health", headers={"Authorization": "Bearer " + "A" * 300_000}), 401, "UNAUTHENTICATED"
        )


# -- sign-in only as JSON, and not from another site --------------------------------------------------


def test_login_takes_json_only_and_not_from_another_site(backend: Backend) -> None:
    name, password = new_account(backend)
    body = f'{{"username": "{name}", "password": "{password}"}}'
    with client(backend) as anon:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
            headers = {"Content-Type": content_type} if content_type else {}
            refused = anon.post("/auth/login", content=body, headers=headers)
            assert_problem(refused, 415, "UNSUPPORTED_MEDIA_TYPE")
            assert "set-cookie" not in refused.headers
        for headers in (
            {"Origin": "https://evil.example", "Content-Type": "text/plain"},  # the login-CSRF form
            {"Origin": "https://evil.example", "Content-Type": "application/json"},
            {"Origin": "null", "Content-Type": "application/json"},
            {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},
            {"Sec-Fetch-Site": "same-site", "Content-Type": "application/json"},
        ):
            refused = anon.post("/auth/login", content=body, headers=headers)
            assert 400 <= refused.status_code < 500, refused.text
            assert_problem(refused, 403, "CROSS_SITE_REQUEST")
            assert "set-cookie" not in refused.headers
        for headers in (
            {"Content-Type": "application/json; charset=utf-8"},  # a script, an app, the CLI
            {"Content-Type": "application/json", "Origin": backend.base_url, "Sec-Fetch-Site": "same-origin"},
        ):
            signed = anon.post("/auth/login", content=body, headers=headers)
            assert signed.status_code == 200, signed.text
            assert "upload_plane_session=" in signed.headers["set-cookie"]


# -- no cookie GET that records something, from another site -------------------------------------------

CROSS_SITE = (
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "https://evil.example"},
    {},  # a browser says where a request comes from; without a word, the cookie alone is not enough
)


def test_a_cross_site_cookie_get_of_s3_params_records_nothing(backend: Backend) -> None:
    name, password = new_account(backend)
    cookie = sign_in(backend, name, password).cookies["upload_plane_session"]
    with client(backend, sign_in(backend, name, password).json()["access_token"]) as api:
        log = new_log(api)
    params = {"filename": "forged.bin", "metadata[size]": "10", "metadata[log_id]": log["id"]}
    with anonymous(backend) as page:
        page.cookies.set("upload_plane_session", cookie)
        before = asyncio.run(world(backend))
        for headers in CROSS_SITE:
            refused = page.get("/s3/params", params=params, headers=headers)
            assert_problem(refused, 403, "CROSS_SITE_REQUEST")
        assert asyncio.run(world(backend)) == before  # no upload, no audit event
        for headers in (
            {"Sec-Fetch-Site": "same-origin"},
            {"Sec-Fetch-Site": "none"},
            {"Origin": backend.base_url},
        ):
            form = page.get("/s3/params", params=params, headers=headers)
            assert form.status_code == 200, form.text
            assert form.json()["method"] == "POST"


def test_a_cross_site_cookie_download_is_refused_and_not_audited(
    backend: Backend, http: httpx.Client
) -> None:
    name, password = new_account(backend)
    signed = sign_in(backend, name, password)
    with client(backend, signed.json()["access_token"]) as api:
        log = new_log(api)
        data = os.urandom(64)
        upload = start_upload(api, log["id"], data)
        put_parts(http, api, upload, data, [1])
        assert api.post(f"/uploads/{upload['id']}/complete", json={}).status_code == 200
    file_id = upload["file_id"]
    with browser(backend, signed.cookies["upload_plane_session"]) as page:
        for headers in CROSS_SITE:
            refused = page.get(f"/files/{file_id}/download", headers=headers)
            assert_problem(refused, 403, "CROSS_SITE_REQUEST")
        assert "file.download_link" not in events_of(backend, file_id)
        # The web demo's own link (same-origin), or the address typed by the user: a redirect, audited.
        for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}):
            resp = page.get(f"/files/{file_id}/download", headers=headers)
            assert resp.status_code == 307, resp.text
            assert http.get(resp.headers["location"]).content == data
    assert events_of(backend, file_id).count("file.download_link") == 2
    with client(backend, signed.json()["access_token"]) as api:  # a bearer token needs no such proof
        assert api.get(f"/files/{file_id}/download").status_code == 307


# -- security headers on every answer --------------------------------------------------------------------


def test_every_answer_carries_the_security_headers_errors_included(backend: Backend) -> None:
    creds = everything(backend)
    with httpx.Client(base_url=backend.base_url, timeout=60) as raw:
        answers = [
            raw.get("/health"),
            raw.get("/"),
            raw.get("/u/uplnk_whatever"),
            raw.get("/schema/swagger"),
            raw.get("/api/v1/me"),  # 401
            raw.get("/api/v1/no-such-route"),  # 404 from the router
            raw.request("TRACE", "/api/v1/me"),  # 405
            raw.post("/api/v1/auth/login", content=b"x", headers={"Content-Type": "text/plain"}),  # 415
            raw.post("/api/v1/auth/login", content=b"{", headers={"Content-Type": "application/json"}),  # 400
            raw.post("/api/v1/cases", content=b"x" * (2 * 1024 * 1024)),  # 413 from a middleware
            raw.get(f"/links/uplnk_{'x' * 36}"),  # 404 from a service
            raw.get("/api/v1/users", headers={"Authorization": f"Bearer {creds.access}"}),  # 404 (guard)
            raw.get(
                "/s3/multipart/c1.x.y/1",
                params={"key": "k"},
                headers={"Cookie": f"upload_plane_session={creds.cookie}"},
            ),
        ]
    statuses = [a.status_code for a in answers]
    assert statuses[:4] == [200, 200, 200, 200], statuses
    assert sorted(set(statuses[4:])) == [400, 401, 404, 405, 413, 415], statuses
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.request.url, answer.status_code, name)
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "frame-ancestors 'none'" in csp, csp
        assert "unsafe-inline" not in csp and "'unsafe-eval'" not in csp


# -- upload links act with their issuer's current authority -----------------------------------------


def _link_works(backend: Backend, link: dict[str, Any]) -> httpx.Response:
    with anonymous(backend) as anon:
        return anon.post(
            f"{endpoint(link)}/s3/multipart", json={"filename": "w.bin", "metadata": {"size": 10}}
        )


def test_links_stop_when_their_issuer_loses_the_manager_role(backend: Backend) -> None:
    owner_name, owner_pw = new_account(backend)
    issuer_name, issuer_pw = new_account(backend)
    with client(backend, sign_in(backend, owner_name, owner_pw).json()["access_token"]) as owner:
        log = new_log(owner)
        case = log["case_id"]
        assert owner.put(f"/cases/{case}/members/{issuer_name}", json={"role": "manager"}).status_code == 200
        with client(backend, sign_in(backend, issuer_name, issuer_pw).json()["access_token"]) as issuer:
            link = new_link(issuer, log["id"])
        assert _link_works(backend, link).status_code == 200
        for demoted in ("contributor", "viewer"):
            assert (
                owner.put(f"/cases/{case}/members/{issuer_name}", json={"role": demoted}).status_code == 200
            )
            assert_problem(_link_works(backend, link), 410, "UPLOAD_LINK_REVOKED")
            with anonymous(backend) as anon:
                assert_problem(anon.get(endpoint(link)), 410, "UPLOAD_LINK_REVOKED")
        assert owner.put(f"/cases/{case}/members/{issuer_name}", json={"role": "manager"}).status_code == 200
        assert _link_works(backend, link).status_code == 200  # the authority is back, and so is the link
        assert owner.delete(f"/cases/{case}/members/{issuer_name}").status_code == 204
        assert_problem(_link_works(backend, link), 410, "UPLOAD_LINK_REVOKED")
        # An administrator's link needs no membership.
        with admin(backend) as adm:
            admins_link = new_link(adm, log["id"])
        assert _link_works(backend, admins_link).status_code == 200


@pytest.mark.parametrize("path", ["/s3/params", "/s3/multipart"])
def test_uppy_routes_with_a_link_of_a_demoted_issuer_start_nothing(backend: Backend, path: str) -> None:
    owner_name, owner_pw = new_account(backend)
    issuer_name, issuer_pw = new_account(backend)
    with client(backend, sign_in(backend, owner_name, owner_pw).json()["access_token"]) as owner:
        log = new_log(owner)
        owner.put(f"/cases/{log['case_id']}/members/{issuer_name}", json={"role": "manager"})
        with client(backend, sign_in(backend, issuer_name, issuer_pw).json()["access_token"]) as issuer:
            link = new_link(issuer, log["id"])
        owner.put(f"/cases/{log['case_id']}/members/{issuer_name}", json={"role": "contributor"})
    before = asyncio.run(world(backend))
    with anonymous(backend) as anon:
        base = endpoint(link)
        if path == "/s3/params":
            resp = anon.get(f"{base}{path}", params={"filename": "a", "metadata[size]": "10"})
        else:
            resp = anon.post(f"{base}{path}", json={"filename": "a", "metadata": {"size": 10}})
    assert_problem(resp, 410, "UPLOAD_LINK_REVOKED")
    assert asyncio.run(world(backend)) == before
