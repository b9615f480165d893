"""Hostile input on every route, on both backends: ids, JSON bodies, credentials, cookies without
their same-site proof, filenames. Each refusal is a 4xx problem+json with a stable code, never a 5xx,
and changes nothing: the database and the store are compared before and after each route's corpus.

The routes come from the application's own OpenAPI document, and a test checks that every route of
it is exercised, so a new route cannot miss the corpora.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest

from tests.api.helpers import (
    PROBLEM,
    admin,
    client,
    complete,
    expire_link,
    login,
    new_account,
    new_log,
    put_parts,
    record_server_errors,
    sign_in,
    start_upload,
    world,
)
from tests.conftest import JWT_SECRET, Backend, embedded_backend, real_backend
from upload_plane import errors
from upload_plane.app import create_app
from upload_plane.auth.middleware import CHANGES_STATE, SAFE_METHODS
from upload_plane.auth.tokens import ACCESS, SESSION, issue_jwt
from upload_plane.settings import Settings


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    path_params: tuple[str, ...]
    has_body: bool
    secured: bool
    changes_state: bool  # a POST, PUT, PATCH, DELETE, or a GET that records something

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


def inventory() -> list[Route]:
    """Every operation of the OpenAPI document, read from the application (not served); and which
    GET routes record something (``opt`` ``changes_state``: the cookie alone needs this site)."""
    app = create_app(Settings())
    doc = app.openapi_schema.to_schema()
    recording = {
        (method, re.sub(r":\w+}", "}", route.path))
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        if handler.opt.get(CHANGES_STATE)
        for method in handler.http_methods
    }
    found = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            params = tuple(p["name"] for p in op.get("parameters", []) if p["in"] == "path")
            secured = bool(op.get("security", doc.get("security")))
            changes = method.upper() not in SAFE_METHODS or (method.upper(), path) in recording
            found.append(Route(method.upper(), path, params, "requestBody" in op, secured, changes))
    return sorted(found, key=lambda r: r.name)


ROUTES = inventory()


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


#: Every stable code a refusal may carry (the domain's, and the HTTP layer's own).
CODES = {str(c.code) for c in _subclasses(errors.DomainError)} | {
    "METHOD_NOT_ALLOWED",
    "UNSUPPORTED_MEDIA_TYPE",
}
SERVER_SIDE = {"INTERNAL_ERROR", "STORAGE_UNAVAILABLE", "DATABASE_UNAVAILABLE", "STORAGE_REJECTED"}


def assert_refused(resp: httpx.Response, *statuses: int) -> str:
    """A 4xx (one of ``statuses`` when given) problem+json with a stable code; its code."""
    what = (
        f"{resp.request.method} {resp.request.url.raw_path[:120]!r} -> {resp.status_code} {resp.text[:300]}"
    )
    assert 400 <= resp.status_code < 500, what
    if statuses:
        assert resp.status_code in statuses, what
    assert resp.headers.get("content-type", "").startswith(PROBLEM), what
    body = resp.json()
    assert body["status"] == resp.status_code and body["detail"], what
    assert body["code"] in CODES and body["code"] not in SERVER_SIDE, what
    return str(body["code"])


# -- the scene: a victim with one of everything, an attacker with their own case ------------------------


@dataclass
class Scene:
    backend: Backend
    victim: dict[str, str]  # path parameter -> the victim's value
    own: dict[str, str]  # path parameter -> the attacker's own value
    attacker_token: str
    attacker_cookie: str
    victim_token: str
    disabled_token: str
    refresh_token: str
    dead_links: dict[str, dict[str, str]]  # revoked / expired / exhausted -> a link's route values
    exercised: set[str] = field(default_factory=set)

    def attacker(self) -> httpx.Client:
        return client(self.backend, self.attacker_token)


def _token_id(api: httpx.Client) -> str:
    made = api.post("/tokens", json={"name": "scene", "expires_in_days": 1})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _stage(api: httpx.Client, http: httpx.Client) -> dict[str, str]:
    """A case, log, completed file and open upload of the user behind ``api``."""
    log = new_log(api)
    data = b"evidence"
    done = start_upload(api, log["id"], data)
    put_parts(http, api, done, data, [1])
    assert complete(api, done["id"]).status_code == 200
    open_upload = start_upload(api, log["id"], b"0123456789")
    link = api.post(f"/logs/{log['id']}/upload-links", json={"expires_in": 3600})
    assert link.status_code == 201, link.text
    origin = str(api.base_url).removesuffix("/api/v1/").removesuffix("/api/v1")
    # An Uppy upload of the user's own (bearer) and one through the user's link (the link's capability)
    by_user = api.post(f"{origin}/s3/multipart", json=_uppy_start(log["id"]))
    by_link = http.post(f"{origin}/links/{link.json()['token']}/s3/multipart", json=_uppy_start(log["id"]))
    assert by_user.status_code == 200 and by_link.status_code == 200, (by_user.text, by_link.text)
    return {
        "case_id": log["case_id"],
        "log_id": log["id"],
        "file_id": done["file_id"],
        "upload_id": open_upload["id"],
        "token_id": _token_id(api),
        "link_id": link.json()["id"],
        "token": link.json()["token"],
        "part_number": "1",
        "uppy_upload_id": by_user.json()["uploadId"],
        "uppy_key": by_user.json()["key"],
        "link_upload_id": by_link.json()["uploadId"],
        "link_key": by_link.json()["key"],
    }


def _uppy_start(log_id: str) -> dict[str, Any]:
    return {
        "filename": "u.bin",
        "type": "application/octet-stream",
        "metadata": {"size": 10, "log_id": log_id},
    }


def values_for(route: Route, ids: dict[str, str]) -> dict[str, str]:
    """The path and query values of ``route`` for the user behind ``ids``: on the Uppy routes the
    uploadId is the capability Uppy echoes back, and ``key`` goes with it."""
    if route.path.startswith("/s3"):
        return {**ids, "upload_id": ids["uppy_upload_id"], "key": ids["uppy_key"]}
    if route.path.startswith("/links/"):
        return {**ids, "upload_id": ids["link_upload_id"], "key": ids["link_key"]}
    return ids


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.real)])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A backend of this module's own: the store and database it compares hold only its scene."""
    if request.param == "embedded":
        with embedded_backend(tmp_path_factory.mktemp("hostile")) as b:
            yield b
    else:
        with real_backend(request, "hostile_corpora") as b:
            yield b


