"""Taking a claim on an upload, waiting while another worker holds it (``state.py`` says how a
claim works)."""

from __future__ import annotations

import logging
from collections.abc import Collection

import anyio
from sqlalchemy.exc import SQLAlchemyError

from ..errors import DomainError, NotFound, UploadBusy, UploadNotUploading
from ..models import utcnow
from . import state
from .context import Uploads
from .queries import UploadRecord
from .read import load
from .state import Claim, UploadStatus

log = logging.getLogger("upload_plane.uploads")

#: How long a request waits for another request's claim (a concurrent complete) to finish.
CLAIM_WAIT_SECONDS = 60.0
_POLL_FIRST, _POLL_MAX = 0.01, 0.25


def busy(upload: UploadRecord) -> UploadBusy:
    return UploadBusy(f"another request holds this upload ({upload.status}); retry", retry_after=2)


def not_uploading(upload: UploadRecord) -> UploadNotUploading:
    return UploadNotUploading(f"the upload is {upload.status}", upload_status=upload.status)


async def claim_when_free(
    ctx: Uploads,
    upload: UploadRecord,
    expect: Collection[UploadStatus],
    to: UploadStatus,
    settled: Collection[str],
    *,
    sha256: str | None = None,
    crc64nvme: str | None = None,
) -> tuple[UploadRecord, Claim | None]:
    """Claim ``upload`` from one of ``expect`` into ``to``, waiting while another worker holds it.
    Returns the row and the claim; or the row and ``None`` once it is in one of ``settled`` (the
    caller answers from it). Raises ``UploadBusy`` when the other worker takes too long. The claim
    is committed before this returns; checksums given are recorded with it (where none were), and
    the returned row shows them."""
    deadline = anyio.current_time() + CLAIM_WAIT_SECONDS
    delay = _POLL_FIRST
    while True:
        if upload.status in settled:
            return upload, None
        now = utcnow()
        free = upload.status in expect
        stale = upload.status == to and state.is_stale(to, upload.claimed_at, now)
        if free or stale:
            async with ctx.db.connect() as conn:
                held = await state.claim(conn, upload.id, expect, to, now, sha256=sha256, crc64nvme=crc64nvme)
            if held is not None:
                upload.status, upload.claim_token, upload.claimed_at = to, held.token, now
                upload.sha256 = upload.sha256 or sha256
                upload.crc64nvme = upload.crc64nvme or crc64nvme
                return upload, held
        elif upload.status not in state.HELD:
            raise not_uploading(upload)
        if anyio.current_time() > deadline:
            raise busy(upload)
        await ctx.waiters.wait(upload.id, delay)  # woken at once if the claim is held here
        delay = min(delay * 2, _POLL_MAX)
        reloaded = await load(ctx, upload.id)
        if reloaded is None:
            raise NotFound("No such upload")
        upload = reloaded


async def hand_back(ctx: Uploads, held: Claim) -> None:
    """Return a claim to ``uploading`` after a failure that is not a verdict. If even that fails,
    the claim goes stale and the next claim (or the reaper) takes it over."""
    await hand_back_all(ctx, [held])


async def hand_back_all(ctx: Uploads, claims: Collection[Claim]) -> None:
    """``hand_back`` for many claims (a batch), in one statement per claim token."""
    if not claims:
        return
    try:
        async with ctx.db.connect() as conn:
            await state.hand_back_many(conn, claims)
    except (SQLAlchemyError, DomainError):
        log.warning(
            "could not hand back %d claim(s), e.g. on upload %s", len(claims), next(iter(claims)).upload_id
        )
    for held in claims:
        ctx.waiters.ended(held.upload_id)


async def after_lost_claim(ctx: Uploads, upload_id: str) -> UploadRecord:
    """Another worker took over our claim and may have finished: the row as it is now, if settled."""
    upload = await load(ctx, upload_id)
    if upload is None:
        raise NotFound("No such upload")
    if upload.status in state.HELD:
        raise busy(upload)
    return upload
