"""Reading, downloading and deleting files. Free of HTTP; deletion takes the upload's claim.

Deletion (admins only) is ``deleting`` in the upload state machine: the claim is taken from any
settled state (or from ``uploading``), so a delete and a complete cannot interleave — whichever
claims first wins and the other waits for it. The store goes first (abort an open multipart upload,
delete the object), then the rows; a delete whose store step failed leaves its claim abandoned, and
the next delete (or the reaper) finishes it. A claimed delete is never undone, so the store is asked
whether it answers before the claim: a store outage answers 503 and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..audit.service import insert_event
from ..auth.principal import Principal
from ..cases.access import CaseRole, log_in_case, require
from ..errors import DomainError, FileNotAvailable, Forbidden, NotFound, ValidationFailed
from ..models import utcnow
from ..pagination import Page, PageRequest, page_of
from ..processing import preview_key_of
from ..uploads import state
from ..uploads.claims import claim_when_free
from ..uploads.context import Uploads
from ..uploads.finish import remove
from ..uploads.kinds import kind_of
from ..uploads.queries import (
    DELETE_FILE,
    FILE_ORIGINS,
    FILE_WITH_ROLE,
    PAGE_OF_FILES,
    UPLOAD_OF_FILE,
    FileRecord,
)
from ..uploads.rules import content_disposition
from ..uploads.state import FileStatus, UploadStatus


@dataclass(slots=True)
class ListedFile:
    id: str
    file: FileRecord
    uploaded_by: str | None  # the username of ``created_by``
    upload_link_id: str | None  # the upload link it came through, if any


@dataclass(frozen=True, slots=True)
class DownloadLink:
    url: str
    expires_at: datetime


class FileService:
    def __init__(self, ctx: Uploads) -> None:
        self.ctx = ctx

    async def get(self, who: Principal, file_id: str, need: CaseRole = CaseRole.VIEWER) -> FileRecord:
        async with self.ctx.db.connect() as conn:
            found = await conn.one(FILE_WITH_ROLE, file_id=file_id, user_id=who.id)
        if found is None:
            raise NotFound("No such file")
        require(who, found[1], need, "file")
        return found[0]

    async def list_in_log(
        self, who: Principal, log_id: str, status: str | None, page: PageRequest
    ) -> Page[ListedFile]:
        """A page of the log's files, each with who uploaded it (and through which link)."""
        if status is not None and status not in set(FileStatus):
            raise ValidationFailed(f"status must be one of {', '.join(FileStatus)}")
        async with self.ctx.db.connect() as conn:
            await log_in_case(conn, who, log_id, CaseRole.VIEWER)
            files = await conn.all(
                PAGE_OF_FILES, log_id=log_id, status=status, after_id=page.after_id, limit=page.limit + 1
            )
            origins: dict[str, tuple[str | None, str | None]] = {}
            if files:
                for file_id, username, link_id in await conn.all(
                    FILE_ORIGINS, file_ids=[f.id for f in files]
                ):
                    origins[file_id] = (username, link_id)
        listed = [ListedFile(f.id, f, *origins.get(f.id, (None, None))) for f in files]
        return page_of(listed, page.limit)

    async def download_link(self, who: Principal, file_id: str) -> DownloadLink:
        """A presigned GET; issuing one is audited (the download itself goes to the store)."""
        file = await self.get(who, file_id)
        if file.status != FileStatus.AVAILABLE:
            raise FileNotAvailable(f"the file is {file.status}", file_status=file.status)
        ttl = self.ctx.settings.download_url_ttl
        url = self.ctx.storage.presign_get(file.key, content_disposition(file.filename), ttl)
        expires_at = utcnow() + timedelta(seconds=ttl)
        async with self.ctx.db.connect() as conn:
            await insert_event(
                conn, who, "file.download_link", "file", file.id, case_id=file.case_id, expires_at=expires_at
            )
        return DownloadLink(url=url, expires_at=expires_at)

    async def delete(self, who: Principal, file_id: str) -> None:
        """Delete a file, its object and its upload: admins only (others who can see it: 403)."""
        file = await self.get(who, file_id)
        if not who.is_admin:
            raise Forbidden("only administrators may delete evidence")
        details: dict[str, Any] = {
            "filename": file.filename,
            "size": file.size,
            "sha256": file.sha256,
            "key": file.key,
        }
        ctx = self.ctx
        async with ctx.db.connect() as conn:
            upload = await conn.one(UPLOAD_OF_FILE, file_id=file.id)
        if upload is None:  # not made by this service; remove it all the same
            await ctx.storage.delete_object(file.key)
            async with ctx.db.connect() as conn, conn.transaction():
                await conn.run(DELETE_FILE, file_id=file.id)
                await insert_event(
                    conn, who, "file.deleted", "file", file.id, case_id=file.case_id, **details
                )
            return
        await ctx.storage.ping()  # an outage must not leave a claim that will delete the file later
        upload, held = await claim_when_free(
            ctx, upload, expect=(UploadStatus.UPLOADING, *state.FINAL), to=UploadStatus.DELETING, settled=()
        )
        if held is None:  # nothing is settled for a delete, so this cannot happen
            raise NotFound("No such file")
        try:
            await kind_of(upload).abandon(ctx.storage, upload)
            await ctx.storage.delete_object(upload.key)
            await ctx.storage.delete_object(preview_key_of(upload.key))
        except DomainError:
            await self._abandon(held)
            raise
        async with ctx.db.connect() as conn:
            if not await remove(conn, held, upload, who, **details):
                raise NotFound("No such file")  # another delete took over and finished

    async def _abandon(self, held: state.Claim) -> None:
        try:
            async with self.ctx.db.connect() as conn:
                await state.abandon(conn, held, utcnow())
        except (SQLAlchemyError, DomainError):
            pass  # the claim goes stale; the next delete takes it over
