"""Schemathesis against the live OpenAPI document, once per role: the harness of ``test_fuzz.py``.

The service runs on MariaDB + MinIO. ``seed_world`` gives it a small, realistic world (an admin, a
user who owns a case with a finished file and open, aborted and foreign uploads, a viewer and a
contributor of that case, a bystander account), and each role gets a personal access token.
``run_role`` then loads ``/schema/openapi.json`` from the running server and runs Schemathesis'
engine over every operation (its examples, coverage, fuzzing and stateful phases) with that role's
token. Path parameters are drawn half the time from the world's real ids and usernames (the rest are
generated), so requests get past 404 into the handlers.

Every response is checked by Schemathesis (``CHECKS``); what a role saw is counted per method and
route on the client side, and the server's own request counter (``/metrics``) counts again.

The fuzzer may do anything a role may, except take away the identities the run depends on: a
``before_call`` hook redirects requests that would revoke a role's token, disable, demote or re-key
its account, or change its membership, to an id that does not exist (the routes are still fuzzed,
on the bystander and on generated ids).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import schemathesis
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.engine import events, from_schema
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER, HookContext

from tests.api.helpers import (
    admin,
    complete,
    login,
    new_account,
    new_log,
    put_parts,
    sign_in,
    start_upload,
)
from tests.conftest import Backend

#: Run in this order: a later role may change what an earlier one would have seen (the owner aborts
#: uploads, the admin deletes files).
ROLES = ("anonymous", "viewer", "contributor", "owner", "admin")

#: The checks applied to every response. Left out: ``positive_data_acceptance`` (it expects a 2xx
#: for every schema-valid request, but an opaque ``cursor`` the server did not issue is refused with
#: the documented 400, which no schema can express) and ``allow_header_conformance`` (Litestar 2's
#: automatic OPTIONS handler lists only the methods of the first handler registered for a path,
#: litestar-org/litestar#4169, fixed only in Litestar 3; 405 answers carry the right ``Allow``, which
#: ``unsupported_method`` checks).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
    "unsupported_method",
)

#: What a request that breaks the document may be answered: Schemathesis' own list; 410, which the
#: link routes answer for an expired or revoked link before they read the request (as a bad
#: credential is 401 whatever the request); and 413, for a body over the limit, refused unread.
NEGATIVE_DATA_STATUSES = [
    *("400", "401", "403", "404", "405", "406", "409", "410", "413", "415", "422", "428", "429", "5xx")
]

#: How often a parameter takes one of the world's real values instead of a generated one.
REAL_VALUE_PROBABILITY = 0.5
#: Path parameters that take the world's values on every route (dictionaries of the same name).
GLOBAL_DICTIONARIES = (
    "case_id",
    "log_id",
    "upload_id",
    "file_id",
    "token_id",
    "user_id",
    "username",
    "link_id",
    "token",
)
#: Parameters bound on some routes only: the Uppy routes' ``{upload_id}`` is a capability (not the
#: API's upload id) and their ``key`` an object key, each bound to the users' or the link's own;
#: sign-in and refresh get a real account's credentials and refresh tokens.
OPERATION_BINDINGS = {
    r"^/s3/multipart/": {"path.upload_id": "uppy_upload_id", "query.key": "uppy_key"},
    r"^/s3/settle$": {"query.key": "uppy_post_key"},
    r"^/links/\{token\}/s3/multipart/": {"path.upload_id": "link_upload_id", "query.key": "link_key"},
    r"^/links/\{token\}/s3/settle$": {"query.key": "link_post_key"},
    r"^/api/v1/auth/login$": {"body.username": "login_username", "body.password": "login_password"},
    r"^/api/v1/auth/refresh$": {"body.refresh_token": "refresh_token"},
}
UNKNOWN_ID = "01a20000-0000-7000-8000-00000000dead"


@dataclass(frozen=True)
class Identity:
    role: str
    token: str | None = None
    user_id: str | None = None
    token_id: str | None = None
    username: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass(frozen=True)
class World:
    identities: dict[str, Identity]
    #: dictionary name -> real values, for every role (ids, usernames, link tokens)
    values: dict[str, list[str]]
    #: role -> dictionary name -> real values of that role only (Uppy capabilities and their keys:
    #: a user's capability works only for that user, and a role that aborts or completes one of
    #: them must not take it from the next role)
    own: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    #: ids the fuzzer must not take away: the live upload link, uploads kept open for the whole run
    protected: frozenset[str] = frozenset()

    def dictionaries(self, role: str) -> dict[str, list[str]]:
        merged = {name: list(values) for name, values in self.values.items()}
        for name, values in self.own.get(role, {}).items():
            merged[name] = [*values, *merged.get(name, [])]
        return {name: values for name, values in merged.items() if values}


@dataclass(frozen=True)
class Finding:
    role: str
    operation: str
    check: str
    title: str
    status: int | None
    message: str
    curl: str

    def __str__(self) -> str:
        return (
            f"[{self.role}] {self.operation}: {self.check}: {self.title} (status {self.status})\n"
            f"    {self.message[:400]}\n    {self.curl[:600]}"
        )


@dataclass
class RoleRun:
    role: str
    #: "METHOD /path/template" -> requests sent (undeclared methods, e.g. TRACE, count on their own)
    requests: Counter[str] = field(default_factory=Counter)
    #: "METHOD /path/template" -> status -> responses
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    #: operations of the schema ("METHOD /path/template") that were exercised at least once
    operations: set[str] = field(default_factory=set)
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stop_reason: str = ""


# -- the world --------------------------------------------------------------------------------------


def _identity(role: str, api: httpx.Client) -> Identity:
    me = api.get("/me")
    assert me.status_code == 200, me.text
    token = api.post("/tokens", json={"name": f"fuzz {role}", "expires_in_days": 1})
    assert token.status_code == 201, token.text
    body = token.json()
    return Identity(role, body["token"], me.json()["id"], body["id"], me.json()["username"])


#: Roles that may upload into the seeded logs (the admin into its own case's log).
UPLOADERS = ("contributor", "owner", "admin")
#: Dictionaries of a role's own (``OPERATION_BINDINGS``).
OWN_DICTIONARIES = (
    "refresh_token",
    "uppy_upload_id",
    "uppy_key",
    "uppy_post_key",
    "link_upload_id",
    "link_key",
    "link_post_key",
)


def uppy_start(
    http: httpx.Client, base: str, headers: dict[str, str], size: int, **meta: str
) -> tuple[str, str]:
    """``POST {base}/s3/multipart`` as ``@uppy/aws-s3`` sends it: the capability and the key."""
    resp = http.post(
        f"{base}/s3/multipart",
        headers=headers,
        json={"filename": "fuzz.bin", "type": "application/octet-stream", "metadata": {"size": size, **meta}},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["uploadId"], resp.json()["key"]


def uppy_put_parts(
    http: httpx.Client, base: str, headers: dict[str, str], upload_id: str, key: str, data: bytes
) -> None:
    """Sign and PUT the one part of a small Uppy upload, so that completing it succeeds."""
    signed = http.get(
        f"{base}/s3/multipart/{quote(upload_id, safe='')}/1", headers=headers, params={"key": key}
    )
    assert signed.status_code == 200, signed.text
    put = http.put(signed.json()["url"], content=data)
    assert put.status_code == 200, put.text[:300]


def uppy_form_upload(http: httpx.Client, base: str, headers: dict[str, str], data: bytes, **meta: str) -> str:
    """``GET {base}/s3/params`` and the form POST to the store: the key to settle."""
    params = {"filename": "form.bin", "metadata[size]": str(len(data))}
    params.update({f"metadata[{name}]": value for name, value in meta.items()})
    resp = http.get(f"{base}/s3/params", headers=headers, params=params)
    assert resp.status_code == 200, resp.text
    form = resp.json()
    posted = http.post(form["url"], data=form["fields"], files={"file": ("form.bin", data)})
    assert posted.status_code in (200, 201, 204), posted.text[:300]
    return str(form["fields"]["key"])


def seed_world(backend: Backend, http: httpx.Client) -> World:
    data = os.urandom(2048)
    names = {role: new_account(backend) for role in ("owner", "viewer", "contributor")}
    bystander, bystander_password = new_account(backend)
    with (
        admin(backend) as adm,
        login(backend, *names["owner"]) as owner,
        login(backend, *names["viewer"]) as viewer,
        login(backend, *names["contributor"]) as contributor,
    ):
        log = new_log(owner)
        for role in ("viewer", "contributor"):
            resp = owner.put(f"/cases/{log['case_id']}/members/{names[role][0]}", json={"role": role})
            assert resp.status_code == 200, resp.text
        finished = start_upload(owner, log["id"], data)
        put_parts(http, owner, finished, data, [1])
        assert complete(owner, finished["id"]).status_code == 200
        open_upload = start_upload(owner, log["id"], data)
        put_parts(http, owner, open_upload, data, [1])
        aborted = start_upload(owner, log["id"], data)
        assert owner.delete(f"/uploads/{aborted['id']}").status_code == 204
        foreign = start_upload(contributor, log["id"], data)
        kept_upload = start_upload(owner, log["id"], data)  # never aborted nor completed
        spare = owner.post("/tokens", json={"name": "spare", "expires_in_days": 1})
        assert spare.status_code == 201, spare.text
        # The live link has room for whatever the fuzzer starts through it; the revoked one is 410.
        budget = {"expires_in": 7 * 86400, "max_files": 1_000_000, "max_bytes": 2**50}
        link = owner.post(f"/logs/{log['id']}/upload-links", json=budget)
        assert link.status_code == 201, link.text
        revoked = owner.post(f"/logs/{log['id']}/upload-links", json={"expires_in": 3600})
        assert revoked.status_code == 201, revoked.text
        assert owner.delete(f"/upload-links/{revoked.json()['id']}").status_code == 200
        admin_log = new_log(adm)
        users = adm.get("/users", params={"limit": 500}).json()["items"]
        identities = {
            "anonymous": Identity("anonymous"),
            "viewer": _identity("viewer", viewer),
            "contributor": _identity("contributor", contributor),
            "owner": _identity("owner", owner),
            "admin": _identity("admin", adm),
        }
    link_base = f"{backend.base_url}/links/{link.json()['token']}"
    own: dict[str, dict[str, list[str]]] = {}
    kept: set[str] = {kept_upload["id"], kept_upload["file_id"]}
    for role, who in identities.items():
        mine = own[role] = {name: [] for name in OWN_DICTIONARIES}
        # Uppy uploads of the role's own, through /s3 (roles that may upload) and through the link:
        # one with its part in the store (completing it succeeds), one without, and one kept open
        # all run long (never aborted nor completed: ``steered``); a form upload of each to settle.
        for kind in ("with part", "without", "kept open"):
            if role in UPLOADERS:
                target = admin_log if role == "admin" else log
                cap, key = uppy_start(http, backend.base_url, who.headers(), len(data), log_id=target["id"])
                if kind == "with part":
                    uppy_put_parts(http, backend.base_url, who.headers(), cap, key, data)
                mine["uppy_upload_id"].append(cap)
                mine["uppy_key"].append(key)
                if kind == "kept open":
                    kept.add(cap)
            cap, key = uppy_start(http, link_base, {}, len(data))
            if kind == "with part":
                uppy_put_parts(http, link_base, {}, cap, key, data)
            mine["link_upload_id"].append(cap)
            mine["link_key"].append(key)
            if kind == "kept open":
                kept.add(cap)
        for _ in range(3):  # refresh tokens rotate: each works once
            mine["refresh_token"].append(
                sign_in(backend, bystander, bystander_password).json()["refresh_token"]
            )
        if role in UPLOADERS:
            target = admin_log if role == "admin" else log
            key = uppy_form_upload(http, backend.base_url, who.headers(), data, log_id=target["id"])
            mine["uppy_post_key"].append(key)
        mine["link_post_key"].append(uppy_form_upload(http, link_base, {}, data))
    uploads = [finished, open_upload, aborted, foreign, kept_upload]
    return World(
        identities,
        {
            "case_id": [log["case_id"], admin_log["case_id"]],
            "log_id": [log["id"], admin_log["id"]],
            "upload_id": [u["id"] for u in uploads],
            "file_id": [u["file_id"] for u in uploads],
            "token_id": [spare.json()["id"]],
            "login_username": [bystander],
            "login_password": [bystander_password],
            "user_id": [u["id"] for u in users if u["username"] == bystander],
            "username": [names["viewer"][0], names["contributor"][0], bystander],
            "link_id": [link.json()["id"], revoked.json()["id"]],
            # Mostly the live link: the routes behind it are what is worth reaching.
            "token": [link.json()["token"]] * 3 + [revoked.json()["token"]],
            # Other users' capabilities too: not theirs, so 404 (a role's own come first).
            "uppy_upload_id": [c for mine in own.values() for c in mine["uppy_upload_id"]],
            "uppy_key": [k for mine in own.values() for k in mine["uppy_key"]],
        },
        own,
        frozenset({link.json()["id"], *kept}),
    )


# -- steering: real values, protected identities, Uppy metadata ------------------------------------

#: Operations that could take an identity (or the live link, or an upload kept open) away, and the
#: path parameter naming whom they touch.
_PROTECTED = {
    ("DELETE", "/api/v1/tokens/{token_id}"): "token_id",
    ("PATCH", "/api/v1/users/{user_id}"): "user_id",
    ("PUT", "/api/v1/users/{user_id}/password"): "user_id",
    ("POST", "/api/v1/users/{user_id}/revoke"): "user_id",
    ("DELETE", "/api/v1/users/{user_id}/sessions/{session_id}"): "user_id",
    ("DELETE", "/api/v1/users/{user_id}/tokens/{token_id}"): "user_id",
    ("PUT", "/api/v1/cases/{case_id}/members/{username}"): "username",
    ("DELETE", "/api/v1/cases/{case_id}/members/{username}"): "username",
    ("DELETE", "/api/v1/upload-links/{link_id}"): "link_id",
    ("DELETE", "/api/v1/files/{file_id}"): "file_id",
    ("DELETE", "/api/v1/uploads/{upload_id}"): "upload_id",
    ("POST", "/api/v1/uploads/{upload_id}/complete"): "upload_id",
    ("DELETE", "/s3/multipart/{upload_id}"): "upload_id",
    ("POST", "/s3/multipart/{upload_id}/complete"): "upload_id",
    ("DELETE", "/links/{token}/s3/multipart/{upload_id}"): "upload_id",
    ("POST", "/links/{token}/s3/multipart/{upload_id}/complete"): "upload_id",
}
#: Sizes and media types the fuzzer's Uppy starts declare, in turn.
_UPPY_SIZES = (2048, 1, 0, 6 * 1024 * 1024 + 1, 5 * 1024**4)
_UPPY_TYPES = ("", "video/mp4", "application/octet-stream")


def dictionaries_of(path: str) -> dict[str, str]:
    """``location.name`` -> the dictionary the parameter takes its real values from, on ``path``."""
    names = {f"path.{name}": name for name in GLOBAL_DICTIONARIES}
    names["query.log_id"] = "log_id"
    for regex, params in OPERATION_BINDINGS.items():
        if re.search(regex, path):
            names.update(params)
    return names


@contextmanager
def steered(world: World, role: str) -> Iterator[None]:
    """While the fuzzer runs as ``role``, every other request is steered towards the handlers:

    - a generated path parameter (an Uppy ``key``, sign-in credentials, a refresh token) is
      replaced by one of the world's real values (``OPERATION_BINDINGS``): Schemathesis'
      dictionaries only reach its fuzzing phase, and its coverage phase would otherwise send ``0``
      for every id and link token, which only ever meets a 404;
    - an Uppy ``key`` next to a real ``uploadId`` becomes that upload's key (Uppy sends the pair),
      and the part numbers asked for are the seeded uploads' own (1, or 2: out of plan);
    - an Uppy start gets the metadata a page sends (``size``; ``log_id`` for users) and a media
      type: real log ids and sizes that fit (``metadata`` of ``POST /s3/multipart`` is free-form,
      and generated ``metadata[...]`` query parameters of ``GET /s3/params`` rarely name a log).

    The other requests go as generated. Every request keeps the identities the run depends on (and
    the live link). Decided in turn, not at random, so a seeded run is repeated exactly; Schemathesis
    re-validates a steered request, so its checks judge what was sent."""
    values = world.dictionaries(role)
    pairs = {
        upload_id: key
        for ids, keys in (("uppy_upload_id", "uppy_key"), ("link_upload_id", "link_key"))
        for upload_id, key in zip(values.get(ids, []), values.get(keys, []), strict=True)
    }
    protected = {
        value.lower()
        for who in world.identities.values()
        for value in (who.token_id, who.user_id, who.username, *world.protected)
        if value
    }
    turns = itertools.count()

    def before_call(context: HookContext, case: Any, kwargs: dict[str, Any]) -> None:
        path, method = case.operation.path, case.method.upper()
        turn = next(turns)
        if turn % 2 == 0:
            _steer(case, turn // 2, values, pairs)
        name = _PROTECTED.get((method, path))
        params = case.path_parameters or {}
        if name and str(params.get(name, "")).strip().lower() in protected:
            case.path_parameters = {**params, name: UNKNOWN_ID}

    GLOBAL_HOOK_DISPATCHER.register_hook_with_name(before_call, "before_call")
    try:
        yield
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(before_call)


def _steer(case: Any, n: int, values: dict[str, list[str]], pairs: dict[str, str]) -> None:
    path, method = case.operation.path, case.method.upper()
    if isinstance(case.query, dict) and set(case.query) - {p.name for p in case.operation.query}:
        # Undeclared query parameters, which the service ignores as it should (Uppy sends every
        # metadata field): Schemathesis excuses that only for a request left as it generated it.
        return
    names = dictionaries_of(path)
    params = dict(case.path_parameters or {})
    for name, value in params.items():
        real = values.get(names.get(f"path.{name}", ""), [])
        if real and value not in real:
            params[name] = real[n % len(real)]
    if "part_number" in params and params["part_number"] not in (1, 2):
        params["part_number"] = 1 + n % 2  # the seeded Uppy uploads have one part: 2 is out of plan
    if params:
        case.path_parameters = params
    if isinstance(case.query, dict) and "key" in case.query:
        real = values.get(names.get("query.key", ""), [])
        key = pairs.get(params.get("upload_id", ""))
        if key is not None:
            case.query = {**case.query, "key": key}
        elif real and case.query["key"] not in real:
            case.query = {**case.query, "key": real[n % len(real)]}
    if isinstance(case.body, dict):
        for location, name in names.items():
            real = values.get(name, [])
            field_ = location.removeprefix("body.")
            if location.startswith("body.") and real and case.body.get(field_) not in real:
                case.body = {**case.body, field_: real[n % len(real)]}
    if path == "/api/v1/uploads/{upload_id}/parts" and isinstance(case.body, dict):
        case.body = {**case.body, "part_numbers": [1]}  # the seeded uploads have one part
    if not path.endswith(("/s3/multipart", "/s3/params")):
        return
    meta: dict[str, Any] = {"size": _UPPY_SIZES[n % len(_UPPY_SIZES)]}
    if not path.startswith("/links/"):
        meta["log_id"] = values["log_id"][n % len(values["log_id"])]
    media_type = _UPPY_TYPES[n % len(_UPPY_TYPES)]
    if method == "POST" and isinstance(case.body, dict) and isinstance(case.body.get("metadata"), dict):
        case.body = {**case.body, "type": media_type, "metadata": {**case.body["metadata"], **meta}}
    elif method == "GET" and isinstance(case.query, dict | None):
        query = {f"metadata[{k}]": v for k, v in meta.items()}
        case.query = {**(case.query or {}), "type": media_type, **query}


# -- one role's run ---------------------------------------------------------------------------------


def config_for(
    identity: Identity,
    world: World,
    *,
    seed: int,
    max_examples: int,
    max_time: int | None,
    deterministic: bool,
) -> schemathesis.Config:
    dictionaries = world.dictionaries(identity.role)
    bindings: dict[str, Any] = {
        f"path.{name}": {"dictionary": name, "probability": REAL_VALUE_PROBABILITY}
        for name in GLOBAL_DICTIONARIES
        if name in dictionaries
    }
    bindings["query.log_id"] = {"dictionary": "log_id", "probability": REAL_VALUE_PROBABILITY}
    operations = [
        {
            "include-path-regex": regex,
            "parameters": {
                param: {"dictionary": name, "probability": REAL_VALUE_PROBABILITY}
                for param, name in params.items()
                if name in dictionaries
            },
        }
        for regex, params in OPERATION_BINDINGS.items()
    ]
    data: dict[str, Any] = {
        "seed": seed,
        "headers": identity.headers(),
        "workers": 1,
        "request-timeout": 60,
        "continue-on-failure": True,
        "cache": {"enabled": False},
        "generation": {
            "max-examples": max_examples,
            "deterministic": deterministic,
            "database": "none",
        },
        "checks": {
            "enabled": False,
            **{name: {"enabled": True} for name in CHECKS},
            "response_schema_conformance": {"enabled": True, "validate-formats": True},
            "negative_data_rejection": {"enabled": True, "expected-statuses": NEGATIVE_DATA_STATUSES},
        },
        "dictionaries": {name: {"values": values} for name, values in dictionaries.items()},
        "parameters": bindings,
        "operations": [op for op in operations if op["parameters"]],
    }
    if max_time is not None:
        data["max-time"] = max_time
    return schemathesis.Config.from_dict(data)


def run_role(
    base_url: str,
    identity: Identity,
    world: World,
    *,
    seed: int,
    max_examples: int,
    max_time: int | None = None,
    deterministic: bool = False,
) -> RoleRun:
    config = config_for(
        identity,
        world,
        seed=seed,
        max_examples=max_examples,
        max_time=max_time,
        deterministic=deterministic,
    )
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json", config=config)
    run = RoleRun(identity.role)
    started = time.monotonic()
    with steered(world, identity.role):
        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
                _record(run, event.recorder)
            elif isinstance(event, events.NonFatalError):
                run.errors.append(f"{event.label}: {event.info.title}: {event.info.message}"[:2000])
            elif isinstance(event, events.FatalError):
                raise event.exception
            elif isinstance(event, events.EngineFinished):
                run.stop_reason = str(event.stop_reason)
    run.seconds = time.monotonic() - started
    return run


def _record(run: RoleRun, recorder: Any) -> None:
    for case_id, interaction in recorder.interactions.items():
        case = recorder.cases[case_id].value
        route = f"{interaction.request.method.upper()} {case.operation.path}"
        run.requests[route] += 1
        if interaction.response is not None:
            run.statuses.setdefault(route, Counter())[interaction.response.status_code] += 1
        if interaction.request.method.upper() == case.operation.method.upper():
            run.operations.add(route)
    for case_id, checks in recorder.checks.items():
        interaction = recorder.interactions.get(case_id)
        status = interaction.response.status_code if interaction and interaction.response else None
        case = recorder.cases[case_id].value
        for check in checks:
            info = check.failure_info
            if info is None:
                continue
            run.findings.append(
                Finding(
                    run.role,
                    f"{case.method.upper()} {case.operation.path}",
                    check.name,
                    info.failure.title,
                    status,
                    str(info.failure.message),
                    info.code_sample,
                )
            )


def schema_operations(base_url: str) -> set[str]:
    doc = httpx.get(f"{base_url}/schema/openapi.json", timeout=30).json()
    return {f"{method.upper()} {path}" for path, ops in doc["paths"].items() for method in ops}


# -- what the server counted ------------------------------------------------------------------------


def server_requests(base_url: str) -> Counter[tuple[str, str, str]]:
    """(method, route template, status) -> requests, from the server's ``/metrics``."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    counts: Counter[tuple[str, str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "upload_plane_http_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                labels = sample.labels
                route = _template(labels["route"])
                counts[(labels["method"], route, labels["status"])] += int(sample.value)
    return counts


def _template(route: str) -> str:
    """``/api/v1/cases/{case_id:str}`` (Litestar's) -> ``/api/v1/cases/{case_id}`` (OpenAPI's)."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route)


def new_seed() -> int:
    return secrets.randbelow(2**31)
