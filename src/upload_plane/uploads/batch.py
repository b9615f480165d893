"""Batches: many files started, or completed, by one request (a phone extraction, a CCTV export).

**Start** (up to ``MAX_BATCH`` files into one log). Each file is admitted as a single start would be
(the caller's role in the log once; then per file its name and fields, size and type limits, the
start rate counted per file, an upload link's budget). A file of at most one part becomes a ``put``
upload (``kinds.SINGLE_PUT``: one conditional PUT URL, no multipart upload): all of the batch's are
written in one transaction — their file rows, upload rows and ``upload.started`` events each in one
multi-row INSERT — and their URLs signed in one pass. A larger file is started as any multipart
upload (``start.start_upload``, with its store call), its plan answered (with its first part URLs
when its parts need no checksum of their own). A file refused is answered with why; nothing of it
is written, and the others go on.

With an ``Idempotency-Key``, each file of the batch gets a key derived from it and its place in the
batch, so the same batch sent again (its answer was lost; the client was killed) answers the same
uploads, with fresh URLs for those still open, and creates nothing twice; a file at that place that
is not the same file is refused (``IDEMPOTENCY_KEY_REUSED``).

**Complete** (up to ``MAX_BATCH`` uploads). Each is checked as a single complete would be (the
caller's, still a contributor, checksums consistent). The ``put`` uploads still open are claimed in
one statement (each row's own compare-and-set, under one token), their objects looked at (HEAD,
concurrently), and every ending recorded in one transaction by the completion step
(``complete.complete_claimed`` -> ``finish.finish_many``); those not yet in the store are handed back
(``PARTS_MISSING``). Anything else (a multipart upload, one another request holds) goes through the
single complete. Completing is idempotent: a completed upload answers its file again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from ..audit.service import INSERT_EVENT, event_values
from ..auth.principal import Principal
from ..cases.access import CaseRole, log_in_case, require
from ..db import Connection
from ..errors import DomainError, IdempotencyKeyReused, NotFound, UploadBusy, ValidationFailed
from ..links import service as links
from ..links.service import LinkGrant
from ..models import utcnow
from ..ratelimit import RateLimits
from ..storage import CRC64NVME, SignedUrl
from .complete import Claimed, complete_claimed, complete_upload, declared_checksums
from .context import Uploads
from .kinds import SINGLE_PUT, kind_for, kind_of, object_to_sign
from .queries import (
    FILES_BY_ID,
    INSERT_FILE,
    INSERT_UPLOAD,
    UPLOADS_BY_IDEMPOTENCY_KEYS,
    UPLOADS_WITH_ROLE_AND_LINK,
    FileRecord,
    UploadRecord,
)
from .rules import MAX_BATCH
from .sign import SignedPart, sign_parts
from .start import NewUpload, OnStart, check_file, new_rows, plan_for, same_start, start_limit, start_upload
from .state import UploadStatus, claim_many

#: Part URLs answered with a large file's plan (those whose parts need no checksum of their own).
FIRST_PARTS = 8
#: Large files started at once (each is a CreateMultipartUpload).
MULTIPART_CONCURRENCY = 8
#: A single-PUT URL expires at least this long before its upload does, so that a PUT sent just
#: before its URL expired has landed when the reaper looks for the object.
PUT_GRACE = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Started:
    """A file of the batch, started (or found started, when the batch is sent again)."""

    upload: UploadRecord
    put: SignedUrl | None = None  # the one PUT of a ``put`` upload still open
    parts: list[SignedPart] = field(default_factory=list)  # a multipart upload's first part URLs
    expires_at: datetime | None = None  # when these URLs expire


StartAnswer = Started | DomainError


@dataclass(frozen=True, slots=True)
class ToComplete:
    upload_id: str
    sha256: str | None = None
    crc64nvme: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """One upload of a batch complete: its file, or why not."""

    upload_id: str
    file: FileRecord | None = None
    error: DomainError | None = None


# -- start -------------------------------------------------------------------------------------------


def item_key(idempotency_key: str, index: int) -> str:
    """The idempotency key of the file at ``index`` of a batch sent with ``idempotency_key``."""
    return f"batch:{hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]}:{index}"


async def start_batch(
    ctx: Uploads,
    who: Principal,
    log_id: str,
    files: Sequence[NewUpload | DomainError],
    *,
    idempotency_key: str | None = None,
    link: LinkGrant | None = None,
) -> list[StartAnswer]:
    """Start every file of ``files`` (an entry already refused by the caller stays refused); one
    answer per file, in order. Raises only for the whole batch: too many files, a log the caller may
    not upload into, an outage."""
    if len(files) > MAX_BATCH:
        raise ValidationFailed(f"at most {MAX_BATCH} files per batch")
    async with ctx.db.connect() as conn:
        found_log, case_id = await log_in_case(conn, who, log_id, CaseRole.CONTRIBUTOR)
    keys = [item_key(idempotency_key, i) if idempotency_key else None for i in range(len(files))]
    return await _BatchStart(ctx, who, found_log, case_id, files, keys, link).run()


@dataclass
class _BatchStart:
    ctx: Uploads
    who: Principal
    log_id: str
    case_id: str
    files: Sequence[NewUpload | DomainError]
    keys: list[str | None]  # each file's idempotency key (derived from the batch's)
    link: LinkGrant | None
    answers: dict[int, StartAnswer] = field(default_factory=dict)

    def wanted(self, i: int) -> NewUpload:
        wanted = self.files[i]
        assert isinstance(wanted, NewUpload)
        return wanted

    async def run(self) -> list[StartAnswer]:
        puts: list[int] = []
        multipart: list[int] = []
        for i, wanted in enumerate(self.files):
            if isinstance(wanted, DomainError):
                self.answers[i] = wanted
                continue
            try:
                check_file(self.ctx, wanted.size, wanted.content_type or "application/octet-stream")
                plan = plan_for(self.ctx, wanted)
            except DomainError as exc:
                self.answers[i] = exc
                continue
            kind = kind_for(plan, wanted.checksum_algorithm, wanted.crc64nvme)
            (puts if kind.one_put else multipart).append(i)
        await self.start_puts(puts)
        gate = asyncio.Semaphore(MULTIPART_CONCURRENCY)

        async def gated(i: int) -> None:
            async with gate:
                await self.start_multipart(i)

        await asyncio.gather(*(gated(i) for i in multipart))
        return _with_put_urls(self.ctx, [self.answers[i] for i in range(len(self.files))])

    async def start_multipart(self, i: int) -> None:
        """A large file: a multipart upload as any (its own transaction and store call)."""
        wanted = self.wanted(i)
        try:
            upload = await start_upload(
                self.ctx, self.who, self.log_id, wanted, idempotency_key=self.keys[i],
                on_start=_reserve(self.link, wanted.size),
            )  # fmt: skip
            self.answers[i] = await _with_first_parts(self.ctx, self.who, upload)
        except DomainError as exc:
            self.answers[i] = exc

    async def start_puts(self, indexes: list[int]) -> None:
        """The small files: those a send of this batch started before answered again, the others
        counted against the start rate and written in one transaction."""
        for _ in range(3):  # a concurrent send of the same batch wrote the same keys: look again
            fresh = await self.found_again(indexes)
            if not fresh:
                return
            try:
                await self.write_puts(fresh)
                return
            except IntegrityError:
                if not any(self.keys[i] for i in fresh):
                    raise
        raise UploadBusy("this batch is being started by another request; send it again", retry_after=2)

    async def found_again(self, indexes: list[int]) -> list[int]:
        """Answer the files of ``indexes`` that a send of this batch started before; the others."""
        keys = [k for i in indexes if (k := self.keys[i]) is not None]
        if not keys:
            return list(indexes)
        async with self.ctx.db.connect() as conn:
            found = {
                u.idempotency_key: u
                for u in await conn.all(UPLOADS_BY_IDEMPOTENCY_KEYS, user_id=self.who.id, keys=keys)
            }
        fresh = []
        for i in indexes:
            existing = found.get(self.keys[i])
            if existing is None:
                fresh.append(i)
            elif not same_start(existing, self.log_id, self.wanted(i)):
                self.answers[i] = IdempotencyKeyReused(
                    "this Idempotency-Key started another file at this place of the batch"
                )
            else:
                self.answers[i] = Started(existing)
        return fresh

    async def write_puts(self, indexes: list[int]) -> None:
        ctx, now = self.ctx, utcnow()
        async with ctx.db.connect() as conn:
            limit = start_limit(ctx)
            fits = await RateLimits(conn).take_up_to(limit, self.who.id, now, len(indexes))
            for i in indexes[fits:]:
                self.answers[i] = RateLimits.refusal(limit, now)
            rows = []
            for i in indexes[:fits]:
                wanted = self.wanted(i)
                file, upload = new_rows(
                    ctx, self.who, self.log_id, self.case_id, wanted, plan_for(ctx, wanted),
                    kind=SINGLE_PUT.name, status=UploadStatus.UPLOADING,
                    expires_in=timedelta(seconds=ctx.settings.upload_ttl), idempotency_key=self.keys[i],
                )  # fmt: skip
                rows.append((i, file, upload))
            refused: dict[int, StartAnswer] = {}
            async with conn.transaction():
                if self.link is not None:  # each file's share of the budget: its own compare-and-set
                    for i, _, upload in rows:
                        try:
                            await links.reserve(conn, self.link.id, upload.id, upload.size, now)
                        except DomainError as exc:
                            refused[i] = exc
                written = [(i, file, upload) for i, file, upload in rows if i not in refused]
                await conn.run_many(INSERT_FILE, [file.values() for _, file, _ in written])
                await conn.run_many(INSERT_UPLOAD, [upload.values() for _, _, upload in written])
                await conn.run_many(INSERT_EVENT, [_started_event(self.who, u) for _, _, u in written])
        self.answers.update(refused)
        self.answers.update({i: Started(upload) for i, _, upload in written})


def _reserve(link: LinkGrant | None, size: int) -> OnStart | None:
    """For a link: take an upload's share of its budget with its rows (see ``links.reserve``)."""
    if link is None:
        return None

    async def reserve(conn: Connection, upload: UploadRecord) -> None:
        await links.reserve(conn, link.id, upload.id, size, utcnow())

    return reserve


