"""The job: one file verified, identified and described, its results recorded once.

``Processor.run`` is the job function both queues call (``queue.py``). It takes the file's row with
a fresh token, streams the object to hash it (``verify.py``), has the sandbox identify and describe
it (``sandbox.py``), stores the preview under the file's own prefix, and settles the row together
with its audit events in one transaction that matches the token. What fails:

- for a passing reason (the store or the database away): the row goes back to ``pending`` with the
  error showing and the exception goes to the queue, which tries again with backoff; on the last
  attempt the row ends ``failed``;
- because of the file (a decompression bomb, a truncated video, a decoder that crashes or runs out
  of time or memory): the job ends ``failed`` at once with that error, keeping what it did find
  (the SHA-256, the detected type). Nothing is retried: the same bytes fail the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..audit.service import insert_event
from ..db import Database
from ..errors import DomainError
from ..models import utcnow
from ..s3http import S3Http, StoreError
from ..settings import Settings
from ..storage import translate_store_error
from ..uploads.queries import FILE_BY_ID, FileRecord
from ..uploads.start import content_type_allowed
from ..uploads.state import FileStatus
from . import preview_key_of
from .metrics import ProcessingMetrics
from .queue import Attempt
from .rows import CLAIM, DONE, FAIL_LOST, FAILED, RELEASE, SETTLE
from .sandbox import Limits, Sandbox, SandboxLost, examine
from .types import normalise, type_matches
from .verify import Digest, ObjectGone, StoreReadFailed, digest_url

log = logging.getLogger("upload_plane.processing")


class Objects:
    """What jobs need from the store, over its internal address: a presigned GET of an object (the
    hashing and the sandbox read it), and writing and deleting previews."""

    def __init__(self, http: S3Http) -> None:
        self.http = http

    def url(self, key: str, expires_in: int, version_id: str | None = None) -> str:
        """A GET of the recorded version when the file names one (what a download returns)."""
        params = [("versionId", version_id)] if version_id else []
        return self.http.signer.presign("GET", key, params=params, expires_in=min(expires_in, 7 * 24 * 3600))

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._send("PUT", key, headers={"Content-Type": content_type}, body=data)

    async def delete(self, key: str) -> None:
        await self._send("DELETE", key)

    async def _send(self, method: str, key: str, **request: Any) -> None:
        try:
            await self.http.request(method, key, **request)
        except StoreError as exc:
            raise translate_store_error(exc.code, exc.status) from exc


class Passing(Exception):
    """An attempt failed for a reason that may pass (the store or the database away)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class Outcome:
    digest: Digest | None = None
    detected_type: str | None = None
    media: dict[str, Any] = field(default_factory=dict)
    preview_key: str | None = None
    error: str | None = None
    error_kind: str | None = None


