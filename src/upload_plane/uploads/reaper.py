"""The reaper: what no request will finish.

- **Expired** uploads (``uploading`` past ``expires_at``): aborted in the store, ``expired``, their
  files ``failed`` (unless the store turns out to hold the object: then ``completed`` stands).
- **Stale claims** (their worker died): a ``creating`` start is undone (whatever multipart upload it
  made on its key is aborted, the rows removed); ``completing`` is reconciled with HeadObject (the
  object is there: ``completed``; else handed back to ``uploading`` for the client's next complete);
  ``aborting``/``expiring`` are finished; a ``deleting`` delete is finished.
- **Sweeps**: keys marked ``needs_sweep`` (a start taken over after a crash) may hold stray multipart
  uploads no row records; they are listed by exact key (what MinIO supports) and aborted.

Several reapers (replicas, cron overlaps) never work on the same row: each batch is selected with
``FOR UPDATE SKIP LOCKED`` and claimed in the same transaction, and every change after that is the
state machine's compare-and-set on the reaper's claim. Each run returns what it did.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from ..audit.service import insert_event
from ..errors import DomainError
from ..links import service as links
from ..models import utcnow
from ..settings import Settings
from ..sql import Pool
from ..storage import CRC64NVME, Storage
from . import rows, state
from .rows import UploadRow
from .service import UploadService, checked_by_store
from .state import Claim, UploadStatus

log = logging.getLogger("upload_plane.reaper")
U = UploadStatus


@dataclass
class ReapReport:
    expired: int = 0  # aborted in the store after their expiry
    completed: int = 0  # found completed in the store (a complete whose answer was lost)
    handed_back: int = 0  # a dead completer's upload given back to its client
    aborted: int = 0  # a dead abort finished
    deleted: int = 0  # a dead delete finished
    forgotten: int = 0  # a start that died before the store answered, undone
    swept: int = 0  # stray multipart uploads aborted
    errors: int = 0  # rows left for the next run (the store or database failed)

    def total(self) -> int:
        return sum(int(v) for v in asdict(self).values()) - self.errors

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Reaper:
    def __init__(self, pool: Pool, storage: Storage, settings: Settings) -> None:
        self.pool = pool
        self.storage = storage
        self.settings = settings
        self.uploads = UploadService(pool, storage, settings)

    async def run(self, batch: int | None = None) -> ReapReport:
        """One pass over everything due; rows another reaper holds are skipped."""
        size = batch or self.settings.reaper_batch
        report = ReapReport()
        now = utcnow()
        for row, held in await self._batch(
            "u.status = %s AND u.expires_at < %s", (U.UPLOADING, now), U.EXPIRING, size, report
        ):
            await self._end(row, held, U.EXPIRED, report)
        for status in (U.CREATING, U.COMPLETING, U.ABORTING, U.EXPIRING, U.DELETING):
            cutoff = now - state.stale_after(status)
            stale = "u.status = %s AND (u.claimed_at IS NULL OR u.claimed_at < %s)"
            for row, held in await self._batch(stale, (status, cutoff), status, size, report):
                await self._settle(row, held, report)
        await self._sweep(size, report)
        return report

    async def _batch(
        self, where: str, params: tuple[object, ...], to: UploadStatus, size: int, report: ReapReport
    ) -> list[tuple[UploadRow, Claim]]:
        """``_take``; a batch the database refuses (a deadlock with another reaper's batch, a lost
        connection) is left for the next run, so one failure does not end the whole run."""
        try:
            return await self._take(where, params, to, size)
        except SQLAlchemyError as exc:
            log.warning("reaper: a batch (%s) is left for the next run: %s", to, exc)
            report.errors += 1
            return []

    async def _take(
        self, where: str, params: tuple[object, ...], to: UploadStatus, size: int
    ) -> list[tuple[UploadRow, Claim]]:
        """Select up to ``size`` rows matching ``where`` that no other reaper holds, and claim them
        (``to``) in the same transaction."""
        token = state.new_claim_token()
        now = utcnow()
        async with self.pool.connect() as conn:
            lock = " FOR UPDATE SKIP LOCKED" if conn.dialect == "mysql" else ""
            async with conn.transaction():
                ids = [
                    r[0]
                    for r in await conn.all(
                        f"SELECT u.id FROM uploads u WHERE {where} ORDER BY u.id LIMIT %s{lock}",
                        *params,
                        size,
                    )
                ]
                if not ids:
                    return []
                marks = ", ".join(["%s"] * len(ids))
                await conn.run(
                    "UPDATE uploads AS u SET status = %s, claim_token = %s, claimed_at = %s "
                    f"WHERE u.id IN ({marks}) AND {where}",
                    to,
                    token,
                    now,
                    *ids,
                    *params,
                )
            taken = await conn.all(
                f"SELECT {rows.UPLOAD_COLUMNS} FROM uploads u WHERE u.claim_token = %s AND u.status = %s",
                token,
                to,
            )
        return [(row, Claim(row.id, to, token)) for row in map(UploadRow.of, taken)]

    async def _end(self, row: UploadRow, held: Claim, to: UploadStatus, report: ReapReport) -> None:
        try:
            ended = await self.uploads.end_in_store(None, held, row, to)
        except (DomainError, SQLAlchemyError) as exc:
            log.warning("reaper: upload %s left for the next run: %s", row.id, exc)
            report.errors += 1
            return
        if ended == U.COMPLETED:
            report.completed += 1
        elif ended == to:
            if to == U.EXPIRED:
                report.expired += 1
            else:
                report.aborted += 1
            async with self.pool.connect() as conn, conn.transaction():
                await links.release(conn, row.id, utcnow())  # an upload link's share, if it has one

    async def _settle(self, row: UploadRow, held: Claim, report: ReapReport) -> None:
        try:
            if held.status == U.CREATING:
                await self._forget(row, held, report)
            elif held.status == U.COMPLETING:
                await self._reconcile(row, held, report)
            elif held.status in (U.ABORTING, U.EXPIRING):
                await self._end(row, held, U.ABORTED if held.status == U.ABORTING else U.EXPIRED, report)
            elif held.status == U.DELETING:
                await self._delete(row, held, report)
        except (DomainError, SQLAlchemyError) as exc:
            log.warning("reaper: upload %s (%s) left for the next run: %s", row.id, held.status, exc)
            report.errors += 1

    async def _forget(self, row: UploadRow, held: Claim, report: ReapReport) -> None:
        for stray in await self.storage.list_multipart_uploads(row.key):
            await self.storage.abort_multipart(row.key, stray)
            report.swept += 1
        async with self.pool.connect() as conn, conn.transaction():
            if await state.forget_creating(conn, held, row.file_id):
                await links.release(conn, row.id, utcnow())  # a link's share of a start that never was
                report.forgotten += 1

    async def _reconcile(self, row: UploadRow, held: Claim, report: ReapReport) -> None:
        """A completer died: if the store holds the object, the complete happened."""
        stored = await self.storage.head_object(row.key)
        if stored is None or stored.size != row.size:
            await self.uploads.hand_back(held)
            report.handed_back += 1
            return
        declared = row.crc64nvme if row.checksum_algorithm == CRC64NVME else None
        verified = await checked_by_store(self.storage, row.key, declared, None, stored)
        file_values = {"etag": stored.etag, "verified_by": "store" if verified else None}
        if await self.uploads.finish_claim(None, held, row, U.COMPLETED, file_values=file_values):
            report.completed += 1

    async def _delete(self, row: UploadRow, held: Claim, report: ReapReport) -> None:
        if row.s3_upload_id is not None:
            await self.storage.abort_multipart(row.key, row.s3_upload_id)
        await self.storage.delete_object(row.key)
        async with self.pool.connect() as conn, conn.transaction():
            if await state.remove(conn, held, row.file_id):
                await insert_event(
                    conn, None, "file.deleted", "file", row.file_id, case_id=row.case_id, key=row.key
                )
                report.deleted += 1

    async def _sweep(self, size: int, report: ReapReport) -> None:
        async with self.pool.connect() as conn:
            due = [
                UploadRow.of(r)
                for r in await conn.all(
                    f"SELECT {rows.UPLOAD_COLUMNS} FROM uploads u "
                    "WHERE u.needs_sweep = %s AND u.status <> %s ORDER BY u.id LIMIT %s",
                    True,
                    U.CREATING,
                    size,
                )
            ]
        for row in due:
            try:
                keep = row.s3_upload_id if row.status in (U.UPLOADING, U.COMPLETING) else None
                for stray in await self.storage.list_multipart_uploads(row.key):
                    if stray != keep:
                        await self.storage.abort_multipart(row.key, stray)
                        report.swept += 1
                async with self.pool.connect() as conn:
                    await conn.run("UPDATE uploads SET needs_sweep = %s WHERE id = %s", False, row.id)
            except (DomainError, SQLAlchemyError) as exc:
                log.warning("reaper: sweep of %s left for the next run: %s", row.key, exc)
                report.errors += 1


def report_line(report: ReapReport, started: datetime) -> dict[str, object]:
    return {"reaper": report.as_dict(), "seconds": round((utcnow() - started).total_seconds(), 3)}
