"""The reaper: what no request will finish.

- **Expired** uploads (``uploading`` past ``expires_at``): abandoned in the store, ``expired``, their
  files ``failed`` (unless the store turns out to hold the object: then it is judged as any
  complete, ``abort.py``). A pending form upload whose time is up ends the same way.
- **Stale claims** (their worker died): a ``creating`` start is undone (whatever multipart upload it
  made on its key is aborted, the rows removed); ``completing`` is reconciled with HeadObject (the
  object is there: judged and recorded; else handed back to ``uploading`` for the client's next
  complete); ``aborting``/``expiring`` are finished; a ``deleting`` delete is finished.
- **Sweeps**: keys marked ``needs_sweep`` (a start taken over after a crash) may hold stray multipart
  uploads no row records; they are listed by exact key (what MinIO supports) and aborted.
- **Purges** (``store_purges``): keys a handed-out URL could still write when their upload ended (a
  form upload's incoming key) are emptied, every version, once no such URL is valid any more.

Every end is recorded by the completion step (``finish.py``), as for a request. Several reapers
(replicas, cron overlaps) never work on the same row: each batch is selected with ``FOR UPDATE SKIP
LOCKED`` and claimed in the same transaction, and every change after that is a compare-and-set on
the reaper's claim. Each run returns what it did.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from ..errors import DomainError
from ..models import StorePurge, utcnow
from ..statements import Query, Statement
from . import state
from .abort import end_in_store
from .claims import hand_back
from .context import Uploads
from .finish import Ending, forget, judge, record, remove, unstore
from .queries import FILE_BY_ID, U, UploadRecord
from .state import Claim, UploadStatus

log = logging.getLogger("upload_plane.reaper")
Us = UploadStatus


@dataclass
class ReapReport:
    expired: int = 0  # ended after their expiry
    completed: int = 0  # found completed in the store (a complete whose answer was lost)
    handed_back: int = 0  # a dead completer's upload given back to its client
    aborted: int = 0  # a dead abort finished (or an object that was not the declared file)
    deleted: int = 0  # a dead delete finished
    forgotten: int = 0  # a start that died before the store answered, undone
    swept: int = 0  # stray multipart uploads aborted
    purged: int = 0  # keys emptied once no URL could write them any more
    errors: int = 0  # rows left for the next run (the store or database failed)

    def total(self) -> int:
        return sum(int(v) for v in asdict(self).values()) - self.errors

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def count(self, status: str) -> None:
        name = {Us.EXPIRED: "expired", Us.COMPLETED: "completed", Us.ABORTED: "aborted"}.get(Us(status))
        if name is not None:
            setattr(self, name, getattr(self, name) + 1)


_NOW = sa.bindparam("now", type_=U.c.expires_at.type)
_CUTOFF = sa.bindparam("cutoff", type_=U.c.claimed_at.type)
#: What each batch is: expired uploads, and claims of each held state that went stale.
DUE_EXPIRED = sa.and_(U.c.status == Us.UPLOADING.value, U.c.expires_at < _NOW)
DUE_STALE = sa.and_(
    U.c.status == sa.bindparam("status"), sa.or_(U.c.claimed_at.is_(None), U.c.claimed_at < _CUTOFF)
)


def _pick(due: Any) -> Query[str]:
    return Query(
        sa.select(U.c.id)
        .where(due)
        .order_by(U.c.id)
        .limit(sa.bindparam("size"))
        .with_for_update(skip_locked=True),
        lambda row: str(row["id"]),
    )


def _take(due: Any) -> Statement:
    return Statement(
        sa.update(U)
        .where(U.c.id.in_(sa.bindparam("ids", expanding=True)), due)
        .values(
            status=sa.bindparam("to"),
            claim_token=sa.bindparam("token"),
            claimed_at=sa.bindparam("taken_at", type_=U.c.claimed_at.type),
        )
    )


PICK = {"expired": _pick(DUE_EXPIRED), "stale": _pick(DUE_STALE)}
TAKE = {"expired": _take(DUE_EXPIRED), "stale": _take(DUE_STALE)}
TAKEN = Query(
    sa.select(U).where(U.c.claim_token == sa.bindparam("token"), U.c.status == sa.bindparam("to")),
    UploadRecord.of,
)
TO_SWEEP = Query(
    sa.select(U)
    .where(U.c.needs_sweep.is_(sa.true()), U.c.status != Us.CREATING.value)
    .order_by(U.c.id)
    .limit(sa.bindparam("size")),
    UploadRecord.of,
)
SWEPT = Statement(sa.update(U).where(U.c.id == sa.bindparam("upload_id")).values(needs_sweep=sa.false()))
PURGES: sa.Table = StorePurge.__table__  # type: ignore[attr-defined]
PURGE_LEASE = timedelta(minutes=10)
DUE_PURGES: Query[tuple[str, str]] = Query(
    sa.select(PURGES.c.id, PURGES.c.key)
    .where(PURGES.c.not_before < sa.bindparam("now", type_=PURGES.c.not_before.type))
    .order_by(PURGES.c.not_before)
    .limit(sa.bindparam("size"))
    .with_for_update(skip_locked=True),
    lambda row: (row["id"], row["key"]),
)
LEASE_PURGES = Statement(
    sa.update(PURGES)
    .where(PURGES.c.id.in_(sa.bindparam("ids", expanding=True)))
    .values(not_before=sa.bindparam("until", type_=PURGES.c.not_before.type))
)
PURGED = Statement(sa.delete(PURGES).where(PURGES.c.id == sa.bindparam("purge_id")))


class Reaper:
    def __init__(self, ctx: Uploads) -> None:
        self.ctx = ctx

    async def run(self, batch: int | None = None) -> ReapReport:
        """One pass over everything due; rows another reaper holds are skipped."""
        size = batch or self.ctx.settings.reaper_batch
        report = ReapReport()
        now = utcnow()
        for row, held in await self._batch("expired", {"now": now}, Us.EXPIRING, size, report):
            await self._end(row, held, report)
        for status in (Us.CREATING, Us.COMPLETING, Us.ABORTING, Us.EXPIRING, Us.DELETING):
            cutoff = now - state.stale_after(status)
            for row, held in await self._batch(
                "stale", {"status": status.value, "cutoff": cutoff}, status, size, report
            ):
                await self._settle(row, held, report)
        await self._sweep(size, report)
        await self._purge(size, report)
        return report

    async def _batch(
        self, due: str, params: dict[str, Any], to: UploadStatus, size: int, report: ReapReport
    ) -> list[tuple[UploadRecord, Claim]]:
        """``_take``; a batch the database refuses (a deadlock with another reaper's batch, a lost
        connection) is left for the next run, so one failure does not end the whole run."""
        try:
            return await self._take(due, params, to, size)
        except SQLAlchemyError as exc:
            log.warning("reaper: a batch (%s) is left for the next run: %s", to, exc)
            report.errors += 1
            return []

    async def _take(
        self, due: str, params: dict[str, Any], to: UploadStatus, size: int
    ) -> list[tuple[UploadRecord, Claim]]:
        """Select up to ``size`` rows that are due and no other reaper holds, and claim them (``to``)
        in the same transaction."""
        token = state.new_claim_token()
        async with self.ctx.db.connect() as conn:
            async with conn.transaction():
                ids = await conn.all(PICK[due], size=size, **params)
                if not ids:
                    return []
                await conn.run(TAKE[due], ids=ids, to=to.value, token=token, taken_at=utcnow(), **params)
            taken = await conn.all(TAKEN, token=token, to=to.value)
        return [(row, Claim(row.id, to, token)) for row in taken]

    async def _end(self, row: UploadRecord, held: Claim, report: ReapReport) -> None:
        try:
            report.count(await end_in_store(self.ctx, None, held, row))
        except (DomainError, SQLAlchemyError) as exc:
            log.warning("reaper: upload %s left for the next run: %s", row.id, exc)
            report.errors += 1

    async def _settle(self, row: UploadRecord, held: Claim, report: ReapReport) -> None:
        try:
            if held.status == Us.CREATING:
                await self._forget(row, held, report)
            elif held.status == Us.COMPLETING:
                await self._reconcile(row, held, report)
            elif held.status in (Us.ABORTING, Us.EXPIRING):
                report.count(await end_in_store(self.ctx, None, held, row))
            elif held.status == Us.DELETING:
                await self._delete(row, held, report)
        except (DomainError, SQLAlchemyError) as exc:
            log.warning("reaper: upload %s (%s) left for the next run: %s", row.id, held.status, exc)
            report.errors += 1

    async def _forget(self, row: UploadRecord, held: Claim, report: ReapReport) -> None:
        storage = self.ctx.storage
        for stray in await storage.list_multipart_uploads(row.key):
            await storage.abort_multipart(row.key, stray)
            report.swept += 1
        async with self.ctx.db.connect() as conn:
            if await forget(conn, held, row):
                report.forgotten += 1

    async def _reconcile(self, row: UploadRecord, held: Claim, report: ReapReport) -> None:
        """A completer died: if the store holds the object, the complete happened."""
        stored = await self.ctx.storage.head_object(row.key)
        if stored is None:
            await hand_back(self.ctx, held)
            report.handed_back += 1
            return
        ending: Ending = await judge(self.ctx.storage, row, stored)
        if await record(self.ctx, held, row, ending, None):
            report.count(ending.status)

    async def _delete(self, row: UploadRecord, held: Claim, report: ReapReport) -> None:
        async with self.ctx.db.connect() as conn:
            file = await conn.one(FILE_BY_ID, file_id=row.file_id)
        unstored = await unstore(self.ctx, row, file.version_id if file else None)
        async with self.ctx.db.connect() as conn:
            if await remove(conn, held, row, None, unstored):
                report.deleted += 1

    async def _sweep(self, size: int, report: ReapReport) -> None:
        async with self.ctx.db.connect() as conn:
            due = await conn.all(TO_SWEEP, size=size)
        for row in due:
            try:
                keep = row.s3_upload_id if row.status in (Us.UPLOADING, Us.COMPLETING) else None
                for stray in await self.ctx.storage.list_multipart_uploads(row.key):
                    if stray != keep:
                        await self.ctx.storage.abort_multipart(row.key, stray)
                        report.swept += 1
                async with self.ctx.db.connect() as conn:
                    await conn.run(SWEPT, upload_id=row.id)
            except (DomainError, SQLAlchemyError) as exc:
                log.warning("reaper: sweep of %s left for the next run: %s", row.key, exc)
                report.errors += 1

    async def _purge(self, size: int, report: ReapReport) -> None:
        """Empty the keys whose time has come; each is leased for ``PURGE_LEASE`` first, so another
        reaper skips it and a reaper that dies leaves it to the next run."""
        now = utcnow()
        try:
            async with self.ctx.db.connect() as conn, conn.transaction():
                due = await conn.all(DUE_PURGES, now=now, size=size)
                if due:
                    await conn.run(LEASE_PURGES, ids=[d[0] for d in due], until=now + PURGE_LEASE)
        except SQLAlchemyError as exc:
            log.warning("reaper: the purges are left for the next run: %s", exc)
            report.errors += 1
            return
        for purge_id, key in due:
            try:
                await self.ctx.storage.purge(key)
                async with self.ctx.db.connect() as conn:
                    await conn.run(PURGED, purge_id=purge_id)
                report.purged += 1
            except (DomainError, SQLAlchemyError) as exc:
                log.warning("reaper: the purge of %s is left for the next run: %s", key, exc)
                report.errors += 1


def report_line(report: ReapReport, started: datetime) -> dict[str, object]:
    return {"reaper": report.as_dict(), "seconds": round((utcnow() - started).total_seconds(), 3)}
