"""The multipart upload flow: start, sign parts, report progress, complete, abort, download.

Order of effects, so that failures leave nothing half-written:
- start: CreateMultipartUpload first (an outage changes nothing), then the rows; if the rows cannot be
  written the multipart upload is aborted again.
- complete: the row is *claimed* (``uploading`` -> ``completing``, committed) so that exactly one
  request sends CompleteMultipartUpload; concurrent and repeated completes wait for and return the
  same file. If the store says the upload is gone, HeadObject decides whether an earlier complete
  succeeded (its response was lost) and the file is recovered.
- abort: AbortMultipartUpload first, then the rows.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from sqlalchemy import or_, update
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from ..cases.service import CaseService
from ..errors import (
    ContentTypeNotAllowed,
    FileNotAvailable,
    FileTooLarge,
    Forbidden,
    NotFound,
    ObjectMismatch,
    PartEtagMismatch,
    PartSizeMismatch,
    PartsMissing,
    StorageUnavailable,
    StoredUploadGone,
    UploadBusy,
    UploadExpired,
    UploadNotUploading,
    ValidationFailed,
)
from ..ids import new_id
from ..models import File, Upload, User, utcnow
from ..pagination import Page, PageRequest, paginate
from ..settings import Settings
from ..storage import Storage, StoredPart, normalize_etag
from .rules import FileStatus, PartPlan, UploadStatus, content_disposition, object_key, plan_parts

log = logging.getLogger("upload_plane.uploads")

MAX_PARTS_PER_CALL = 10_000
COMPLETING_STALE_AFTER = timedelta(minutes=2)
COMPLETE_WAIT_SECONDS = 60.0


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
class PartState:
    uploaded: list[StoredPart]
    missing: list[int]
    bytes_uploaded: int


@dataclass(frozen=True, slots=True)
class DownloadLink:
    url: str
    expires_at: datetime


def plan_of(upload: Upload) -> PartPlan:
    return PartPlan(size=upload.size, part_size=upload.part_size, part_count=upload.part_count)


def content_type_allowed(content_type: str, allowed: tuple[str, ...]) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return not allowed or any(fnmatch.fnmatchcase(base, pattern.lower()) for pattern in allowed)


class UploadService:
    def __init__(
        self, session: AsyncSession, storage: Storage, settings: Settings, cases: CaseService
    ) -> None:
        self.session = session
        self.storage = storage
        self.settings = settings
        self.cases = cases

    # -- start --------------------------------------------------------------------------------

    async def start(
        self,
        user: User,
        log_id: str,
        *,
        filename: str,
        size: int,
        content_type: str | None,
        sha256: str | None,
        part_size: int | None,
    ) -> Upload:
        log_row = await self.cases.get_log(user, log_id)
        if size > self.settings.max_file_size:
            raise FileTooLarge(
                f"{size} bytes is above the limit of {self.settings.max_file_size} bytes",
                max_file_size=self.settings.max_file_size,
            )
        content_type = content_type or "application/octet-stream"
        if not content_type_allowed(content_type, self.settings.allowed_content_types):
            raise ContentTypeNotAllowed(f"content type {content_type!r} is not allowed")
        try:
            plan = plan_parts(size, self.settings.part_size, part_size)
        except ValueError as exc:
            raise FileTooLarge(str(exc)) from exc

        file_id = new_id()
        key = object_key(log_row.case_id, log_row.id, file_id, filename)
        s3_upload_id = await self.storage.create_multipart(key, content_type)
        now = utcnow()
        file = File(
            id=file_id,
            log_id=log_row.id,
            case_id=log_row.case_id,
            filename=filename,
            content_type=content_type,
            size=size,
            key=key,
            sha256=sha256,
            status=FileStatus.UPLOADING,
            created_by=user.id,
            created_at=now,
            updated_at=now,
        )
        upload = Upload(
            file_id=file_id,
            log_id=log_row.id,
            case_id=log_row.case_id,
            s3_upload_id=s3_upload_id,
            filename=filename,
            key=key,
            size=size,
            part_size=plan.part_size,
            part_count=plan.part_count,
            content_type=content_type,
            status=UploadStatus.UPLOADING,
            expires_at=now + timedelta(seconds=self.settings.upload_ttl),
            created_by=user.id,
            created_at=now,
            updated_at=now,
        )
        try:
            self.session.add(file)
            await self.session.flush()
            self.session.add(upload)
            await self.session.flush()
        except DBAPIError:
            await self._abort_quietly(key, s3_upload_id)
            raise
        return upload

    async def _abort_quietly(self, key: str, s3_upload_id: str) -> None:
        try:
            await self.storage.abort_multipart(key, s3_upload_id)
        except Exception:  # the store's own stale-upload expiry cleans up what this misses
            log.warning("could not abort multipart upload for %s after a failed start", key)

    # -- read ---------------------------------------------------------------------------------

    async def get(self, user: User, upload_id: str) -> Upload:
        upload = await self.session.get(Upload, upload_id)
        if upload is None or (user.role != "admin" and upload.created_by != user.id):
            raise NotFound("No such upload")
        return upload

    async def list_mine(
        self, user: User, status: str | None, log_id: str | None, page: PageRequest
    ) -> Page[Upload]:
        query = select(Upload).where(Upload.created_by == user.id)
        if status is not None:
            if status not in set(UploadStatus):
                raise ValidationFailed(f"status must be one of {', '.join(UploadStatus)}")
            query = query.where(Upload.status == status)
        if log_id is not None:
            query = query.where(Upload.log_id == log_id)
        return await paginate(self.session, query, Upload, page)

    async def part_state(self, upload: Upload) -> PartState:
        """Live part state from ListParts; a finished upload reports its final state."""
        if upload.status == UploadStatus.COMPLETED:
            return PartState(uploaded=[], missing=[], bytes_uploaded=upload.size)
        if upload.status in (UploadStatus.ABORTED, UploadStatus.EXPIRED):
            return PartState(uploaded=[], missing=[], bytes_uploaded=0)
        try:
            stored = await self.storage.list_parts(upload.key, upload.s3_upload_id)
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
        user: User,
        upload_id: str,
        part_numbers: list[int],
        checksums_sha256: dict[str, str] | None = None,
    ) -> SignedParts:
        upload = await self.get(user, upload_id)
        now = utcnow()
        self._require_uploading(upload, now)
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
        checksums = checksums_sha256 or {}
        unknown = sorted(
            k for k in checksums if not (k.isascii() and k.isdigit()) or int(k) not in wanted_set
        )
        if unknown:
            raise ValidationFailed(
                "checksums_sha256 names parts that are not being signed", invalid_part_numbers=unknown[:100]
            )
        ttl = min(self.settings.part_url_ttl, int((upload.expires_at - now).total_seconds()))
        ttl = max(ttl, 1)
        plan_rows = [(n, plan.part_bytes(n), checksums.get(str(n))) for n in wanted]
        signed = self.storage.presign_parts(upload.key, upload.s3_upload_id, plan_rows, ttl, now)
        parts = [
            SignedPart(part_number=n, url=url, headers=headers, size=size)
            for (n, size, _), (url, headers) in zip(plan_rows, signed, strict=True)
        ]
        return SignedParts(parts=parts, expires_at=now + timedelta(seconds=ttl))

    def _require_uploading(self, upload: Upload, now: datetime) -> None:
        if upload.status != UploadStatus.UPLOADING:
            raise UploadNotUploading(f"the upload is {upload.status}", upload_status=upload.status)
        if upload.expires_at <= now:
            raise UploadExpired("the upload expired; start a new one")

    # -- complete -----------------------------------------------------------------------------

    async def complete(
        self, user: User, upload_id: str, client_parts: list[tuple[int, str]] | None = None
    ) -> File:
        upload = await self.get(user, upload_id)
        deadline = anyio.current_time() + COMPLETE_WAIT_SECONDS
        while True:
            now = utcnow()
            if upload.status == UploadStatus.COMPLETED:
                return await self._file_of(upload)
            if upload.status in (UploadStatus.ABORTED, UploadStatus.EXPIRED):
                raise UploadNotUploading(f"the upload is {upload.status}", upload_status=upload.status)
            if upload.status == UploadStatus.UPLOADING:
                if upload.expires_at <= now:
                    raise UploadExpired("the upload expired; start a new one")
                if await self._claim(upload.id, UploadStatus.UPLOADING, now):
                    break
            elif (
                upload.completing_since is None or upload.completing_since < now - COMPLETING_STALE_AFTER
            ) and await self._claim(upload.id, UploadStatus.COMPLETING, now):
                break  # the earlier completer died; take over and reconcile
            if anyio.current_time() > deadline:
                raise UploadBusy("another request is still completing this upload; retry")
            await anyio.sleep(0.05)
            upload = await self._reload(upload.id)
        upload = await self._reload(upload.id)
        try:
            return await self._finish_claimed(upload, client_parts)
        except (UploadExpired, ObjectMismatch):
            raise  # terminal, already recorded
        except Exception:
            # Verification failed, or the store or database failed mid-way. Handing the upload back
            # is safe even if the store did complete: the next complete finds the object (HeadObject).
            await self._release_quietly(upload.id)
            raise

    async def _claim(self, upload_id: str, current: UploadStatus, now: datetime) -> bool:
        """Move the row to ``completing`` if it is still ``current``; committed, so others see it."""
        stmt = update(Upload).where(col(Upload.id) == upload_id, col(Upload.status) == current)
        if current == UploadStatus.COMPLETING:
            cutoff = now - COMPLETING_STALE_AFTER
            stmt = stmt.where(
                or_(col(Upload.completing_since).is_(None), col(Upload.completing_since) < cutoff)
            )
        result = await self.session.exec(
            stmt.values(status=UploadStatus.COMPLETING, completing_since=now, updated_at=now)
        )
        await self.session.commit()
        return bool(result.rowcount == 1)

    async def _release_quietly(self, upload_id: str) -> None:
        """Hand a claimed upload back to ``uploading``; if even that fails, the stale-claim takeover
        in ``complete`` recovers it after ``COMPLETING_STALE_AFTER``."""
        try:
            await self.session.rollback()
            stmt = (
                update(Upload)
                .where(col(Upload.id) == upload_id, col(Upload.status) == UploadStatus.COMPLETING)
                .values(status=UploadStatus.UPLOADING, completing_since=None, updated_at=utcnow())
            )
            await self.session.exec(stmt)
            await self.session.commit()
        except Exception:
            log.warning("could not release the completing claim on upload %s", upload_id)

    async def _reload(self, upload_id: str) -> Upload:
        await self.session.commit()  # end the snapshot so the next read sees other transactions
        stmt = select(Upload).where(Upload.id == upload_id).execution_options(populate_existing=True)
        upload = (await self.session.exec(stmt)).first()
        if upload is None:
            raise NotFound("No such upload")
        return upload

    async def _finish_claimed(self, upload: Upload, client_parts: list[tuple[int, str]] | None) -> File:
        try:
            etag = await self._complete_in_store(upload, client_parts)
        except StoredUploadGone:
            etag = None  # gone from the store: completed earlier (response lost) or purged
        stored = await self.storage.head_object(upload.key)
        if stored is None:
            if etag is None:  # neither the multipart upload nor the object exists
                await self._mark_dead(upload, UploadStatus.EXPIRED)
                raise UploadExpired("the store no longer holds this upload; start a new one")
            raise StorageUnavailable("the completed object is not visible yet; retry")
        if stored.size != upload.size:
            await self._mark_dead(upload, UploadStatus.ABORTED)
            raise ObjectMismatch(f"the stored object has {stored.size} bytes, {upload.size} were planned")
        file = await self._file_of(upload)
        now = utcnow()
        file.status = FileStatus.AVAILABLE
        file.etag = stored.etag or etag
        file.updated_at = now
        upload.status = UploadStatus.COMPLETED
        upload.completing_since = None
        upload.updated_at = now
        self.session.add(file)
        self.session.add(upload)
        await self.session.flush()
        return file

    async def _complete_in_store(self, upload: Upload, client_parts: list[tuple[int, str]] | None) -> str:
        """Verify every planned part from ListParts, then CompleteMultipartUpload."""
        plan = plan_of(upload)
        stored = {p.part_number: p for p in await self.storage.list_parts(upload.key, upload.s3_upload_id)}
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
        ordered = [(n, stored[n].etag) for n in range(1, plan.part_count + 1)]
        return await self.storage.complete_multipart(upload.key, upload.s3_upload_id, ordered)

    async def _mark_dead(self, upload: Upload, status: UploadStatus) -> None:
        file = await self._file_of(upload)
        now = utcnow()
        upload.status = status
        upload.completing_since = None
        upload.updated_at = now
        file.status = FileStatus.FAILED
        file.updated_at = now
        self.session.add(upload)
        self.session.add(file)
        await self.session.commit()

    async def _file_of(self, upload: Upload) -> File:
        file = await self.session.get(File, upload.file_id)
        if file is None:
            raise NotFound("No such file")
        return file

    # -- abort --------------------------------------------------------------------------------

    async def abort(self, user: User, upload_id: str) -> None:
        upload = await self.get(user, upload_id)
        if upload.status == UploadStatus.ABORTED:
            return
        if upload.status != UploadStatus.UPLOADING:
            raise UploadNotUploading(f"the upload is {upload.status}", upload_status=upload.status)
        await self.storage.abort_multipart(upload.key, upload.s3_upload_id)
        file = await self._file_of(upload)
        now = utcnow()
        upload.status = UploadStatus.ABORTED
        upload.updated_at = now
        file.status = FileStatus.FAILED
        file.updated_at = now
        self.session.add(upload)
        self.session.add(file)
        await self.session.flush()

    # -- delete -------------------------------------------------------------------------------

    async def delete_file(self, user: User, file_id: str) -> None:
        """Admins only. The store goes first (an outage changes nothing), then the rows: an open
        upload is aborted, a finished object deleted; a repeated delete after a failure finishes it."""
        file = await self.cases.get_file(user, file_id)
        if user.role != "admin":
            raise Forbidden("only administrators may delete evidence")
        upload = (await self.session.exec(select(Upload).where(Upload.file_id == file.id))).first()
        if upload is not None and upload.status in (UploadStatus.UPLOADING, UploadStatus.COMPLETING):
            await self.storage.abort_multipart(upload.key, upload.s3_upload_id)
        await self.storage.delete_object(file.key)
        if upload is not None:
            await self.session.delete(upload)
            await self.session.flush()
        await self.session.delete(file)
        await self.session.flush()

    # -- download -----------------------------------------------------------------------------

    async def download_link(self, user: User, file_id: str) -> DownloadLink:
        file = await self.cases.get_file(user, file_id)
        if file.status != FileStatus.AVAILABLE:
            raise FileNotAvailable(f"the file is {file.status}", file_status=file.status)
        ttl = self.settings.download_url_ttl
        url = self.storage.presign_get(file.key, content_disposition(file.filename), ttl)
        return DownloadLink(url=url, expires_at=utcnow() + timedelta(seconds=ttl))
