"""The states of an upload and its file, which transitions exist, and the one compare-and-set.

Several processes change these rows: requests on any replica, the reaper, an admin's delete. So no
writer ever writes a status it read earlier. Every change names the state it expects and happens
only if the row is still in it (``UPDATE ... WHERE id = ? AND status = ?``, row count checked).

A change that needs the store takes a **claim** first: the row moves to a held state (``completing``,
``aborting``, ``expiring``, ``deleting``) with a fresh random ``claim_token``, committed, before the
store call, which runs outside any transaction. The finish (or the hand-back after a failure) must
match that token, so a worker whose claim went stale and was taken over by another changes nothing
when it wakes up. A held row whose ``claimed_at`` is older than its state's ``stale_after`` (or empty)
may be taken over by a new claim of the same kind; its worker is presumed dead. A claim's finish that
lost to a takeover changes nothing, so a worker that was merely slow is harmless too.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from ..sql import Connection

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


U, F = UploadStatus, FileStatus

#: States in which a claim holds the row while its worker talks to the store.
HELD = frozenset({U.CREATING, U.COMPLETING, U.ABORTING, U.EXPIRING, U.DELETING})
#: States no request moves out of, except by deleting the file.
FINAL = frozenset({U.COMPLETED, U.ABORTED, U.EXPIRED})

#: Every upload transition there is. A held state may also be taken over (held -> same held).
UPLOAD_TRANSITIONS: dict[UploadStatus, frozenset[UploadStatus]] = {
    # creating: the row exists (with its key) before the store is asked; the store's upload id moves
    # it to uploading. A start that never came back is taken over (a retry with its idempotency key)
    # or aborted by the reaper (whatever the store holds on the key).
    U.CREATING: frozenset({U.CREATING, U.UPLOADING, U.ABORTED}),
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


def stale_after(status: str) -> timedelta:
    return CREATING_STALE_AFTER if status == UploadStatus.CREATING else CLAIM_STALE_AFTER


def is_stale(status: str, claimed_at: datetime | None, now: datetime) -> bool:
    return claimed_at is None or claimed_at < now - stale_after(status)


_UPLOAD_COLUMNS = frozenset({"sha256", "crc64nvme"})
_FILE_COLUMNS = frozenset({"etag", "sha256", "crc64nvme", "verified_by"})


def _assignments(values: dict[str, Any], allowed: frozenset[str]) -> tuple[str, list[Any]]:
    unknown = set(values) - allowed
    if unknown:
        raise TransitionError(f"not a column a transition sets: {sorted(unknown)}")
    names = sorted(values)
    return "".join(f", {name} = %s" for name in names), [values[name] for name in names]


async def claim(
    conn: Connection, upload_id: str, expect: Collection[UploadStatus], to: UploadStatus, now: datetime
) -> Claim | None:
    """Move the upload from one of ``expect`` to the held state ``to`` (or take over a stale claim of
    ``to``); the claim, or ``None`` if the row was in none of those states. One statement, committed
    by itself (the connection is in autocommit mode)."""
    if to not in HELD:
        raise TransitionError(f"{to} is not a held state")
    expected = list(expect)
    for current in expected:
        check_upload_transition(current, to)
    token = new_claim_token()
    free = f"status IN ({', '.join(['%s'] * len(expected))}) OR " if expected else ""
    changed = await conn.run(
        "UPDATE uploads SET status = %s, claim_token = %s, claimed_at = %s WHERE id = %s "
        f"AND ({free}(status = %s AND (claimed_at IS NULL OR claimed_at < %s)))",
        to,
        token,
        now,
        upload_id,
        *expected,
        to,
        now - stale_after(to),
    )
    return Claim(upload_id, to, token) if changed == 1 else None


async def finish(
    conn: Connection,
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
    means the claim was lost and nothing changed. Run it inside ``conn.transaction()`` with whatever
    else must happen with it (the audit event)."""
    check_upload_transition(held.status, to)
    extra, params = _assignments(upload_values or {}, _UPLOAD_COLUMNS)
    # A claim handed back (to ``uploading``) leaves the upload as it was: ``updated_at`` included.
    stamp = ", updated_at = %s" if to != U.UPLOADING else ""
    changed = await conn.run(
        f"UPDATE uploads SET status = %s, claim_token = NULL, claimed_at = NULL{stamp}{extra} "
        "WHERE id = %s AND status = %s AND claim_token = %s",
        to,
        *([now] if stamp else []),
        *params,
        held.upload_id,
        held.status,
        held.token,
    )
    if changed != 1:
        return False
    file_status = FILE_STATUS_FOR.get(to)
    if file_id is not None and file_status is not None:
        await set_file_status(conn, file_id, F.UPLOADING, file_status, now, **(file_values or {}))
    return True


