"""Ending an upload that will not be completed: a client's abort, and (for the reaper) an expiry.

Claim ``aborting``/``expiring``; make the store forget what the client sent (AbortMultipartUpload);
record the end. If the store holds the upload's object afterwards, the upload had been completed
(a complete whose answer was lost, or a taken-over completer's late call): that object is judged
as any complete would judge it, and ``completed`` stands when it is the declared file. The abort's
own answer cannot tell (MinIO says 204 either way).
"""

from __future__ import annotations

import logging

from ..auth.principal import Principal
from ..errors import NotFound, UploadNotUploading
from .claims import claim_when_free, hand_back, not_uploading
from .context import Uploads
from .finish import Ending, judge, record
from .kinds import kind_of
from .queries import UploadRecord
from .read import get_upload, load
from .state import FINAL, Claim, UploadStatus

log = logging.getLogger("upload_plane.uploads")


async def abort_upload(ctx: Uploads, who: Principal, upload_id: str) -> None:
    """Abort an open upload: afterwards it is ``aborted`` (idempotent). A completed or expired
    upload, or one the store had already completed, answers ``UploadNotUploading``."""
    upload = await get_upload(ctx, who, upload_id)
    upload, held = await claim_when_free(
        ctx, upload, expect=(UploadStatus.UPLOADING,), to=UploadStatus.ABORTING, settled=FINAL
    )
    if held is None:
        if upload.status == UploadStatus.ABORTED:
            return
        raise not_uploading(upload)
    ended = await end_in_store(ctx, who, held, upload)
    if ended != UploadStatus.ABORTED:
        raise UploadNotUploading(f"the upload is {ended}", upload_status=ended)


async def end_in_store(
    ctx: Uploads, who: Principal | None, held: Claim, upload: UploadRecord
) -> UploadStatus:
    """Under an ``aborting`` or ``expiring`` claim: abandon the upload in the store and record its
    end; the status it ended in."""
    wanted = UploadStatus.ABORTED if held.status == UploadStatus.ABORTING else UploadStatus.EXPIRED
    try:
        await kind_of(upload).abandon(ctx.storage, upload)
        stored = await ctx.storage.head_object(upload.key)
    except Exception:
        await hand_back(ctx, held)
        raise
    if stored is None:
        ending = Ending(wanted)
    else:
        ending = await judge(ctx.storage, upload, stored)
        log.warning("upload %s: the store holds its object ending %s: %s", upload.id, wanted, ending.status)
    if not await record(ctx, held, upload, ending, who):
        current = await load(ctx, upload.id)
        if current is None:
            raise NotFound("No such upload")
        return UploadStatus(current.status)
    return ending.status