def _started_event(who: Principal, upload: UploadRecord) -> dict[str, object]:
    return event_values(
        who, "upload.started", "upload", upload.id, case_id=upload.case_id, file_id=upload.file_id,
        filename=upload.filename, size=upload.size, log_id=upload.log_id, kind=upload.kind, batch=True,
    )  # fmt: skip


async def _with_first_parts(ctx: Uploads, who: Principal, upload: UploadRecord) -> Started:
    """A multipart upload and, when its parts need no checksum of their own, its first part URLs
    (a CRC64NVME upload signs each part with the part's checksum: the client asks for those)."""
    if upload.status != UploadStatus.UPLOADING or upload.checksum_algorithm == CRC64NVME:
        return Started(upload)
    numbers = list(range(1, min(upload.part_count, FIRST_PARTS) + 1))
    signed = await sign_parts(ctx, who, upload.id, numbers)
    return Started(upload, parts=signed.parts, expires_at=signed.expires_at)


def _with_put_urls(ctx: Uploads, answers: list[StartAnswer]) -> list[StartAnswer]:
    """Sign, in one pass, the PUT URL of every ``put`` upload that is still open."""
    now = utcnow()
    open_ = [
        (n, a, _put_ttl(ctx, a.upload, now))
        for n, a in enumerate(answers)
        if isinstance(a, Started) and kind_of(a.upload).one_put and a.upload.status == UploadStatus.UPLOADING
    ]
    signable = [(n, a, ttl) for n, a, ttl in open_ if ttl > 0]
    by_ttl: dict[int, list[tuple[int, Started]]] = {}
    for n, a, ttl in signable:
        by_ttl.setdefault(ttl, []).append((n, a))
    out = list(answers)
    for ttl, group in by_ttl.items():
        objects = [object_to_sign(a.upload, ctx.settings.lock, now) for _, a in group]
        urls = ctx.storage.presign_puts(objects, ttl, now)
        expires_at = now + timedelta(seconds=ttl)
        for (n, a), url in zip(group, urls, strict=True):
            out[n] = Started(a.upload, put=url, expires_at=expires_at)
    return out


