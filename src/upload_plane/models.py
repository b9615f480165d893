"""SQLModel tables: the module alembic imports. Ids are time-ordered UUID strings (see ``ids``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlmodel import Field, SQLModel

from .ids import new_id


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out; stored naive UTC (microseconds on MySQL)."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return _naive_utc(value)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return _aware_utc(value)

    # The processors themselves, not the generic wrappers around the two methods above (a
    # quarter of their cost: a hot-path statement converts a few datetimes each way).
    def bind_processor(self, dialect: sa.Dialect) -> Callable[[Any], Any]:
        after = self.impl_instance.bind_processor(dialect)
        return _naive_utc if after is None else lambda value: after(_naive_utc(value))

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Callable[[Any], Any]:
        before = self.impl_instance.result_processor(dialect, coltype)
        return _aware_utc if before is None else lambda value: _aware_utc(before(value))


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is UTC:
        return value.replace(tzinfo=None)
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTCDateTime column")
    return value.astimezone(UTC).replace(tzinfo=None)


def _aware_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _id() -> Any:
    return Field(default_factory=new_id, primary_key=True, max_length=36)


def _ts() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


def _fk(target: str, *, index: bool = True, nullable: bool = False) -> Any:
    return Field(foreign_key=target, max_length=36, index=index, nullable=nullable)


class User(SQLModel, table=True):
    __tablename__ = "users"
    id: str = _id()
    username: str = Field(max_length=150, unique=True, index=True)
    password_hash: str = Field(max_length=255)
    role: str = Field(default="user", max_length=16)
    disabled: bool = Field(default=False)
    created_at: datetime = _ts()


class Case(SQLModel, table=True):
    __tablename__ = "cases"
    # A reference is unique among its creator's cases: unique across all cases, a clash would tell
    # the creator that a case they cannot see exists.
    __table_args__ = (sa.UniqueConstraint("created_by", "reference", name="uq_cases_creator_reference"),)
    id: str = _id()
    title: str = Field(max_length=200)
    reference: str | None = Field(default=None, max_length=100)
    description: str = Field(default="", max_length=4000)
    created_by: str = _fk("users.id")
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Log(SQLModel, table=True):
    __tablename__ = "logs"
    __table_args__ = (sa.UniqueConstraint("case_id", "name", name="uq_logs_case_name"),)
    id: str = _id()
    case_id: str = _fk("cases.id")
    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=4000)
    created_by: str = _fk("users.id", index=False)
    created_at: datetime = _ts()


class File(SQLModel, table=True):
    __tablename__ = "files"
    id: str = _id()
    log_id: str = _fk("logs.id")
    case_id: str = _fk("cases.id")
    filename: str = Field(sa_type=sa.Text)
    content_type: str = Field(max_length=255)
    size: int = Field(sa_type=sa.BigInteger)
    key: str = Field(max_length=700, unique=True)
    sha256: str | None = Field(default=None, max_length=64)
    crc64nvme: str | None = Field(default=None, max_length=16)  # base64 of the 8-byte checksum
    # "store": the store checked a declared whole-file checksum (crc64nvme, or a single PUT's sha256)
    verified_by: str | None = Field(default=None, max_length=16)
    etag: str | None = Field(default=None, max_length=128)
    # The store's version of the recorded bytes (a versioned bucket): downloads name it, so they
    # return exactly these bytes whatever is written to the key later.
    version_id: str | None = Field(default=None, max_length=255)
    status: str = Field(default="uploading", max_length=16, index=True)
    created_by: str = _fk("users.id", index=False)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Upload(SQLModel, table=True):
    __tablename__ = "uploads"
    __table_args__ = (
        sa.Index("ix_uploads_status_expires_at", "status", "expires_at"),
        sa.Index("ix_uploads_status_claimed_at", "status", "claimed_at"),
        sa.UniqueConstraint("created_by", "idempotency_key", name="uq_uploads_creator_idempotency_key"),
    )
    id: str = _id()
    file_id: str = Field(foreign_key="files.id", max_length=36, unique=True)
    log_id: str = _fk("logs.id")
    case_id: str = _fk("cases.id", index=False)
    # "multipart" (parts signed one by one), "post" (one presigned POST, Uppy's small files) or
    # "put" (one conditional presigned PUT of a small file, started in a batch): uploads/kinds.py
    kind: str = Field(default="multipart", max_length=16)
    # The store's multipart upload id; empty while ``creating`` (written before the store is asked).
    s3_upload_id: str | None = Field(default=None, max_length=1024, nullable=True)
    # A client's retry of the same start (``Idempotency-Key``) finds this upload again.
    idempotency_key: str | None = Field(default=None, max_length=200)
    # The store may hold multipart uploads on this key that no row records (a start taken over
    # after a crash): the reaper lists the key's multipart uploads and aborts the strays.
    needs_sweep: bool = Field(default=False, index=True)
    filename: str = Field(sa_type=sa.Text)
    key: str = Field(max_length=700)
    size: int = Field(sa_type=sa.BigInteger)
    part_size: int = Field(sa_type=sa.BigInteger)
    part_count: int
    content_type: str = Field(max_length=255)
    checksum_algorithm: str | None = Field(default=None, max_length=16)  # "CRC64NVME": full object
    sha256: str | None = Field(default=None, max_length=64)
    crc64nvme: str | None = Field(default=None, max_length=16)
    status: str = Field(default="uploading", max_length=16)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    # The claim of the request or worker that holds the row in a held state (uploads/state.py).
    claim_token: str | None = Field(default=None, max_length=32)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    created_by: str = _fk("users.id")
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class AuthSession(SQLModel, table=True):
    """A sign-in: the family of its refresh tokens, and what its session cookie and access tokens
    name (``sid``). Revoking it (logout, reuse of a rotated refresh token) ends all of them at once."""

    __tablename__ = "auth_sessions"
    id: str = _id()
    user_id: str = _fk("users.id")
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    address: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=255)


class RefreshToken(SQLModel, table=True):
    """One refresh token of a session; stored as its SHA-256. ``used_at`` is set when it is rotated:
    presenting it again is reuse, which revokes the whole session."""

    __tablename__ = "refresh_tokens"
    id: str = _id()
    session_id: str = _fk("auth_sessions.id")
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class PersonalAccessToken(SQLModel, table=True):
    """A named, expiring, revocable token for scripts and apps; stored as its SHA-256."""

    __tablename__ = "personal_access_tokens"
    id: str = _id()
    user_id: str = _fk("users.id")
    name: str = Field(max_length=100)
    token_hash: str = Field(max_length=64, unique=True)
    hint: str = Field(max_length=16)  # the first characters, to recognise it in a list
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class CaseMember(SQLModel, table=True):
    """A user's role in a case: viewer < contributor < manager (admins need no membership)."""

    __tablename__ = "case_members"
    case_id: str = Field(foreign_key="cases.id", primary_key=True, max_length=36)
    user_id: str = Field(foreign_key="users.id", primary_key=True, max_length=36, index=True)
    role: str = Field(max_length=16)
    added_by: str = _fk("users.id", index=False)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class AuditEvent(SQLModel, table=True):
    """One audited action, written in the same transaction as the change it records. Never updated
    or deleted by the application."""

    __tablename__ = "audit_events"
    __table_args__ = (sa.Index("ix_audit_events_case_id_id", "case_id", "id"),)
    id: str = _id()
    at: datetime = _ts()
    actor_id: str | None = Field(default=None, max_length=36, index=True)
    actor: str = Field(max_length=200)  # username, or what acted without one (an upload link)
    action: str = Field(max_length=64)
    subject_type: str = Field(max_length=32)
    subject_id: str = Field(max_length=200)
    case_id: str | None = Field(default=None, max_length=36)
    address: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=255)
    details: str = Field(default="{}", sa_type=sa.Text)


