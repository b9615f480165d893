"""Asking for a file's processing, and moving the asks onto the job queue.

The outbox is a mark on the file's processing row (``outbox_at``). ``ask`` runs inside the
transaction that makes the file available (``uploads/finish.py``): one INSERT writes the row,
``pending`` and marked, so a completed file always has its request, whatever happens to the queue.
``relay`` moves marked rows onto the queue and clears their marks; ``reconcile`` notices files
whose job the queue no longer has and marks them again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..db import Connection, Database
from ..models import utcnow
from .queue import JobQueue
from .rows import (
    ANY_OUTBOX,
    ASK_AGAIN,
    FAIL_LOST,
    INSERT_PROCESSING,
    PENDING,
    PICK_OUTBOX,
    RELAYED,
    REQUEUE,
    TOUCH,
    UNFINISHED,
)

log = logging.getLogger("upload_plane.processing")


async def ask(conn: Connection, file_id: str, now: datetime, *, first: bool = True) -> None:
    """Ask for ``file_id``'s processing, in the caller's transaction: its row ``pending`` and in the
    outbox (made when ``first``, the completion step's case, or when it has none)."""
    if first or not await conn.run(ASK_AGAIN, file_id=file_id, now=now):
        await ask_many(conn, [file_id], now)


async def ask_many(conn: Connection, file_ids: list[str], now: datetime) -> None:
    """``ask`` for files that were just made available (the completion step, for one upload or a
    batch): their rows, ``pending`` and in the outbox, in one statement for all of them."""
    if not file_ids:
        return
    pending = dict(
        status=PENDING, requested_at=now, attempts=0, token=None, started_at=None, finished_at=None,
        error=None, error_kind=None, sha256=None, crc64nvme_matches=None, detected_type=None,
        type_matches=None, media=None, preview_key=None, updated_at=now, outbox_at=now,
    )  # fmt: skip
    await conn.run_many(INSERT_PROCESSING, [{**pending, "file_id": file_id} for file_id in file_ids])


async def ask_again(db: Database, file_ids: list[str]) -> int:
    """``upload-plane process``: ask again for each file (one transaction each); how many."""
    for file_id in file_ids:
        async with db.connect() as conn, conn.transaction():
            await ask(conn, file_id, utcnow(), first=False)
    return len(file_ids)


async def relay(db: Database, queue: JobQueue, batch: int = 500) -> int:
    """Put up to ``batch`` requests on the queue and clear their outbox marks, in one transaction
    holding the rows (``SKIP LOCKED``: another relay takes other rows; an ask meanwhile waits and
    marks the row again after). The queue refusing (down) rolls back: the marks stay for the next
    run. Files already queued are not queued twice (the job key); a request relayed twice after a
    crash is a job that finds nothing left to do."""
    async with db.connect() as conn:
        if not await conn.value(ANY_OUTBOX):  # the common case, without a transaction (SQLite: a lock)
            return 0
    async with db.connect() as conn, conn.transaction():
        picked = await conn.all(PICK_OUTBOX, size=batch)
        if not picked:
            return 0
        for file_id in picked:
            await queue.enqueue(file_id)
        await conn.run(RELAYED, file_ids=picked)
    return len(picked)


@dataclass(slots=True)
class Reconciled:
    alive: int = 0
    asked_again: int = 0
    given_up: int = 0


async def reconcile(
    db: Database, queue: JobQueue, *, quiet: int, give_up_after: int, batch: int = 200
) -> Reconciled:
    """Files ``pending`` or ``running``, not in the outbox and unchanged for ``quiet`` seconds:
    if the queue still has their job, fine (a long job); if not (a Redis restarted without
    persistence, a job the queue aborted), ask again — or, after ``give_up_after`` attempts (a file
    whose worker died every time), end it ``failed``."""
    done = Reconciled()
    now = utcnow()
    async with db.connect() as conn:
        rows = await conn.all(UNFINISHED, cutoff=now - timedelta(seconds=quiet), size=batch)
    for file_id, attempts in rows:
        if await queue.holds(file_id):
            done.alive += 1
            async with db.connect() as conn:
                await conn.run(TOUCH, file_id=file_id, now=utcnow())
            continue
        async with db.connect() as conn, conn.transaction():
            if attempts >= give_up_after:
                error = f"gave up after {attempts} attempts: the job was lost or its worker died each time"
                await conn.run(FAIL_LOST, file_id=file_id, now=utcnow(), error=error, error_kind="lost")
                done.given_up += 1
            else:
                await conn.run(REQUEUE, file_id=file_id, now=utcnow())
                done.asked_again += 1
    if done.asked_again or done.given_up:
        log.warning("processing reconciled: %s", done)
    return done
