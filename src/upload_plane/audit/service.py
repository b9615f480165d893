"""Audit events are written in the same transaction as the change they record: if the change does not
commit, neither does its event. Nothing updates or deletes them.

``event_values`` is the one place that says what an event holds; the ORM paths add it to their
session (``Audit.record``), the hot path inserts it on its connection (``insert_event``).
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..auth.principal import LINK_CREDENTIAL, Principal
from ..db import Connection
from ..ids import new_id
from ..models import AuditEvent, utcnow
from ..pagination import Page, PageRequest, paginate
from ..statements import Statement, insert_of

INSERT_EVENT = Statement(insert_of(AuditEvent))


def event_values(
    who: Principal | None,
    action: str,
    subject_type: str,
    subject_id: str,
    *,
    case_id: str | None = None,
    actor: str | None = None,
    **details: Any,
) -> dict[str, Any]:
    """One event's columns. ``actor`` names an actor without an account (a failed login's claimed
    username). An upload link acts with no account of its own: its events name the link (actor
    ``upload link uplnk_abcd``, ``details.upload_link_id``) and the user who issued it, with no
    ``actor_id``."""
    client = who.client if who is not None else None
    link = who is not None and who.credential == LINK_CREDENTIAL
    if who is not None and link:
        details = {**details, "upload_link_id": who.credential_id, "link_issued_by": who.id}
    return {
        "id": new_id(),
        "at": utcnow(),
        "actor_id": who.id if who is not None and not link else None,
        "actor": (actor or (who.username if who is not None else "system"))[:200],
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id[:200],
        "case_id": case_id,
        "address": client.address if client else None,
        "user_agent": (client.user_agent or "")[:255] or None if client is not None else None,
        "details": json.dumps(details, default=str, ensure_ascii=False),
    }


async def insert_event(
    conn: Connection, who: Principal | None, action: str, subject_type: str, subject_id: str, **kw: Any
) -> None:
    """Record one event on a hot-path connection: run it in the change's own transaction."""
    await conn.run(INSERT_EVENT, **event_values(who, action, subject_type, subject_id, **kw))


class Audit:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def record(
        self, who: Principal | None, action: str, subject_type: str, subject_id: str, **kw: Any
    ) -> AuditEvent:
        """Add one event to the session's transaction."""
        event = AuditEvent(**event_values(who, action, subject_type, subject_id, **kw))
        self.session.add(event)
        return event

    async def for_case(self, case_id: str, page: PageRequest) -> Page[AuditEvent]:
        return await paginate(
            self.session, select(AuditEvent).where(AuditEvent.case_id == case_id), AuditEvent, page
        )