@pytest.fixture(scope="module")
def scene(backend: Backend) -> Scene:
    with httpx.Client(timeout=60) as http:
        victim_name, victim_password = new_account(backend)
        with login(backend, victim_name, victim_password) as victim:
            victim_ids = _stage(victim, http)
            victim_ids["user_id"] = victim.get("/me").json()["id"]
            victim_token = str(victim.headers["Authorization"]).removeprefix("Bearer ")
        victim_ids["username"] = victim_name
        attacker_name, attacker_password = new_account(backend)
        signed = sign_in(backend, attacker_name, attacker_password)
        with client(backend, signed.json()["access_token"]) as attacker:
            own = _stage(attacker, http)
            own["user_id"] = attacker.get("/me").json()["id"]
            dead_links = _dead_links(backend, attacker, http, own["log_id"])
        own["username"] = attacker_name
        gone_name, gone_password = new_account(backend)
        gone = sign_in(backend, gone_name, gone_password).json()
        with admin(backend) as adm:
            for ids in (victim_ids, own):  # a sign-in of each (the admin's routes name them)
                sessions = adm.get(f"/users/{ids['user_id']}/sessions").json()["items"]
                ids["session_id"] = sessions[0]["id"]
            gone_id = [
                u
                for u in adm.get("/users", params={"limit": 500}).json()["items"]
                if u["username"] == gone_name
            ]
            assert adm.patch(f"/users/{gone_id[0]['id']}", json={"disabled": True}).status_code == 200
    return Scene(
        backend,
        victim_ids,
        own,
        signed.json()["access_token"],
        signed.cookies["upload_plane_session"],
        victim_token,
        gone["access_token"],
        signed.json()["refresh_token"],
        dead_links,
    )


