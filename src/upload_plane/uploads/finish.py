"""The completion step: how an upload ended, recorded once, with everything that goes with it.

Every path that ends an upload — a client's complete or abort (API, batches and Uppy), a form
upload's settle, the reaper's expiry and its reconcile of a dead worker's claim — decides the ending
the same way (``judge``: what the store holds against what was planned and declared) and records it
with ``finish`` (one upload) or ``finish_many`` (a batch, one transaction), the only writers of a
final status; ``finish`` is ``finish_many`` of one. In one transaction, for every upload:

1. moves the upload from its claim to ``completed``, ``aborted`` or ``expired`` (compare-and-set on
   the claim's token: an upload whose claim was lost records nothing);
2. moves the file along (``available`` with its ETag and verification, or ``failed``);
3. writes the audit event ``upload.<status>``;
4. gives an upload link's share of its budget back when the upload did not complete, once;
5. asks for the file's processing when it completed (``processing/outbox.py``: a ``pending``
   processing row marked for the relay, which puts it on the job queue after the commit).

A batch costs a few statements, not a few per upload: one UPDATE per group of uploads held under one
claim token and ending alike, the files' rows in one call to the driver, one INSERT of all the
events. If some of a group's claims were lost (taken over once stale), the transaction is rolled
back and each upload is recorded on its own compare-and-set instead. One upload on MySQL/MariaDB
moves its upload and its file in one UPDATE of both rows (steps 1 and 2, both compare-and-sets).

A start that never reached the store is forgotten (``forget``: its rows removed, a link's share
given back) and a deleted file removed (``remove``) — the two ways rows end without a final status.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..audit.service import INSERT_EVENT, event_values, insert_event
from ..auth.principal import Principal
from ..db import Connection
from ..errors import DomainError, StorageRejected
from ..ids import new_id
from ..links import service as links
from ..models import utcnow
from ..processing import outbox, preview_key_of
from ..processing.rows import DELETE_PROCESSING
from ..statements import Statement
from ..storage import CompletedObject, Storage, StoredObject
from .context import Uploads
from .kinds import kind_of, sha256_b64
from .queries import ADD_PURGE, DELETE_FILE, F, FileRecord, U, UploadRecord
from .state import (
    FILE_STATUS_FOR,
    REMOVED_FROM,
    Claim,
    FileStatus,
    TransitionError,
    UploadStatus,
    check_upload_transition,
)

log = logging.getLogger("upload_plane.uploads")


@dataclass(frozen=True, slots=True)
class Ending:
    """How an upload ends, and what its file then records."""

    status: UploadStatus  # completed, aborted or expired
    etag: str | None = None
    verified_by: str | None = None  # "store": the store checked the declared CRC64NVME
    version_id: str | None = None  # the store's version of the recorded bytes
    reason: str | None = None  # why it did not complete (the audit event says it)


async def judge(
    storage: Storage, upload: UploadRecord, stored: StoredObject, completed: CompletedObject | None = None
) -> Ending:
    """The checks every path applies to an object before its file becomes available: the planned
    size, and the declared CRC64NVME and SHA-256 where the store reports them (a store that did not
    check at complete still reports what it holds). Bytes that are not the declared file never
    become one. Whether the store checked them itself, the upload's kind says."""
    reason = None
    if stored.size != upload.size:
        reason = f"the stored object has {stored.size} bytes, {upload.size} were planned"
    elif upload.crc64nvme and stored.checksum_crc64nvme and stored.checksum_crc64nvme != upload.crc64nvme:
        reason = (
            f"the stored object's CRC64NVME is {stored.checksum_crc64nvme}, {upload.crc64nvme} was declared"
        )
    elif upload.sha256 and stored.checksum_sha256 and stored.checksum_sha256 != sha256_b64(upload.sha256):
        reason = f"the stored object's SHA-256 is {stored.checksum_sha256}, another was declared"
    if reason is not None:
        return Ending(UploadStatus.ABORTED, reason=reason)
    verified = await kind_of(upload).checked_by_store(storage, upload, completed, stored)
    etag = stored.etag or (completed.etag if completed else "")
    version = stored.version_id or (completed.version_id if completed else None)
    return Ending(
        UploadStatus.COMPLETED, etag=etag, verified_by="store" if verified else None, version_id=version
    )