class Processor:
    def __init__(
        self, db: Database, objects: Objects, settings: Settings, metrics: ProcessingMetrics
    ) -> None:
        self.db, self.objects, self.settings, self.metrics = db, objects, settings, metrics
        self.sandbox = Sandbox()
        self.limits = Limits(
            max_pixels=settings.decoder_max_pixels,
            timeout=settings.decoder_timeout,
            memory=settings.decoder_memory,
            preview_size=settings.preview_size,
        )

    async def run(self, file_id: str, attempt: Attempt) -> None:
        token = secrets.token_hex(16)
        async with self.db.connect() as conn:
            if not await conn.run(CLAIM, file_id=file_id, token=token, now=utcnow()):
                return  # done already (a re-delivery, a second relay), or asked again meanwhile
            file = await conn.one(FILE_BY_ID, file_id=file_id)
        started = time.monotonic()
        if file is None or file.status != FileStatus.AVAILABLE:
            await self._settle(
                file_id, file, token, Outcome(error="the file is not available", error_kind="gone")
            )
            return
        try:
            outcome = await self._process(file)
        except Passing as exc:
            self.metrics.attempt_failed(exc.kind)
            if not attempt.final:
                await self._release(file_id, token, str(exc), exc.kind)
                raise
            outcome = Outcome(error=f"{exc} (after {attempt.number} attempts)", error_kind=exc.kind)
        if await self._settle(file_id, file, token, outcome):
            self.metrics.finished(
                outcome.error_kind, time.monotonic() - started, file.size if outcome.digest else 0
            )
        elif outcome.preview_key is not None:
            await self._drop_preview_if_deleted(file_id, outcome.preview_key)

    async def _drop_preview_if_deleted(self, file_id: str, key: str) -> None:
        """A delete that ran while the job did removed the file's objects before this preview was
        written: remove it too, or it outlives its file."""
        async with self.db.connect() as conn:
            if await conn.one(FILE_BY_ID, file_id=file_id) is not None:
                return  # asked again meanwhile: the newer job owns the preview
        try:
            await self.objects.delete(key)
        except DomainError:
            log.warning("could not remove the preview of deleted file %s (%s)", file_id, key)

    async def aclose(self) -> None:
        await self.sandbox.aclose()

    async def failed(self, file_id: str, error: str) -> None:
        """The queue gave up on the job (its last attempt timed out or raised)."""
        kind = "timeout" if "timeout" in error.lower() or "timed out" in error.lower() else "job"
        async with self.db.connect() as conn:
            await conn.run(FAIL_LOST, file_id=file_id, now=utcnow(), error=error[:2000], error_kind=kind)
        self.metrics.finished(kind, None, 0)

    async def _process(self, file: FileRecord) -> Outcome:
        url = self.objects.url(file.key, self.settings.processing_timeout + 300, file.version_id)
        try:
            digest = await asyncio.to_thread(digest_url, url, file.size, crc64nvme=bool(file.crc64nvme))
        except ObjectGone as exc:
            return Outcome(error=str(exc), error_kind="gone")
        except StoreReadFailed as exc:
            raise Passing(str(exc), "store") from exc
        try:
            examined = await examine(self.sandbox, url, file.size, self.limits)
        except SandboxLost as exc:
            raise Passing(str(exc), "crashed") from exc
        if examined.error_kind == "store":
            raise Passing(examined.error or "the store failed", "store")
        outcome = Outcome(
            digest=digest,
            detected_type=examined.detected_type,
            media=examined.media,
            error=examined.error,
            error_kind=examined.error_kind,
        )
        if examined.preview is not None:
            key = preview_key_of(file.key)
            try:
                await self.objects.put(key, examined.preview, "image/jpeg")
            except DomainError as exc:
                raise Passing(f"storing the preview failed: {exc.detail}", "store") from exc
            outcome.preview_key = key
        return outcome

    async def _release(self, file_id: str, token: str, error: str, kind: str) -> None:
        try:
            async with self.db.connect() as conn:
                await conn.run(
                    RELEASE, file_id=file_id, held=token, now=utcnow(), error=error, error_kind=kind
                )
        except SQLAlchemyError:
            log.warning("could not hand file %s back for a retry; the reconciler will", file_id)

    async def _settle(self, file_id: str, file: FileRecord | None, token: str, outcome: Outcome) -> bool:
        """Record the outcome and its audit events if the job still holds the row."""
        digest = outcome.digest
        matches = (
            type_matches(file.content_type, outcome.detected_type) if file and outcome.detected_type else None
        )
        refused = self._refused(outcome.detected_type)
        if refused and outcome.error is None:
            outcome.error, outcome.error_kind = refused, "type_not_allowed"
        crc_matches = (digest.crc64nvme == file.crc64nvme) if file and file.crc64nvme and digest else None
        async with self.db.connect() as conn, conn.transaction():
            settled = await conn.run(
                SETTLE, file_id=file_id, held=token, now=utcnow(),
                to=FAILED if outcome.error else DONE, error=outcome.error, error_kind=outcome.error_kind,
                sha256=digest.sha256 if digest else None, crc64nvme_matches=crc_matches,
                detected_type=outcome.detected_type, type_matches=matches,
                media=json.dumps(outcome.media) if outcome.media else None, preview_key=outcome.preview_key,
            )  # fmt: skip
            if not settled or file is None:
                return bool(settled)
            case_id = file.case_id
            if digest is not None:
                declared = file.sha256
                if (declared and declared != digest.sha256) or crc_matches is False:
                    await insert_event(
                        conn, None, "file.integrity_mismatch", "file", file.id, case_id=case_id,
                        declared_sha256=declared, computed_sha256=digest.sha256,
                        declared_crc64nvme=file.crc64nvme, computed_crc64nvme=digest.crc64nvme,
                    )  # fmt: skip
                else:
                    source = "client" if declared else "server"
                    await insert_event(
                        conn, None, "file.verified", "file", file.id, case_id=case_id,
                        sha256=digest.sha256, sha256_source=source, crc64nvme_checked=crc_matches is True,
                    )  # fmt: skip
            if matches is False or refused:
                await insert_event(
                    conn, None, "file.type_mismatch", "file", file.id, case_id=case_id,
                    declared_type=file.content_type, detected_type=outcome.detected_type,
                    refused=bool(refused),
                )  # fmt: skip
        return True

    def _refused(self, detected: str | None) -> str | None:
        allowed = self.settings.allowed_content_types
        if not (self.settings.refuse_detected_types and allowed and detected):
            return None
        if content_type_allowed(normalise(detected), allowed):
            return None
        return f"the detected type {detected} is not allowed (UPLOAD_PLANE_ALLOWED_CONTENT_TYPES)"
