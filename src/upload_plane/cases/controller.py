"""HTTP routes of cases, logs and files."""

from __future__ import annotations

import json
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from ..auth.middleware import AuthedRequest
from ..models import AuditEvent, Case, CaseMember, Log, User
from ..openapi import sent_fields
from ..pagination import PageRequest
from ..problems import problems
from .schemas import (
    AuditEventOut,
    AuditPage,
    CaseCreate,
    CaseOut,
    CasePage,
    CaseUpdate,
    LogCreate,
    LogOut,
    LogPage,
    MemberOut,
    MemberSet,
)
from .service import CaseService

PageLimit = Annotated[int | None, QueryParameter(ge=1, le=500, description="Page size (default 50)")]


def case_out(c: Case) -> CaseOut:
    return msgspec.convert(c, CaseOut, from_attributes=True)


def log_out(lg: Log) -> LogOut:
    return msgspec.convert(lg, LogOut, from_attributes=True)


def member_out(member: CaseMember, user: User) -> MemberOut:
    return MemberOut(
        user.id, user.username, member.role, member.added_by, member.created_at, member.updated_at
    )


def audit_out(event: AuditEvent) -> AuditEventOut:
    fields = {name: getattr(event, name) for name in AuditEventOut.__struct_fields__ if name != "details"}
    return AuditEventOut(**fields, details=json.loads(event.details))


class CaseController(Controller):
    path = "/cases"
    tags = ["cases"]

    @post("/", summary="Create a case", responses=problems(403, 409))
    async def create(
        self,
        data: JSONBody[CaseCreate],
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
    ) -> CaseOut:
        case = await cases.create_case(request.user, data.title, data.reference, data.description)
        return case_out(case)

    @get("/", summary="List the cases the caller can see", responses=problems())
    async def list_cases(
        self,
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> CasePage:
        page = await cases.list_cases(request.user, PageRequest.parse(limit, cursor))
        return CasePage(items=[case_out(c) for c in page.items], next_cursor=page.next_cursor)

    @get("/{case_id:str}", summary="One case", responses=problems())
    async def read(
        self, case_id: FromPath[str], request: AuthedRequest, cases: NamedDependency[CaseService]
    ) -> CaseOut:
        return case_out(await cases.get_case(request.user, case_id))

    @patch(
        "/{case_id:str}",
        summary="Change a case's title, reference or description",
        responses=problems(403, 409),
    )
    async def update(
        self,
        case_id: FromPath[str],
        data: JSONBody[CaseUpdate],
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
    ) -> CaseOut:
        return case_out(await cases.update_case(request.user, case_id, sent_fields(data)))

    @post("/{case_id:str}/logs", summary="Create a log in a case (managers)", responses=problems(403, 409))
    async def create_log(
        self,
        case_id: FromPath[str],
        data: JSONBody[LogCreate],
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
    ) -> LogOut:
        return log_out(await cases.create_log(request.user, case_id, data.name, data.description))

    @get("/{case_id:str}/logs", summary="List a case's logs", responses=problems())
    async def list_logs(
        self,
        case_id: FromPath[str],
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> LogPage:
        page = await cases.list_logs(request.user, case_id, PageRequest.parse(limit, cursor))
        return LogPage(items=[log_out(lg) for lg in page.items], next_cursor=page.next_cursor)

    @get("/{case_id:str}/members", summary="The case's members and their roles", responses=problems())
    async def list_members(
        self, case_id: FromPath[str], request: AuthedRequest, cases: NamedDependency[CaseService]
    ) -> list[MemberOut]:
        return [member_out(m, u) for m, u in await cases.list_members(request.user, case_id)]

    @put(
        "/{case_id:str}/members/{username:str}",
        summary="Add a member or change their role (managers)",
        responses=problems(403, 409),
    )
    async def set_member(
        self,
        case_id: FromPath[str],
        username: FromPath[str],
        data: JSONBody[MemberSet],
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
    ) -> MemberOut:
        return member_out(*await cases.set_member(request.user, case_id, username, data.role))

    @delete("/{case_id:str}/members/{username:str}", summary="Remove a member", responses=problems(403, 409))
    async def remove_member(
        self,
        case_id: FromPath[str],
        username: FromPath[str],
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
    ) -> None:
        await cases.remove_member(request.user, case_id, username)

    @get(
        "/{case_id:str}/audit",
        summary="The case's audit trail, newest first (managers)",
        responses=problems(403),
    )
    async def audit(
        self,
        case_id: FromPath[str],
        request: AuthedRequest,
        cases: NamedDependency[CaseService],
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> AuditPage:
        page = await cases.audit_trail(request.user, case_id, PageRequest.parse(limit, cursor))
        return AuditPage(items=[audit_out(e) for e in page.items], next_cursor=page.next_cursor)


class LogController(Controller):
    path = "/logs"
    tags = ["cases"]

    @get("/{log_id:str}", summary="One log", responses=problems())
    async def read(
        self, log_id: FromPath[str], request: AuthedRequest, cases: NamedDependency[CaseService]
    ) -> LogOut:
        return log_out(await cases.get_log(request.user, log_id))
