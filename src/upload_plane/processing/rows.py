"""The processing tables as the workers and the API read and write them (``statements.py``)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from ..models import File, FileProcessing
from ..statements import Query, Record, Statement, insert_of, param, record

P: sa.Table = FileProcessing.__table__  # type: ignore[attr-defined]

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
STATUSES = (PENDING, RUNNING, DONE, FAILED)


@record(FileProcessing)
class ProcessingRecord(Record):
    file_id: str
    status: str
    requested_at: datetime
    attempts: int
    token: str | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    error_kind: str | None
    sha256: str | None
    crc64nvme_matches: bool | None
    detected_type: str | None
    type_matches: bool | None
    media: str | None
    preview_key: str | None
    updated_at: datetime
    outbox_at: datetime | None


def _now(column: sa.Column[datetime] | None = None) -> sa.BindParameter[datetime]:
    return sa.bindparam("now", type_=(column if column is not None else P.c.updated_at).type)


INSERT_PROCESSING = Statement(insert_of(FileProcessing))

ASK_AGAIN = Statement(
    sa.update(P)
    .where(P.c.file_id == sa.bindparam("file_id"))
    .values(
        status=PENDING, token=None, requested_at=_now(P.c.requested_at), error=None, error_kind=None,
        updated_at=_now(), outbox_at=_now(P.c.outbox_at),
    )
)  # fmt: skip
"""A new request for a file that has a row: whatever it was, it is ``pending`` again (a running
job loses its token and records nothing), and in the outbox."""

CLAIM = Statement(
    sa.update(P)
    .where(P.c.file_id == sa.bindparam("file_id"), P.c.status.in_((PENDING, RUNNING)))
    .values(
        status=RUNNING,
        token=sa.bindparam("token"),
        attempts=P.c.attempts + 1,
        started_at=_now(P.c.started_at),
        updated_at=_now(),
    )
)
"""A job takes its file's row: from ``pending``, or from ``running`` (the job that held it died and
the queue delivered it again; if it is alive after all, it lost its token and records nothing)."""

_HELD = sa.and_(
    P.c.file_id == sa.bindparam("file_id"), P.c.status == RUNNING, P.c.token == sa.bindparam("held")
)

SETTLE = Statement(
    sa.update(P)
    .where(_HELD)
    .values(
        status=sa.bindparam("to"),
        token=None,
        finished_at=_now(P.c.finished_at),
        error=sa.bindparam("error", type_=P.c.error.type),
        error_kind=sa.bindparam("error_kind", type_=P.c.error_kind.type),
        sha256=sa.bindparam("sha256", type_=P.c.sha256.type),
        crc64nvme_matches=sa.bindparam("crc64nvme_matches", type_=P.c.crc64nvme_matches.type),
        detected_type=sa.bindparam("detected_type", type_=P.c.detected_type.type),
        type_matches=sa.bindparam("type_matches", type_=P.c.type_matches.type),
        media=sa.bindparam("media", type_=P.c.media.type),
        preview_key=sa.bindparam("preview_key", type_=P.c.preview_key.type),
        updated_at=_now(),
    )
)
"""The job's end: its results, if it still holds the row."""

RELEASE = Statement(
    sa.update(P)
    .where(_HELD)
    .values(
        status=PENDING,
        token=None,
        error=sa.bindparam("error", type_=P.c.error.type),
        error_kind=sa.bindparam("error_kind", type_=P.c.error_kind.type),
        updated_at=_now(),
    )
)
"""An attempt that failed for a passing reason gives the row back (``pending``, with its error
showing) for the queue's next attempt."""

FAIL_LOST = Statement(
    sa.update(P)
    .where(P.c.file_id == sa.bindparam("file_id"), P.c.status.in_((PENDING, RUNNING)))
    .values(
        status=FAILED,
        token=None,
        finished_at=_now(P.c.finished_at),
        error=sa.bindparam("error", type_=P.c.error.type),
        error_kind=sa.bindparam("error_kind", type_=P.c.error_kind.type),
        updated_at=_now(),
    )
)
"""A job the queue gave up on (its last attempt failed, or its worker died every time)."""

PROCESSING_OF = Query(sa.select(P).where(P.c.file_id == sa.bindparam("file_id")), ProcessingRecord.of)
PROCESSING_OF_FILES = Query(
    sa.select(P).where(P.c.file_id.in_(param("file_ids", expanding=True))), ProcessingRecord.of
)
DELETE_PROCESSING = Statement(sa.delete(P).where(P.c.file_id == sa.bindparam("file_id")))

_IN_OUTBOX = P.c.outbox_at.is_not(None)
PICK_OUTBOX: Query[str] = Query(
    sa.select(P.c.file_id)
    .where(_IN_OUTBOX)
    .order_by(P.c.outbox_at)
    .limit(sa.bindparam("size"))
    .with_for_update(skip_locked=True),
    lambda row: str(row["file_id"]),
)
RELAYED = Statement(
    sa.update(P).where(P.c.file_id.in_(param("file_ids", expanding=True))).values(outbox_at=None)
)
ANY_OUTBOX = Statement(sa.select(P.c.file_id).where(_IN_OUTBOX).limit(1))
OUTBOX_SIZE = Statement(sa.select(sa.func.count()).select_from(P).where(_IN_OUTBOX))

UNFINISHED: Query[tuple[str, int]] = Query(
    sa.select(P.c.file_id, P.c.attempts)
    .where(
        P.c.status.in_((PENDING, RUNNING)),
        P.c.updated_at < sa.bindparam("cutoff", type_=P.c.updated_at.type),
        P.c.outbox_at.is_(None),
    )
    .order_by(P.c.file_id)
    .limit(sa.bindparam("size")),
    lambda row: (str(row["file_id"]), int(row["attempts"])),
)
"""Files asked for, relayed, and quiet since ``cutoff``: the reconciler asks the queue about them."""

_UNFINISHED_ROW = sa.and_(P.c.file_id == sa.bindparam("file_id"), P.c.status.in_((PENDING, RUNNING)))
TOUCH = Statement(sa.update(P).where(_UNFINISHED_ROW).values(updated_at=_now()))
REQUEUE = Statement(
    sa.update(P).where(_UNFINISHED_ROW).values(updated_at=_now(), outbox_at=_now(P.c.outbox_at))
)
"""A file whose job the queue lost: back in the outbox."""

BY_STATUS: Query[tuple[str, int]] = Query(
    sa.select(P.c.status, sa.func.count().label("count")).group_by(P.c.status),
    lambda row: (str(row["status"]), int(row["count"])),
)

_F: sa.Table = File.__table__  # type: ignore[attr-defined]
AVAILABLE_FILES: Query[str] = Query(
    sa.select(_F.c.id)
    .where(_F.c.status == "available", _F.c.id > sa.bindparam("after_id"))
    .order_by(_F.c.id)
    .limit(sa.bindparam("size")),
    lambda row: str(row["id"]),
)
"""Available files by id, a page after ``after_id`` (``upload-plane process --all``)."""