def _put_ttl(ctx: Uploads, upload: UploadRecord, now: datetime) -> int:
    """How long a fresh PUT URL of ``upload`` may live: ``PART_URL_TTL``, ending ``PUT_GRACE``
    (at most half of ``UPLOAD_TTL``) before the upload does; 0 if it can no longer be signed."""
    grace = min(PUT_GRACE, timedelta(seconds=ctx.settings.upload_ttl) / 2)
    left = int((upload.expires_at - grace - now).total_seconds())
    return max(0, min(ctx.settings.part_url_ttl, left))


# -- complete ----------------------------------------------------------------------------------------


async def complete_batch(
    ctx: Uploads, who: Principal, wanted: Sequence[ToComplete], *, link: LinkGrant | None = None
) -> list[Completion]:
    """Complete every upload of ``wanted``; one answer per upload, in order (see the module
    docstring). Through a link, only the uploads started through that link are found."""
    if len(wanted) > MAX_BATCH:
        raise ValidationFailed(f"at most {MAX_BATCH} uploads per batch")
    ids = list(dict.fromkeys(w.upload_id for w in wanted))
    if not ids:
        return []
    async with ctx.db.connect() as conn:
        found = {
            row[0].id: row
            for row in await conn.all(UPLOADS_WITH_ROLE_AND_LINK, upload_ids=ids, user_id=who.id)
        }
    answers: dict[str, Completion] = {}
    done_before: list[UploadRecord] = []
    bulk: list[UploadRecord] = []
    single: list[ToComplete] = []
    for item in {w.upload_id: w for w in wanted}.values():
        try:
            upload = _allowed(who, found.get(item.upload_id), link)
            declared = declared_checksums(upload, item.sha256, item.crc64nvme)
        except DomainError as exc:
            answers[item.upload_id] = Completion(item.upload_id, error=exc)
            continue
        unchanged = (declared.sha256, declared.crc64nvme) == (upload.sha256, upload.crc64nvme)
        if upload.status == UploadStatus.COMPLETED:
            done_before.append(upload)
        elif upload.status == UploadStatus.UPLOADING and kind_of(upload).one_put and unchanged:
            bulk.append(upload)
        else:
            single.append(item)
    answers.update(await _files_of(ctx, done_before))
    claimed, busy = await _claim(ctx, bulk)
    for outcome in await complete_claimed(ctx, who, claimed):
        answers[outcome.upload.id] = Completion(outcome.upload.id, outcome.file, outcome.error)
    single += [ToComplete(u.id) for u in busy]
    answers.update(await _complete_each(ctx, who, single))
    return [answers[w.upload_id] for w in wanted]


