"""Upload and file rows as the hot path reads and writes them: records of the ``uploads`` and
``files`` tables, and the statements over them, built from the models (``statements.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..models import CaseMember, File, StorePurge, Upload, UploadLinkUpload, User
from ..statements import Query, Record, Statement, insert_of, param, record

U: sa.Table = Upload.__table__  # type: ignore[attr-defined]
F: sa.Table = File.__table__  # type: ignore[attr-defined]
M: sa.Table = CaseMember.__table__  # type: ignore[attr-defined]
USERS: sa.Table = User.__table__  # type: ignore[attr-defined]
LINKED: sa.Table = UploadLinkUpload.__table__  # type: ignore[attr-defined]


@record(Upload)
class UploadRecord(Record):
    id: str
    file_id: str
    log_id: str
    case_id: str
    kind: str  # which ``kinds.Kind`` moves its bytes
    s3_upload_id: str | None  # None while creating, and for kinds without a multipart upload
    idempotency_key: str | None
    needs_sweep: bool
    filename: str
    key: str
    size: int
    part_size: int
    part_count: int
    content_type: str
    checksum_algorithm: str | None
    sha256: str | None
    crc64nvme: str | None
    status: str
    expires_at: datetime
    claim_token: str | None
    claimed_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime

    @property
    def store_upload_id(self) -> str:
        """The store's multipart upload id (set once a multipart upload left ``creating``)."""
        if self.s3_upload_id is None:
            raise ValueError(f"upload {self.id} has no multipart upload in the store ({self.status})")
        return self.s3_upload_id


@record(File)
class FileRecord(Record):
    id: str
    log_id: str
    case_id: str
    filename: str
    content_type: str
    size: int
    key: str
    sha256: str | None
    crc64nvme: str | None
    verified_by: str | None
    etag: str | None
    version_id: str | None
    status: str
    created_by: str
    created_at: datetime
    updated_at: datetime


def _role_of(user_param: str, case_id: Any) -> Any:
    return sa.and_(M.c.case_id == case_id, M.c.user_id == sa.bindparam(user_param))


def _with_role(make: type[Record]) -> Any:
    def into(row: dict[str, Any]) -> tuple[Record, str | None]:
        role = row.pop("role")  # the rest is exactly the record's columns
        return make.of(row), role

    return into


UPLOAD_WITH_ROLE: Query[tuple[UploadRecord, str | None]] = Query(
    sa.select(U, M.c.role)
    .outerjoin(M, _role_of("user_id", U.c.case_id))
    .where(U.c.id == sa.bindparam("upload_id")),
    _with_role(UploadRecord),
)
UPLOAD_BY_ID = Query(sa.select(U).where(U.c.id == sa.bindparam("upload_id")), UploadRecord.of)
UPLOAD_BY_IDEMPOTENCY_KEY = Query(
    sa.select(U).where(U.c.created_by == sa.bindparam("user_id"), U.c.idempotency_key == sa.bindparam("key")),
    UploadRecord.of,
)
UPLOAD_OF_FILE = Query(sa.select(U).where(U.c.file_id == sa.bindparam("file_id")), UploadRecord.of)
UPLOAD_OF_KEY = Query(
    sa.select(U).join(F, F.c.id == U.c.file_id).where(F.c.key == sa.bindparam("key")), UploadRecord.of
)
FILE_WITH_ROLE: Query[tuple[FileRecord, str | None]] = Query(
    sa.select(F, M.c.role)
    .outerjoin(M, _role_of("user_id", F.c.case_id))
    .where(F.c.id == sa.bindparam("file_id")),
    _with_role(FileRecord),
)
FILE_BY_ID = Query(sa.select(F).where(F.c.id == sa.bindparam("file_id")), FileRecord.of)
FILES_BY_ID = Query(sa.select(F).where(F.c.id.in_(param("file_ids", expanding=True))), FileRecord.of)
UPLOADS_BY_IDEMPOTENCY_KEYS = Query(
    sa.select(U).where(
        U.c.created_by == sa.bindparam("user_id"), U.c.idempotency_key.in_(param("keys", expanding=True))
    ),
    UploadRecord.of,
)
UPLOADS_WITH_ROLE_AND_LINK: Query[tuple[UploadRecord, str | None, str | None]] = Query(
    sa.select(U, M.c.role, LINKED.c.link_id)
    .outerjoin(M, _role_of("user_id", U.c.case_id))
    .outerjoin(LINKED, LINKED.c.upload_id == U.c.id)
    .where(U.c.id.in_(param("upload_ids", expanding=True))),
    lambda row: (UploadRecord.of(row), row["role"], row["link_id"]),
)
"""Uploads with the caller's role in their case and the link they came through (a batch complete)."""

INSERT_UPLOAD = Statement(insert_of(Upload))
ADD_PURGE = Statement(insert_of(StorePurge))
INSERT_FILE = Statement(insert_of(File))
DELETE_FILE = Statement(sa.delete(F).where(F.c.id == sa.bindparam("file_id")))


def _optional(column: sa.Column[Any], name: str, compare: Any = None) -> Any:
    """``column = :name`` (or ``compare``), or true when the parameter is NULL: one statement for
    every combination of filters (the server sees the values, so it still uses its indexes)."""
    value = sa.bindparam(name, type_=column.type)
    return sa.or_(value.is_(None), compare(column, value) if compare else column == value)


PAGE_OF_UPLOADS = Query(
    sa.select(U)
    .where(
        U.c.created_by == sa.bindparam("user_id"),
        _optional(U.c.status, "status"),
        _optional(U.c.log_id, "log_id"),
        _optional(U.c.id, "after_id", lambda c, v: c < v),
    )
    .order_by(U.c.id.desc())
    .limit(sa.bindparam("limit")),
    UploadRecord.of,
)
"""The user's uploads, newest first, ``limit`` after ``after_id``."""

PAGE_OF_FILES = Query(
    sa.select(F)
    .where(
        F.c.log_id == sa.bindparam("log_id"),
        _optional(F.c.status, "status"),
        _optional(F.c.id, "after_id", lambda c, v: c < v),
    )
    .order_by(F.c.id.desc())
    .limit(sa.bindparam("limit")),
    FileRecord.of,
)
FILE_ORIGINS: Query[tuple[str, str | None, str | None]] = Query(
    sa.select(F.c.id, USERS.c.username, LINKED.c.link_id)
    .select_from(F)
    .outerjoin(USERS, USERS.c.id == F.c.created_by)
    .outerjoin(U, U.c.file_id == F.c.id)
    .outerjoin(LINKED, LINKED.c.upload_id == U.c.id)
    .where(F.c.id.in_(param("file_ids", expanding=True))),
    lambda row: (row["id"], row["username"], row["link_id"]),
)
"""Who uploaded each file, and through which upload link."""

UPLOADS_BY_STATUS: Query[tuple[str, int]] = Query(
    sa.select(U.c.status, sa.func.count().label("count")).group_by(U.c.status),
    lambda row: (row["status"], int(row["count"])),
)
