"""The completion step: how an upload ended, recorded once, with everything that goes with it.

Every path that ends an upload — a client's complete or abort (API and Uppy), a form upload's
settle, the reaper's expiry and its reconcile of a dead worker's claim — decides the ending the same
way (``judge``: what the store holds against what was planned and declared) and records it with
``finish``, the only writer of a final status. In one transaction, ``finish``:

1. moves the upload from its claim to ``completed``, ``aborted`` or ``expired`` (compare-and-set on
   the claim's token: a worker that lost its claim records nothing);
2. moves the file along (``available`` with its ETag and verification, or ``failed``);
3. writes the audit event ``upload.<status>``;
4. gives an upload link's share of its budget back when the upload did not complete, once;
5. asks for the file's processing when it completed (``processing/outbox.py``: a ``pending``
   processing row and an outbox row, relayed onto the job queue after the commit).

A start that never reached the store is forgotten (``forget``: its rows removed, a link's share
given back) and a deleted file removed (``remove``) — the two ways rows end without a final status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..audit.service import insert_event
from ..auth.principal import Principal
from ..db import Connection
from ..errors import DomainError
from ..links import service as links
from ..models import utcnow
from ..processing import outbox
from ..processing.rows import DELETE_PROCESSING
from ..statements import Statement
from ..storage import CompletedObject, Storage, StoredObject
from .context import Uploads
from .queries import DELETE_FILE, F, U, UploadRecord
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
    reason: str | None = None  # why it did not complete (the audit event says it)


async def checked_by_store(
    storage: Storage, upload: UploadRecord, completed: CompletedObject | None, stored: StoredObject
) -> bool:
    """Whether the store checked the whole file against the declared CRC64NVME. Its answer to
    CompleteMultipartUpload says so. When that answer never arrived (an earlier complete assembled
    the object: its worker died, or the answer was lost), the object says so, if the store computes
    checksums itself: it reports the first part's own CRC64NVME (moto reports none; it also reports
    back as the object's checksum whatever was declared, unchecked), and the full-object CRC64NVME it
    combined from the parts it verified equals the declared one (else it would have refused)."""
    declared = upload.crc64nvme
    if not declared:
        return False
    if completed is not None:
        return completed.checksum_crc64nvme == declared
    if stored.checksum_crc64nvme != declared:
        return False
    return await storage.part_checksum(upload.key, 1) is not None


async def judge(
    storage: Storage, upload: UploadRecord, stored: StoredObject, completed: CompletedObject | None = None
) -> Ending:
    """The checks every path applies to an object before its file becomes available: the planned
    size, and the declared CRC64NVME where the store reports one (a store that did not check at
    complete still reports what it holds). Bytes that are not the declared file never become one."""
    reason = None
    if stored.size != upload.size:
        reason = f"the stored object has {stored.size} bytes, {upload.size} were planned"
    elif upload.crc64nvme and stored.checksum_crc64nvme and stored.checksum_crc64nvme != upload.crc64nvme:
        reason = (
            f"the stored object's CRC64NVME is {stored.checksum_crc64nvme}, {upload.crc64nvme} was declared"
        )
    if reason is not None:
        return Ending(UploadStatus.ABORTED, reason=reason)
    verified = await checked_by_store(storage, upload, completed, stored)
    etag = stored.etag or (completed.etag if completed else "")
    return Ending(UploadStatus.COMPLETED, etag=etag, verified_by="store" if verified else None)


def _held() -> sa.ColumnElement[bool]:
    return sa.and_(
        U.c.id == sa.bindparam("upload_id"),
        U.c.status == sa.bindparam("held"),
        U.c.claim_token == sa.bindparam("token"),
    )


_NOW = sa.bindparam("now", type_=U.c.updated_at.type)
END_UPLOAD = Statement(
    sa.update(U)
    .where(_held())
    .values(status=sa.bindparam("to"), claim_token=None, claimed_at=None, updated_at=_NOW)
)
END_FILE = Statement(
    sa.update(F)
    .where(F.c.id == sa.bindparam("file_id"), F.c.status == FileStatus.UPLOADING.value)
    .values(
        status=sa.bindparam("to"),
        updated_at=sa.bindparam("now", type_=F.c.updated_at.type),
        etag=sa.bindparam("etag", type_=F.c.etag.type),
        verified_by=sa.bindparam("verified_by", type_=F.c.verified_by.type),
        sha256=sa.bindparam("sha256", type_=F.c.sha256.type),
        crc64nvme=sa.bindparam("crc64nvme", type_=F.c.crc64nvme.type),
    )
)
REMOVE_HELD = Statement(sa.delete(U).where(_held()))


async def finish(
    conn: Connection, held: Claim, upload: UploadRecord, ending: Ending, who: Principal | None
) -> bool:
    """Record ``ending`` and all its consequences in one transaction (see the module docstring).
    ``False`` if the claim was lost: then nothing was written."""
    check_upload_transition(held.status, ending.status)
    now = utcnow()
    async with conn.transaction():
        changed = await conn.run(
            END_UPLOAD, upload_id=held.upload_id, held=held.status.value, token=held.token,
            to=ending.status.value, now=now,
        )  # fmt: skip
        if changed != 1:
            return False
        file_status = FILE_STATUS_FOR[ending.status]
        changed = await conn.run(
            END_FILE, file_id=upload.file_id, to=file_status.value, now=now, etag=ending.etag,
            verified_by=ending.verified_by, sha256=upload.sha256, crc64nvme=upload.crc64nvme,
        )  # fmt: skip
        if changed != 1:  # the rows disagree: roll the upload's change back too
            raise TransitionError(f"file {upload.file_id} was not {FileStatus.UPLOADING}")
        details: dict[str, Any] = {"file_id": upload.file_id, "size": upload.size, "kind": upload.kind}
        if ending.reason:
            details["reason"] = ending.reason
        if who is None:  # the reaper acts for nobody: name the link the upload came through
            link_id = await links.link_of_upload(conn, upload.id)
            if link_id is not None:
                details["upload_link_id"] = link_id
        await insert_event(
            conn, who, f"upload.{ending.status}", "upload", upload.id, case_id=upload.case_id, **details
        )
        if ending.status != UploadStatus.COMPLETED:
            await links.release(conn, upload.id, now)
        else:
            await outbox.ask(conn, upload.file_id, now)
    return True


async def record(
    ctx: Uploads, held: Claim, upload: UploadRecord, ending: Ending, who: Principal | None
) -> bool:
    """``finish`` on a connection of its own, then: wake this process's waiters, and delete an
    object that was judged not to be the declared file (it belongs to no file). ``False`` if the
    claim was lost."""
    async with ctx.db.connect() as conn:
        done = await finish(conn, held, upload, ending, who)
    ctx.waiters.ended(upload.id)
    if done and ending.status == UploadStatus.ABORTED and ending.reason is not None:
        try:
            await ctx.storage.delete_object(upload.key)
        except DomainError:
            log.warning(
                "could not delete the mismatching object of upload %s; it belongs to no file", upload.id
            )
    return done


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
    conn: Connection, held: Claim, upload: UploadRecord, who: Principal | None, **details: Any
) -> bool:
    """End a ``deleting`` claim: the upload and its file are removed, with their ``file.deleted``
    event. ``False`` if the claim was lost (another delete finished it)."""
    if held.status != UploadStatus.DELETING:
        raise TransitionError("only a deleting claim removes rows")
    async with conn.transaction():
        if not await _remove_held(conn, held, upload):
            return False
        await insert_event(
            conn, who, "file.deleted", "file", upload.file_id, case_id=upload.case_id, **details
        )
    return True


async def _remove_held(conn: Connection, held: Claim, upload: UploadRecord) -> bool:
    assert held.status in REMOVED_FROM
    changed = await conn.run(REMOVE_HELD, upload_id=held.upload_id, held=held.status.value, token=held.token)
    if changed != 1:
        return False
    await conn.run(DELETE_FILE, file_id=upload.file_id)
    await conn.run(DELETE_PROCESSING, file_id=upload.file_id)
    return True