def _dead_links(
    backend: Backend, api: httpx.Client, http: httpx.Client, log_id: str
) -> dict[str, dict[str, str]]:
    """Links of the attacker's own log, each with an upload started through it while it lived: one
    revoked, one expired, one whose only file is in flight (exhausted)."""
    found = {}
    for state in ("revoked", "expired", "exhausted"):
        made = api.post(f"/logs/{log_id}/upload-links", json={"expires_in": 3600, "max_files": 1})
        assert made.status_code == 201, made.text
        link = made.json()
        started = http.post(
            f"{backend.base_url}/links/{link['token']}/s3/multipart", json=_uppy_start(log_id)
        )
        assert started.status_code == 200, started.text
        found[state] = {
            "token": link["token"],
            "upload_id": started.json()["uploadId"],
            "key": started.json()["key"],
            "part_number": "1",
        }
        if state == "revoked":
            assert api.delete(f"/upload-links/{link['id']}").status_code == 200
        elif state == "expired":
            asyncio.run(expire_link(backend, link["id"]))
    return found


#: A body each route accepts (so a refusal is about the hostile part, not the body).
VALID_BODY: dict[str, Any] = {  # a value or a function of the route's values
    "POST /api/v1/auth/login": {"username": "nobody", "password": "wrong"},
    "POST /api/v1/auth/logout": {},
    "POST /api/v1/auth/refresh": {"refresh_token": "uprt_not-a-token"},
    "POST /api/v1/tokens": {"name": "n", "expires_in_days": 1},
    "POST /api/v1/users": {
        "username": f"u{secrets.token_hex(4)}",
        "password": "a-long-password",
        "role": "user",
    },
    "PUT /api/v1/users/{user_id}/password": {"password": "another-long-password"},
    "PATCH /api/v1/users/{user_id}": {"disabled": True},
    "POST /api/v1/cases": {"title": "t"},
    "PATCH /api/v1/cases/{case_id}": {"title": "renamed"},
    "POST /api/v1/cases/{case_id}/logs": {"name": "l"},
    "PUT /api/v1/cases/{case_id}/members/{username}": {"role": "viewer"},
    "POST /api/v1/logs/{log_id}/uploads": {"filename": "a.bin", "size": 10},
    "POST /api/v1/uploads/{upload_id}/parts": {"part_numbers": [1]},
    "POST /api/v1/uploads/{upload_id}/complete": {},
    "POST /api/v1/logs/{log_id}/upload-links": {"expires_in": 600},
    "POST /s3/multipart": lambda ids: _uppy_start(ids["log_id"]),
    "POST /links/{token}/s3/multipart": {"filename": "a.bin", "metadata": {"size": 10}},
    "POST /s3/multipart/{upload_id}/complete": {"parts": []},
    "POST /links/{token}/s3/multipart/{upload_id}/complete": {"parts": []},
}
#: Query parameters a route needs besides the hostile part (``key`` comes from ``values_for``).
VALID_QUERY: dict[str, dict[str, str]] = {
    "GET /s3/params": {"filename": "a.bin", "metadata[size]": "10", "metadata[log_id]": "-"},
    "GET /links/{token}/s3/params": {"filename": "a.bin", "metadata[size]": "10"},
}


def call(api: httpx.Client, route: Route, params: dict[str, str], **kwargs: Any) -> httpx.Response:
    """``route`` with ``params`` in its path (and, on the Uppy routes, ``key`` in its query), sent
    with ``api``'s credentials."""
    path = route.path
    for name in route.path_params:
        path = path.replace("{" + name + "}", quote(params[name], safe=""))
    if route.has_body and "json" not in kwargs and "content" not in kwargs:
        body = VALID_BODY.get(route.name, {})
        kwargs["json"] = body(params) if callable(body) else body
    query = dict(VALID_QUERY.get(route.name, {}))
    if "key" in params and "/s3/" in route.path and not route.path.endswith(("/params", "/multipart")):
        query["key"] = params["key"]
    if query:
        kwargs["params"] = {**query, **kwargs.get("params", {})}
    return api.request(
        route.method, f"{api.base_url.scheme}://{api.base_url.netloc.decode()}{path}", **kwargs
    )


