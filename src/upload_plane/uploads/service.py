"""The multipart upload flow: start, sign parts, report progress, complete, abort.

State changes follow ``state.py``: a change that needs the store claims the row first (one committed
statement), calls the store holding no database connection, then finishes with a compare-and-set that
must match its claim, in one transaction with its audit event. So concurrent and repeated completes
send one CompleteMultipartUpload and return the same file; abort and complete cannot both win; and a
worker that lost its claim changes nothing.

This is the request hot path, so it talks to the database through ``sql.py`` (the driver, no ORM):
each call checks out a connection for a short unit of work and gives it back before any store call.

Order of effects, so that failures leave nothing half-written:
- start: the rows first (``creating``, with the key), then CreateMultipartUpload, then ``uploading``
  with the store's upload id. A store that refused or was not reached: the rows are removed again
  (an outage changes nothing). A store whose answer was lost, or a key an earlier dead start used:
  the row stays ``creating`` for a retry with the idempotency key or the reaper, which aborts what
  the store holds on the key, so no multipart upload is left open that no row records.
- complete: claim ``completing``; ListParts and check every planned part; CompleteMultipartUpload;
  HeadObject; finish ``completed`` (file ``available``). If the store says the upload is gone,
  HeadObject decides whether an earlier complete succeeded (its answer was lost) and the file is
  recovered. Any failure that is not a verdict hands the claim back (``uploading``).
- abort: claim ``aborting``; AbortMultipartUpload; finish ``aborted`` (file ``failed``). If the store
  holds the upload's object afterwards, the upload had been completed: that stands.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .. import failpoints
from ..audit.service import insert_event
from ..auth.principal import Principal
from ..cases.access import CaseRole, require
from ..errors import (
    ContentTypeNotAllowed,
    DomainError,
    FileTooLarge,
    IdempotencyKeyReused,
    NotFound,
    ObjectMismatch,
    PartEtagMismatch,
    PartSizeMismatch,
    PartsMissing,
    StorageOutcomeUnknown,
    StorageUnavailable,
    StoredUploadGone,
    UploadBusy,
    UploadExpired,
    UploadNotUploading,
    ValidationFailed,
)
from ..ids import new_id
from ..models import utcnow
from ..pagination import Page, PageRequest, page_of
from ..ratelimit import Limit, RateLimits
from ..settings import Settings
from ..sql import Connection, Pool
from ..storage import (
    CRC64NVME,
    CompletedObject,
    PartToSign,
    Storage,
    StoredObject,
    StoredPart,
    normalize_etag,
)
from . import rows, state
from .rows import FileRow, UploadRow
from .rules import PartPlan, object_key, plan_parts
from .state import Claim, FileStatus, UploadStatus

log = logging.getLogger("upload_plane.uploads")

#: Upload kinds: parts signed one by one, or one presigned form POST (Uppy's small files).
MULTIPART, POST = "multipart", "post"

#: Runs inside the transaction that writes a started upload's rows (see ``UploadService.start``).
OnStart = Callable[[Connection, UploadRow], Awaitable[None]]

MAX_PARTS_PER_CALL = 10_000
#: How long a request waits for another request's claim (a concurrent complete) to finish.
CLAIM_WAIT_SECONDS = 60.0
_POLL_FIRST, _POLL_MAX = 0.01, 0.25


@dataclass(frozen=True, slots=True)
class SignedPart:
    part_number: int
    url: str
    headers: dict[str, str]
    size: int


@dataclass(frozen=True, slots=True)
class SignedParts:
    parts: list[SignedPart]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Declared:
    """The whole-file checksums the client declared, at start or at complete."""

    sha256: str | None
    crc64nvme: str | None


@dataclass(frozen=True, slots=True)
class PartState:
    uploaded: list[StoredPart]
    missing: list[int]
    bytes_uploaded: int


async def checked_by_store(
    storage: Storage, key: str, crc64nvme: str | None, completed: CompletedObject | None, stored: StoredObject
) -> bool:
    """Whether the store checked the whole file against the declared ``crc64nvme``. Its answer to
    CompleteMultipartUpload says so. When that answer never arrived (an earlier complete assembled
    the object: its worker died, or the answer was lost), the object says so, if the store computes
    checksums itself: it reports the first part's own CRC64NVME (moto reports none; it also reports
    back as the object's checksum whatever was declared, unchecked), and the full-object CRC64NVME it
    combined from the parts it verified equals the declared one (else it would have refused the
    complete)."""
    if not crc64nvme:
        return False
    if completed is not None:
        return completed.checksum_crc64nvme == crc64nvme
    if stored.checksum_crc64nvme != crc64nvme:
        return False
    return await storage.part_checksum(key, 1) is not None


def plan_of(upload: UploadRow) -> PartPlan:
    return PartPlan(size=upload.size, part_size=upload.part_size, part_count=upload.part_count)


def content_type_allowed(content_type: str, allowed: tuple[str, ...]) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return not allowed or any(fnmatch.fnmatchcase(base, pattern.lower()) for pattern in allowed)


def not_uploading(upload: UploadRow) -> UploadNotUploading:
    return UploadNotUploading(f"the upload is {upload.status}", upload_status=upload.status)


class ClaimWaiters:
    """Wakes the requests of this process that wait for a claim to end, as soon as it ends.

    Requests waiting on a claim held by another replica still poll (with backoff); those waiting on
    one held here are woken by ``ended`` instead of the next poll. One per application.
    """

    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, int]] = {}

    async def wait(self, upload_id: str, at_most: float) -> None:
        event, waiting = self._events.get(upload_id, (asyncio.Event(), 0))
        self._events[upload_id] = (event, waiting + 1)
        try:
            async with asyncio.timeout(at_most):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            current = self._events.get(upload_id)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._events[upload_id]
                else:
                    self._events[upload_id] = (event, current[1] - 1)

    def ended(self, upload_id: str) -> None:
        found = self._events.pop(upload_id, None)
        if found is not None:
            found[0].set()


def busy(upload: UploadRow) -> UploadBusy:
    return UploadBusy(f"another request holds this upload ({upload.status}); retry", retry_after=2)


class UploadService:
    def __init__(
        self, pool: Pool, storage: Storage, settings: Settings, waiters: ClaimWaiters | None = None
    ) -> None:
        self.pool = pool
        self.storage = storage
        self.settings = settings
        self.waiters = waiters or ClaimWaiters()
        self.start_limit = Limit(
            "upload_start", settings.upload_start_rate, 60, "uploads started by this user"
        )

    # -- start --------------------------------------------------------------------------------

    async def _admit(
        self, conn: Connection, who: Principal, log_id: str, size: int, content_type: str
    ) -> tuple[str, str]:
        """May ``who`` start an upload of ``size`` bytes of ``content_type`` into the log?
        ``(log id, case id)``."""
        found = await rows.log_with_role(conn, log_id, who.id)
        if found is None:
            raise NotFound("No such log")
        log_row_id, case_id, role = found
        require(who, role, CaseRole.CONTRIBUTOR, "log")
        if size > self.settings.max_file_size:
            raise FileTooLarge(
                f"{size} bytes is above the limit of {self.settings.max_file_size} bytes",
                max_file_size=self.settings.max_file_size,
            )
        if not content_type_allowed(content_type, self.settings.allowed_content_types):
            raise ContentTypeNotAllowed(f"content type {content_type!r} is not allowed")
        return log_row_id, case_id

    async def admit(
        self, who: Principal, log_id: str, size: int, content_type: str | None
    ) -> tuple[str, str, str]:
        """``_admit``, counted against the user's upload-start rate (form uploads, ``post.py``).
        ``(log id, case id, content type)``."""
        content_type = content_type or "application/octet-stream"
        async with self.pool.connect() as conn:
            log_row_id, case_id = await self._admit(conn, who, log_id, size, content_type)
            await RateLimits(conn).take(self.start_limit, who.id, utcnow())
        return log_row_id, case_id, content_type

    async def start(
        self,
        who: Principal,
        log_id: str,
        *,
        filename: str,
        size: int,
        content_type: str | None,
        sha256: str | None,
        part_size: int | None,
        crc64nvme: str | None = None,
        checksum_algorithm: str | None = None,
        idempotency_key: str | None = None,
        on_start: OnStart | None = None,
        on_forget: OnStart | None = None,
    ) -> UploadRow:
        """Start a multipart upload. A declared ``crc64nvme`` (or ``checksum_algorithm`` CRC64NVME,
        with the value given at complete) makes the store check the whole file: every part is then
        signed with its own CRC64NVME and complete passes the whole-file value.

        Crash-safe: the rows are committed (``creating``, with the key) before the store is asked, so
        a crash can leave a multipart upload only on a key the database knows (the reaper aborts it).
        ``idempotency_key``: the same start sent again (its answer was lost) returns the same upload.
        ``on_start`` runs inside the transaction that writes the rows (an upload link reserves its
        budget there; if it raises, nothing is written); ``on_forget`` inside the one that removes
        them again when the store refuses the start (the link gets its share back).
        """
        content_type = content_type or "application/octet-stream"
        algorithm = CRC64NVME if crc64nvme or checksum_algorithm == CRC64NVME else None
        # A retry that finds its first start removed meanwhile (it failed: 503) starts afresh.
        for _ in range(3):
            async with self.pool.connect() as conn:
                log_row_id, case_id = await self._admit(conn, who, log_id, size, content_type)
                try:
                    plan = plan_parts(size, self.settings.part_size, part_size)
                except ValueError as exc:
                    raise FileTooLarge(str(exc)) from exc
                wanted = (log_row_id, filename, size, content_type, sha256, crc64nvme, algorithm)
                if idempotency_key is not None:
                    existing = await rows.upload_by_idempotency_key(conn, who.id, idempotency_key)
                    if existing is not None:
                        again = await self._start_again(who, existing, wanted)
                        if again is None:
                            continue
                        return again
                await RateLimits(conn).take(self.start_limit, who.id, utcnow())
                now = utcnow()
                file_id = new_id()
                key = object_key(case_id, log_row_id, file_id, filename)
                file = FileRow(
                    file_id, log_row_id, case_id, filename, content_type, size, key, sha256, crc64nvme,
                    None, None, FileStatus.UPLOADING, who.id, now, now,
                )  # fmt: skip
                held = Claim(new_id(), UploadStatus.CREATING, state.new_claim_token())
                upload = UploadRow(
                    held.upload_id, file_id, log_row_id, case_id, None, filename, key, size, plan.part_size,
                    plan.part_count, content_type, algorithm, sha256, crc64nvme, UploadStatus.CREATING,
                    now + timedelta(seconds=self.settings.upload_ttl), held.token, now, who.id, now, now,
                    "multipart", idempotency_key,
                )  # fmt: skip
                try:
                    async with conn.transaction():
                        if on_start is not None:
                            await on_start(conn, upload)
                        await rows.insert_file(conn, file)
                        await rows.insert_upload(conn, upload)
                except IntegrityError:
                    if idempotency_key is None:
                        raise
                    existing = await rows.upload_by_idempotency_key(conn, who.id, idempotency_key)
                    if existing is None:
                        raise
                    again = await self._start_again(who, existing, wanted)  # a concurrent retry won
                    if again is None:
                        continue
                    return again
            failpoints.hit("after_start_row")
            return await self._create_in_store(who, held, upload, on_forget)
        raise UploadBusy("the start with this Idempotency-Key keeps failing; retry", retry_after=2)

    async def _start_again(
        self, who: Principal, existing: UploadRow, wanted: tuple[Any, ...]
    ) -> UploadRow | None:
        """The answer to a start sent again with its idempotency key: the same upload, once its
        first start finished (or, if that one died in ``creating``, after taking it over); ``None``
        if the first start failed and was removed while this one waited (start afresh)."""
        recorded = (
            existing.log_id, existing.filename, existing.size, existing.content_type, existing.sha256,
            existing.crc64nvme, existing.checksum_algorithm,
        )  # fmt: skip
        if recorded != wanted:
            raise IdempotencyKeyReused("this Idempotency-Key started another upload; use a new key")
        settled = tuple(s for s in UploadStatus if s != UploadStatus.CREATING)
        try:
            upload, held = await self.claim_when_free(
                existing, expect=(), to=UploadStatus.CREATING, settled=settled
            )
        except NotFound:
            return None  # the first start failed and was forgotten meanwhile: nothing of it is left
        if held is None:
            return upload
        # The first start died after its row was written: it may have left a multipart upload on the
        # key that no row records. Mark the key for the reaper's sweep before making our own.
        async with self.pool.connect() as conn:
            await conn.run(
                "UPDATE uploads SET needs_sweep = %s WHERE id = %s AND claim_token = %s",
                True,
                held.upload_id,
                held.token,
            )
        upload.needs_sweep = True
        return await self._create_in_store(who, held, upload)

    async def _create_in_store(
        self, who: Principal, held: Claim, upload: UploadRow, on_forget: OnStart | None = None
    ) -> UploadRow:
        """CreateMultipartUpload under a ``creating`` claim, then ``uploading`` with its id."""
        try:
            s3_upload_id = await self.storage.create_multipart(
                upload.key, upload.content_type, crc64nvme=upload.checksum_algorithm == CRC64NVME
            )
        except DomainError as exc:
            if isinstance(exc, StorageOutcomeUnknown) or upload.needs_sweep:
                # The store may hold a multipart upload on this key that no row will record: this
                # start's (its answer was lost) or a dead earlier start's. Removing the row would lose
                # the key; it stays ``creating``, marked for the sweep and free to take: a retry with
                # the idempotency key takes it over, or the reaper aborts what the key holds.
                await self._leave_to_reaper(held)
            else:
                # The store refused or was not reached: nothing of this start may remain (503 changes
                # nothing). If even this fails, the reaper forgets the row once its claim is stale.
                await self._forget_quietly(held, upload, on_forget)
            raise
        failpoints.hit("after_store_create")
        now = utcnow()
        async with self.pool.connect() as conn, conn.transaction():
            done = await state.created(conn, held, s3_upload_id, now)
            if done:
                await insert_event(
                    conn, who, "upload.started", "upload", upload.id, case_id=upload.case_id,
                    file_id=upload.file_id, filename=upload.filename, size=upload.size, log_id=upload.log_id,
                )  # fmt: skip
        if not done:  # slower than a retry that took the claim over: that one's upload stands
            await self._abort_quietly(upload.key, s3_upload_id)
            current = await self._load(upload.id)
            if current is None:
                raise NotFound("No such upload")
            if current.status == UploadStatus.CREATING:
                raise busy(current)
            return current
        upload.s3_upload_id, upload.status = s3_upload_id, UploadStatus.UPLOADING
        upload.claim_token = upload.claimed_at = None
        upload.updated_at = now
        return upload

    async def _leave_to_reaper(self, held: Claim) -> None:
        try:
            async with self.pool.connect() as conn:
                await state.abandon(conn, held, utcnow(), sweep=True)
        except (SQLAlchemyError, DomainError):
            # The claim goes stale; the reaper's undo of a dead start aborts whatever the key holds.
            log.warning("could not leave the failed start of upload %s to the reaper", held.upload_id)

    async def _forget_quietly(self, held: Claim, upload: UploadRow, on_forget: OnStart | None = None) -> None:
        try:
            async with self.pool.connect() as conn, conn.transaction():
                if await state.forget_creating(conn, held, upload.file_id) and on_forget is not None:
                    await on_forget(conn, upload)
        except (SQLAlchemyError, DomainError):
            log.warning("could not remove the failed start of upload %s; the reaper will", upload.id)

    async def insert_started(
        self, who: Principal, file: FileRow, upload: UploadRow, on_start: OnStart | None = None
    ) -> None:
        """Write a started upload's rows and its audit event in one transaction (with ``on_start``)."""
        async with self.pool.connect() as conn, conn.transaction():
            if on_start is not None:
                await on_start(conn, upload)
            await rows.insert_file(conn, file)
            await rows.insert_upload(conn, upload)
            await insert_event(
                conn, who, "upload.started", "upload", upload.id, case_id=upload.case_id,
                file_id=file.id, filename=file.filename, size=file.size, log_id=upload.log_id,
                kind=upload.kind,
            )  # fmt: skip

    async def _abort_quietly(self, key: str, s3_upload_id: str) -> None:
        try:
            await self.storage.abort_multipart(key, s3_upload_id)
        except DomainError:  # the store's own stale-upload expiry cleans up what this misses
            log.warning("could not abort multipart upload for %s after a failed start", key)

    # -- read ---------------------------------------------------------------------------------

    async def get(self, who: Principal, upload_id: str, need: CaseRole = CaseRole.CONTRIBUTOR) -> UploadRow:
        """An upload session belongs to whoever started it (and admins), while they keep ``need``
        in its case: removed from the case, they can no longer resume it. One query."""
        async with self.pool.connect() as conn:
            found = await rows.upload_with_role(conn, upload_id, who.id)
        if found is None or (not who.is_admin and found[0].created_by != who.id):
            raise NotFound("No such upload")
        require(who, found[1], need, "upload")
        return found[0]

    async def _load(self, upload_id: str) -> UploadRow | None:
        async with self.pool.connect() as conn:
            return await rows.upload_by_id(conn, upload_id)

    async def list_mine(
        self, who: Principal, status: str | None, log_id: str | None, page: PageRequest
    ) -> Page[UploadRow]:
        if status is not None and status not in set(UploadStatus):
            raise ValidationFailed(f"status must be one of {', '.join(UploadStatus)}")
        async with self.pool.connect() as conn:
            found = await rows.page_of_uploads(conn, who.id, status, log_id, page.after_id, page.limit)
        return page_of(found, page.limit)

    async def part_state(self, upload: UploadRow) -> PartState:
        """Live part state from ListParts while the upload is open; a finished one reports its end."""
        if upload.status == UploadStatus.COMPLETED:
            return PartState(uploaded=[], missing=[], bytes_uploaded=upload.size)
        if upload.status not in (UploadStatus.UPLOADING, UploadStatus.COMPLETING):
            return PartState(uploaded=[], missing=[], bytes_uploaded=0)
        if upload.kind == POST:  # one form upload: the object is there or it is not
            return PartState(uploaded=[], missing=[1], bytes_uploaded=0)
        try:
            stored = await self.storage.list_parts(upload.key, upload.store_upload_id)
        except StoredUploadGone as exc:
            if upload.status == UploadStatus.COMPLETING:  # the store finished; the row follows
                return PartState(uploaded=[], missing=[], bytes_uploaded=upload.size)
            raise UploadExpired("The store no longer holds this upload's parts") from exc
        plan = plan_of(upload)
        # A part whose size differs from the plan (a store that did not enforce the signed
        # Content-Length) must be sent again: it counts as missing, not as uploaded.
        good = sorted(
            (
                p
                for p in stored
                if p.part_number <= plan.part_count and p.size == plan.part_bytes(p.part_number)
            ),
            key=lambda p: p.part_number,
        )
        held = {p.part_number for p in good}
        missing = [n for n in range(1, plan.part_count + 1) if n not in held]
        return PartState(uploaded=good, missing=missing, bytes_uploaded=sum(p.size for p in good))

    # -- sign ---------------------------------------------------------------------------------

    async def sign_parts(
        self,
        who: Principal,
        upload_id: str,
        part_numbers: list[int],
        checksums_sha256: dict[str, str] | None = None,
        checksums_crc64nvme: dict[str, str] | None = None,
    ) -> SignedParts:
        """Part URLs signing each part's exact size, and its checksum: SHA-256 when given, or, for an
        upload whose store checks the whole file, the part's CRC64NVME, which is then required (the
        store refuses a part without it)."""
        upload = await self.get(who, upload_id)
        now = utcnow()
        if upload.status != UploadStatus.UPLOADING:
            raise not_uploading(upload)
        if upload.kind == POST:
            raise ValidationFailed(
                "this upload is one form POST (Uppy's /s3/params); it has no parts to sign"
            )
        if upload.expires_at <= now:
            raise UploadExpired("the upload expired; start a new one")
        plan = plan_of(upload)
        if not part_numbers:
            raise ValidationFailed("part_numbers must not be empty")
        if len(part_numbers) > MAX_PARTS_PER_CALL:
            raise ValidationFailed(f"at most {MAX_PARTS_PER_CALL} part numbers per call")
        bad = sorted({n for n in part_numbers if not 1 <= n <= plan.part_count})
        if bad:
            raise ValidationFailed(
                f"part numbers must be within 1..{plan.part_count}", invalid_part_numbers=bad[:100]
            )
        wanted = list(dict.fromkeys(part_numbers))
        wanted_set = set(wanted)
        full_object = upload.checksum_algorithm == CRC64NVME
        if full_object and checksums_sha256:
            raise ValidationFailed(
                "this upload's parts are signed with checksums_crc64nvme, not checksums_sha256"
            )
        if not full_object and checksums_crc64nvme:
            raise ValidationFailed(
                "checksums_crc64nvme needs an upload started with checksum_algorithm CRC64NVME"
            )
        field = "checksums_crc64nvme" if full_object else "checksums_sha256"
        checksums = (checksums_crc64nvme if full_object else checksums_sha256) or {}
        unknown = sorted(
            k for k in checksums if not (k.isascii() and k.isdigit()) or int(k) not in wanted_set
        )
        if unknown:
            raise ValidationFailed(
                f"{field} names parts that are not being signed", invalid_part_numbers=unknown[:100]
            )
        if full_object:
            without = [n for n in wanted if str(n) not in checksums]
            if without:
                raise ValidationFailed(
                    "this upload's store checks the whole file: send checksums_crc64nvme for every part",
                    invalid_part_numbers=without[:100],
                )
        ttl = min(self.settings.part_url_ttl, int((upload.expires_at - now).total_seconds()))
        ttl = max(ttl, 1)
        to_sign = [
            PartToSign(n, plan.part_bytes(n), None, checksums[str(n)])
            if full_object
            else PartToSign(n, plan.part_bytes(n), checksums.get(str(n)))
            for n in wanted
        ]
        signed = self.storage.presign_parts(upload.key, upload.store_upload_id, to_sign, ttl, now)
        parts = [
            SignedPart(part_number=p.part_number, url=s.url, headers=s.headers, size=p.size)
            for p, s in zip(to_sign, signed, strict=True)
        ]
        return SignedParts(parts=parts, expires_at=now + timedelta(seconds=ttl))

    # -- claims -------------------------------------------------------------------------------

    async def claim_when_free(
        self, upload: UploadRow, expect: Collection[UploadStatus], to: UploadStatus, settled: Collection[str]
    ) -> tuple[UploadRow, Claim | None]:
        """Claim ``upload`` from one of ``expect`` into ``to``, waiting while another worker holds
        it. Returns the row and the claim; or the row and ``None`` once it is in one of ``settled``
        (the caller answers from it). Raises ``UploadBusy`` when the other worker takes too long.
        The claim is committed before this returns."""
        deadline = anyio.current_time() + CLAIM_WAIT_SECONDS
        delay = _POLL_FIRST
        while True:
            if upload.status in settled:
                return upload, None
            now = utcnow()
            free = upload.status in expect
            stale = upload.status == to and state.is_stale(to, upload.claimed_at, now)
            if free or stale:
                async with self.pool.connect() as conn:
                    held = await state.claim(conn, upload.id, expect, to, now)
                if held is not None:
                    return upload, held
            elif upload.status not in state.HELD:
                raise not_uploading(upload)
            if anyio.current_time() > deadline:
                raise busy(upload)
            await self.waiters.wait(upload.id, delay)  # woken at once if the claim is held here
            delay = min(delay * 2, _POLL_MAX)
            reloaded = await self._load(upload.id)
            if reloaded is None:
                raise NotFound("No such upload")
            upload = reloaded

    async def hand_back(self, held: Claim) -> None:
        """Return a claim to ``uploading`` after a failure that is not a verdict. If even that fails,
        the claim goes stale and the next claim (or the reaper) takes it over."""
        try:
            async with self.pool.connect() as conn:
                await state.finish(conn, held, UploadStatus.UPLOADING, utcnow())
        except (SQLAlchemyError, DomainError):
            log.warning("could not hand back the %s claim on upload %s", held.status, held.upload_id)
        self.waiters.ended(held.upload_id)

    async def finish_claim(
        self,
        who: Principal | None,
        held: Claim,
        upload: UploadRow,
        to: UploadStatus,
        *,
        file_values: dict[str, Any] | None = None,
        upload_values: dict[str, Any] | None = None,
    ) -> bool:
        """Finish ``held`` with ``to`` and the file along, with its audit event, in one transaction.
        ``False`` if the claim was lost (then nothing was written)."""
        async with self.pool.connect() as conn, conn.transaction():
            done = await state.finish(
                conn,
                held,
                to,
                utcnow(),
                file_id=upload.file_id,
                file_values=file_values,
                upload_values=upload_values,
            )
            if done:
                await insert_event(
                    conn, who, f"upload.{to}", "upload", upload.id, case_id=upload.case_id,
                    file_id=upload.file_id, size=upload.size,
                )  # fmt: skip
        self.waiters.ended(upload.id)
        return done

    async def _after_lost_claim(self, upload_id: str) -> FileRow:
        """Another worker took over our claim and may have finished: answer with its result."""
        upload = await self._load(upload_id)
        if upload is None:
            raise NotFound("No such upload")
        if upload.status == UploadStatus.COMPLETED:
            return await self._file_of(upload)
        if upload.status in state.HELD:
            raise busy(upload)
        raise not_uploading(upload)

    # -- complete -----------------------------------------------------------------------------

    async def complete(
        self,
        who: Principal,
        upload_id: str,
        client_parts: list[tuple[int, str]] | None = None,
        *,
        sha256: str | None = None,
        crc64nvme: str | None = None,
    ) -> FileRow:
        """Finish the file. Whole-file checksums may be declared here when the client computed them
        while sending (they must agree with any declared at start)."""
        upload = await self.get(who, upload_id)
        if upload.kind == POST:
            return await self._settle_post(who, upload)
        declared = self._declared_checksums(upload, sha256, crc64nvme)
        if upload.status == UploadStatus.UPLOADING and upload.expires_at <= utcnow():
            raise UploadExpired("the upload expired; start a new one")
        upload, held = await self.claim_when_free(
            upload,
            expect=(UploadStatus.UPLOADING,),
            to=UploadStatus.COMPLETING,
            settled=(UploadStatus.COMPLETED, UploadStatus.ABORTED, UploadStatus.EXPIRED),
        )
        if held is None:
            if upload.status == UploadStatus.COMPLETED:
                return await self._completed_without(upload, declared)
            raise not_uploading(upload)
        try:
            return await self._complete_claimed(who, held, upload, client_parts, declared)
        except (UploadExpired, ObjectMismatch):
            raise  # verdicts, already recorded
        except Exception:
            # Verification failed, or the store or database failed mid-way. Handing the upload back
            # is safe even if the store did complete: the next complete finds the object (HeadObject).
            await self.hand_back(held)
            raise

    async def _completed_without(self, upload: UploadRow, declared: Declared) -> FileRow:
        """A complete sent again after the upload was completed: the file, with the checksums this
        call declares recorded if the file was finished without them (the reaper completed it after
        its completer died, before the client could declare them). A CRC64NVME is recorded only if
        the stored object agrees (store-verified when the store computed it); a recorded value never
        changes, so a client holding other bytes sees the difference."""
        file = await self._file_of(upload)
        values: dict[str, Any] = {}
        if declared.sha256 and file.sha256 is None:
            values["sha256"] = declared.sha256
        if declared.crc64nvme and file.crc64nvme is None:
            stored = await self.storage.head_object(upload.key)
            if stored is not None and stored.checksum_crc64nvme in (None, declared.crc64nvme):
                values["crc64nvme"] = declared.crc64nvme
                if await checked_by_store(self.storage, upload.key, declared.crc64nvme, None, stored):
                    values["verified_by"] = "store"
        if not values:
            return file
        async with self.pool.connect() as conn, conn.transaction():
            await state.fill_checksums(conn, upload.id, upload.file_id, values)
        return await self._file_of(upload)

    async def _settle_post(self, who: Principal, upload: UploadRow) -> FileRow:
        """Complete a form upload: it is done once its object exists (``post.py``)."""
        from .post import settle_post_upload

        status = await settle_post_upload(self.pool, self.storage, upload.id, who=who)
        if status == UploadStatus.COMPLETED:
            return await self._file_of(upload)
        if status == UploadStatus.UPLOADING:
            raise PartsMissing("the form upload has not reached the store yet", missing_parts=[1])
        raise UploadNotUploading(f"the upload is {status}", upload_status=status)

    @staticmethod
    def _declared_checksums(upload: UploadRow, sha256: str | None, crc64nvme: str | None) -> Declared:
        if sha256 and upload.sha256 and sha256 != upload.sha256:
            raise ValidationFailed("sha256 differs from the value declared when the upload started")
        if crc64nvme and upload.crc64nvme and crc64nvme != upload.crc64nvme:
            raise ValidationFailed("crc64nvme differs from the value declared when the upload started")
        if crc64nvme and upload.checksum_algorithm != CRC64NVME:
            raise ValidationFailed(
                "crc64nvme can be checked by the store only if the upload started with "
                "checksum_algorithm CRC64NVME"
            )
        declared = Declared(sha256=upload.sha256 or sha256, crc64nvme=upload.crc64nvme or crc64nvme)
        if upload.checksum_algorithm == CRC64NVME and declared.crc64nvme is None:
            raise ValidationFailed("this upload's store checks the whole file: send its crc64nvme")
        return declared

    async def _complete_claimed(
        self,
        who: Principal,
        held: Claim,
        upload: UploadRow,
        client_parts: list[tuple[int, str]] | None,
        declared: Declared,
    ) -> FileRow:
        try:
            completed: CompletedObject | None = await self._complete_in_store(upload, client_parts, declared)
        except StoredUploadGone:
            completed = None  # gone from the store: completed earlier (answer lost) or purged
        failpoints.hit("after_store_complete")  # crash tests: the store completed, the database not
        stored = await self.storage.head_object(upload.key)
        if stored is None:
            if completed is None:  # neither the multipart upload nor the object exists
                if not await self.finish_claim(who, held, upload, UploadStatus.EXPIRED):
                    return await self._after_lost_claim(upload.id)
                raise UploadExpired("the store no longer holds this upload; start a new one")
            raise StorageUnavailable("the completed object is not visible yet; retry")
        mismatch = None
        if stored.size != upload.size:
            mismatch = f"the stored object has {stored.size} bytes, {upload.size} were planned"
        elif (
            declared.crc64nvme
            and stored.checksum_crc64nvme
            and stored.checksum_crc64nvme != declared.crc64nvme
        ):
            # A store that did not check at complete (moto) still reports what it holds: never let
            # bytes that are not the declared file become available.
            mismatch = (
                f"the stored object's CRC64NVME is {stored.checksum_crc64nvme}, "
                f"{declared.crc64nvme} was declared"
            )
        if mismatch is not None:
            if not await self.finish_claim(who, held, upload, UploadStatus.ABORTED):
                return await self._after_lost_claim(upload.id)
            await self._delete_quietly(upload.key)
            raise ObjectMismatch(mismatch)
        verified = await checked_by_store(self.storage, upload.key, declared.crc64nvme, completed, stored)
        values = {"sha256": declared.sha256, "crc64nvme": declared.crc64nvme}
        etag = stored.etag or (completed.etag if completed else "")
        file_values = {**values, "etag": etag, "verified_by": "store" if verified else None}
        if not await self.finish_claim(
            who, held, upload, UploadStatus.COMPLETED, file_values=file_values, upload_values=values
        ):
            return await self._after_lost_claim(upload.id)
        # The file row now holds exactly this (its other columns were written with the upload's).
        return FileRow(
            upload.file_id, upload.log_id, upload.case_id, upload.filename, upload.content_type, upload.size,
            upload.key, declared.sha256, declared.crc64nvme, file_values["verified_by"], etag,
            FileStatus.AVAILABLE, upload.created_by, upload.created_at, utcnow(),
        )  # fmt: skip

    async def _delete_quietly(self, key: str) -> None:
        try:
            await self.storage.delete_object(key)
        except DomainError:
            log.warning("could not delete the mismatching object %s; it belongs to no file", key)

    async def _complete_in_store(
        self, upload: UploadRow, client_parts: list[tuple[int, str]] | None, declared: Declared
    ) -> CompletedObject:
        """Verify every planned part from ListParts, then CompleteMultipartUpload (passing the parts'
        checksums and the whole-file CRC64NVME when the store is to check it)."""
        plan = plan_of(upload)
        stored = {p.part_number: p for p in await self.storage.list_parts(upload.key, upload.store_upload_id)}
        missing = [n for n in range(1, plan.part_count + 1) if n not in stored]
        if missing:
            raise PartsMissing(
                f"{len(missing)} of {plan.part_count} parts are missing",
                missing_parts=missing[:1000],
            )
        wrong = [
            {"part_number": n, "expected_size": plan.part_bytes(n), "size": stored[n].size}
            for n in range(1, plan.part_count + 1)
            if stored[n].size != plan.part_bytes(n)
        ]
        if wrong:
            raise PartSizeMismatch(
                f"{len(wrong)} parts do not have their planned size; upload them again",
                parts=wrong[:1000],
            )
        if client_parts:
            differing = sorted(
                n for n, etag in client_parts if n not in stored or stored[n].etag != normalize_etag(etag)
            )
            if differing:
                raise PartEtagMismatch(
                    "the store holds different data for some parts", part_numbers=differing[:1000]
                )
        ordered = [stored[n] for n in range(1, plan.part_count + 1)]
        crc = declared.crc64nvme if upload.checksum_algorithm == CRC64NVME else None
        return await self.storage.complete_multipart(upload.key, upload.store_upload_id, ordered, crc)

    async def _file_of(self, upload: UploadRow) -> FileRow:
        async with self.pool.connect() as conn:
            file = await rows.file_by_id(conn, upload.file_id)
        if file is None:
            raise NotFound("No such file")
        return file

    # -- abort --------------------------------------------------------------------------------

    async def abort(self, who: Principal, upload_id: str) -> None:
        """Abort an open upload: afterwards it is ``aborted`` (idempotent). A completed or expired
        upload, or one the store had already completed, answers ``UploadNotUploading``."""
        upload = await self.get(who, upload_id)
        upload, held = await self.claim_when_free(
            upload,
            expect=(UploadStatus.UPLOADING,),
            to=UploadStatus.ABORTING,
            settled=(UploadStatus.COMPLETED, UploadStatus.ABORTED, UploadStatus.EXPIRED),
        )
        if held is None:
            if upload.status == UploadStatus.ABORTED:
                return
            raise not_uploading(upload)
        ended = await self.end_in_store(who, held, upload, UploadStatus.ABORTED)
        if ended != UploadStatus.ABORTED:
            raise UploadNotUploading(f"the upload is {ended}", upload_status=ended)

    async def end_in_store(
        self, who: Principal | None, held: Claim, upload: UploadRow, to: UploadStatus
    ) -> UploadStatus:
        """Abort the multipart upload under an ``aborting``/``expiring`` claim and finish with ``to``;
        the status the upload ended in. If the store holds the upload's object afterwards, the upload
        had been completed (a complete whose answer was lost, or a taken-over completer's late call):
        ``completed`` stands. The abort's own answer cannot tell (MinIO says 204 either way)."""
        try:
            if upload.s3_upload_id is not None:  # a form upload (kind "post") has none
                await self.storage.abort_multipart(upload.key, upload.s3_upload_id)
            stored = await self.storage.head_object(upload.key)
            if stored is not None and stored.size != upload.size and upload.kind == POST:
                # A form the store let through at the wrong size never becomes a file, nor stays.
                await self.storage.delete_object(upload.key)
                stored = None
        except Exception:
            await self.hand_back(held)
            raise
        if stored is not None and stored.size == upload.size:
            log.warning("upload %s was completed in the store before it could be %s", upload.id, to)
            to = UploadStatus.COMPLETED
        file_values = None
        if stored is not None and to == UploadStatus.COMPLETED:
            verified = await checked_by_store(self.storage, upload.key, upload.crc64nvme, None, stored)
            file_values = {"etag": stored.etag, "verified_by": "store" if verified else None}
        if not await self.finish_claim(who, held, upload, to, file_values=file_values):
            current = await self._load(upload.id)
            if current is None:
                raise NotFound("No such upload")
            return UploadStatus(current.status)
        return to