class RateCounter(SQLModel, table=True):
    """A fixed-window counter shared by every replica (login attempts, upload starts)."""

    __tablename__ = "rate_counters"
    key: str = Field(primary_key=True, max_length=200)
    count: int = Field(default=0)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


class UploadLink(SQLModel, table=True):
    """A capability to upload into one log without an account (a witness, a partner agency):
    write-only, expiring, revocable, with optional budgets counted across all of its uploads.
    Stored as the SHA-256 of its token. ``files_used``/``bytes_used`` only ever change by a
    compare-and-set that keeps them within ``max_files``/``max_bytes`` (``links/service.py``)."""

    __tablename__ = "upload_links"
    id: str = _id()
    log_id: str = _fk("logs.id")
    case_id: str = _fk("cases.id", index=False)
    token_hash: str = Field(max_length=64, unique=True)
    hint: str = Field(max_length=16)  # the first characters, to recognise it in a list
    created_by: str = _fk("users.id", index=False)
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    max_files: int | None = Field(default=None, nullable=True)
    max_bytes: int | None = Field(default=None, sa_type=sa.BigInteger, nullable=True)
    files_used: int = Field(default=0)
    bytes_used: int = Field(default=0, sa_type=sa.BigInteger)


class StorePurge(SQLModel, table=True):
    """A key the reaper empties (every version of it) once ``not_before`` has passed: when no URL the
    service handed out can write it any more. A form upload's incoming key after its settle, a
    deleted file's key while a URL that could write it is still valid."""

    __tablename__ = "store_purges"
    id: str = _id()
    key: str = Field(max_length=700)
    not_before: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    reason: str = Field(max_length=32)
    created_at: datetime = _ts()


