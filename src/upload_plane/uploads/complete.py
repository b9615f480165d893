"""Completing an upload: claim it, have the store assemble it, judge what it holds, record the end.

Idempotent and race-safe: concurrent and repeated completes take one claim (the others wait for it)
and send one CompleteMultipartUpload; all of them answer the same file. If the store says the
multipart upload is gone, HeadObject decides whether an earlier complete succeeded (its answer was
lost: the file is recovered) or nothing is left (``expired``). Any failure that is not a verdict
hands the claim back (``uploading``) for the next try.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import failpoints
from ..auth.principal import Principal
from ..errors import (
    ObjectMismatch,
    PartsMissing,
    StorageUnavailable,
    StoredUploadGone,
    UploadExpired,
    ValidationFailed,
)
from ..models import utcnow
from ..storage import CRC64NVME
from .claims import after_lost_claim, claim_when_free, hand_back, not_uploading
from .context import Uploads
from .finish import Ending, judge, record
from .kinds import Kind, kind_of
from .queries import FileRecord, UploadRecord
from .read import file_of, get_upload
from .state import FINAL, Claim, FileStatus, UploadStatus


@dataclass(frozen=True, slots=True)
class Declared:
    """The whole-file checksums the client declared, at start or at complete."""

    sha256: str | None
    crc64nvme: str | None


def declared_checksums(upload: UploadRecord, sha256: str | None, crc64nvme: str | None) -> Declared:
    """What a complete declares, held to what the upload already records."""
    if sha256 and upload.sha256 and sha256 != upload.sha256:
        raise ValidationFailed("sha256 differs from the value declared for this upload")
    if crc64nvme and upload.crc64nvme and crc64nvme != upload.crc64nvme:
        raise ValidationFailed("crc64nvme differs from the value declared for this upload")
    if crc64nvme and upload.checksum_algorithm != CRC64NVME:
        raise ValidationFailed(
            "crc64nvme can be checked by the store only if the upload started with "
            "checksum_algorithm CRC64NVME"
        )
    declared = Declared(sha256=upload.sha256 or sha256, crc64nvme=upload.crc64nvme or crc64nvme)
    if upload.checksum_algorithm == CRC64NVME and declared.crc64nvme is None:
        raise ValidationFailed("this upload's store checks the whole file: send its crc64nvme")
    return declared


async def complete_upload(
    ctx: Uploads,
    who: Principal,
    upload_id: str,
    client_parts: list[tuple[int, str]] | None = None,
    *,
    sha256: str | None = None,
    crc64nvme: str | None = None,
) -> FileRecord:
    """Finish the file. Whole-file checksums may be declared here when the client computed them
    while sending; they are recorded with the claim, so whoever finishes the upload checks them."""
    upload = await get_upload(ctx, who, upload_id)
    declared = declared_checksums(upload, sha256, crc64nvme)
    kind = kind_of(upload)
    if (
        upload.status == UploadStatus.UPLOADING
        and upload.expires_at <= utcnow()
        and not kind.pending_until_object
    ):
        raise UploadExpired("the upload expired; start a new one")
    upload, held = await claim_when_free(
        ctx, upload, expect=(UploadStatus.UPLOADING,), to=UploadStatus.COMPLETING, settled=FINAL,
        sha256=declared.sha256, crc64nvme=declared.crc64nvme,
    )  # fmt: skip
    if held is None:
        if upload.status == UploadStatus.COMPLETED:
            return await file_of(ctx, upload)
        raise not_uploading(upload)
    try:
        return await _complete_claimed(ctx, who, held, upload, kind, client_parts)
    except (UploadExpired, ObjectMismatch):
        raise  # verdicts, already recorded
    except Exception:
        # Verification failed, or the store or database failed mid-way. Handing the upload back
        # is safe even if the store did complete: the next complete finds the object (HeadObject).
        await hand_back(ctx, held)
        raise


async def _complete_claimed(
    ctx: Uploads,
    who: Principal,
    held: Claim,
    upload: UploadRecord,
    kind: Kind,
    client_parts: list[tuple[int, str]] | None,
) -> FileRecord:
    try:
        completed = await kind.assemble(ctx.storage, upload, client_parts)
    except StoredUploadGone:
        completed = None  # gone from the store: completed earlier (answer lost) or purged
    failpoints.hit("after_store_complete")  # crash tests: the store completed, the database not
    stored = await ctx.storage.head_object(upload.key)
    if stored is None:
        if completed is not None:
            raise StorageUnavailable("the completed object is not visible yet; retry")
        if kind.pending_until_object and upload.expires_at > utcnow():
            raise PartsMissing("the upload has not reached the store yet", missing_parts=[1])
        ending = Ending(UploadStatus.EXPIRED, reason="the store holds neither the upload nor its object")
    else:
        ending = await judge(ctx.storage, upload, stored, completed)
    if not await record(ctx, held, upload, ending, who):
        current = await after_lost_claim(ctx, upload.id)
        if current.status == UploadStatus.COMPLETED:
            return await file_of(ctx, current)
        raise not_uploading(current)
    if ending.status == UploadStatus.EXPIRED:
        raise UploadExpired("the store no longer holds this upload; start a new one")
    if ending.status == UploadStatus.ABORTED:
        raise ObjectMismatch(ending.reason or "the stored object is not the declared file")
    now = utcnow()
    # The file row now holds exactly this (its other columns were written with the upload's).
    return FileRecord(
        id=upload.file_id, log_id=upload.log_id, case_id=upload.case_id, filename=upload.filename,
        content_type=upload.content_type, size=upload.size, key=upload.key, sha256=upload.sha256,
        crc64nvme=upload.crc64nvme, verified_by=ending.verified_by, etag=ending.etag,
        version_id=ending.version_id,
        status=FileStatus.AVAILABLE, created_by=upload.created_by, created_at=upload.created_at,
        updated_at=now,
    )  # fmt: skip