# -- ids -------------------------------------------------------------------------------------------------

HOSTILE_IDS = [
    "' OR '1'='1",
    "1; DROP TABLE uploads; --",
    '" OR ""="',
    "../../etc/passwd",
    "%00",
    "\x00",
    "😀",
    "ｃａｓｅ",
    "\u202egnp.exe",
    "a" * 3000,
    "-1",
    "null",
    "${jndi:ldap://x}",
]
WITH_IDS = [r for r in ROUTES if r.path_params]


@pytest.mark.parametrize("route", WITH_IDS, ids=lambda r: r.name)
def test_hostile_and_foreign_ids_are_refused(scene: Scene, route: Route) -> None:
    """The attacker's own ids in every other place, each parameter in turn: the victim's id (404 or
    403: never theirs to see) and injection, traversal and unicode strings."""
    scene.exercised.add(f"ids {route.name}")
    own, victim = values_for(route, scene.own), values_for(route, scene.victim)
    with scene.attacker() as api:
        before = asyncio.run(world(scene.backend))
        for name in route.path_params:
            for value in [victim[name], *HOSTILE_IDS]:
                if name in ("username", "token", "part_number") and value == victim[name]:
                    # adding a real user to one's own case is allowed (covered below); a link's token
                    # is a capability: whoever holds it may upload; part 1 is part 1 of any upload
                    continue
                params = {**own, name: value}
                if name != "case_id" and "case_id" in route.path_params and value == victim[name]:
                    params["case_id"] = victim["case_id"]
                assert_refused(call(api, route, params))
        assert asyncio.run(world(scene.backend)) == before, route.name


def test_a_member_cannot_be_added_to_someone_elses_case(scene: Scene) -> None:
    with scene.attacker() as api:
        resp = api.put(
            f"/cases/{scene.victim['case_id']}/members/{scene.own['username']}", json={"role": "manager"}
        )
        assert_refused(resp, 404)


# -- JSON bodies ------------------------------------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("array", b"[]"),
    ("string", b'"x"'),
    ("null", b"null"),
    ("number", b"1e400"),
    ("truncated", b'{"a":'),
    ("trailing garbage", b"{} {}"),
    ("NaN", b'{"size": NaN}'),
    ("Infinity", b'{"size": Infinity, "filename": "a"}'),
    ("undecodable", b'{"filename": "\xff\xfe"}'),
    ("utf-16", '{"filename": "a"}'.encode("utf-16")),
    ("lone surrogate escape", b'{"filename": "\\ud800", "name": "\\ud800", "title": "\\ud800"}'),
    ("deep nesting", DEEP),
    ("10 MB", b'{"filename": "' + b"a" * (10 * 1024 * 1024) + b'", "size": 1}'),
]
WITH_BODIES = [r for r in ROUTES if r.has_body]


@pytest.mark.parametrize("route", WITH_BODIES, ids=lambda r: r.name)
def test_hostile_bodies_are_refused(scene: Scene, route: Route) -> None:
    scene.exercised.add(f"bodies {route.name}")
    # Public routes get no credentials (a logout would end the attacker's sign-in, as it should).
    with scene.attacker() if route.secured else client(scene.backend) as api:
        api.headers["Content-Type"] = "application/json"
        before = asyncio.run(world(scene.backend))
        for name, body in HOSTILE_BODIES:
            resp = call(api, route, values_for(route, scene.own), content=body)
            if route.name == "POST /api/v1/auth/logout" and name == "null":
                assert resp.status_code == 204  # its body is optional: null is no body, not an attack
                continue
            code = assert_refused(resp)
            if name == "10 MB":
                assert (resp.status_code, code) == (413, "REQUEST_TOO_LARGE")
        assert asyncio.run(world(scene.backend)) == before, route.name


