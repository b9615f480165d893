"""Starting an upload: admission (the caller's role, size and type limits, the start rate), the
rows, and the store's multipart upload.

Crash-safe order: the rows first (``creating``, with the key), committed before the store is asked,
then CreateMultipartUpload, then ``uploading`` with the store's upload id. A store that refused or
was not reached: the rows are removed again (an outage changes nothing). A store whose answer was
lost, or a key an earlier dead start used: the row stays ``creating`` for a retry with the
idempotency key or the reaper, which aborts what the store holds on the key, so no multipart upload
is left open that no row records.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .. import failpoints
from ..audit.service import insert_event
from ..auth.principal import Principal
from ..cases.access import CaseRole, log_in_case
from ..db import Connection
from ..errors import (
    ContentTypeNotAllowed,
    DomainError,
    FileTooLarge,
    IdempotencyKeyReused,
    NotFound,
    StorageOutcomeUnknown,
    UploadBusy,
)
from ..ids import new_id
from ..models import utcnow
from ..ratelimit import Limit, RateLimits
from ..storage import CRC64NVME
from . import state
from .claims import busy, claim_when_free
from .context import Uploads
from .finish import forget
from .kinds import MULTIPART
from .queries import INSERT_FILE, INSERT_UPLOAD, UPLOAD_BY_IDEMPOTENCY_KEY, FileRecord, UploadRecord
from .read import load
from .rules import PartPlan, object_key, plan_parts
from .state import Claim, FileStatus, UploadStatus

log = logging.getLogger("upload_plane.uploads")

#: Runs inside the transaction that writes a started upload's rows (an upload link reserves its
#: budget there; if it raises, nothing is written).
OnStart = Callable[[Connection, UploadRecord], Awaitable[None]]


def start_limit(ctx: Uploads) -> Limit:
    return Limit("upload_start", ctx.settings.upload_start_rate, 60, "uploads started by this user")


def content_type_allowed(content_type: str, allowed: tuple[str, ...]) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return not allowed or any(fnmatch.fnmatchcase(base, pattern.lower()) for pattern in allowed)


async def admit(
    ctx: Uploads, conn: Connection, who: Principal, log_id: str, size: int, content_type: str
) -> tuple[str, str]:
    """May ``who`` start an upload of ``size`` bytes of ``content_type`` into the log? Counted
    against the user's start rate. ``(log id, case id)``."""
    found_log, case_id = await log_in_case(conn, who, log_id, CaseRole.CONTRIBUTOR)
    check_file(ctx, size, content_type)
    return found_log, case_id


def check_file(ctx: Uploads, size: int, content_type: str) -> None:
    """The limits every new file is held to, whoever starts it: its size and its content type."""
    if size > ctx.settings.max_file_size:
        raise FileTooLarge(
            f"{size} bytes is above the limit of {ctx.settings.max_file_size} bytes",
            max_file_size=ctx.settings.max_file_size,
        )
    if not content_type_allowed(content_type, ctx.settings.allowed_content_types):
        raise ContentTypeNotAllowed(f"content type {content_type!r} is not allowed")