def _held() -> sa.ColumnElement[bool]:
    return sa.and_(
        U.c.id == sa.bindparam("upload_id"),
        U.c.status == sa.bindparam("held"),
        U.c.claim_token == sa.bindparam("token"),
    )


_NOW = sa.bindparam("now", type_=U.c.updated_at.type)
END_UPLOADS = Statement(
    sa.update(U)
    .where(
        U.c.id.in_(sa.bindparam("upload_ids", expanding=True)),
        U.c.status == sa.bindparam("held"),
        U.c.claim_token == sa.bindparam("token"),
    )
    .values(status=sa.bindparam("to"), claim_token=None, claimed_at=None, updated_at=_NOW)
)
#: Files moved along per statement: each row its own values and compare-and-set (``uploading``).
FILE_CHUNK = 100
_FILE_VALUES = ("etag", "version_id", "verified_by", "sha256", "crc64nvme")


def _file_values(one: Ended) -> dict[str, Any]:
    """What an ending writes into its file's row (``_FILE_VALUES``), by column."""
    ending, upload = one.ending, one.upload
    values = (ending.etag, ending.version_id, ending.verified_by, upload.sha256, upload.crc64nvme)
    return dict(zip(_FILE_VALUES, values, strict=True))


def _end_files(rows: int) -> sa.Update:
    """``rows`` files moved to ``to`` at ``now``, each with its own values (``file_id_<i>``,
    ``etag_<i>``, ... ``CASE files.id WHEN ... END``): one statement, each row still only if it is
    ``uploading``."""
    ids = [sa.bindparam(f"file_id_{i}", type_=F.c.id.type) for i in range(rows)]

    def each(name: str) -> sa.Case[Any]:
        column = F.c[name]
        return sa.case(
            {ids[i]: sa.bindparam(f"{name}_{i}", type_=column.type) for i in range(rows)}, value=F.c.id
        )

    return (
        sa.update(F)
        .where(F.c.id.in_(ids), F.c.status == FileStatus.UPLOADING.value)
        .values(
            status=sa.bindparam("to"),
            updated_at=sa.bindparam("now", type_=F.c.updated_at.type),
            **{name: each(name) for name in _FILE_VALUES},
        )
    )


END_FILES = {1: Statement(_end_files(1)), FILE_CHUNK: Statement(_end_files(FILE_CHUNK))}
END_WITH_FILE = Statement(
    sa.update(U)
    .where(
        U.c.id == sa.bindparam("upload_id"),
        U.c.status == sa.bindparam("held"),
        U.c.claim_token == sa.bindparam("token"),
        F.c.id == U.c.file_id,
        F.c.status == FileStatus.UPLOADING.value,
    )
    .values(
        {
            U.c.status: sa.bindparam("to"), U.c.claim_token: None, U.c.claimed_at: None,
            U.c.updated_at: _NOW, F.c.status: sa.bindparam("file_to"),
            F.c.updated_at: sa.bindparam("now", type_=F.c.updated_at.type),
            **{F.c[name]: sa.bindparam(name, type_=F.c[name].type) for name in _FILE_VALUES},
        }
    ),
    only_on=["mysql"],
)  # fmt: skip
"""One upload ended and its file moved along, in one statement (a multiple-table UPDATE): it
matches both rows (the claim and the file ``uploading``) or neither."""
REMOVE_HELD = Statement(sa.delete(U).where(_held()))


@dataclass(frozen=True, slots=True)
class Ended:
    """An upload, the claim that holds it, and how it ends: what the completion step records."""

    held: Claim
    upload: UploadRecord
    ending: Ending


class _ClaimsLost(Exception):
    """Some claims of a group were taken over: the batch's transaction is rolled back."""


async def finish(
    conn: Connection, held: Claim, upload: UploadRecord, ending: Ending, who: Principal | None
) -> bool:
    """Record ``ending`` and all its consequences in one transaction (see the module docstring).
    ``False`` if the claim was lost: then nothing was written."""
    return upload.id in await finish_many(conn, [Ended(held, upload, ending)], who)