#: Per field of the upload routes: values of the wrong type, out of range, or not finite.
FIELD_CORPUS: dict[str, list[tuple[str, dict[str, Any] | bytes]]] = {
    "POST /api/v1/logs/{log_id}/uploads": [
        ("negative size", {"filename": "a", "size": -1}),
        ("size 2**64", {"filename": "a", "size": 2**64}),
        ("size 2**63", {"filename": "a", "size": 2**63}),
        ("size over the limit", {"filename": "a", "size": 2**50}),
        ("size as text", {"filename": "a", "size": "10"}),
        ("size as float", {"filename": "a", "size": 10.5}),
        ("size true", {"filename": "a", "size": True}),
        ("size 1e400", b'{"filename": "a", "size": 1e400}'),
        ("size -Infinity", b'{"filename": "a", "size": -Infinity}'),
        ("part size zero", {"filename": "a", "size": 10, "part_size": 0}),
        ("part size negative", {"filename": "a", "size": 10, "part_size": -5}),
        ("part size 2**64", {"filename": "a", "size": 10, "part_size": 2**64}),
        ("filename a number", {"filename": 1, "size": 1}),
        ("filename null", {"filename": None, "size": 1}),
        ("filename a list", {"filename": ["a"], "size": 1}),
        ("unknown field", {"filename": "a", "size": 1, "owner": "admin"}),
        ("sha256 not hex", {"filename": "a", "size": 1, "sha256": "z" * 64}),
        ("crc not base64", {"filename": "a", "size": 1, "crc64nvme": "!!!!"}),
        ("content type with CRLF", {"filename": "a", "size": 1, "content_type": "text/plain\r\nX-Evil: 1"}),
    ],
    "POST /api/v1/uploads/{upload_id}/parts": [
        ("part zero", {"part_numbers": [0]}),
        ("part 10001", {"part_numbers": [10001]}),
        ("part beyond the plan", {"part_numbers": [2]}),
        ("part as text", {"part_numbers": ["1"]}),
        ("part 2**64", {"part_numbers": [2**64]}),
        ("negative part", {"part_numbers": [-1]}),
        ("not a list", {"part_numbers": 1}),
        ("a million parts", {"part_numbers": list(range(1, 10_001)) * 20}),
        ("checksum key not a number", {"part_numbers": [1], "checksums_sha256": {"one": "x"}}),
        ("checksum not base64", {"part_numbers": [1], "checksums_sha256": {"1": "***"}}),
    ],
    "POST /api/v1/uploads/{upload_id}/complete": [
        ("parts not a list", {"parts": "all"}),
        ("part number text", {"parts": [{"part_number": "1", "etag": "x"}]}),
        ("sha256 wrong length", {"sha256": "ab"}),
    ],
}


@pytest.mark.parametrize("route_name", sorted(FIELD_CORPUS))
def test_hostile_fields_of_the_upload_routes_are_refused(scene: Scene, route_name: str) -> None:
    (route,) = [r for r in ROUTES if r.name == route_name]
    with scene.attacker() as api:
        before = asyncio.run(world(scene.backend))
        for _name, body in FIELD_CORPUS[route_name]:
            if isinstance(body, bytes):
                resp = call(api, route, scene.own, content=body, headers={"Content-Type": "application/json"})
            else:
                resp = call(api, route, scene.own, json=body)
            assert_refused(resp)
        assert asyncio.run(world(scene.backend)) == before, route_name


# -- credentials ------------------------------------------------------------------------------------------


def forged_credentials(scene: Scene) -> list[tuple[str, str]]:
    """Authorization header values that must never authenticate."""
    now = int(time.time())
    admin_claims = {"sub": scene.victim["user_id"], "sid": "x", "typ": ACCESS, "iat": now, "exp": now + 600}
    unsigned = _b64(json.dumps({"alg": "none", "typ": "JWT"})) + "." + _b64(json.dumps(admin_claims)) + "."
    expired = issue_jwt(scene.own["user_id"], "x", ACCESS, JWT_SECRET, ttl=-60).token
    other_key = jwt.encode(admin_claims, "another-secret-of-enough-length-0123456789", algorithm="HS256")
    session_as_bearer = scene.attacker_cookie
    cookie_typ = issue_jwt(scene.own["user_id"], "x", SESSION, JWT_SECRET, ttl=600).token
    return [
        ("empty bearer", "Bearer"),
        ("comma bearer", "Bearer ,"),
        ("basic", "Basic dXNlcjpwYXNz"),
        ("junk", "Bearer " + "A" * 6000),
        ("not a jwt", "Bearer a.b.c"),
        ("alg none", "Bearer " + unsigned),
        ("another key", "Bearer " + other_key),
        ("expired", "Bearer " + expired),
        (
            "unknown sign-in",
            "Bearer " + issue_jwt(scene.own["user_id"], "no-such", ACCESS, JWT_SECRET, 600).token,
        ),
        ("session cookie as bearer", "Bearer " + session_as_bearer),
        ("session-typed token", "Bearer " + cookie_typ),
        ("refresh token as bearer", "Bearer " + scene.refresh_token),
        ("disabled user", "Bearer " + scene.disabled_token),
        ("forged PAT", "Bearer uppat_" + "A" * 36),
        ("PAT with a valid-looking checksum", "Bearer uppat_" + secrets.token_hex(18)),
        ("two tokens", f"Bearer {scene.attacker_token} {scene.attacker_token}"),
    ]


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


