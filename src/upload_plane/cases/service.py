"""Cases and logs. Visibility: the creator of a case and admins; others get NotFound.

A case reference is unique among its creator's cases only: a clash with a case the caller cannot see
would confirm that it exists.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..errors import Conflict, NotFound
from ..models import Case, Log, User, utcnow
from ..pagination import Page, PageRequest, paginate


def can_see_case(user: User, case: Case) -> bool:
    return user.role == "admin" or case.created_by == user.id


class CaseService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- cases --------------------------------------------------------------------------------

    async def create_case(self, user: User, title: str, reference: str | None, description: str) -> Case:
        if reference is not None:
            await self._check_reference_free(user, reference)
        case = Case(title=title, reference=reference, description=description, created_by=user.id)
        self.session.add(case)
        await self.session.flush()
        return case

    async def _check_reference_free(self, user: User, reference: str, creator: str | None = None) -> None:
        stmt = select(Case.id).where(Case.created_by == (creator or user.id), Case.reference == reference)
        if (await self.session.exec(stmt)).first():
            raise Conflict(f"a case by the same creator already has reference {reference!r}")

    async def list_cases(self, user: User, page: PageRequest) -> Page[Case]:
        query = select(Case)
        if user.role != "admin":
            query = query.where(Case.created_by == user.id)
        return await paginate(self.session, query, Case, page)

    async def get_case(self, user: User, case_id: str) -> Case:
        case = await self.session.get(Case, case_id)
        if case is None or not can_see_case(user, case):
            raise NotFound("No such case")
        return case

    async def update_case(self, user: User, case_id: str, changes: dict[str, Any]) -> Case:
        case = await self.get_case(user, case_id)
        if "reference" in changes and changes["reference"] not in (None, case.reference):
            await self._check_reference_free(user, changes["reference"], creator=case.created_by)
        for name, value in changes.items():
            setattr(case, name, value)
        case.updated_at = utcnow()
        self.session.add(case)
        await self.session.flush()
        return case

    # -- logs ---------------------------------------------------------------------------------

    async def create_log(self, user: User, case_id: str, name: str, description: str) -> Log:
        case = await self.get_case(user, case_id)
        taken = await self.session.exec(select(Log.id).where(Log.case_id == case.id, Log.name == name))
        if taken.first():
            raise Conflict(f"this case already has a log named {name!r}")
        log = Log(case_id=case.id, name=name, description=description, created_by=user.id)
        self.session.add(log)
        await self.session.flush()
        return log

    async def list_logs(self, user: User, case_id: str, page: PageRequest) -> Page[Log]:
        case = await self.get_case(user, case_id)
        return await paginate(self.session, select(Log).where(Log.case_id == case.id), Log, page)

    async def get_log(self, user: User, log_id: str) -> Log:
        log = await self.session.get(Log, log_id)
        if log is None:
            raise NotFound("No such log")
        case = await self.session.get(Case, log.case_id)
        if case is None or not can_see_case(user, case):
            raise NotFound("No such log")
        return log
