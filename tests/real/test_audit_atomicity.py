"""An audit event commits with its change or not at all: a failure injected after the change's write
(a MariaDB trigger refusing the next statement) leaves neither the change nor its event."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlmodel import select

from tests.api.helpers import (
    assert_problem,
    assert_store_agrees,
    backend_db,
    complete,
    new_log,
    new_user,
    put_parts,
    remember_s3_upload_id,
    start_upload,
)
from tests.conftest import Backend
from tests.services import MariaDB
from upload_plane.models import AuditEvent, Case

pytestmark = [pytest.mark.real, pytest.mark.expects_5xx]


@contextmanager
def refusing(mariadb: MariaDB, backend: Backend, table: str, condition: str) -> Iterator[None]:
    database = backend.settings.database_url.rsplit("/", 1)[-1]
    name = f"`{database}`.refuse_{table}"
    mariadb.execute(
        f"CREATE TRIGGER {name} BEFORE INSERT ON `{database}`.{table} FOR EACH ROW BEGIN "
        f"IF {condition} THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure'; END IF; END"
    )
    try:
        yield
    finally:
        mariadb.execute(f"DROP TRIGGER IF EXISTS {name}")


async def _count(backend: Backend, model: type, **where: str) -> int:
    async with backend_db(backend) as session:
        stmt = select(model)
        for column, value in where.items():
            stmt = stmt.where(getattr(model, column) == value)
        return len((await session.exec(stmt)).all())


def test_a_failing_event_undoes_its_case(real: Backend, mariadb: MariaDB) -> None:
    with new_user(real) as api, refusing(mariadb, real, "audit_events", "NEW.action = 'case.created'"):
        assert_problem(api.post("/cases", json={"title": "poisoned-by-event"}), 500, "INTERNAL_ERROR")
    assert asyncio.run(_count(real, Case, title="poisoned-by-event")) == 0


def test_a_failure_after_the_event_undoes_both(real: Backend, mariadb: MariaDB) -> None:
    with new_user(real) as api, refusing(mariadb, real, "case_members", "NEW.role = 'manager'"):
        assert_problem(api.post("/cases", json={"title": "poisoned-by-member"}), 500, "INTERNAL_ERROR")
    assert asyncio.run(_count(real, Case, title="poisoned-by-member")) == 0

    async def events() -> list[str]:
        async with backend_db(real) as session:
            rows = (
                await session.exec(select(AuditEvent.details).where(AuditEvent.action == "case.created"))
            ).all()
            return [d for d in rows if "poisoned-by-member" in d]

    assert asyncio.run(events()) == []


def test_a_complete_whose_event_fails_is_not_recorded_and_heals_once(
    real: Backend, mariadb: MariaDB, http: httpx.Client
) -> None:
    data = os.urandom(500)
    with new_user(real) as api:
        upload = start_upload(api, new_log(api)["id"], data)
        put_parts(http, api, upload, data, [1])
        remember_s3_upload_id(real, upload)
        with refusing(mariadb, real, "audit_events", "NEW.action = 'upload.completed'"):
            assert_problem(complete(api, upload["id"]), 500, "INTERNAL_ERROR")
            assert api.get(f"/files/{upload['file_id']}").json()["status"] == "uploading"
            assert (
                asyncio.run(_count(real, AuditEvent, action="upload.completed", subject_id=upload["id"])) == 0
            )
        # The store completed it; the next complete finds the object and records it, once.
        done = complete(api, upload["id"])
        assert done.status_code == 200 and done.json()["status"] == "available"
        assert complete(api, upload["id"]).status_code == 200
        assert asyncio.run(_count(real, AuditEvent, action="upload.completed", subject_id=upload["id"])) == 1
        assert asyncio.run(assert_store_agrees(real, upload)) == "completed"
