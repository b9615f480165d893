"""Reading uploads and their files, with the caller's right to them."""

from __future__ import annotations

from ..auth.principal import Principal
from ..cases.access import CaseRole, require
from ..errors import NotFound, ValidationFailed
from ..pagination import Page, PageRequest, page_of
from .context import Uploads
from .queries import FILE_BY_ID, PAGE_OF_UPLOADS, UPLOAD_BY_ID, UPLOAD_WITH_ROLE, FileRecord, UploadRecord
from .state import UploadStatus


async def get_upload(
    ctx: Uploads, who: Principal, upload_id: str, need: CaseRole = CaseRole.CONTRIBUTOR
) -> UploadRecord:
    """An upload session belongs to whoever started it (and admins), while they keep ``need`` in its
    case: removed from the case, they can no longer resume it. One query."""
    async with ctx.db.connect() as conn:
        found = await conn.one(UPLOAD_WITH_ROLE, upload_id=upload_id, user_id=who.id)
    if found is None or (not who.is_admin and found[0].created_by != who.id):
        raise NotFound("No such upload")
    require(who, found[1], need, "upload")
    return found[0]


async def load(ctx: Uploads, upload_id: str) -> UploadRecord | None:
    async with ctx.db.connect() as conn:
        return await conn.one(UPLOAD_BY_ID, upload_id=upload_id)


async def file_of(ctx: Uploads, upload: UploadRecord) -> FileRecord:
    async with ctx.db.connect() as conn:
        file = await conn.one(FILE_BY_ID, file_id=upload.file_id)
    if file is None:
        raise NotFound("No such file")
    return file


async def list_mine(
    ctx: Uploads, who: Principal, status: str | None, log_id: str | None, page: PageRequest
) -> Page[UploadRecord]:
    if status is not None and status not in set(UploadStatus):
        raise ValidationFailed(f"status must be one of {', '.join(UploadStatus)}")
    async with ctx.db.connect() as conn:
        found = await conn.all(
            PAGE_OF_UPLOADS, user_id=who.id, status=status, log_id=log_id, after_id=page.after_id,
            limit=page.limit + 1,
        )  # fmt: skip
    return page_of(found, page.limit)