def _allowed(
    who: Principal, found: tuple[UploadRecord, str | None, str | None] | None, link: LinkGrant | None
) -> UploadRecord:
    """The upload, if the caller may complete it: as ``read.get_upload`` decides, and through a
    link, only one that came through it."""
    if found is None:
        raise NotFound("No such upload")
    upload, role, link_id = found
    if link is not None and link_id != link.id:
        raise NotFound("No such upload")
    if not who.is_admin and upload.created_by != who.id:
        raise NotFound("No such upload")
    require(who, role, CaseRole.CONTRIBUTOR, "upload")
    return upload


async def _files_of(ctx: Uploads, uploads: list[UploadRecord]) -> dict[str, Completion]:
    if not uploads:
        return {}
    async with ctx.db.connect() as conn:
        files = {f.id: f for f in await conn.all(FILES_BY_ID, file_ids=[u.file_id for u in uploads])}
    return {
        u.id: Completion(u.id, file=files[u.file_id])
        if u.file_id in files
        else Completion(u.id, error=NotFound("No such file"))
        for u in uploads
    }


async def _claim(ctx: Uploads, uploads: list[UploadRecord]) -> tuple[list[Claimed], list[UploadRecord]]:
    """Claim ``uploads`` for completing, in one statement; the claimed, and those another request
    holds (they take the single complete's way, which waits for it)."""
    if not uploads:
        return [], []
    now = utcnow()
    async with ctx.db.connect() as conn:
        claims = {
            c.upload_id: c
            for c in await claim_many(
                conn, [u.id for u in uploads], UploadStatus.UPLOADING, UploadStatus.COMPLETING, now
            )
        }
    claimed, busy = [], []
    for upload in uploads:
        held = claims.get(upload.id)
        if held is None:
            busy.append(upload)
            continue
        upload.status, upload.claim_token, upload.claimed_at = held.status, held.token, now
        claimed.append(Claimed(held, upload))
    return claimed, busy


async def _complete_each(ctx: Uploads, who: Principal, items: list[ToComplete]) -> dict[str, Completion]:
    gate = asyncio.Semaphore(MULTIPART_CONCURRENCY)

    async def one(item: ToComplete) -> Completion:
        async with gate:
            try:
                file = await complete_upload(
                    ctx, who, item.upload_id, sha256=item.sha256, crc64nvme=item.crc64nvme
                )
                return Completion(item.upload_id, file=file)
            except DomainError as exc:
                return Completion(item.upload_id, error=exc)

    return {c.upload_id: c for c in await asyncio.gather(*(one(item) for item in items))}