async def finish_many(conn: Connection, ended: Sequence[Ended], who: Principal | None) -> set[str]:
    """Record every ending of ``ended`` with its consequences, in one transaction (see the module
    docstring); the ids of the uploads recorded (one whose claim was lost records nothing)."""
    for one in ended:
        check_upload_transition(one.held.status, one.ending.status)
    if not ended:
        return set()
    now = utcnow()
    try:
        return await _finish(conn, ended, who, now, grouped=True)
    except _ClaimsLost:
        return await _finish(conn, ended, who, now, grouped=False)


async def _finish(
    conn: Connection, ended: Sequence[Ended], who: Principal | None, now: datetime, *, grouped: bool
) -> set[str]:
    async with conn.transaction():
        kept = await _end_with_files(conn, ended, now, grouped=grouped)
        mine = {one.upload.id for one in kept}
        if not kept:
            return mine
        await conn.run_many(INSERT_EVENT, [await _event(conn, one, who) for one in kept])
        for one in kept:
            if one.ending.status != UploadStatus.COMPLETED:
                await links.release(conn, one.upload.id, now)
        completed = [one.upload.file_id for one in kept if one.ending.status == UploadStatus.COMPLETED]
        await outbox.ask_many(conn, completed, now)
        await purge_later(
            conn,
            [key for one in kept for key in kind_of(one.upload).leftovers(one.upload, one.ending.status)],
        )
    return mine


async def _end_with_files(
    conn: Connection, ended: Sequence[Ended], now: datetime, *, grouped: bool
) -> list[Ended]:
    """Steps 1 and 2: the uploads this transaction ends, their files moved along. One upload on
    MySQL/MariaDB: one statement for both rows; if it matched neither, the two statements below
    say why (a lost claim records nothing; a file that was not uploading is an error)."""
    if len(ended) == 1 and END_WITH_FILE.runs_on(conn.dialect_name):
        [one] = ended
        to = one.ending.status
        both = await conn.run(
            END_WITH_FILE, upload_id=one.upload.id, held=one.held.status.value, token=one.held.token,
            to=to.value, file_to=FILE_STATUS_FOR[to].value, now=now, **_file_values(one),
        )  # fmt: skip
        if both == 2:
            return [one]
    mine = await _end_uploads(conn, ended, now, grouped=grouped)
    kept = [one for one in ended if one.upload.id in mine]
    if kept:
        changed = await _end_files_of(conn, kept, now)
        if changed != len(kept):  # the rows disagree: roll the uploads' change back too
            unmoved = len(kept) - changed
            raise TransitionError(f"{unmoved} of {len(kept)} files were not {FileStatus.UPLOADING}")
    return kept


async def _end_uploads(conn: Connection, ended: Sequence[Ended], now: datetime, *, grouped: bool) -> set[str]:
    """Step 1 for every upload: grouped, one UPDATE per (claim, ending); else one per upload."""
    Group = tuple[UploadStatus, str, UploadStatus]
    batches: list[tuple[Group, list[str]]]
    if grouped:
        groups: dict[Group, list[str]] = defaultdict(list)
        for one in ended:
            groups[(one.held.status, one.held.token, one.ending.status)].append(one.upload.id)
        batches = list(groups.items())
    else:
        batches = [((one.held.status, one.held.token, one.ending.status), [one.upload.id]) for one in ended]
    mine: set[str] = set()
    for (held, token, to), ids in batches:
        changed = await conn.run(
            END_UPLOADS, upload_ids=ids, held=held.value, token=token, to=to.value, now=now
        )
        if changed == len(ids):
            mine.update(ids)
        elif len(ids) > 1:
            raise _ClaimsLost()
    return mine


