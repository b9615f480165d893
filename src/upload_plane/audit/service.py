"""Audit events are added to the same session (and so the same transaction) as the change they
record: if the change does not commit, neither does its event. Nothing updates or deletes them."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..auth.principal import LINK_CREDENTIAL, ClientInfo, Principal
from ..ids import new_id
from ..models import AuditEvent, utcnow
from ..pagination import Page, PageRequest, paginate
from ..sql import Connection


async def insert_event(
    conn: Connection,
    who: Principal | None,
    action: str,
    subject_type: str,
    subject_id: str,
    *,
    case_id: str | None = None,
    **details: Any,
) -> None:
    """``Audit.record`` for the hot path's connections: run it in the change's own transaction.

    An upload link acts with no account of its own: its events name the link (actor
    ``upload link uplnk_abcd``, ``details.upload_link_id``) and the user who issued it, with no
    ``actor_id``."""
    client = who.client if who is not None else None
    link = who is not None and who.credential == LINK_CREDENTIAL
    if link and who is not None:
        details = {**details, "upload_link_id": who.credential_id, "link_issued_by": who.id}
    await conn.run(
        "INSERT INTO audit_events (id, at, actor_id, actor, action, subject_type, subject_id, case_id, "
        "address, user_agent, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        new_id(),
        utcnow(),
        who.id if who is not None and not link else None,
        (who.username if who is not None else "system")[:200],
        action,
        subject_type,
        subject_id[:200],
        case_id,
        client.address if client else None,
        _agent(client),
        json.dumps(details, default=str, ensure_ascii=False),
    )


def _agent(client: ClientInfo | None) -> str | None:
    return (client.user_agent or "")[:255] or None if client is not None else None


class Audit:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def record(
        self,
        who: Principal | None,
        action: str,
        subject_type: str,
        subject_id: str,
        *,
        case_id: str | None = None,
        actor: str | None = None,
        **details: Any,
    ) -> AuditEvent:
        """Add one event to the current transaction. ``actor`` names an actor without an account
        (an upload link, a failed login's claimed username)."""
        client = who.client if who is not None else None
        event = AuditEvent(
            at=utcnow(),
            actor_id=who.id if who is not None else None,
            actor=(actor or (who.username if who is not None else "system"))[:200],
            action=action,
            subject_type=subject_type,
            subject_id=subject_id[:200],
            case_id=case_id,
            address=client.address if client else None,
            user_agent=_agent(client),
            details=json.dumps(details, default=str, ensure_ascii=False),
        )
        self.session.add(event)
        return event

    async def for_case(self, case_id: str, page: PageRequest) -> Page[AuditEvent]:
        return await paginate(
            self.session, select(AuditEvent).where(AuditEvent.case_id == case_id), AuditEvent, page
        )
