"""Cases, logs and files. Visibility: the creator of a case and admins; others get NotFound."""

from __future__ import annotations

from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..errors import Conflict, NotFound, ValidationFailed
from ..models import Case, File, Log, User, utcnow
from ..pagination import Page, PageRequest, paginate

FILE_STATUSES = ("uploading", "available", "failed")


def can_see_case(user: User, case: Case) -> bool:
    return user.role == "admin" or case.created_by == user.id


class CaseService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- cases --------------------------------------------------------------------------------

    async def create_case(self, user: User, title: str, reference: str | None, description: str) -> Case:
        if reference is not None:
            taken = await self.session.exec(select(Case.id).where(Case.reference == reference))
            if taken.first():
                raise Conflict(f"a case with reference {reference!r} already exists")
        case = Case(title=title, reference=reference, description=description, created_by=user.id)
        self.session.add(case)
        await self.session.flush()
        return case

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
            taken = await self.session.exec(select(Case.id).where(Case.reference == changes["reference"]))
            if taken.first():
                raise Conflict(f"a case with reference {changes['reference']!r} already exists")
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

    # -- files --------------------------------------------------------------------------------

    async def list_files(self, user: User, log_id: str, status: str | None, page: PageRequest) -> Page[File]:
        log = await self.get_log(user, log_id)
        query = select(File).where(File.log_id == log.id)
        if status is not None:
            if status not in FILE_STATUSES:
                raise ValidationFailed(f"status must be one of {', '.join(FILE_STATUSES)}")
            query = query.where(File.status == status)
        return await paginate(self.session, query, File, page)

    async def get_file(self, user: User, file_id: str) -> File:
        file = await self.session.get(File, file_id)
        if file is None:
            raise NotFound("No such file")
        case = await self.session.get(Case, file.case_id)
        if case is None or not can_see_case(user, case):
            raise NotFound("No such file")
        return file