async def _end_files_of(conn: Connection, kept: Sequence[Ended], now: datetime) -> int:
    """Step 2 for every upload: its file moved along, ``FILE_CHUNK`` files a statement (a chunk
    short of it repeats its last file: the same row, matched once); the files matched."""
    changed = 0
    by_status: dict[FileStatus, list[Ended]] = defaultdict(list)
    for one in kept:
        by_status[FILE_STATUS_FOR[one.ending.status]].append(one)
    for to, ended in by_status.items():
        for start in range(0, len(ended), FILE_CHUNK):
            chunk = ended[start : start + FILE_CHUNK]
            size = 1 if len(chunk) == 1 else FILE_CHUNK
            params: dict[str, Any] = {"to": to.value, "now": now}
            for i in range(size):
                one = chunk[min(i, len(chunk) - 1)]
                params[f"file_id_{i}"] = one.upload.file_id
                params.update({f"{name}_{i}": value for name, value in _file_values(one).items()})
            changed += await conn.run(END_FILES[size], **params)
    return changed


async def _event(conn: Connection, one: Ended, who: Principal | None) -> dict[str, Any]:
    upload, ending = one.upload, one.ending
    details: dict[str, Any] = {"file_id": upload.file_id, "size": upload.size, "kind": upload.kind}
    if ending.reason:
        details["reason"] = ending.reason
    if who is None:  # the reaper acts for nobody: name the link the upload came through
        link_id = await links.link_of_upload(conn, upload.id)
        if link_id is not None:
            details["upload_link_id"] = link_id
    action = f"upload.{ending.status}"
    return event_values(who, action, "upload", upload.id, case_id=upload.case_id, **details)


def file_after(upload: UploadRecord, ending: Ending, now: datetime) -> FileRecord:
    """The file row as ``finish`` leaves it for a completed upload (its other columns were written
    with the upload's)."""
    return FileRecord(
        id=upload.file_id, log_id=upload.log_id, case_id=upload.case_id, filename=upload.filename,
        content_type=upload.content_type, size=upload.size, key=upload.key, sha256=upload.sha256,
        crc64nvme=upload.crc64nvme, verified_by=ending.verified_by, etag=ending.etag,
        version_id=ending.version_id, status=FILE_STATUS_FOR[ending.status], created_by=upload.created_by,
        created_at=upload.created_at, updated_at=now,
    )  # fmt: skip


async def purge_later(conn: Connection, keys: list[tuple[str, datetime]]) -> None:
    """Have the reaper empty these keys once no URL handed out can write them (``store_purges``)."""
    now = utcnow()
    await conn.run_many(
        ADD_PURGE,
        [
            dict(id=new_id(), key=key, not_before=not_before, reason="leftover", created_at=now)
            for key, not_before in keys
        ],
    )


async def record(
    ctx: Uploads, held: Claim, upload: UploadRecord, ending: Ending, who: Principal | None
) -> bool:
    """``record_many`` of one upload: ``False`` if the claim was lost."""
    return upload.id in await record_many(ctx, [Ended(held, upload, ending)], who)


async def record_many(ctx: Uploads, ended: Sequence[Ended], who: Principal | None) -> set[str]:
    """``finish_many`` on a connection of its own, then: wake this process's waiters, and delete
    the objects that were judged not to be the declared file (they belong to no file). The ids of
    the uploads recorded. With Object Lock on, each completed file's version is locked first (so no
    file is ever available unlocked; locking again is harmless), unless its kind's store request
    placed the lock itself (a single PUT signs it)."""
    lock, now = ctx.settings.lock, utcnow()
    to_lock = [
        one
        for one in ended
        if lock.on and one.ending.status == UploadStatus.COMPLETED and not kind_of(one.upload).locks_on_write
    ]
    if lock.on and any(
        one.ending.status == UploadStatus.COMPLETED and not one.ending.version_id for one in ended
    ):
        raise StorageRejected(
            "the store keeps no versions: Object Lock needs a bucket made with it (init-storage)"
        )
    if to_lock:
        await asyncio.gather(
            *(ctx.storage.protect(one.upload.key, one.ending.version_id or "", lock, now) for one in to_lock)
        )
    async with ctx.db.connect() as conn:
        done = await finish_many(conn, ended, who)
    for one in ended:
        ctx.waiters.ended(one.upload.id)
    mismatching = [
        one.upload
        for one in ended
        if one.upload.id in done and one.ending.status == UploadStatus.ABORTED and one.ending.reason
    ]
    if mismatching:
        await asyncio.gather(*(_delete_quietly(ctx, upload) for upload in mismatching))
    return done


