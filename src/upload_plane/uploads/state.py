"""The states of an upload and its file, which transitions exist, and the one compare-and-set.

Several processes change these rows: requests on any replica, the reaper, an admin's delete. So no
writer ever writes a status it read earlier. Every change names the state it expects and happens
only if the row is still in it (``UPDATE ... WHERE id = ? AND status = ?``, row count checked).

A change that needs the store takes a **claim** first: the row moves to a held state (``completing``,
``aborting``, ``expiring``, ``deleting``) with a fresh random ``claim_token``, committed, before the
store call, which runs outside any transaction. The finish (or the hand-back after a failure) must
match that token, so a worker whose claim went stale and was taken over by another changes nothing
when it wakes up. A held row whose ``claimed_at`` is older than ``CLAIM_STALE_AFTER`` (or empty) may
be taken over by a new claim of the same kind; its worker is presumed dead.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, or_, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from ..models import File, Upload

CLAIM_STALE_AFTER = timedelta(minutes=2)


class UploadStatus(StrEnum):
    UPLOADING = "uploading"
    COMPLETING = "completing"
    COMPLETED = "completed"
    ABORTING = "aborting"
    ABORTED = "aborted"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    DELETING = "deleting"


class FileStatus(StrEnum):
    UPLOADING = "uploading"
    AVAILABLE = "available"
    FAILED = "failed"


U, F = UploadStatus, FileStatus

#: States in which a claim holds the row while its worker talks to the store.
HELD = frozenset({U.COMPLETING, U.ABORTING, U.EXPIRING, U.DELETING})
#: States no request moves out of, except by deleting the file.
FINAL = frozenset({U.COMPLETED, U.ABORTED, U.EXPIRED})

#: Every upload transition there is. A held state may also be taken over (held -> same held).
UPLOAD_TRANSITIONS: dict[UploadStatus, frozenset[UploadStatus]] = {
    U.UPLOADING: frozenset({U.COMPLETING, U.ABORTING, U.EXPIRING, U.DELETING}),
    # completing: done; handed back (verification or the store failed); the store holds neither the
    # upload nor the object (expired); the object it holds is not the planned one (aborted).
    U.COMPLETING: frozenset({U.COMPLETING, U.COMPLETED, U.UPLOADING, U.EXPIRED, U.ABORTED}),
    # aborting/expiring: done; handed back (the store failed); or the store had already completed
    # the upload (a complete whose answer was lost), which then stands.
    U.ABORTING: frozenset({U.ABORTING, U.ABORTED, U.UPLOADING, U.COMPLETED}),
    U.EXPIRING: frozenset({U.EXPIRING, U.EXPIRED, U.UPLOADING, U.COMPLETED}),
    # deleting ends with the rows removed; it is never handed back, only taken over.
    U.DELETING: frozenset({U.DELETING}),
    U.COMPLETED: frozenset({U.DELETING}),
    U.ABORTED: frozenset({U.DELETING}),
    U.EXPIRED: frozenset({U.DELETING}),
}

#: The file follows its upload: available when completed, failed when it ends any other way.
FILE_TRANSITIONS: dict[FileStatus, frozenset[FileStatus]] = {
    F.UPLOADING: frozenset({F.AVAILABLE, F.FAILED}),
    F.AVAILABLE: frozenset(),
    F.FAILED: frozenset(),
}

#: The file status that goes with an upload's final status.
FILE_STATUS_FOR: dict[UploadStatus, FileStatus] = {
    U.COMPLETED: F.AVAILABLE,
    U.ABORTED: F.FAILED,
    U.EXPIRED: F.FAILED,
}


class TransitionError(ValueError):
    """A programming error: code asked for a transition the table does not have."""


def check_upload_transition(current: UploadStatus, to: UploadStatus) -> None:
    if to not in UPLOAD_TRANSITIONS.get(current, frozenset()):
        raise TransitionError(f"no upload transition {current} -> {to}")


@dataclass(frozen=True, slots=True)
class Claim:
    """Proof that this worker holds ``upload_id`` in ``status``; finishes must present the token."""

    upload_id: str
    status: UploadStatus
    token: str


def new_claim_token() -> str:
    return secrets.token_hex(16)


def is_stale(claimed_at: datetime | None, now: datetime) -> bool:
    return claimed_at is None or claimed_at < now - CLAIM_STALE_AFTER


async def claim(
    session: AsyncSession, upload_id: str, expect: Collection[UploadStatus], to: UploadStatus, now: datetime
) -> Claim | None:
    """Move the upload from one of ``expect`` to the held state ``to`` (or take over a stale claim of
    ``to``); the claim, or ``None`` if the row was in none of those states. The caller commits."""
    if to not in HELD:
        raise TransitionError(f"{to} is not a held state")
    for current in expect:
        check_upload_transition(current, to)
    token = new_claim_token()
    stale_before = now - CLAIM_STALE_AFTER
    taken_over = and_(
        col(Upload.status) == to,
        or_(col(Upload.claimed_at).is_(None), col(Upload.claimed_at) < stale_before),
    )
    stmt = (
        update(Upload)
        .where(col(Upload.id) == upload_id, or_(col(Upload.status).in_(list(expect)), taken_over))
        .values(status=to, claim_token=token, claimed_at=now, updated_at=now)
    )
    result = await session.exec(stmt)
    return Claim(upload_id, to, token) if result.rowcount == 1 else None


async def finish(
    session: AsyncSession,
    held: Claim,
    to: UploadStatus,
    now: datetime,
    *,
    file_id: str | None = None,
    file_values: dict[str, Any] | None = None,
    upload_values: dict[str, Any] | None = None,
) -> bool:
    """End a claim: move the upload to ``to`` if this claim still holds it (with ``upload_values``),
    and its file along (``FILE_STATUS_FOR``, from ``uploading``, with ``file_values``). ``False``
    means the claim was lost and nothing changed; the caller rolls back. The caller commits."""
    check_upload_transition(held.status, to)
    stmt = (
        update(Upload)
        .where(
            col(Upload.id) == held.upload_id,
            col(Upload.status) == held.status,
            col(Upload.claim_token) == held.token,
        )
        .values(status=to, claim_token=None, claimed_at=None, updated_at=now, **(upload_values or {}))
    )
    if (await session.exec(stmt)).rowcount != 1:
        return False
    file_status = FILE_STATUS_FOR.get(to)
    if file_id is not None and file_status is not None:
        await set_file_status(session, file_id, F.UPLOADING, file_status, now, **(file_values or {}))
    return True


async def set_file_status(
    session: AsyncSession, file_id: str, expect: FileStatus, to: FileStatus, now: datetime, **values: Any
) -> None:
    """Compare-and-set a file's status. Only ever called beside its upload's own transition in the
    same transaction, so a miss means the rows disagree: that raises, and the transaction rolls back."""
    if to not in FILE_TRANSITIONS[expect]:
        raise TransitionError(f"no file transition {expect} -> {to}")
    stmt = (
        update(File)
        .where(col(File.id) == file_id, col(File.status) == expect)
        .values(status=to, updated_at=now, **values)
    )
    if (await session.exec(stmt)).rowcount != 1:
        raise TransitionError(f"file {file_id} was not {expect}")


async def abandon(session: AsyncSession, held: Claim, now: datetime) -> bool:
    """Give up a claim without leaving its held state, so that the next claim of the same kind takes
    it over at once (``deleting``: a half-done delete is finished, never undone). The caller commits."""
    stmt = (
        update(Upload)
        .where(
            col(Upload.id) == held.upload_id,
            col(Upload.status) == held.status,
            col(Upload.claim_token) == held.token,
        )
        .values(claim_token=None, claimed_at=None, updated_at=now)
    )
    return bool((await session.exec(stmt)).rowcount == 1)


async def remove(session: AsyncSession, held: Claim, file_id: str) -> bool:
    """End a ``deleting`` claim by removing the upload and its file; ``False`` if the claim was lost."""
    if held.status != U.DELETING:
        raise TransitionError("only a deleting claim removes rows")
    stmt = delete(Upload).where(
        col(Upload.id) == held.upload_id,
        col(Upload.status) == U.DELETING,
        col(Upload.claim_token) == held.token,
    )
    if (await session.exec(stmt)).rowcount != 1:
        return False
    await session.exec(delete(File).where(col(File.id) == file_id))
    return True
