"""Form uploads (kind ``post``): one presigned POST of a whole small file, as Uppy's ``/s3/params``
does, instead of a multipart upload.

The browser sends the bytes straight to the store; the API never hears whether it succeeded. So the
upload is recorded ``uploading`` with no multipart upload id (``s3_upload_id`` NULL) and *settled*
later: ``settle_post_upload`` asks HeadObject and finishes through the state machine
(``state.py``: claim, then finish matching the claim), from whichever caller comes first — the page
reporting Uppy's ``upload-success``, a client calling complete, or the reaper for pending ones.

- The POST policy pins the key, the content type and the exact size (``content-length-range``), and
  expires with ``PART_URL_TTL``; the upload row expires ``POST_GRACE`` later (a form sent just before
  its policy expired may still be arriving).
- Settling: an object of the planned size completes the upload (file ``available``, its ETag); an
  object of another size (a store that did not enforce the policy) aborts it and deletes the object,
  so wrong bytes never become a file; no object before ``expires_at`` leaves it pending, after it
  expires the upload (file ``failed``).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from ..audit.service import insert_event
from ..auth.principal import Principal
from ..errors import DomainError, FileTooLarge
from ..ids import new_id
from ..models import utcnow
from ..sql import Pool
from ..storage import PresignedPost, Storage
from . import rows, state
from .rows import FileRow, UploadRow
from .rules import object_key
from .service import POST, OnStart, UploadService
from .state import FileStatus, UploadStatus

log = logging.getLogger("upload_plane.uploads.post")

#: S3 refuses a single PUT/POST above 5 GiB; larger files go multipart.
MAX_POST_SIZE = 5 * 1024**3
#: How long after its policy expires a form upload may still be settled as arrived.
POST_GRACE = timedelta(minutes=10)


async def start_post_upload(
    uploads: UploadService,
    who: Principal,
    log_id: str,
    *,
    filename: str,
    size: int,
    content_type: str | None,
    on_start: OnStart | None = None,
) -> tuple[UploadRow, PresignedPost]:
    """Record a pending form upload and presign its POST (exactly ``size`` bytes to its key)."""
    if size > MAX_POST_SIZE:
        raise FileTooLarge(
            f"a form upload holds at most {MAX_POST_SIZE} bytes; use a multipart upload",
            max_file_size=MAX_POST_SIZE,
        )
    log_row_id, case_id, content_type = await uploads.admit(who, log_id, size, content_type)
    settings = uploads.settings
    now = utcnow()
    file_id = new_id()
    key = object_key(case_id, log_row_id, file_id, filename)
    ttl = settings.part_url_ttl
    file = FileRow(
        file_id, log_row_id, case_id, filename, content_type, size, key, None, None, None, None,
        FileStatus.UPLOADING, who.id, now, now,
    )  # fmt: skip
    upload = UploadRow(
        new_id(), file_id, log_row_id, case_id, None, filename, key, size, size, 1, content_type, None,
        None, None, UploadStatus.UPLOADING, now + timedelta(seconds=ttl) + POST_GRACE, None, None, who.id,
        now, now, kind=POST,
    )  # fmt: skip
    await uploads.insert_started(who, file, upload, on_start)
    return upload, uploads.storage.presign_post(key, content_type, size, ttl)


async def settle_post_upload(
    pool: Pool, storage: Storage, upload_id: str, *, who: Principal | None = None
) -> UploadStatus:
    """Promote a pending form upload whose object exists, or expire one whose time is up; the status
    the upload is in afterwards (``uploading``: still pending). Safe to call from any number of
    requests and reapers at once: only the holder of the claim finishes it."""
    async with pool.connect() as conn:
        upload = await rows.upload_by_id(conn, upload_id)
    if upload is None:
        raise ValueError(f"no upload {upload_id}")
    if upload.kind != POST or upload.status != UploadStatus.UPLOADING:
        return UploadStatus(upload.status)
    stored = await storage.head_object(upload.key)
    now = utcnow()
    if stored is None and upload.expires_at > now:
        return UploadStatus.UPLOADING
    to = UploadStatus.COMPLETING if stored is not None else UploadStatus.EXPIRING
    async with pool.connect() as conn:
        held = await state.claim(conn, upload.id, (UploadStatus.UPLOADING,), to, now)
        if held is None:  # another settler (or an abort) has it
            current = await rows.upload_by_id(conn, upload.id)
            return UploadStatus(current.status) if current is not None else UploadStatus.ABORTED
    try:
        if stored is None:  # expiring: the form may have landed since the first look
            stored = await storage.head_object(upload.key)
        if stored is not None and stored.size != upload.size:
            log.warning(
                "form upload %s stored %d bytes, %d were planned", upload.id, stored.size, upload.size
            )
            await storage.delete_object(upload.key)
            failed = UploadStatus.ABORTED if to == UploadStatus.COMPLETING else UploadStatus.EXPIRED
            end, file_values = failed, None
        elif stored is not None:
            end, file_values = UploadStatus.COMPLETED, {"etag": stored.etag}
        else:
            end, file_values = UploadStatus.EXPIRED, None
    except DomainError:
        async with pool.connect() as conn:
            await state.finish(conn, held, UploadStatus.UPLOADING, utcnow())
        raise
    async with pool.connect() as conn, conn.transaction():
        if not await state.finish(conn, held, end, utcnow(), file_id=upload.file_id, file_values=file_values):
            current = await rows.upload_by_id(conn, upload.id)
            return UploadStatus(current.status) if current is not None else end
        link = await conn.one("SELECT link_id FROM upload_link_uploads WHERE upload_id = %s", upload.id)
        extra = {"upload_link_id": link[0]} if link is not None and who is None else {}
        await insert_event(
            conn, who, f"upload.{end}", "upload", upload.id, case_id=upload.case_id,
            file_id=upload.file_id, size=upload.size, kind=POST, **extra,
        )  # fmt: skip
    return end