async def _delete_quietly(ctx: Uploads, upload: UploadRecord) -> None:
    try:
        await ctx.storage.delete_object(upload.key)
    except DomainError:
        log.warning("could not delete the mismatching object of upload %s; it belongs to no file", upload.id)


async def forget(conn: Connection, held: Claim, upload: UploadRecord) -> bool:
    """Remove a start that never got a multipart upload in the store (its start failed or died)
    and its file; a link gets its share back. ``False`` if the claim was lost."""
    if held.status != UploadStatus.CREATING:
        raise TransitionError("only a creating claim is forgotten")
    async with conn.transaction():
        if not await _remove_held(conn, held, upload):
            return False
        await links.release(conn, upload.id, utcnow())
    return True


async def remove(
    conn: Connection, held: Claim, upload: UploadRecord, who: Principal | None, unstored: Unstored
) -> bool:
    """End a ``deleting`` claim: the upload and its file are removed, with their ``file.deleted``
    event, and the reaper told to empty the key once no URL can write it. ``False`` if the claim
    was lost (another delete finished it)."""
    if held.status != UploadStatus.DELETING:
        raise TransitionError("only a deleting claim removes rows")
    async with conn.transaction():
        if not await _remove_held(conn, held, upload):
            return False
        details = {**unstored.details, "key": upload.key}
        if unstored.lock:
            details["object_lock"] = unstored.lock
        await insert_event(
            conn, who, "file.deleted", "file", upload.file_id, case_id=upload.case_id, **details
        )
        await purge_later(conn, unstored.purges)
    return True


@dataclass(frozen=True, slots=True)
class Unstored:
    """What a delete did in the store: what the lock made it do (the audit event says it), the keys
    the reaper must empty later, and the details the event records."""

    lock: str | None
    purges: list[tuple[str, datetime]]
    details: dict[str, Any]


async def unstore(
    ctx: Uploads, upload: UploadRecord, version_id: str | None, details: dict[str, Any] | None = None
) -> Unstored:
    """Remove an upload's bytes from the store for a delete: what the client sent so far, and the
    file's recorded version (lifting its legal hold, or bypassing its governance retention, first:
    an admin's delete is the one way evidence leaves). Compliance retention refuses
    (``FileRetained``). If a URL handed out can still write the emptied key (a single PUT's, which
    writes only where nothing is), an empty tombstone takes the key until the URL is dead, and the
    reaper empties it then: a replay brings nothing back."""
    storage, lock, kind = ctx.storage, ctx.settings.lock, kind_of(upload)
    await kind.abandon(storage, upload)
    done = None
    if version_id and lock.mode == "legal-hold":
        await storage.unprotect(upload.key, version_id)
        done = "legal hold lifted"
    elif version_id and lock.mode == "governance":
        done = "governance retention bypassed"
    await storage.delete_object(upload.key, version_id, bypass_governance=lock.mode == "governance")
    await storage.delete_object(preview_key_of(upload.key))  # what processing made of it, if anything
    purges: list[tuple[str, datetime]] = []
    until = kind.writes_key_until(upload)
    if until is not None and until > utcnow():
        for _ in range(3):  # a replay that took the key first is removed, and the tombstone tried again
            if await storage.put_tombstone(upload.key):
                break
            await storage.purge(upload.key)
        purges.append((upload.key, until))
    return Unstored(done, purges, details or {})


async def _remove_held(conn: Connection, held: Claim, upload: UploadRecord) -> bool:
    assert held.status in REMOVED_FROM
    changed = await conn.run(REMOVE_HELD, upload_id=held.upload_id, held=held.status.value, token=held.token)
    if changed != 1:
        return False
    await conn.run(DELETE_FILE, file_id=upload.file_id)
    await conn.run(DELETE_PROCESSING, file_id=upload.file_id)
    return True
