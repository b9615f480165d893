"""Who may do what in a case. Roles: viewer (read, download) < contributor (+ upload) < manager
(+ members, logs, upload links, the audit trail); admins are above every case without membership.

A case the caller has no role in does not exist for them: ``NotFound``, never ``Forbidden``. A case
they can see but not act on is ``Forbidden``. Each check is one query (the row joined with the
caller's membership).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import and_
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..auth.principal import Principal
from ..db import Connection
from ..errors import Forbidden, NotFound
from ..models import Case, CaseMember, Log
from ..statements import Query


class CaseRole(IntEnum):
    VIEWER = 1
    CONTRIBUTOR = 2
    MANAGER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()


MEMBER_ROLES = {r.label: r for r in (CaseRole.VIEWER, CaseRole.CONTRIBUTOR, CaseRole.MANAGER)}


def effective_role(who: Principal, member_role: str | None) -> CaseRole | None:
    if who.is_admin:
        return CaseRole.ADMIN
    return MEMBER_ROLES.get(member_role) if member_role else None


def require(who: Principal, member_role: str | None, need: CaseRole, what: str) -> CaseRole:
    role = effective_role(who, member_role)
    if role is None:
        raise NotFound(f"No such {what}")
    if role < need:
        raise Forbidden(
            f"this needs the {need.label} role in the case; you are {role.label}", role=role.label
        )
    return role


def membership(who: Principal, case_id_column: object) -> object:
    """The join condition for the caller's membership row of the case in ``case_id_column``."""
    return and_(CaseMember.case_id == case_id_column, CaseMember.user_id == who.id)  # type: ignore[arg-type]


async def case_for(session: AsyncSession, who: Principal, case_id: str, need: CaseRole) -> Case:
    stmt = (
        select(Case, CaseMember.role)
        .outerjoin(CaseMember, membership(who, Case.id))  # type: ignore[arg-type]
        .where(Case.id == case_id)
    )
    row = (await session.exec(stmt)).first()
    if row is None:
        raise NotFound("No such case")
    require(who, row[1], need, "case")
    return row[0]


_L: sa.Table = Log.__table__  # type: ignore[attr-defined]
_M: sa.Table = CaseMember.__table__  # type: ignore[attr-defined]

LOG_WITH_ROLE: Query[dict[str, Any]] = Query(
    sa.select(_L, _M.c.role)
    .outerjoin(_M, and_(_M.c.case_id == _L.c.case_id, _M.c.user_id == sa.bindparam("user_id")))
    .where(_L.c.id == sa.bindparam("log_id")),
    dict,
)
"""A log and the caller's role in its case: the one query behind every check on a log."""


async def log_for(session: AsyncSession, who: Principal, log_id: str, need: CaseRole) -> Log:
    query: Any = LOG_WITH_ROLE.construct()  # a Core select: rows, not models
    result = await session.exec(query, params={"user_id": who.id, "log_id": log_id})
    row = result.mappings().first()
    if row is None:
        raise NotFound("No such log")
    require(who, row["role"], need, "log")
    return Log.model_validate({c.name: row[c.name] for c in _L.columns})


async def log_in_case(conn: Connection, who: Principal, log_id: str, need: CaseRole) -> tuple[str, str]:
    """``log_for`` on a hot-path connection: ``(log id, case id)`` if ``who`` holds ``need``."""
    row = await conn.one(LOG_WITH_ROLE, user_id=who.id, log_id=log_id)
    if row is None:
        raise NotFound("No such log")
    require(who, row["role"], need, "log")
    return row["id"], row["case_id"]
