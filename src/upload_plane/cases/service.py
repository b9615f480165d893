"""Cases, their logs and members. Free of HTTP. Roles and visibility: ``access.py``.

A case reference is unique among its creator's cases only: a clash with a case the caller cannot see
would confirm that it exists. Every change is audited in its own transaction.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..audit.service import Audit
from ..auth.principal import Principal
from ..auth.usernames import normalize_username
from ..errors import Conflict, NotFound, ValidationFailed
from ..models import Case, CaseMember, Log, User, utcnow
from ..pagination import Page, PageRequest, paginate
from .access import MEMBER_ROLES, CaseRole, case_for, log_for


class CaseService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = Audit(session)

    # -- cases --------------------------------------------------------------------------------

    async def create_case(self, who: Principal, title: str, reference: str | None, description: str) -> Case:
        if reference is not None:
            await self._check_reference_free(who.id, reference)
        now = utcnow()
        case = Case(
            title=title,
            reference=reference,
            description=description,
            created_by=who.id,
            created_at=now,
            updated_at=now,
        )
        self.session.add(case)
        await self.session.flush()
        self.session.add(
            CaseMember(
                case_id=case.id,
                user_id=who.id,
                role=CaseRole.MANAGER.label,
                added_by=who.id,
                created_at=now,
                updated_at=now,
            )
        )
        self.audit.record(
            who, "case.created", "case", case.id, case_id=case.id, title=title, reference=reference
        )
        await self.session.flush()
        return case

    async def _check_reference_free(self, creator: str, reference: str) -> None:
        stmt = select(Case.id).where(Case.created_by == creator, Case.reference == reference)
        if (await self.session.exec(stmt)).first():
            raise Conflict(f"a case by the same creator already has reference {reference!r}")

    async def list_cases(self, who: Principal, page: PageRequest) -> Page[Case]:
        query = select(Case)
        if not who.is_admin:
            query = query.join(CaseMember, col(CaseMember.case_id) == col(Case.id)).where(
                CaseMember.user_id == who.id
            )
        return await paginate(self.session, query, Case, page)

    async def get_case(self, who: Principal, case_id: str, need: CaseRole = CaseRole.VIEWER) -> Case:
        return await case_for(self.session, who, case_id, need)

    async def update_case(self, who: Principal, case_id: str, changes: dict[str, Any]) -> Case:
        case = await case_for(self.session, who, case_id, CaseRole.MANAGER)
        if "reference" in changes and changes["reference"] not in (None, case.reference):
            await self._check_reference_free(case.created_by, changes["reference"])
        for name, value in changes.items():
            setattr(case, name, value)
        case.updated_at = utcnow()
        self.session.add(case)
        self.audit.record(who, "case.updated", "case", case.id, case_id=case.id, changes=changes)
        await self.session.flush()
        return case

    # -- members ------------------------------------------------------------------------------

    async def list_members(self, who: Principal, case_id: str) -> list[tuple[CaseMember, User]]:
        case = await case_for(self.session, who, case_id, CaseRole.VIEWER)
        stmt = (
            select(CaseMember, User)
            .join(User, col(User.id) == col(CaseMember.user_id))
            .where(CaseMember.case_id == case.id)
            .order_by(col(User.username))
        )
        return [(m, u) for m, u in (await self.session.exec(stmt)).all()]

    async def set_member(
        self, who: Principal, case_id: str, username: str, role: str
    ) -> tuple[CaseMember, User]:
        case = await case_for(self.session, who, case_id, CaseRole.MANAGER)
        if role not in MEMBER_ROLES:
            raise ValidationFailed(f"role must be one of {', '.join(MEMBER_ROLES)}")
        user = await self._user_named(username)
        member = await self.session.get(CaseMember, (case.id, user.id))
        now = utcnow()
        if member is None:
            member = CaseMember(
                case_id=case.id, user_id=user.id, role=role, added_by=who.id, created_at=now, updated_at=now
            )
        else:
            if member.role == CaseRole.MANAGER.label and role != member.role:
                await self._keep_a_manager(case.id, leaving=user.id)
            member.role, member.updated_at = role, now
        self.session.add(member)
        self.audit.record(
            who, "member.set", "user", user.id, case_id=case.id, username=user.username, role=role
        )
        await self.session.flush()
        return member, user

    async def remove_member(self, who: Principal, case_id: str, username: str) -> None:
        case = await case_for(self.session, who, case_id, CaseRole.MANAGER)
        user = await self._user_named(username)
        member = await self.session.get(CaseMember, (case.id, user.id))
        if member is None:
            raise NotFound(f"{user.username!r} is not a member of this case")
        if member.role == CaseRole.MANAGER.label:
            await self._keep_a_manager(case.id, leaving=user.id)
        await self.session.delete(member)
        self.audit.record(who, "member.removed", "user", user.id, case_id=case.id, username=user.username)
        await self.session.flush()

    async def _user_named(self, username: str) -> User:
        stmt = select(User).where(User.username == normalize_username(username))
        user = (await self.session.exec(stmt)).first()
        if user is None:
            raise NotFound("No such user")
        return user

    async def _keep_a_manager(self, case_id: str, leaving: str) -> None:
        stmt = select(func.count()).where(
            CaseMember.case_id == case_id,
            CaseMember.role == CaseRole.MANAGER.label,
            CaseMember.user_id != leaving,
        )
        if not (await self.session.exec(stmt)).one():
            raise Conflict("a case keeps at least one manager; make someone else manager first")

    # -- logs ---------------------------------------------------------------------------------

    async def create_log(self, who: Principal, case_id: str, name: str, description: str) -> Log:
        case = await case_for(self.session, who, case_id, CaseRole.MANAGER)
        taken = await self.session.exec(select(Log.id).where(Log.case_id == case.id, Log.name == name))
        if taken.first():
            raise Conflict(f"this case already has a log named {name!r}")
        log = Log(case_id=case.id, name=name, description=description, created_by=who.id)
        self.session.add(log)
        await self.session.flush()
        self.audit.record(who, "log.created", "log", log.id, case_id=case.id, name=name)
        return log

    async def list_logs(self, who: Principal, case_id: str, page: PageRequest) -> Page[Log]:
        case = await case_for(self.session, who, case_id, CaseRole.VIEWER)
        return await paginate(self.session, select(Log).where(Log.case_id == case.id), Log, page)

    async def get_log(self, who: Principal, log_id: str, need: CaseRole = CaseRole.VIEWER) -> Log:
        return await log_for(self.session, who, log_id, need)

    # -- audit --------------------------------------------------------------------------------

    async def audit_trail(self, who: Principal, case_id: str, page: PageRequest) -> Page[Any]:
        case = await case_for(self.session, who, case_id, CaseRole.MANAGER)
        return await self.audit.for_case(case.id, page)
