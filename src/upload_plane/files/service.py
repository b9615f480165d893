"""Reading, downloading and deleting files. Free of HTTP; deletion takes the upload's claim.

Deletion (admins only) is ``deleting`` in the upload state machine: the claim is taken from any
settled state (or from ``uploading``), so a delete and a complete cannot interleave — whichever
claims first wins and the other waits for it. The store goes first (abort an open multipart upload,
delete the object), then the rows; a delete whose store step failed leaves its claim abandoned, and
the next delete finishes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..audit.service import Audit
from ..auth.principal import Principal
from ..cases.access import CaseRole, membership, require
from ..cases.service import CaseService
from ..errors import DomainError, FileNotAvailable, Forbidden, NotFound, ValidationFailed
from ..models import CaseMember, File, Upload, utcnow
from ..pagination import Page, PageRequest, paginate
from ..settings import Settings
from ..storage import Storage
from ..uploads import state
from ..uploads.rules import content_disposition
from ..uploads.service import UploadService
from ..uploads.state import FileStatus, UploadStatus


@dataclass(frozen=True, slots=True)
class DownloadLink:
    url: str
    expires_at: datetime


class FileService:
    def __init__(
        self,
        session: AsyncSession,
        storage: Storage,
        settings: Settings,
        cases: CaseService,
        uploads: UploadService,
    ) -> None:
        self.session = session
        self.storage = storage
        self.settings = settings
        self.cases = cases
        self.uploads = uploads
        self.audit = Audit(session)

    async def get(self, who: Principal, file_id: str, need: CaseRole = CaseRole.VIEWER) -> File:
        stmt = (
            select(File, CaseMember.role)
            .outerjoin(CaseMember, membership(who, File.case_id))  # type: ignore[arg-type]
            .where(File.id == file_id)
            .execution_options(populate_existing=True)
        )
        row = (await self.session.exec(stmt)).first()
        if row is None:
            raise NotFound("No such file")
        require(who, row[1], need, "file")
        return row[0]

    async def list_in_log(
        self, who: Principal, log_id: str, status: str | None, page: PageRequest
    ) -> Page[File]:
        log = await self.cases.get_log(who, log_id)
        query = select(File).where(File.log_id == log.id)
        if status is not None:
            if status not in set(FileStatus):
                raise ValidationFailed(f"status must be one of {', '.join(FileStatus)}")
            query = query.where(File.status == status)
        return await paginate(self.session, query, File, page)

    async def download_link(self, who: Principal, file_id: str) -> DownloadLink:
        """A presigned GET; issuing one is audited (the download itself goes to the store)."""
        file = await self.get(who, file_id)
        if file.status != FileStatus.AVAILABLE:
            raise FileNotAvailable(f"the file is {file.status}", file_status=file.status)
        ttl = self.settings.download_url_ttl
        url = self.storage.presign_get(file.key, content_disposition(file.filename), ttl)
        expires_at = utcnow() + timedelta(seconds=ttl)
        self.audit.record(
            who, "file.download_link", "file", file.id, case_id=file.case_id, expires_at=expires_at
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
        upload = (await self.session.exec(select(Upload).where(Upload.file_id == file.id))).first()
        if upload is None:  # a file without an upload is not made by this service; remove it all the same
            await self.storage.delete_object(file.key)
            await self.session.delete(file)
            self.audit.record(who, "file.deleted", "file", file.id, case_id=file.case_id, **details)
            return
        upload, held = await self.uploads.claim_when_free(
            upload,
            expect=(UploadStatus.UPLOADING, *state.FINAL),
            to=UploadStatus.DELETING,
            settled=(),
        )
        if held is None:  # nothing is settled for a delete, so this cannot happen
            raise NotFound("No such file")
        try:
            await self.storage.abort_multipart(upload.key, upload.s3_upload_id)
            await self.storage.delete_object(upload.key)
        except DomainError:
            await self._abandon(held)
            raise
        if not await state.remove(self.session, held, file.id):
            await self.session.rollback()
            raise NotFound("No such file")  # another delete took over and finished
        self.audit.record(who, "file.deleted", "file", file.id, case_id=file.case_id, **details)
        await self.session.commit()

    async def _abandon(self, held: state.Claim) -> None:
        try:
            await self.session.rollback()
            await state.abandon(self.session, held, utcnow())
            await self.session.commit()
        except SQLAlchemyError:
            pass  # the claim goes stale; the next delete takes it over
