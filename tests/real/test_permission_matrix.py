"""Each role × each route gives the expected status, on MariaDB + MinIO; the matrix is printed.

Roles: a signed-in user with no role in the case, viewer, contributor, manager, admin, and a
contributor whose account was disabled after signing in. Upload sessions belong to the contributor
who started them. A resource one may not see is 404; one that is visible but not allowed is 403.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.api.helpers import admin, client, new_account, put_parts, sign_in, start_upload
from tests.conftest import Backend

pytestmark = pytest.mark.real

ROLES = ("none", "viewer", "contributor", "manager", "admin", "disabled")


@dataclass
class World:
    backend: Backend
    http: httpx.Client
    clients: dict[str, httpx.Client]
    usernames: dict[str, str]
    case_id: str = ""
    log_id: str = ""
    file_id: str = ""
    upload: dict[str, Any] = field(default_factory=dict)

    def fresh_file(self) -> str:
        """An available file of the case (for routes that use one up)."""
        data = os.urandom(64)
        api = self.clients["contributor"]
        upload = start_upload(api, self.log_id, data)
        put_parts(self.http, api, upload, data, [1])
        assert api.post(f"/uploads/{upload['id']}/complete").status_code == 200
        return str(upload["file_id"])

    def fresh_upload(self) -> dict[str, Any]:
        return start_upload(self.clients["contributor"], self.log_id, b"x" * 10)

    def fresh_user(self) -> str:
        """The id of a new account with a sign-in and a token (for routes that end them)."""
        name, password = new_account(self.backend)
        with client(self.backend, sign_in(self.backend, name, password).json()["access_token"]) as api:
            assert api.post("/tokens", json={"name": "t", "expires_in_days": 1}).status_code == 201
            return str(api.get("/me").json()["id"])

    def fresh_member(self) -> str:
        name, _ = new_account(self.backend)
        assert (
            self.clients["manager"]
            .put(f"/cases/{self.case_id}/members/{name}", json={"role": "viewer"})
            .is_success
        )
        return name


Call = Callable[[httpx.Client, World], httpx.Response]

E = {"none": 404, "viewer": 200, "contributor": 200, "manager": 200, "admin": 200, "disabled": 401}


def expect(**statuses: int) -> dict[str, int]:
    return {**E, **statuses}


MATRIX: list[tuple[str, Call, dict[str, int]]] = [
    ("GET /me", lambda c, w: c.get("/me"), expect(none=200)),
    (
        "POST /tokens",
        lambda c, w: c.post("/tokens", json={"name": "t", "expires_in_days": 1}),
        expect(none=201, viewer=201, contributor=201, manager=201, admin=201),
    ),
    ("GET /users", lambda c, w: c.get("/users"), expect(viewer=404, contributor=404, manager=404)),
    (
        "POST /users",
        lambda c, w: c.post("/users", json={"username": f"m{secrets.token_hex(4)}", "password": "p" * 10}),
        expect(viewer=404, contributor=404, manager=404, admin=201),
    ),
    *[
        (
            route,
            call,
            {**expect(viewer=404, contributor=404, manager=404), "admin": admin_status},
        )
        for route, call, admin_status in (
            ("GET /users/{id}/sessions", lambda c, w: c.get(f"/users/{w.fresh_user()}/sessions"), 200),
            ("GET /users/{id}/tokens", lambda c, w: c.get(f"/users/{w.fresh_user()}/tokens"), 200),
            ("POST /users/{id}/revoke", lambda c, w: c.post(f"/users/{w.fresh_user()}/revoke"), 200),
            (
                "DELETE /users/{id}/sessions/{s}",
                lambda c, w: c.delete(f"/users/{w.fresh_user()}/sessions/unknown"),
                404,
            ),
        )
    ],
    ("GET /cases", lambda c, w: c.get("/cases"), expect(none=200)),
    (
        "POST /cases",
        lambda c, w: c.post("/cases", json={"title": "t"}),
        expect(none=201, viewer=201, contributor=201, manager=201, admin=201),
    ),
    ("GET /cases/{id}", lambda c, w: c.get(f"/cases/{w.case_id}"), expect()),
    (
        "PATCH /cases/{id}",
        lambda c, w: c.patch(f"/cases/{w.case_id}", json={"description": "d"}),
        expect(viewer=403, contributor=403),
    ),
    ("GET /cases/{id}/logs", lambda c, w: c.get(f"/cases/{w.case_id}/logs"), expect()),
    (
        "POST /cases/{id}/logs",
        lambda c, w: c.post(f"/cases/{w.case_id}/logs", json={"name": secrets.token_hex(4)}),
        expect(viewer=403, contributor=403, manager=201, admin=201),
    ),
    ("GET /cases/{id}/members", lambda c, w: c.get(f"/cases/{w.case_id}/members"), expect()),
    (
        "PUT /cases/{id}/members/{u}",
        lambda c, w: c.put(f"/cases/{w.case_id}/members/{w.fresh_member()}", json={"role": "contributor"}),
        expect(viewer=403, contributor=403),
    ),
    (
        "DELETE /cases/{id}/members/{u}",
        lambda c, w: c.delete(f"/cases/{w.case_id}/members/{w.fresh_member()}"),
        expect(viewer=403, contributor=403, manager=204, admin=204),
    ),
    (
        "GET /cases/{id}/audit",
        lambda c, w: c.get(f"/cases/{w.case_id}/audit"),
        expect(viewer=403, contributor=403),
    ),
    ("GET /logs/{id}", lambda c, w: c.get(f"/logs/{w.log_id}"), expect()),
    ("GET /logs/{id}/files", lambda c, w: c.get(f"/logs/{w.log_id}/files"), expect()),
    (
        "POST /logs/{id}/uploads",
        lambda c, w: c.post(f"/logs/{w.log_id}/uploads", json={"filename": "f", "size": 1}),
        expect(viewer=403, contributor=201, manager=201, admin=201),
    ),
    ("GET /files/{id}", lambda c, w: c.get(f"/files/{w.file_id}"), expect()),
    (
        "GET /files/{id}/download",
        lambda c, w: c.get(f"/files/{w.file_id}/download"),
        expect(viewer=307, contributor=307, manager=307, admin=307),
    ),
    (
        "DELETE /files/{id}",
        lambda c, w: c.delete(f"/files/{w.fresh_file()}"),
        expect(viewer=403, contributor=403, manager=403, admin=204),
    ),
    # Upload sessions are their starter's (the contributor) and admins'; others do not see them.
    ("GET /uploads/{id}", lambda c, w: c.get(f"/uploads/{w.upload['id']}"), expect(viewer=404, manager=404)),
    (
        "POST /uploads/{id}/parts",
        lambda c, w: c.post(f"/uploads/{w.upload['id']}/parts", json={"part_numbers": [1]}),
        expect(viewer=404, manager=404),
    ),
    (
        "POST /uploads/{id}/complete",
        lambda c, w: c.post(f"/uploads/{w.fresh_upload()['id']}/complete"),
        expect(viewer=404, manager=404, contributor=409, admin=409),
    ),
    (
        "DELETE /uploads/{id}",
        lambda c, w: c.delete(f"/uploads/{w.fresh_upload()['id']}"),
        expect(viewer=404, manager=404, contributor=204, admin=204),
    ),
    ("GET /uploads", lambda c, w: c.get("/uploads"), expect(none=200)),
]


@pytest.fixture
def world(real: Backend, http: httpx.Client) -> World:
    usernames, clients = {}, {}
    for role in ROLES:
        if role == "admin":
            clients[role] = admin(real)
            usernames[role] = "admin"
            continue
        name, password = new_account(real)
        usernames[role] = name
        clients[role] = client(real, sign_in(real, name, password).json()["access_token"])
    w = World(real, http, clients, usernames)
    manager = clients["manager"]
    case = manager.post("/cases", json={"title": "matrix"}).json()
    w.case_id = case["id"]
    w.log_id = manager.post(f"/cases/{w.case_id}/logs", json={"name": "log"}).json()["id"]
    for role in ("viewer", "contributor", "disabled"):
        member_role = "viewer" if role == "viewer" else "contributor"
        assert manager.put(
            f"/cases/{w.case_id}/members/{usernames[role]}", json={"role": member_role}
        ).is_success
    w.file_id = w.fresh_file()
    w.upload = w.fresh_upload()
    with admin(real) as adm:
        disabled_id = clients["disabled"].get("/me").json()["id"]
        assert adm.patch(f"/users/{disabled_id}", json={"disabled": True}).is_success
    return w


def test_permission_matrix(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    rows, failures = [], []
    for route, call, expected in MATRIX:
        got = {}
        for role in ROLES:
            resp = call(world.clients[role], world)
            got[role] = resp.status_code
            if resp.status_code != expected[role]:
                failures.append(
                    f"{route} as {role}: {resp.status_code} (expected {expected[role]}) {resp.text[:120]}"
                )
        rows.append((route, got))
    for c in world.clients.values():
        c.close()
    width = max(len(r) for r, _ in rows)
    table = [f"{'route':<{width}}  " + "  ".join(f"{r:>11}" for r in ROLES)]
    table += [f"{route:<{width}}  " + "  ".join(f"{got[r]:>11}" for r in ROLES) for route, got in rows]
    with capsys.disabled():
        print(f"\npermission matrix checked ({len(rows)} routes x {len(ROLES)} roles, MariaDB + MinIO):")
        print("\n".join(table))
    assert not failures, "\n".join(failures)
