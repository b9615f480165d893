"""Credentials for browsers, phones and scripts, on both backends: refresh rotation, logout, the
session cookie and its cross-site check, personal access tokens, disabled users, user admin."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from sqlmodel import select, update

from tests.api.helpers import (
    admin,
    assert_problem,
    backend_db,
    browser,
    client,
    new_account,
    new_log,
    sign_in,
)
from tests.conftest import Backend
from upload_plane.auth.tokens import looks_like_personal_access_token
from upload_plane.models import Case, PersonalAccessToken, User


def bearer(backend: Backend, token: str) -> httpx.Client:
    return client(backend, token)


def test_login_sets_an_httponly_lax_cookie_and_returns_tokens(backend: Backend) -> None:
    resp = sign_in(backend, *new_account(backend))
    body = resp.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0
    assert body["refresh_token"].startswith("uprt_")
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("upload_plane_session=")
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Path=/" in cookie
    assert "Secure" not in cookie  # test servers are not production; serve turns it on
    assert resp.headers["cache-control"] == "no-store"


def test_an_expired_access_token_is_401(backend: Backend) -> None:
    access = sign_in(backend, *new_account(backend)).json()["access_token"]
    claims = jwt.decode(access, options={"verify_signature": False})
    claims["exp"] = int((datetime.now(UTC) - timedelta(seconds=5)).timestamp())
    expired = jwt.encode(claims, backend.settings.jwt_secret, algorithm="HS256")
    with bearer(backend, expired) as api:
        assert_problem(api.get("/me"), 401, "UNAUTHENTICATED")
    with bearer(backend, access) as api:
        assert api.get("/me").status_code == 200


@pytest.mark.parametrize(
    "forge",
    ["alg-none", "other-key", "cookie-as-bearer", "garbage", "empty-sid"],
)
def test_forged_tokens_are_401(backend: Backend, forge: str) -> None:
    resp = sign_in(backend, *new_account(backend))
    claims = jwt.decode(resp.json()["access_token"], options={"verify_signature": False})
    token = {
        "alg-none": jwt.encode(claims, key=None, algorithm="none") if False else _alg_none(claims),
        "other-key": jwt.encode(claims, "another-secret-of-at-least-32-characters!", algorithm="HS256"),
        "cookie-as-bearer": resp.cookies["upload_plane_session"],
        "garbage": "not.a.token",
        "empty-sid": jwt.encode({**claims, "sid": ""}, backend.settings.jwt_secret, algorithm="HS256"),
    }[forge]
    with bearer(backend, token) as api:
        assert_problem(api.get("/me"), 401, "UNAUTHENTICATED")


def _alg_none(claims: dict[str, object]) -> str:
    import base64
    import json

    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_refresh_rotates_and_a_reused_token_revokes_the_whole_sign_in(backend: Backend) -> None:
    first = sign_in(backend, *new_account(backend)).json()
    with client(backend) as anon:
        second = anon.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert second.status_code == 200, second.text
        rotated = second.json()
        assert rotated["refresh_token"] != first["refresh_token"]
        with bearer(backend, rotated["access_token"]) as api:
            assert api.get("/me").status_code == 200
        third = anon.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
        assert third.status_code == 200
        # The first token again: a replay. Refused, and everything of that sign-in dies with it.
        replay = anon.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert_problem(replay, 401, "UNAUTHENTICATED")
        assert_problem(
            anon.post("/auth/refresh", json={"refresh_token": third.json()["refresh_token"]}),
            401,
            "UNAUTHENTICATED",
        )
    for token in (first["access_token"], rotated["access_token"], third.json()["access_token"]):
        with bearer(backend, token) as api:
            assert_problem(api.get("/me"), 401, "UNAUTHENTICATED")


def test_unknown_refresh_tokens_are_401(backend: Backend) -> None:
    with client(backend) as anon:
        for token in ("uprt_nothing", "x", "a" * 200):
            assert_problem(anon.post("/auth/refresh", json={"refresh_token": token}), 401, "UNAUTHENTICATED")


def test_logout_ends_the_sign_in_for_every_credential_of_it(backend: Backend) -> None:
    name, password = new_account(backend)
    resp = sign_in(backend, name, password)
    tokens, cookie = resp.json(), resp.cookies["upload_plane_session"]
    other = sign_in(backend, name, password).json()  # another device stays signed in
    with bearer(backend, tokens["access_token"]) as api:
        out = api.post("/auth/logout")
        assert out.status_code == 204
        assert (
            'upload_plane_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
        )
        assert_problem(api.get("/me"), 401, "UNAUTHENTICATED")
    with browser(backend, cookie) as page:
        assert_problem(page.get("/me"), 401, "UNAUTHENTICATED")
    with client(backend) as anon:
        refused = anon.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert_problem(refused, 401, "UNAUTHENTICATED")
        # A phone whose access token expired logs out with its refresh token alone.
        assert anon.post("/auth/logout", json={"refresh_token": other["refresh_token"]}).status_code == 204
        again = anon.post("/auth/refresh", json={"refresh_token": other["refresh_token"]})
        assert_problem(again, 401, "UNAUTHENTICATED")
        assert anon.post("/auth/logout").status_code == 204  # idempotent, nothing to end


def test_the_session_cookie_works_same_origin_and_refuses_cross_site_writes(backend: Backend) -> None:
    cookie = sign_in(backend, *new_account(backend)).cookies["upload_plane_session"]
    own = backend.base_url
    with browser(backend, cookie) as page:
        assert page.get("/me").status_code == 200  # a read needs no proof of origin
        made = page.post("/cases", json={"title": "from the page"}, headers={"Origin": own})
        assert made.status_code == 201, made.text
        fetched = page.post("/cases", json={"title": "fetch"}, headers={"Sec-Fetch-Site": "same-origin"})
        assert fetched.status_code == 201
        before = page.get("/cases").json()["items"]
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {},
        ):
            refused = page.post("/cases", json={"title": "forged"}, headers=headers)
            assert_problem(refused, 403, "CROSS_SITE_REQUEST")
            case_id = before[0]["id"]
            assert_problem(
                page.patch(f"/cases/{case_id}", json={"title": "x"}, headers=headers),
                403,
                "CROSS_SITE_REQUEST",
            )
            assert_problem(page.delete(f"/uploads/{case_id}", headers=headers), 403, "CROSS_SITE_REQUEST")
        assert page.get("/cases").json()["items"] == before  # nothing changed


def test_personal_access_tokens_are_shown_once_listed_without_secret_and_revocable(backend: Backend) -> None:
    access = sign_in(backend, *new_account(backend)).json()["access_token"]
    with bearer(backend, access) as api:
        made = api.post("/tokens", json={"name": "laptop script", "expires_in_days": 30})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        assert token.startswith("uppat_") and looks_like_personal_access_token(token)
        assert not looks_like_personal_access_token(token[:-1] + ("A" if token[-1] != "A" else "B"))
        listed = api.get("/tokens").json()["items"]
        assert [t["name"] for t in listed] == ["laptop script"]
        assert "token" not in listed[0] and token not in str(listed)
        assert listed[0]["last_used_at"] is None
        with bearer(backend, token) as script:
            assert script.get("/me").status_code == 200
            assert script.post("/cases", json={"title": "by script"}).status_code == 201
        assert api.get("/tokens").json()["items"][0]["last_used_at"] is not None
        assert api.delete(f"/tokens/{made.json()['id']}").status_code == 204
        with bearer(backend, token) as script:
            assert_problem(script.get("/me"), 401, "UNAUTHENTICATED")
        assert api.get("/tokens").json()["items"][0]["revoked_at"] is not None
        assert_problem(api.post("/tokens", json={"name": "x", "expires_in_days": 0}), 400, "VALIDATION_ERROR")
        assert_problem(
            api.post("/tokens", json={"name": "x", "expires_in_days": 5000}), 400, "VALIDATION_ERROR"
        )


def test_an_expired_personal_access_token_is_401(backend: Backend) -> None:
    access = sign_in(backend, *new_account(backend)).json()["access_token"]
    with bearer(backend, access) as api:
        made = api.post("/tokens", json={"name": "soon gone", "expires_in_days": 1}).json()

    async def expire() -> None:
        async with backend_db(backend) as session:
            past = datetime.now(UTC) - timedelta(seconds=1)
            await session.exec(
                update(PersonalAccessToken)
                .where(PersonalAccessToken.id == made["id"])
                .values(expires_at=past)
            )
            await session.commit()

    asyncio.run(expire())
    with bearer(backend, made["token"]) as script:
        assert_problem(script.get("/me"), 401, "UNAUTHENTICATED")


def test_a_disabled_user_loses_every_kind_of_credential_at_once(backend: Backend) -> None:
    name, password = new_account(backend)
    resp = sign_in(backend, name, password)
    access, refresh, cookie = (
        resp.json()["access_token"],
        resp.json()["refresh_token"],
        resp.cookies["upload_plane_session"],
    )
    with bearer(backend, access) as api:
        pat = api.post("/tokens", json={"name": "ci", "expires_in_days": 7}).json()["token"]
        user_id = api.get("/me").json()["id"]
    with admin(backend) as adm:
        assert adm.patch(f"/users/{user_id}", json={"disabled": True}).json()["disabled"] is True
    with bearer(backend, access) as api:
        assert_problem(api.get("/me"), 401, "UNAUTHENTICATED")
    with bearer(backend, pat) as api:
        assert_problem(api.get("/me"), 401, "UNAUTHENTICATED")
    with browser(backend, cookie) as page:
        assert_problem(page.get("/me"), 401, "UNAUTHENTICATED")
    with client(backend) as anon:
        assert_problem(anon.post("/auth/refresh", json={"refresh_token": refresh}), 401, "UNAUTHENTICATED")
        assert_problem(
            anon.post("/auth/login", json={"username": name, "password": password}), 401, "UNAUTHENTICATED"
        )
    # Enabled again, none of them comes back: tests/api/test_credentials.py.


def test_admins_manage_users_and_keep_one_admin(backend: Backend) -> None:
    name, password = new_account(backend)
    with admin(backend) as adm:
        me = adm.get("/me").json()
        user = next(u for u in _all_users(adm) if u["username"] == name)
        assert adm.patch(f"/users/{user['id']}", json={"role": "admin"}).json()["role"] == "admin"
        assert adm.patch(f"/users/{user['id']}", json={"role": "user"}).json()["role"] == "user"
        assert (
            adm.put(f"/users/{user['id']}/password", json={"password": "a-new-password"}).status_code == 204
        )
        assert_problem(
            adm.put(f"/users/{user['id']}/password", json={"password": "short"}), 400, "VALIDATION_ERROR"
        )
        assert_problem(adm.patch("/users/nobody", json={"disabled": True}), 404, "NOT_FOUND")
        others = [
            u for u in _all_users(adm) if u["role"] == "admin" and not u["disabled"] and u["id"] != me["id"]
        ]
        if not others:
            assert_problem(adm.patch(f"/users/{me['id']}", json={"disabled": True}), 409, "CONFLICT")
    with client(backend) as anon:
        assert_problem(
            anon.post("/auth/login", json={"username": name, "password": password}), 401, "UNAUTHENTICATED"
        )
        assert (
            anon.post("/auth/login", json={"username": name, "password": "a-new-password"}).status_code == 200
        )


def _all_users(adm: httpx.Client) -> list[dict[str, object]]:
    users, cursor = [], None
    while True:
        page = adm.get("/users", params={"limit": 500, **({"cursor": cursor} if cursor else {})}).json()
        users += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return users


def test_members_share_a_case_with_roles(backend: Backend) -> None:
    owner_name, owner_pw = new_account(backend)
    viewer_name, viewer_pw = new_account(backend)
    with bearer(backend, sign_in(backend, owner_name, owner_pw).json()["access_token"]) as owner:
        log = new_log(owner)
        case_id = log["case_id"]
        members = owner.get(f"/cases/{case_id}/members").json()
        assert [(m["username"], m["role"]) for m in members] == [(owner_name, "manager")]
        added = owner.put(f"/cases/{case_id}/members/{viewer_name.upper()}", json={"role": "viewer"})
        assert added.status_code == 200, added.text
        assert added.json()["username"] == viewer_name
        with bearer(backend, sign_in(backend, viewer_name, viewer_pw).json()["access_token"]) as viewer:
            assert [c["id"] for c in viewer.get("/cases").json()["items"]] == [case_id]
            assert viewer.get(f"/logs/{log['id']}/files").status_code == 200
            assert_problem(
                viewer.post(f"/logs/{log['id']}/uploads", json={"filename": "a", "size": 1}), 403, "FORBIDDEN"
            )
            owner.put(f"/cases/{case_id}/members/{viewer_name}", json={"role": "contributor"})
            assert (
                viewer.post(f"/logs/{log['id']}/uploads", json={"filename": "a", "size": 1}).status_code
                == 201
            )
            assert_problem(
                owner.put(f"/cases/{case_id}/members/{viewer_name}", json={"role": "boss"}),
                400,
                "VALIDATION_ERROR",
            )
            assert_problem(
                owner.put(f"/cases/{case_id}/members/nobody-at-all", json={"role": "viewer"}),
                404,
                "NOT_FOUND",
            )
            # The last manager cannot leave or step down.
            assert_problem(owner.delete(f"/cases/{case_id}/members/{owner_name}"), 409, "CONFLICT")
            assert_problem(
                owner.put(f"/cases/{case_id}/members/{owner_name}", json={"role": "viewer"}), 409, "CONFLICT"
            )
            assert owner.delete(f"/cases/{case_id}/members/{viewer_name}").status_code == 204
            assert_problem(viewer.get(f"/cases/{case_id}"), 404, "NOT_FOUND")
            assert viewer.get("/cases").json()["items"] == []


async def _case_count(backend: Backend, title: str) -> int:
    async with backend_db(backend) as session:
        return len((await session.exec(select(Case.id).where(Case.title == title))).all())


async def _user(backend: Backend, user_id: str) -> User:
    async with backend_db(backend) as session:
        return (await session.exec(select(User).where(User.id == user_id))).one()
