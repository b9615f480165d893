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

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..cases.service import CaseService, can_see_case
from ..errors import DomainError, FileNotAvailable, Forbidden, NotFound, ValidationFailed
from ..models import Case, File, Upload, User, utcnow
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

    async def get(self, user: User, file_id: str) -> File:
        stmt = select(File).where(File.id == file_id).execution_options(populate_existing=True)
        file = (await self.session.exec(stmt)).first()
        if file is None:
            raise NotFound("No such file")
        case = await self.session.get(Case, file.case_id)
        if case is None or not can_see_case(user, case):
            raise NotFound("No such file")
        return file

    async def list_in_log(self, user: User, log_id: str, status: str | None, page: PageRequest) -> Page[File]:
        log = await self.cases.get_log(user, log_id)
        query = select(File).where(File.log_id == log.id)
        if status is not None:
            if status not in set(FileStatus):
                raise ValidationFailed(f"status must be one of {', '.join(FileStatus)}")
            query = query.where(File.status == status)
        return await paginate(self.session, query, File, page)

    async def download_link(self, user: User, file_id: str) -> DownloadLink:
        file = await self.get(user, file_id)
        if file.status != FileStatus.AVAILABLE:
            raise FileNotAvailable(f"the file is {file.status}", file_status=file.status)
        ttl = self.settings.download_url_ttl
        url = self.storage.presign_get(file.key, content_disposition(file.filename), ttl)
        return DownloadLink(url=url, expires_at=utcnow() + timedelta(seconds=ttl))

    async def delete(self, user: User, file_id: str) -> None:
        """Delete a file, its object and its upload: admins only (others who can see it: 403)."""
        file = await self.get(user, file_id)
        if user.role != "admin":
            raise Forbidden("only administrators may delete evidence")
        upload = (await self.session.exec(select(Upload).where(Upload.file_id == file.id))).first()
        if upload is None:  # a file without an upload is not made by this service; remove it all the same
            await self.storage.delete_object(file.key)
            await self.session.delete(file)
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
        await self.session.commit()

    async def _abandon(self, held: state.Claim) -> None:
        try:
            await self.session.rollback()
            await state.abandon(self.session, held, utcnow())
            await self.session.commit()
        except SQLAlchemyError:
            pass  # the claim goes stale; the next delete takes it over
