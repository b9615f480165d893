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

import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

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

#: How often a path parameter takes one of the world's real values instead of a generated one.
REAL_VALUE_PROBABILITY = 0.5
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
    #: path (and query) parameter name -> real values
    values: dict[str, list[str]]


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


def seed_world(backend: Backend, http: httpx.Client) -> World:
    data = os.urandom(2048)
    names = {role: new_account(backend) for role in ("owner", "viewer", "contributor")}
    bystander, _ = new_account(backend)
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
        spare = owner.post("/tokens", json={"name": "spare", "expires_in_days": 1})
        assert spare.status_code == 201, spare.text
        admin_log = new_log(adm)
        users = adm.get("/users", params={"limit": 500}).json()["items"]
        identities = {
            "anonymous": Identity("anonymous"),
            "viewer": _identity("viewer", viewer),
            "contributor": _identity("contributor", contributor),
            "owner": _identity("owner", owner),
            "admin": _identity("admin", adm),
        }
    uploads = [finished, open_upload, aborted, foreign]
    return World(
        identities,
        {
            "case_id": [log["case_id"], admin_log["case_id"]],
            "log_id": [log["id"], admin_log["id"]],
            "upload_id": [u["id"] for u in uploads],
            "file_id": [u["file_id"] for u in uploads],
            "token_id": [spare.json()["id"]],
            "user_id": [u["id"] for u in users if u["username"] == bystander],
            "username": [names["viewer"][0], names["contributor"][0], bystander],
        },
    )


# -- protecting the identities ----------------------------------------------------------------------

#: Operations that could take an identity away, and the path parameter naming whom they touch.
_PROTECTED = {
    ("DELETE", "/api/v1/tokens/{token_id}"): "token_id",
    ("PATCH", "/api/v1/users/{user_id}"): "user_id",
    ("PUT", "/api/v1/users/{user_id}/password"): "user_id",
    ("PUT", "/api/v1/cases/{case_id}/members/{username}"): "username",
    ("DELETE", "/api/v1/cases/{case_id}/members/{username}"): "username",
}


@contextmanager
def identities_protected(world: World) -> Iterator[None]:
    protected = {
        value
        for who in world.identities.values()
        for value in (who.token_id, who.user_id, who.username)
        if value
    }

    def before_call(context: HookContext, case: Any, kwargs: dict[str, Any]) -> None:
        name = _PROTECTED.get((case.method.upper(), case.operation.path))
        params = case.path_parameters or {}
        if name and str(params.get(name, "")).strip().lower() in protected:
            case.path_parameters = {**params, name: UNKNOWN_ID}

    GLOBAL_HOOK_DISPATCHER.register_hook_with_name(before_call, "before_call")
    try:
        yield
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(before_call)


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
    bindings: dict[str, Any] = {
        f"path.{name}": {"dictionary": name, "probability": REAL_VALUE_PROBABILITY}
        for name, values in world.values.items()
        if values
    }
    bindings["query.log_id"] = {"dictionary": "log_id", "probability": REAL_VALUE_PROBABILITY}
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
        },
        "dictionaries": {name: {"values": values} for name, values in world.values.items() if values},
        "parameters": bindings,
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
    with identities_protected(world):
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
