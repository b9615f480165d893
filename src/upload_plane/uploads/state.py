"""The states of an upload and its file, which transitions exist, and the compare-and-set claims.

Several processes change these rows: requests on any replica, the reaper, an admin's delete. So no
writer ever writes a status it read earlier. Every change names the state it expects and happens
only if the row is still in it (``UPDATE ... WHERE id = ? AND status = ?``, row count checked).

A change that needs the store takes a **claim** first: the row moves to a held state (``creating``,
``completing``, ``aborting``, ``expiring``, ``deleting``) with a fresh random ``claim_token``,
committed, before the store call, which runs outside any transaction. What ends the claim (``finish``
in ``finish.py``, ``hand_back`` here) must match that token, so a worker whose claim went stale and
was taken over changes nothing when it wakes up. A held row whose ``claimed_at`` is older than its
state's ``stale_after`` (or empty) may be taken over by a new claim of the same kind; its worker is
presumed dead.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa

from ..db import Connection
from ..statements import Query, Statement
from .queries import U

CLAIM_STALE_AFTER = timedelta(minutes=2)
#: ``creating`` covers one short store call (CreateMultipartUpload): a retried start may take a
#: claim that old over, instead of keeping its client waiting for minutes.
CREATING_STALE_AFTER = timedelta(seconds=15)


class UploadStatus(StrEnum):
    CREATING = "creating"
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


Us, Fs = UploadStatus, FileStatus

#: States in which a claim holds the row while its worker talks to the store.
HELD = frozenset({Us.CREATING, Us.COMPLETING, Us.ABORTING, Us.EXPIRING, Us.DELETING})
#: States no request moves out of, except by deleting the file.
FINAL = frozenset({Us.COMPLETED, Us.ABORTED, Us.EXPIRED})

#: Every upload transition there is (the package docstring draws it). A held state may also be
#: taken over (held -> same held).
UPLOAD_TRANSITIONS: dict[UploadStatus, frozenset[UploadStatus]] = {
    Us.CREATING: frozenset({Us.CREATING, Us.UPLOADING}),
    Us.UPLOADING: frozenset({Us.COMPLETING, Us.ABORTING, Us.EXPIRING, Us.DELETING}),
    Us.COMPLETING: frozenset({Us.COMPLETING, Us.COMPLETED, Us.UPLOADING, Us.EXPIRED, Us.ABORTED}),
    Us.ABORTING: frozenset({Us.ABORTING, Us.ABORTED, Us.UPLOADING, Us.COMPLETED}),
    Us.EXPIRING: frozenset({Us.EXPIRING, Us.EXPIRED, Us.UPLOADING, Us.COMPLETED, Us.ABORTED}),
    Us.DELETING: frozenset({Us.DELETING}),
    Us.COMPLETED: frozenset({Us.DELETING}),
    Us.ABORTED: frozenset({Us.DELETING}),
    Us.EXPIRED: frozenset({Us.DELETING}),
}
#: Held states whose claim ends by removing the rows rather than by a transition.
REMOVED_FROM = frozenset({Us.CREATING, Us.DELETING})

#: The file follows its upload: available when completed, failed when it ends any other way.
FILE_TRANSITIONS: dict[FileStatus, frozenset[FileStatus]] = {
    Fs.UPLOADING: frozenset({Fs.AVAILABLE, Fs.FAILED}),
    Fs.AVAILABLE: frozenset(),
    Fs.FAILED: frozenset(),
}
#: The file status that goes with an upload's final status.
FILE_STATUS_FOR: dict[UploadStatus, FileStatus] = {
    Us.COMPLETED: Fs.AVAILABLE,
    Us.ABORTED: Fs.FAILED,
    Us.EXPIRED: Fs.FAILED,
}


class TransitionError(ValueError):
    """A programming error: code asked for a transition the table does not have."""


def check_upload_transition(current: UploadStatus, to: UploadStatus) -> None:
    if to not in UPLOAD_TRANSITIONS.get(current, frozenset()):
        raise TransitionError(f"no upload transition {current} -> {to}")


@dataclass(frozen=True, slots=True)
class Claim:
    """Proof that this worker holds ``upload_id`` in ``status``; what ends it presents the token."""

    upload_id: str
    status: UploadStatus
    token: str


def new_claim_token() -> str:
    return secrets.token_hex(16)


def stale_after(status: str) -> timedelta:
    return CREATING_STALE_AFTER if status == Us.CREATING else CLAIM_STALE_AFTER


def is_stale(status: str, claimed_at: datetime | None, now: datetime) -> bool:
    return claimed_at is None or claimed_at < now - stale_after(status)


def _held_by() -> sa.ColumnElement[bool]:
    """The row is still held by the claim: its id, held state and token."""
    return sa.and_(
        U.c.id == sa.bindparam("upload_id"),
        U.c.status == sa.bindparam("held"),
        U.c.claim_token == sa.bindparam("token"),
    )


def _stale(to: str = "to") -> sa.ColumnElement[bool]:
    return sa.and_(
        U.c.status == sa.bindparam(to),
        sa.or_(
            U.c.claimed_at.is_(None), U.c.claimed_at < sa.bindparam("stale_before", type_=U.c.claimed_at.type)
        ),
    )


_TAKE = {
    "status": sa.bindparam("to"),
    "claim_token": sa.bindparam("token"),
    "claimed_at": sa.bindparam("now", type_=U.c.claimed_at.type),
    # what a complete declares is recorded with its claim: whoever finishes it knows it
    "sha256": sa.func.coalesce(U.c.sha256, sa.bindparam("sha256", type_=U.c.sha256.type)),
    "crc64nvme": sa.func.coalesce(U.c.crc64nvme, sa.bindparam("crc64nvme", type_=U.c.crc64nvme.type)),
}
CLAIM = Statement(
    sa.update(U)
    .where(
        U.c.id == sa.bindparam("upload_id"),
        sa.or_(U.c.status.in_(sa.bindparam("expect", expanding=True)), _stale()),
    )
    .values(_TAKE)
)
TAKE_OVER = Statement(sa.update(U).where(U.c.id == sa.bindparam("upload_id"), _stale()).values(_TAKE))
HAND_BACK = Statement(
    # A claim handed back leaves the upload as it was: ``updated_at`` included.
    sa.update(U)
    .where(
        U.c.id.in_(sa.bindparam("upload_ids", expanding=True)),
        U.c.status == sa.bindparam("held"),
        U.c.claim_token == sa.bindparam("token"),
    )
    .values(status=Us.UPLOADING.value, claim_token=None, claimed_at=None)
)
CLAIM_MANY = Statement(
    sa.update(U)
    .where(U.c.id.in_(sa.bindparam("upload_ids", expanding=True)), U.c.status == sa.bindparam("expect"))
    .values(
        status=sa.bindparam("to"),
        claim_token=sa.bindparam("token"),
        claimed_at=sa.bindparam("now", type_=U.c.claimed_at.type),
    )
)
CLAIMED = Query(
    sa.select(U.c.id).where(
        U.c.id.in_(sa.bindparam("upload_ids", expanding=True)),
        U.c.status == sa.bindparam("to"),
        U.c.claim_token == sa.bindparam("token"),
    ),
    lambda row: str(row["id"]),
)
ABANDON = Statement(
    sa.update(U)
    .where(_held_by())
    .values(
        claim_token=None,
        claimed_at=None,
        updated_at=sa.bindparam("now", type_=U.c.updated_at.type),
        needs_sweep=sa.or_(U.c.needs_sweep, sa.bindparam("sweep", type_=U.c.needs_sweep.type)),
    )
)
CREATED = Statement(
    sa.update(U)
    .where(_held_by())
    .values(
        status=Us.UPLOADING.value,
        s3_upload_id=sa.bindparam("s3_upload_id"),
        claim_token=None,
        claimed_at=None,
        updated_at=sa.bindparam("now", type_=U.c.updated_at.type),
    )
)
MARK_SWEEP = Statement(sa.update(U).where(_held_by()).values(needs_sweep=sa.true()))


async def claim(
    conn: Connection,
    upload_id: str,
    expect: Collection[UploadStatus],
    to: UploadStatus,
    now: datetime,
    *,
    sha256: str | None = None,
    crc64nvme: str | None = None,
) -> Claim | None:
    """Move the upload from one of ``expect`` to the held state ``to`` (or take over a stale claim of
    ``to``); the claim, or ``None`` if the row was in none of those states. One statement, committed
    by itself. Checksums a complete declares are recorded with its claim (where none were)."""
    if to not in HELD:
        raise TransitionError(f"{to} is not a held state")
    for current in expect:
        check_upload_transition(current, to)
    token = new_claim_token()
    params = dict(
        upload_id=upload_id, to=to.value, token=token, now=now, stale_before=now - stale_after(to),
        sha256=sha256, crc64nvme=crc64nvme,
    )  # fmt: skip
    if expect:
        changed = await conn.run(CLAIM, expect=[s.value for s in expect], **params)
    else:
        changed = await conn.run(TAKE_OVER, **params)
    return Claim(upload_id, to, token) if changed == 1 else None


async def claim_many(
    conn: Connection, upload_ids: Collection[str], expect: UploadStatus, to: UploadStatus, now: datetime
) -> list[Claim]:
    """Move each of ``upload_ids`` that is in ``expect`` to the held state ``to``, under one token
    (a batch): each row's own compare-and-set, in one statement; the claims of the rows moved. Rows
    in another state (held by someone else, finished) are left as they are."""
    if to not in HELD:
        raise TransitionError(f"{to} is not a held state")
    check_upload_transition(expect, to)
    if not upload_ids:
        return []
    token = new_claim_token()
    ids = list(upload_ids)
    await conn.run(CLAIM_MANY, upload_ids=ids, expect=expect.value, to=to.value, token=token, now=now)
    taken = await conn.all(CLAIMED, upload_ids=ids, to=to.value, token=token)
    return [Claim(upload_id, to, token) for upload_id in taken]


async def hand_back(conn: Connection, held: Claim) -> bool:
    """Return a claim to ``uploading`` (a failure that is not a verdict); ``False`` if it was lost."""
    return await hand_back_many(conn, [held]) == 1


async def hand_back_many(conn: Connection, claims: Collection[Claim]) -> int:
    """``hand_back`` for many claims, one statement per claim token; how many were still held."""
    by_token: dict[tuple[UploadStatus, str], list[str]] = {}
    for held in claims:
        check_upload_transition(held.status, Us.UPLOADING)
        by_token.setdefault((held.status, held.token), []).append(held.upload_id)
    returned = 0
    for (status, token), ids in by_token.items():
        returned += await conn.run(HAND_BACK, upload_ids=ids, held=status.value, token=token)
    return returned


async def abandon(conn: Connection, held: Claim, now: datetime, *, sweep: bool = False) -> bool:
    """Give up a claim without leaving its held state, so that the next claim of the same kind takes
    it over at once (``deleting``: a half-done delete is finished, never undone). ``sweep`` marks the
    key for the reaper: the store may hold multipart uploads on it that no row records."""
    changed = await conn.run(
        ABANDON, upload_id=held.upload_id, held=held.status.value, token=held.token, now=now, sweep=sweep
    )
    return changed == 1


async def created(conn: Connection, held: Claim, s3_upload_id: str, now: datetime) -> bool:
    """End a ``creating`` claim with the store's upload id: the upload is ``uploading``. ``False``
    if the claim was lost (a retry took it over and made its own). Run it in a transaction with the
    upload's ``upload.started`` event."""
    check_upload_transition(held.status, Us.UPLOADING)
    changed = await conn.run(
        CREATED, upload_id=held.upload_id, held=held.status.value, token=held.token,
        s3_upload_id=s3_upload_id, now=now,
    )  # fmt: skip
    return changed == 1


async def mark_for_sweep(conn: Connection, held: Claim) -> bool:
    """The key may hold a multipart upload no row records (a dead start's): the reaper sweeps it."""
    return await conn.run(MARK_SWEEP, upload_id=held.upload_id, held=held.status.value, token=held.token) == 1
