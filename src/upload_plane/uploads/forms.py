"""Form uploads (kind ``post``): one presigned POST of a whole small file, as Uppy's ``/s3/params``
does, instead of a multipart upload.

The browser sends the bytes straight to the store (to an incoming key: ``kinds.FormPost``); the API
never hears whether it succeeded. So the upload is recorded ``uploading`` with no multipart upload
and *settled* later, by the one complete every upload has (``complete.py``): the object is copied to
the file's key and judged there — the planned size completes it (file ``available``, its ETag); an
object that is not the declared file aborts it and is deleted; no object yet leaves it pending
until it expires. Whoever comes first settles it — the page reporting Uppy's
``upload-success``, a client calling complete, or the reaper once it expired.

- The POST policy pins the key, the content type and the exact size (``content-length-range``), and
  expires with ``PART_URL_TTL``; the upload row expires ``POST_GRACE`` later (a form sent just before
  its policy expired may still be arriving).
"""

from __future__ import annotations

from datetime import timedelta

from ..auth.principal import Principal
from ..errors import FileTooLarge, ObjectMismatch, PartsMissing, UploadExpired, UploadNotUploading
from ..storage import PresignedPost
from .complete import complete_upload
from .context import Uploads
from .kinds import FORM_POST
from .queries import UploadRecord
from .start import NewUpload, OnStart, start_direct
from .state import UploadStatus

#: S3 refuses a single PUT/POST above 5 GiB; larger files go multipart.
MAX_POST_SIZE = 5 * 1024**3
#: How long after its policy expires a form upload may still be settled as arrived.
POST_GRACE = timedelta(minutes=10)


async def start_form_upload(
    ctx: Uploads, who: Principal, log_id: str, wanted: NewUpload, on_start: OnStart | None = None
) -> tuple[UploadRecord, PresignedPost]:
    """Record a pending form upload and presign its POST (exactly ``size`` bytes to its key)."""
    if wanted.size > MAX_POST_SIZE:
        raise FileTooLarge(
            f"a form upload holds at most {MAX_POST_SIZE} bytes; use a multipart upload",
            max_file_size=MAX_POST_SIZE,
        )
    ttl = ctx.settings.part_url_ttl
    upload = await start_direct(
        ctx, who, log_id, wanted, kind=FORM_POST.name,
        expires_in=timedelta(seconds=ttl) + POST_GRACE, on_start=on_start,
    )  # fmt: skip
    incoming = FORM_POST.incoming_key(upload)
    return upload, ctx.storage.presign_post(incoming, upload.content_type, upload.size, ttl)


async def settle_form_upload(ctx: Uploads, who: Principal, upload: UploadRecord) -> UploadStatus:
    """Complete a form upload if its object has landed; the status it is in afterwards
    (``uploading``: still pending)."""
    try:
        await complete_upload(ctx, who, upload.id)
    except PartsMissing:
        return UploadStatus.UPLOADING
    except UploadExpired:
        return UploadStatus.EXPIRED
    except ObjectMismatch:
        return UploadStatus.ABORTED
    except UploadNotUploading as exc:
        return UploadStatus(exc.extra.get("upload_status", UploadStatus.ABORTED))
    return UploadStatus.COMPLETED