def plan_for(ctx: Uploads, wanted: NewUpload) -> PartPlan:
    try:
        return plan_parts(wanted.size, ctx.settings.part_size, wanted.part_size)
    except ValueError as exc:
        raise FileTooLarge(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class NewUpload:
    """What a client asks to upload."""

    filename: str
    size: int
    content_type: str | None = None
    sha256: str | None = None
    crc64nvme: str | None = None
    checksum_algorithm: str | None = None  # "CRC64NVME": the store checks a whole-file value
    part_size: int | None = None


def new_rows(
    ctx: Uploads,
    who: Principal,
    log_id: str,
    case_id: str,
    wanted: NewUpload,
    plan: PartPlan,
    *,
    kind: str,
    status: UploadStatus,
    expires_in: timedelta,
    claim_token: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[FileRecord, UploadRecord]:
    """The file and upload rows of a new upload (not yet written)."""
    now = utcnow()
    file_id = new_id()
    key = object_key(case_id, log_id, file_id, wanted.filename)
    content_type = wanted.content_type or "application/octet-stream"
    algorithm = CRC64NVME if wanted.crc64nvme or wanted.checksum_algorithm == CRC64NVME else None
    file = FileRecord(
        id=file_id, log_id=log_id, case_id=case_id, filename=wanted.filename, content_type=content_type,
        size=wanted.size, key=key, sha256=wanted.sha256, crc64nvme=wanted.crc64nvme, verified_by=None,
        etag=None, version_id=None, status=FileStatus.UPLOADING, created_by=who.id, created_at=now,
        updated_at=now,
    )  # fmt: skip
    upload = UploadRecord(
        id=new_id(), file_id=file_id, log_id=log_id, case_id=case_id, kind=kind, s3_upload_id=None,
        idempotency_key=idempotency_key, needs_sweep=False, filename=wanted.filename, key=key,
        size=wanted.size, part_size=plan.part_size, part_count=plan.part_count, content_type=content_type,
        checksum_algorithm=algorithm, sha256=wanted.sha256, crc64nvme=wanted.crc64nvme, status=status,
        expires_at=now + expires_in, claim_token=claim_token, claimed_at=now if claim_token else None,
        created_by=who.id, created_at=now, updated_at=now,
    )  # fmt: skip
    return file, upload


async def write_rows(conn: Connection, file: FileRecord, upload: UploadRecord) -> None:
    await conn.run(INSERT_FILE, **file.values())
    await conn.run(INSERT_UPLOAD, **upload.values())


def same_start(existing: UploadRecord, log_id: str, wanted: NewUpload) -> bool:
    """Whether ``existing`` is the upload ``wanted`` started (a start sent again with its key)."""
    algorithm = CRC64NVME if wanted.crc64nvme or wanted.checksum_algorithm == CRC64NVME else None
    return (
        existing.log_id, existing.filename, existing.size, existing.content_type, existing.sha256,
        existing.crc64nvme, existing.checksum_algorithm,
    ) == (
        log_id, wanted.filename, wanted.size, wanted.content_type or "application/octet-stream",
        wanted.sha256, wanted.crc64nvme, algorithm,
    )  # fmt: skip


async def start_upload(
    ctx: Uploads,
    who: Principal,
    log_id: str,
    wanted: NewUpload,
    *,
    idempotency_key: str | None = None,
    on_start: OnStart | None = None,
) -> UploadRecord:
    """Start a multipart upload. A declared ``crc64nvme`` (or ``checksum_algorithm`` CRC64NVME,
    with the value given at complete) makes the store check the whole file: every part is then
    signed with its own CRC64NVME and complete passes the whole-file value. ``idempotency_key``:
    the same start sent again (its answer was lost) returns the same upload."""
    content_type = wanted.content_type or "application/octet-stream"
    # A retry that finds its first start removed meanwhile (it failed: 503) starts afresh.
    for _ in range(3):
        async with ctx.db.connect() as conn:
            found_log, case_id = await admit(ctx, conn, who, log_id, wanted.size, content_type)
            plan = plan_for(ctx, wanted)
            if idempotency_key is not None:
                existing = await conn.one(UPLOAD_BY_IDEMPOTENCY_KEY, user_id=who.id, key=idempotency_key)
                if existing is not None:
                    again = await _start_again(ctx, who, existing, found_log, wanted)
                    if again is None:
                        continue
                    return again
            await RateLimits(conn).take(start_limit(ctx), who.id, utcnow())
            token = state.new_claim_token()
            file, upload = new_rows(
                ctx, who, found_log, case_id, wanted, plan, kind=MULTIPART.name, status=UploadStatus.CREATING,
                expires_in=timedelta(seconds=ctx.settings.upload_ttl), claim_token=token,
                idempotency_key=idempotency_key,
            )  # fmt: skip
            held = Claim(upload.id, UploadStatus.CREATING, token)
            try:
                async with conn.transaction():
                    if on_start is not None:
                        await on_start(conn, upload)
                    await write_rows(conn, file, upload)
            except IntegrityError:
                if idempotency_key is None:
                    raise
                existing = await conn.one(UPLOAD_BY_IDEMPOTENCY_KEY, user_id=who.id, key=idempotency_key)
                if existing is None:
                    raise
                again = await _start_again(ctx, who, existing, found_log, wanted)  # a concurrent retry won
                if again is None:
                    continue
                return again
        failpoints.hit("after_start_row")
        return await _create_in_store(ctx, who, held, upload)
    raise UploadBusy("the start with this Idempotency-Key keeps failing; retry", retry_after=2)


async def _start_again(
    ctx: Uploads, who: Principal, existing: UploadRecord, log_id: str, wanted: NewUpload
) -> UploadRecord | None:
    """The answer to a start sent again with its idempotency key: the same upload, once its
    first start finished (or, if that one died in ``creating``, after taking it over); ``None``
    if the first start failed and was removed while this one waited (start afresh)."""
    if not same_start(existing, log_id, wanted):
        raise IdempotencyKeyReused("this Idempotency-Key started another upload; use a new key")
    settled = tuple(s for s in UploadStatus if s != UploadStatus.CREATING)
    try:
        upload, held = await claim_when_free(
            ctx, existing, expect=(), to=UploadStatus.CREATING, settled=settled
        )
    except NotFound:
        return None  # the first start failed and was forgotten meanwhile: nothing of it is left
    if held is None:
        return upload
    # The first start died after its row was written: it may have left a multipart upload on the
    # key that no row records. Mark the key for the reaper's sweep before making our own.
    async with ctx.db.connect() as conn:
        await state.mark_for_sweep(conn, held)
    upload.needs_sweep = True
    return await _create_in_store(ctx, who, held, upload)


async def _create_in_store(ctx: Uploads, who: Principal, held: Claim, upload: UploadRecord) -> UploadRecord:
    """CreateMultipartUpload under a ``creating`` claim, then ``uploading`` with its id."""
    try:
        s3_upload_id = await ctx.storage.create_multipart(
            upload.key, upload.content_type, crc64nvme=upload.checksum_algorithm == CRC64NVME
        )
    except DomainError as exc:
        if isinstance(exc, StorageOutcomeUnknown) or upload.needs_sweep:
            # The store may hold a multipart upload on this key that no row will record: this
            # start's (its answer was lost) or a dead earlier start's. Removing the row would lose
            # the key; it stays ``creating``, marked for the sweep and free to take: a retry with
            # the idempotency key takes it over, or the reaper aborts what the key holds.
            await _leave_to_reaper(ctx, held)
        else:
            # The store refused or was not reached: nothing of this start may remain (503 changes
            # nothing). If even this fails, the reaper forgets the row once its claim is stale.
            await _forget_quietly(ctx, held, upload)
        raise
    failpoints.hit("after_store_create")
    now = utcnow()
    async with ctx.db.connect() as conn, conn.transaction():
        done = await state.created(conn, held, s3_upload_id, now)
        if done:
            await insert_event(
                conn, who, "upload.started", "upload", upload.id, case_id=upload.case_id,
                file_id=upload.file_id, filename=upload.filename, size=upload.size, log_id=upload.log_id,
            )  # fmt: skip
    if not done:  # slower than a retry that took the claim over: that one's upload stands
        await _abort_quietly(ctx, upload.key, s3_upload_id)
        current = await load(ctx, upload.id)
        if current is None:
            raise NotFound("No such upload")
        if current.status == UploadStatus.CREATING:
            raise busy(current)
        return current
    upload.s3_upload_id, upload.status = s3_upload_id, UploadStatus.UPLOADING
    upload.claim_token = upload.claimed_at = None
    upload.updated_at = now
    return upload


async def _leave_to_reaper(ctx: Uploads, held: Claim) -> None:
    try:
        async with ctx.db.connect() as conn:
            await state.abandon(conn, held, utcnow(), sweep=True)
    except (SQLAlchemyError, DomainError):
        # The claim goes stale; the reaper's undo of a dead start aborts whatever the key holds.
        log.warning("could not leave the failed start of upload %s to the reaper", held.upload_id)


async def _forget_quietly(ctx: Uploads, held: Claim, upload: UploadRecord) -> None:
    try:
        async with ctx.db.connect() as conn:
            await forget(conn, held, upload)
    except (SQLAlchemyError, DomainError):
        log.warning("could not remove the failed start of upload %s; the reaper will", upload.id)


async def _abort_quietly(ctx: Uploads, key: str, s3_upload_id: str) -> None:
    try:
        await ctx.storage.abort_multipart(key, s3_upload_id)
    except DomainError:  # the store's own stale-upload expiry cleans up what this misses
        log.warning("could not abort multipart upload for %s after a failed start", key)


async def start_direct(
    ctx: Uploads,
    who: Principal,
    log_id: str,
    wanted: NewUpload,
    *,
    kind: str,
    expires_in: timedelta,
    on_start: OnStart | None = None,
    **event: Any,
) -> UploadRecord:
    """Record an upload whose bytes the client writes to the final key itself (no multipart
    upload): admitted as any, rows and ``upload.started`` in one transaction; ``uploading`` at once."""
    content_type = wanted.content_type or "application/octet-stream"
    async with ctx.db.connect() as conn:
        found_log, case_id = await admit(ctx, conn, who, log_id, wanted.size, content_type)
        await RateLimits(conn).take(start_limit(ctx), who.id, utcnow())
        plan = PartPlan(size=wanted.size, part_size=wanted.size, part_count=1)
        file, upload = new_rows(
            ctx, who, found_log, case_id, wanted, plan, kind=kind, status=UploadStatus.UPLOADING,
            expires_in=expires_in,
        )  # fmt: skip
        async with conn.transaction():
            if on_start is not None:
                await on_start(conn, upload)
            await write_rows(conn, file, upload)
            await insert_event(
                conn, who, "upload.started", "upload", upload.id, case_id=upload.case_id,
                file_id=file.id, filename=file.filename, size=file.size, log_id=upload.log_id,
                kind=kind, **event,
            )  # fmt: skip
    return upload