class UploadLinkUpload(SQLModel, table=True):
    """Which upload came through which link, and the share of the link's budget it holds
    (given back once, ``released_at``, when the upload is aborted through the link)."""

    __tablename__ = "upload_link_uploads"
    # No foreign key to uploads: an admin's delete removes the upload, the link's history stays.
    upload_id: str = Field(primary_key=True, max_length=36)
    link_id: str = _fk("upload_links.id")
    size: int = Field(sa_type=sa.BigInteger)
    created_at: datetime = _ts()
    released_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class FileProcessing(SQLModel, table=True):
    """What the workers found in a file's stored bytes (``processing/``): its state, the SHA-256
    computed from the store, the detected type, media facts and the preview's key. One row per file,
    written by the completion step (``pending``) and then only by the job that holds ``token``
    (compare-and-set), so a re-delivered or duplicated job records nothing twice.

    ``outbox_at`` is the outbox: set in the transaction that asks for the file's processing (the
    completion step, ``upload-plane process``, the reconciler), cleared by the relay once the job is
    on the queue, so a queue that is down loses nothing."""

    __tablename__ = "file_processing"
    # No foreign key: a file's deletion removes this row in its own transaction (uploads/finish.py).
    file_id: str = Field(primary_key=True, max_length=36)
    status: str = Field(default="pending", max_length=16, index=True)  # pending|running|done|failed
    requested_at: datetime = _ts()
    attempts: int = Field(default=0)  # jobs that took the row (a re-delivery counts)
    token: str | None = Field(default=None, max_length=32)  # the job that holds it while running
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    error: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    error_kind: str | None = Field(default=None, max_length=32)
    sha256: str | None = Field(default=None, max_length=64)  # computed by the server from the store
    crc64nvme_matches: bool | None = Field(default=None, nullable=True)  # recorded CRC64NVME re-checked
    detected_type: str | None = Field(default=None, max_length=255)
    type_matches: bool | None = Field(default=None, nullable=True)
    media: str | None = Field(default=None, sa_type=sa.Text, nullable=True)  # JSON
    preview_key: str | None = Field(default=None, max_length=800)
    updated_at: datetime = _ts()
    outbox_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True, index=True)
