"""Every audited action leaves exactly one event naming its actor and subject (SPEC §4)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import httpx
from sqlmodel import select

from tests.api.helpers import (
    admin,
    backend_db,
    client,
    complete,
    new_account,
    new_log,
    put_parts,
    sign_in,
    start_upload,
)
from tests.conftest import Backend
from upload_plane.models import AuditEvent


async def _events(backend: Backend, since_id: str) -> list[AuditEvent]:
    async with backend_db(backend) as session:
        stmt = select(AuditEvent).where(AuditEvent.id > since_id).order_by(AuditEvent.id)
        return list((await session.exec(stmt)).all())


async def _last_id(backend: Backend) -> str:
    async with backend_db(backend) as session:
        stmt = select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1)  # type: ignore[attr-defined]
        return (await session.exec(stmt)).first() or ""


def test_each_audited_action_leaves_one_event_with_actor_and_subject(
    backend: Backend, http: httpx.Client
) -> None:
    mark = asyncio.run(_last_id(backend))
    name, password = new_account(backend)
    member_name, _ = new_account(backend)
    with client(backend) as anon:
        anon.post("/auth/login", json={"username": name, "password": "wrong-password"})
    signed = sign_in(backend, name, password).json()
    with client(backend, signed["access_token"]) as api:
        user_id = api.get("/me").json()["id"]
        token = api.post("/tokens", json={"name": "t", "expires_in_days": 1}).json()
        api.delete(f"/tokens/{token['id']}")
        log = new_log(api)
        case_id = log["case_id"]
        api.patch(f"/cases/{case_id}", json={"description": "updated"})
        api.put(f"/cases/{case_id}/members/{member_name}", json={"role": "viewer"})
        api.delete(f"/cases/{case_id}/members/{member_name}")
        data = os.urandom(100)
        done = start_upload(api, log["id"], data)
        put_parts(http, api, done, data, [1])
        assert complete(api, done["id"]).status_code == 200
        aborted = start_upload(api, log["id"], data)
        assert api.delete(f"/uploads/{aborted['id']}").status_code == 204
        assert api.get(f"/files/{done['file_id']}/download").status_code == 307
        trail = api.get(f"/cases/{case_id}/audit", params={"limit": 500}).json()["items"]
    with admin(backend) as adm:
        assert adm.delete(f"/files/{done['file_id']}").status_code == 204
    with client(backend, signed["access_token"]) as api:
        api.post("/auth/logout")

    events = asyncio.run(_events(backend, mark))
    mine = [
        e for e in events if e.actor_id == user_id or e.subject_id in (user_id, name) or e.case_id == case_id
    ]
    counts = Counter(e.action for e in mine)
    expected = [
        "user.created",
        "login.failed",
        "login.succeeded",
        "token.issued",
        "token.revoked",
        "case.created",
        "log.created",
        "case.updated",
        "member.set",
        "member.removed",
        "upload.started",
        "upload.completed",
        "upload.aborted",
        "file.download_link",
        "file.deleted",
        "logout",
    ]
    assert {a: counts[a] for a in expected} == {a: 1 if a != "upload.started" else 2 for a in expected}, (
        counts
    )
    for event in mine:
        assert event.actor and event.subject_type and event.subject_id, event
        assert event.address == "127.0.0.1", event
    by_action = {e.action: e for e in mine}
    assert by_action["upload.completed"].subject_id == done["id"]
    assert by_action["upload.aborted"].subject_id == aborted["id"]
    assert (
        by_action["file.deleted"].subject_id == done["file_id"] and by_action["file.deleted"].actor == "admin"
    )
    assert by_action["login.failed"].actor == name and by_action["login.failed"].actor_id == user_id
    assert by_action["case.created"].user_agent.startswith("python-httpx")  # type: ignore[union-attr]
    # The case's own trail, as a manager reads it (newest first), holds its events up to that point.
    assert [e["action"] for e in trail][::-1] == [
        "case.created",
        "log.created",
        "case.updated",
        "member.set",
        "member.removed",
        "upload.started",
        "upload.completed",
        "upload.started",
        "upload.aborted",
        "file.download_link",
    ]