SECURED = [r for r in ROUTES if r.secured]


@pytest.mark.parametrize("route", SECURED, ids=lambda r: r.name)
def test_forged_and_dead_credentials_are_401(scene: Scene, route: Route) -> None:
    scene.exercised.add(f"credentials {route.name}")
    with httpx.Client(
        base_url=f"{scene.backend.base_url}/api/v1",
        timeout=60,
        event_hooks={"response": [record_server_errors]},
    ) as anon:
        before = asyncio.run(world(scene.backend))
        for _name, header in forged_credentials(scene):
            assert_refused(
                call(anon, route, values_for(route, scene.own), headers={"Authorization": header}), 401
            )
        assert asyncio.run(world(scene.backend)) == before, route.name


@pytest.mark.parametrize("route", SECURED, ids=lambda r: r.name)
def test_the_session_cookie_alone_is_refused_cross_site(scene: Scene, route: Route) -> None:
    """Reads may use the cookie alone; anything that changes or records something (a POST, or a GET
    such as Uppy's /s3/params or a download) needs proof it comes from this site."""
    scene.exercised.add(f"cookies {route.name}")
    if not route.changes_state:
        return
    with httpx.Client(
        base_url=f"{scene.backend.base_url}/api/v1",
        timeout=60,
        event_hooks={"response": [record_server_errors]},
    ) as browser:
        browser.cookies.set("upload_plane_session", scene.attacker_cookie)
        before = asyncio.run(world(scene.backend))
        for proof in (
            {},
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Origin": scene.backend.base_url + ".evil.example"},
        ):
            resp = call(browser, route, values_for(route, scene.own), headers=proof)
            assert_refused(resp, 403)
            assert resp.json()["code"] == "CROSS_SITE_REQUEST"
        assert asyncio.run(world(scene.backend)) == before, route.name


LINK_ROUTES = [r for r in ROUTES if r.path.startswith("/links/{token}")]
LINK_STARTS = {"POST /links/{token}/s3/multipart", "GET /links/{token}/s3/params"}


@pytest.mark.parametrize("route", LINK_ROUTES, ids=lambda r: r.name)
def test_dead_and_exhausted_links_are_refused(scene: Scene, route: Route) -> None:
    """A revoked or expired link opens nothing, not even the uploads started through it while it
    lived; an exhausted link starts nothing more (the upload in flight may finish: not tried here)."""
    scene.exercised.add(f"dead links {route.name}")
    with client(scene.backend) as anon:  # a link's holder has no other credentials
        before = asyncio.run(world(scene.backend))
        for state, values in scene.dead_links.items():
            if state == "exhausted":
                if route.name in LINK_STARTS:
                    assert assert_refused(call(anon, route, values), 409) == "LINK_FILES_EXHAUSTED"
                continue
            code = assert_refused(call(anon, route, values), 410)
            assert code == {"revoked": "UPLOAD_LINK_REVOKED", "expired": "UPLOAD_LINK_EXPIRED"}[state]
        assert asyncio.run(world(scene.backend)) == before, route.name


