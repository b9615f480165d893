"""Completing an upload: claim it, have the store assemble it, judge what it holds, record the end.

Idempotent and race-safe: concurrent and repeated completes take one claim (the others wait for it)
and send one CompleteMultipartUpload; all of them answer the same file. If the store says the
multipart upload is gone, HeadObject decides whether an earlier complete succeeded (its answer was
lost: the file is recovered) or nothing is left (``expired``). Any failure that is not a verdict
hands the claim back (``uploading``) for the next try.

``complete_claimed`` is the part after the claim, for one upload or a batch's many (``batch.py``):
the store calls run concurrently and every ending is recorded in one transaction (``finish_many``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from .. import failpoints
from ..auth.principal import Principal
from ..errors import (
    DomainError,
    ObjectMismatch,
    PartsMissing,
    StorageUnavailable,
    StoredUploadGone,
    UploadExpired,
    ValidationFailed,
)
from ..models import utcnow
from ..storage import CRC64NVME
from .claims import after_lost_claim, claim_when_free, hand_back_all, not_uploading
from .context import Uploads
from .finish import Ended, Ending, file_after, judge, record_many
from .kinds import kind_of
from .queries import FileRecord, UploadRecord
from .read import file_of, get_upload
from .state import FINAL, Claim, UploadStatus

#: Store calls in flight at once for one batch of claimed uploads.
STORE_CONCURRENCY = 32


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
    [outcome] = await complete_claimed(ctx, who, [Claimed(held, upload, client_parts)])
    if outcome.error is not None:
        raise outcome.error
    assert outcome.file is not None
    return outcome.file


@dataclass(frozen=True, slots=True)
class Claimed:
    """An upload this worker holds ``completing``, and the parts its client listed (if any)."""

    held: Claim
    upload: UploadRecord
    client_parts: list[tuple[int, str]] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How completing one upload went: its file, or why not (a verdict such as ``UploadExpired``
    or ``ObjectMismatch``, already recorded; or a failure after which the upload was handed back,
    such as ``PartsMissing``)."""

    upload: UploadRecord
    file: FileRecord | None = None
    error: DomainError | None = None


async def complete_claimed(ctx: Uploads, who: Principal, claimed: Sequence[Claimed]) -> list[Outcome]:
    """Complete uploads held ``completing``: have the store assemble each (its kind says how) and
    look at the object, concurrently; record every ending in one transaction; hand the rest back.
    One outcome per upload, in order. A failure of the database (or a bug) hands every claim back
    and is raised."""
    gate = asyncio.Semaphore(STORE_CONCURRENCY)

    async def look(one: Claimed) -> Ended | DomainError:
        async with gate:
            try:
                return Ended(one.held, one.upload, await _ending(ctx, one))
            except DomainError as exc:
                return exc

    try:
        if len(claimed) == 1:  # one upload (the API's complete): no task to schedule
            looked: list[Ended | DomainError] = [await look(claimed[0])]
        else:
            looked = await asyncio.gather(*(look(one) for one in claimed))
        ended = [e for e in looked if isinstance(e, Ended)]
        failed = [one.held for one, e in zip(claimed, looked, strict=True) if not isinstance(e, Ended)]
        await hand_back_all(ctx, failed)
        done = await record_many(ctx, ended, who)
    except Exception:
        # The store or database failed mid-way. Handing the uploads back is safe even if the store
        # did complete: the next complete finds the object (HeadObject).
        await hand_back_all(ctx, [one.held for one in claimed])
        raise
    now = utcnow()
    outcomes = []
    for one, result in zip(claimed, looked, strict=True):
        if not isinstance(result, Ended):
            outcomes.append(Outcome(one.upload, error=result))
        elif one.upload.id not in done:
            outcomes.append(await _after_lost(ctx, one.upload))
        elif result.ending.status == UploadStatus.EXPIRED:
            gone = UploadExpired("the store no longer holds this upload; start a new one")
            outcomes.append(Outcome(one.upload, error=gone))
        elif result.ending.status == UploadStatus.ABORTED:
            wrong = ObjectMismatch(result.ending.reason or "the stored object is not the declared file")
            outcomes.append(Outcome(one.upload, error=wrong))
        else:
            outcomes.append(Outcome(one.upload, file=file_after(one.upload, result.ending, now)))
    return outcomes


async def _ending(ctx: Uploads, one: Claimed) -> Ending:
    """How a claimed upload ends, from what the store holds; raises what is not a verdict (parts or
    the object still missing, the store away)."""
    upload, kind = one.upload, kind_of(one.upload)
    try:
        completed = await kind.assemble(ctx.storage, upload, one.client_parts)
    except StoredUploadGone:
        completed = None  # gone from the store: completed earlier (answer lost) or purged
    failpoints.hit("after_store_complete")  # crash tests: the store completed, the database not
    stored = await ctx.storage.head_object(upload.key)
    if stored is None:
        if completed is not None:
            raise StorageUnavailable("the completed object is not visible yet; retry")
        if kind.pending_until_object and upload.expires_at > utcnow():
            raise PartsMissing("the upload has not reached the store yet", missing_parts=[1])
        return Ending(UploadStatus.EXPIRED, reason="the store holds neither the upload nor its object")
    return await judge(ctx.storage, upload, stored, completed)


async def _after_lost(ctx: Uploads, upload: UploadRecord) -> Outcome:
    """Another worker took over the claim and may have finished the upload."""
    try:
        current = await after_lost_claim(ctx, upload.id)
        if current.status == UploadStatus.COMPLETED:
            return Outcome(current, file=await file_of(ctx, current))
        return Outcome(current, error=not_uploading(current))
    except DomainError as exc:
        return Outcome(upload, error=exc)
