"""Upload links: write-only, expiring, revocable capabilities to upload into one log without an
account (a witness, a partner agency). Free of HTTP.

- The token (``uplnk_...``, shown once) is stored as its SHA-256. It is recognised on every request
  (``resolve``): unknown is 404, revoked or expired is 410.
- A link acts with the authority of the manager who issued it (``Principal.id`` is theirs, so
  ``created_by`` of its uploads and files names who vouched for them; its credential is
  ``upload_link`` and audit events name the link). It is confined to its log, and works only while
  its issuer may still issue links there: a manager of the case (or an administrator), not
  disabled. Demoted, removed or disabled, the issuer's links stop (410 ``UPLOAD_LINK_REVOKED``);
  they work again if that authority comes back, as they were never revoked.
- Budgets (``max_files``, ``max_bytes``) count every upload started through the link. The counters
  only move by a compare-and-set that keeps them within the budget (``reserve``), run in the same
  transaction that writes the upload's rows: concurrent starts can never overshoot, and a start
  that fails reserves nothing. An upload aborted through the link gives its share back, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..audit.service import Audit
from ..auth import tokens
from ..auth.principal import LINK_CREDENTIAL, ClientInfo, Principal
from ..cases.access import CaseRole, log_for
from ..db import Connection
from ..errors import (
    LinkBytesExhausted,
    LinkFilesExhausted,
    NotFound,
    UploadLinkExpired,
    UploadLinkRevoked,
    ValidationFailed,
)
from ..models import CaseMember, UploadLink, UploadLinkUpload, User, utcnow
from ..pagination import Page, PageRequest, paginate
from ..settings import Settings
from ..statements import Query, Statement, insert_of

MIN_TTL = 60


class Forgetful(Protocol):
    def clear(self) -> None: ...


@dataclass(frozen=True, slots=True)
class IssuedLink:
    row: UploadLink
    token: str  # shown once


@dataclass(frozen=True, slots=True)
class LinkGrant:
    """An upload link as its token resolved, and the principal it acts as."""

    id: str
    log_id: str
    case_id: str
    expires_at: datetime
    max_files: int | None
    max_bytes: int | None
    files_used: int
    bytes_used: int
    principal: Principal

    def check_room(self, size: int) -> None:
        """Refuse a file that cannot fit what is left (a cheap look before the store is asked;
        ``reserve`` decides)."""
        if self.max_files is not None and self.files_used >= self.max_files:
            raise LinkFilesExhausted(f"this link allows {self.max_files} files and all are used")
        if self.max_bytes is not None and self.bytes_used + size > self.max_bytes:
            raise LinkBytesExhausted(
                f"{size} bytes do not fit in what is left of this link ({self.bytes_left} bytes)",
                bytes_left=self.bytes_left,
            )

    @property
    def bytes_left(self) -> int | None:
        return None if self.max_bytes is None else max(0, self.max_bytes - self.bytes_used)


def link_status(link: UploadLink, now: datetime | None = None) -> str:
    now = now or utcnow()
    if link.revoked_at is not None:
        return "revoked"
    if link.expires_at <= now:
        return "expired"
    full_files = link.max_files is not None and link.files_used >= link.max_files
    full_bytes = link.max_bytes is not None and link.bytes_used >= link.max_bytes
    return "used_up" if full_files or full_bytes else "active"


class LinkService:
    """Issue, list and revoke links (managers of the log's case, and admins)."""

    def __init__(self, session: AsyncSession, settings: Settings, grants: Forgetful | None = None) -> None:
        self.session = session
        self.settings = settings
        self.audit = Audit(session)
        self.grants = grants  # authorisations the Uppy routes trust for a while: dropped at a revoke

    async def create(
        self, who: Principal, log_id: str, expires_in: int, max_files: int | None, max_bytes: int | None
    ) -> IssuedLink:
        log = await log_for(self.session, who, log_id, CaseRole.MANAGER)
        if not MIN_TTL <= expires_in <= self.settings.upload_link_max_ttl:
            raise ValidationFailed(
                f"expires_in must be within {MIN_TTL}..{self.settings.upload_link_max_ttl} seconds"
            )
        now = utcnow()
        token = tokens.new_upload_link_token()
        row = UploadLink(
            log_id=log.id,
            case_id=log.case_id,
            token_hash=tokens.token_hash(token),
            hint=token[: len(tokens.LINK_PREFIX) + 4],
            created_by=who.id,
            created_at=now,
            expires_at=now + timedelta(seconds=expires_in),
            max_files=max_files,
            max_bytes=max_bytes,
            files_used=0,
            bytes_used=0,
        )
        self.session.add(row)
        self.audit.record(
            who, "upload_link.created", "upload_link", row.id, case_id=log.case_id, log_id=log.id,
            hint=row.hint, expires_at=row.expires_at, max_files=max_files, max_bytes=max_bytes,
        )  # fmt: skip
        await self.session.flush()
        return IssuedLink(row, token)

    async def list_for_log(self, who: Principal, log_id: str, page: PageRequest) -> Page[UploadLink]:
        log = await log_for(self.session, who, log_id, CaseRole.MANAGER)
        return await paginate(
            self.session, select(UploadLink).where(UploadLink.log_id == log.id), UploadLink, page
        )

    async def revoke(self, who: Principal, link_id: str) -> UploadLink:
        """Revoke a link (idempotent); uploads under way through it can no longer be continued."""
        link = await self.session.get(UploadLink, link_id)
        if link is None:
            raise NotFound("No such upload link")
        await log_for(self.session, who, link.log_id, CaseRole.MANAGER)
        now = utcnow()
        changed = await self.session.exec(
            update(UploadLink)
            .where(col(UploadLink.id) == link.id, col(UploadLink.revoked_at).is_(None))
            .values(revoked_at=now)
        )
        if changed.rowcount == 1:
            self.audit.record(
                who, "upload_link.revoked", "upload_link", link.id, case_id=link.case_id, hint=link.hint
            )
            if self.grants is not None:  # this replica at once; the others within their cache's TTL
                self.grants.clear()
        await self.session.flush()
        await self.session.refresh(link)
        return link


# -- the hot path (``db.Connection``) ---------------------------------------------------------------

LINKS: sa.Table = UploadLink.__table__  # type: ignore[attr-defined]
LINKED: sa.Table = UploadLinkUpload.__table__  # type: ignore[attr-defined]
USERS: sa.Table = User.__table__  # type: ignore[attr-defined]
MEMBERS: sa.Table = CaseMember.__table__  # type: ignore[attr-defined]


def _grant(row: dict[str, Any], client: ClientInfo) -> LinkGrant:
    principal = Principal(
        row["user_id"], f"upload link {row['hint']}", row["role"], LINK_CREDENTIAL, row["id"], client
    )
    return LinkGrant(
        row["id"], row["log_id"], row["case_id"], row["expires_at"], row["max_files"], row["max_bytes"],
        int(row["files_used"]), int(row["bytes_used"]), principal,
    )  # fmt: skip


LINK_BY_TOKEN: Query[dict[str, Any]] = Query(
    sa.select(
        LINKS.c.id,
        LINKS.c.log_id,
        LINKS.c.case_id,
        LINKS.c.hint,
        LINKS.c.expires_at,
        LINKS.c.revoked_at,
        LINKS.c.max_files,
        LINKS.c.max_bytes,
        LINKS.c.files_used,
        LINKS.c.bytes_used,
        USERS.c.id.label("user_id"),
        USERS.c.role,
        USERS.c.disabled,
        MEMBERS.c.role.label("issuer_case_role"),
    )
    .join(USERS, USERS.c.id == LINKS.c.created_by)
    .outerjoin(
        MEMBERS, sa.and_(MEMBERS.c.case_id == LINKS.c.case_id, MEMBERS.c.user_id == LINKS.c.created_by)
    )
    .where(LINKS.c.token_hash == sa.bindparam("token_hash")),
    dict,
)
LINK_BUDGET: Query[dict[str, Any]] = Query(
    sa.select(
        LINKS.c.revoked_at,
        LINKS.c.expires_at,
        LINKS.c.max_files,
        LINKS.c.files_used,
        LINKS.c.max_bytes,
        LINKS.c.bytes_used,
    ).where(LINKS.c.id == sa.bindparam("link_id")),
    dict,
)
_SIZE = sa.bindparam("size", type_=LINKS.c.bytes_used.type)
RESERVE = Statement(
    sa.update(LINKS)
    .where(
        LINKS.c.id == sa.bindparam("link_id"),
        LINKS.c.revoked_at.is_(None),
        LINKS.c.expires_at > sa.bindparam("now", type_=LINKS.c.expires_at.type),
        sa.or_(LINKS.c.max_files.is_(None), LINKS.c.files_used < LINKS.c.max_files),
        sa.or_(LINKS.c.max_bytes.is_(None), LINKS.c.bytes_used + _SIZE <= LINKS.c.max_bytes),
    )
    .values(files_used=LINKS.c.files_used + 1, bytes_used=LINKS.c.bytes_used + _SIZE)
)
RECORD_SHARE = Statement(insert_of(UploadLinkUpload))
TAKE_SHARE_BACK = Statement(
    sa.update(LINKED)
    .where(LINKED.c.upload_id == sa.bindparam("upload_id"), LINKED.c.released_at.is_(None))
    .values(released_at=sa.bindparam("now", type_=LINKED.c.released_at.type))
)
_SHARE = sa.select(LINKED.c.size).where(LINKED.c.upload_id == sa.bindparam("upload_id")).scalar_subquery()
GIVE_BACK = Statement(
    sa.update(LINKS)
    .where(
        LINKS.c.id
        == sa.select(LINKED.c.link_id)
        .where(LINKED.c.upload_id == sa.bindparam("upload_id"))
        .scalar_subquery()
    )
    .values(files_used=LINKS.c.files_used - 1, bytes_used=LINKS.c.bytes_used - _SHARE)
)
LINK_OF_UPLOAD: Query[str] = Query(
    sa.select(LINKED.c.link_id).where(LINKED.c.upload_id == sa.bindparam("upload_id")),
    lambda row: str(row["link_id"]),
)


async def resolve(conn: Connection, token: str, client: ClientInfo) -> LinkGrant:
    """The link a token names, if it may be used now: not revoked nor expired, and its issuer
    still a manager of the case (or an administrator) and enabled. One query."""
    if not tokens.looks_like_upload_link_token(token):
        raise NotFound("No such upload link")
    row = await conn.one(LINK_BY_TOKEN, token_hash=tokens.token_hash(token))
    if row is None:
        raise NotFound("No such upload link")
    if row["revoked_at"] is not None:
        raise UploadLinkRevoked("this upload link was revoked; ask for a new one")
    issuer_may = row["role"] == "admin" or row["issuer_case_role"] == CaseRole.MANAGER.label
    if row["disabled"] or not issuer_may:
        raise UploadLinkRevoked(
            "whoever issued this upload link may no longer issue links for this case; ask for a new one"
        )
    if row["expires_at"] <= utcnow():
        raise UploadLinkExpired("this upload link has expired; ask for a new one")
    return _grant(row, client)


async def reserve(conn: Connection, link_id: str, upload_id: str, size: int, now: datetime) -> None:
    """Take one file and ``size`` bytes of the link's budget for ``upload_id``, or refuse. One
    compare-and-set: the counters never pass the budget, whatever runs at the same time. Run it in
    the transaction that writes the upload's rows (the start's ``on_start``)."""
    if await conn.run(RESERVE, link_id=link_id, size=size, now=now) != 1:
        row = await conn.one(LINK_BUDGET, link_id=link_id)
        if row is None or row["revoked_at"] is not None:
            raise UploadLinkRevoked("this upload link was revoked; ask for a new one")
        if row["expires_at"] <= now:
            raise UploadLinkExpired("this upload link has expired; ask for a new one")
        if row["max_files"] is not None and row["files_used"] >= row["max_files"]:
            raise LinkFilesExhausted(f"this link allows {row['max_files']} files and all are used")
        left = max(0, int(row["max_bytes"] or 0) - int(row["bytes_used"]))
        raise LinkBytesExhausted(
            f"{size} bytes do not fit in what is left of this link ({left} bytes)", bytes_left=left
        )
    await conn.run(
        RECORD_SHARE, upload_id=upload_id, link_id=link_id, size=size, created_at=now, released_at=None
    )


async def release(conn: Connection, upload_id: str, now: datetime) -> bool:
    """Give an upload's share back to its link, once (``False``: not a link's, or given back
    already). Only the completion step calls it (``uploads/finish.py``), inside its transaction."""
    if await conn.run(TAKE_SHARE_BACK, upload_id=upload_id, now=now) != 1:
        return False
    await conn.run(GIVE_BACK, upload_id=upload_id)
    return True


async def link_of_upload(conn: Connection, upload_id: str) -> str | None:
    return await conn.one(LINK_OF_UPLOAD, upload_id=upload_id)