def test_oversized_headers_are_refused_before_the_application(scene: Scene) -> None:
    """A header larger than the server accepts never reaches a route (and changes nothing)."""
    before = asyncio.run(world(scene.backend))
    with httpx.Client(timeout=60, event_hooks={"response": [record_server_errors]}) as raw:
        try:
            resp = raw.get(
                f"{scene.backend.base_url}/api/v1/cases", headers={"Authorization": "Bearer " + "A" * 200_000}
            )
            assert 400 <= resp.status_code < 500, resp.status_code
        except httpx.RemoteProtocolError:
            pass  # the server closed the connection on the oversized request: refused all the same
    assert asyncio.run(world(scene.backend)) == before


def test_every_route_meets_the_corpora(scene: Scene) -> None:
    """Runs last in this module: each route of the OpenAPI document was exercised by each corpus
    that applies to it."""
    expected = {f"ids {r.name}" for r in WITH_IDS} | {f"bodies {r.name}" for r in WITH_BODIES}
    expected |= {f"credentials {r.name}" for r in SECURED} | {f"cookies {r.name}" for r in SECURED}
    expected |= {f"dead links {r.name}" for r in LINK_ROUTES}
    assert expected <= scene.exercised, sorted(expected - scene.exercised)
    recording_gets = {r.name for r in SECURED if r.changes_state and r.method == "GET"}
    assert recording_gets == {"GET /s3/params", "GET /api/v1/files/{file_id}/download"}, recording_gets
    # Upload-link routes carry their capability in the path (``/links/{token}``).
    unsecured = {r.name for r in ROUTES if not r.secured and not r.path.startswith("/links/{token}")}
    assert unsecured <= {
        "POST /api/v1/auth/login",
        "POST /api/v1/auth/logout",
        "POST /api/v1/auth/refresh",
        "GET /health",
        "GET /ready",
        "GET /metrics",
    }, "a route without authentication: add it here only if it is meant to be public"


# -- filenames ---------------------------------------------------------------------------------------------

REFUSED_NAMES = ["", "\x00", "evidence\x00.mp4", "a" * 16_001]
#: Names a user may really have (or an attacker may try): accepted as the file's name, and never more
#: than one clean segment of the object key.
ODD_NAMES = [
    "../../../etc/passwd",
    "..\\..\\windows\\system32\\config",
    "/absolute/path.mp4",
    "..",
    ".",
    "...",
    " ",
    "CON",
    "nul.txt",
    "a/b/c.mp4",
    "line\nbreak.mp4",
    "tab\there.mp4",
    "\u202egpj.exe",
    "zero\u200bwidth.mp4",
    "<script>alert(1)</script>.html",
    "'; DROP TABLE files; --.mp4",
    "%2e%2e%2fescape.mp4",
    "😀🎥.mp4",
    "Ｅｖｉｄｅｎｃｅ.mp4",
    "e\u0301vidence.mp4",
    "x" * 5000 + ".mp4",
]


def test_hostile_filenames(scene: Scene) -> None:
    with scene.attacker() as api:
        before = asyncio.run(world(scene.backend))
        for name in REFUSED_NAMES:
            resp = api.post(f"/logs/{scene.own['log_id']}/uploads", json={"filename": name, "size": 1})
            assert assert_refused(resp, 400) == "VALIDATION_ERROR", name
        assert asyncio.run(world(scene.backend)) == before
        prefix = f"cases/{scene.own['case_id']}/logs/{scene.own['log_id']}/"
        for name in ODD_NAMES:
            resp = api.post(f"/logs/{scene.own['log_id']}/uploads", json={"filename": name, "size": 1})
            assert resp.status_code == 201, (name, resp.text)
            upload = resp.json()
            assert upload["filename"] == name  # the name as given is what the file is called
            key = upload["key"]
            assert key.startswith(prefix + upload["file_id"] + "/"), key
            segment = key.removeprefix(prefix + upload["file_id"] + "/")
            assert segment and "/" not in segment and "\\" not in segment, key
            assert segment not in (".", "..") and not segment.startswith("."), key
            assert all(ch.isprintable() and ch not in "\u202e\u200b" for ch in segment), key
            assert len(segment.encode()) <= 200, key
            assert api.delete(f"/uploads/{upload['id']}").status_code == 204