async def set_file_status(
    conn: Connection, file_id: str, expect: FileStatus, to: FileStatus, now: datetime, **values: Any
) -> None:
    """Compare-and-set a file's status. Only ever called beside its upload's own transition in the
    same transaction, so a miss means the rows disagree: that raises, and the transaction rolls back."""
    if to not in FILE_TRANSITIONS[expect]:
        raise TransitionError(f"no file transition {expect} -> {to}")
    extra, params = _assignments(values, _FILE_COLUMNS)
    changed = await conn.run(
        f"UPDATE files SET status = %s, updated_at = %s{extra} WHERE id = %s AND status = %s",
        to,
        now,
        *params,
        file_id,
        expect,
    )
    if changed != 1:
        raise TransitionError(f"file {file_id} was not {expect}")


async def fill_checksums(conn: Connection, upload_id: str, file_id: str, values: dict[str, Any]) -> None:
    """Record whole-file checksums a completed file was finished without (the reaper completed it
    for a completer that died before declaring them). Only columns still empty are set, so a value
    once recorded never changes."""
    for name in sorted(values):
        if name not in _FILE_COLUMNS - {"etag"}:
            raise TransitionError(f"not a checksum column: {name}")
        await conn.run(
            f"UPDATE files SET {name} = %s WHERE id = %s AND status = %s AND {name} IS NULL",
            values[name],
            file_id,
            F.AVAILABLE,
        )
        if name != "verified_by":
            await conn.run(
                f"UPDATE uploads SET {name} = %s WHERE id = %s AND {name} IS NULL", values[name], upload_id
            )


async def created(conn: Connection, held: Claim, s3_upload_id: str, now: datetime) -> bool:
    """End a ``creating`` claim with the store's upload id: the upload is ``uploading``. ``False``
    if the claim was lost (a retry took it over and made its own). Run it in a transaction with the
    upload's ``upload.started`` event."""
    check_upload_transition(held.status, U.UPLOADING)
    changed = await conn.run(
        "UPDATE uploads SET status = %s, s3_upload_id = %s, claim_token = NULL, claimed_at = NULL, "
        "updated_at = %s WHERE id = %s AND status = %s AND claim_token = %s",
        U.UPLOADING,
        s3_upload_id,
        now,
        held.upload_id,
        U.CREATING,
        held.token,
    )
    return changed == 1


async def forget_creating(conn: Connection, held: Claim, file_id: str) -> bool:
    """Remove an upload that never got a multipart upload in the store (its start failed or died),
    and its file. Run it in a transaction; ``False`` if the claim was lost."""
    if held.status != U.CREATING:
        raise TransitionError("only a creating claim is forgotten")
    return await _delete_held(conn, held, file_id)


async def abandon(conn: Connection, held: Claim, now: datetime, *, sweep: bool = False) -> bool:
    """Give up a claim without leaving its held state, so that the next claim of the same kind takes
    it over at once (``deleting``: a half-done delete is finished, never undone). ``sweep`` marks the
    key for the reaper: the store may hold multipart uploads on it that no row records."""
    mark = ", needs_sweep = %s" if sweep else ""
    changed = await conn.run(
        f"UPDATE uploads SET claim_token = NULL, claimed_at = NULL, updated_at = %s{mark} "
        "WHERE id = %s AND status = %s AND claim_token = %s",
        now,
        *([True] if sweep else []),
        held.upload_id,
        held.status,
        held.token,
    )
    return changed == 1


async def remove(conn: Connection, held: Claim, file_id: str) -> bool:
    """End a ``deleting`` claim by removing the upload and its file; ``False`` if the claim was lost.
    Run it inside ``conn.transaction()``."""
    if held.status != U.DELETING:
        raise TransitionError("only a deleting claim removes rows")
    return await _delete_held(conn, held, file_id)


async def _delete_held(conn: Connection, held: Claim, file_id: str) -> bool:
    """Delete the upload still held by ``held``, and its file; ``False`` if the claim was lost."""
    changed = await conn.run(
        "DELETE FROM uploads WHERE id = %s AND status = %s AND claim_token = %s",
        held.upload_id,
        held.status,
        held.token,
    )
    if changed != 1:
        return False
    await conn.run("DELETE FROM files WHERE id = %s", file_id)
    return True
