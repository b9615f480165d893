"""Upload and file rows as the hot path reads them: plain dataclasses filled from the driver's rows
(see ``sql.py``), and the statements that read and write them. Column lists are written once here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..sql import Connection, Row, utc

UPLOAD_COLUMNS = (
    "u.id, u.file_id, u.log_id, u.case_id, u.s3_upload_id, u.filename, u.`key`, u.size, u.part_size, "
    "u.part_count, u.content_type, u.checksum_algorithm, u.sha256, u.crc64nvme, u.status, u.expires_at, "
    "u.claim_token, u.claimed_at, u.created_by, u.created_at, u.updated_at, u.kind, u.idempotency_key, "
    "u.needs_sweep"
)
FILE_COLUMNS = (
    "f.id, f.log_id, f.case_id, f.filename, f.content_type, f.size, f.`key`, f.sha256, f.crc64nvme, "
    "f.verified_by, f.etag, f.status, f.created_by, f.created_at, f.updated_at"
)


@dataclass(slots=True)
class UploadRow:
    id: str
    file_id: str
    log_id: str
    case_id: str
    s3_upload_id: str | None  # None while creating, and for kind "post"
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
    kind: str = "multipart"
    idempotency_key: str | None = None
    needs_sweep: bool = False

    @classmethod
    def of(cls, row: Row) -> UploadRow:
        values = list(row[:24])
        for i in (15, 17, 19, 20):  # expires_at, claimed_at, created_at, updated_at
            values[i] = utc(values[i])
        values[23] = bool(values[23])
        return cls(*values)

    @property
    def store_upload_id(self) -> str:
        """The store's multipart upload id (set once the upload left ``creating``)."""
        if self.s3_upload_id is None:
            raise ValueError(
                f"upload {self.id} has no multipart upload in the store ({self.status}, {self.kind})"
            )
        return self.s3_upload_id


@dataclass(slots=True)
class FileRow:
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
    status: str
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Row) -> FileRow:
        values = list(row[:15])
        values[13], values[14] = utc(values[13]), utc(values[14])
        return cls(*values)


async def upload_with_role(
    conn: Connection, upload_id: str, user_id: str
) -> tuple[UploadRow, str | None] | None:
    """The upload, and the caller's role in its case (``None``: no membership). One query."""
    row = await conn.one(
        f"SELECT {UPLOAD_COLUMNS}, m.role FROM uploads u "
        "LEFT JOIN case_members m ON m.case_id = u.case_id AND m.user_id = %s WHERE u.id = %s",
        user_id,
        upload_id,
    )
    return None if row is None else (UploadRow.of(row), row[24])


async def upload_by_id(conn: Connection, upload_id: str) -> UploadRow | None:
    row = await conn.one(f"SELECT {UPLOAD_COLUMNS} FROM uploads u WHERE u.id = %s", upload_id)
    return None if row is None else UploadRow.of(row)


async def upload_by_idempotency_key(conn: Connection, user_id: str, key: str) -> UploadRow | None:
    row = await conn.one(
        f"SELECT {UPLOAD_COLUMNS} FROM uploads u WHERE u.created_by = %s AND u.idempotency_key = %s",
        user_id,
        key,
    )
    return None if row is None else UploadRow.of(row)


async def upload_of_file(conn: Connection, file_id: str) -> UploadRow | None:
    row = await conn.one(f"SELECT {UPLOAD_COLUMNS} FROM uploads u WHERE u.file_id = %s", file_id)
    return None if row is None else UploadRow.of(row)


async def file_with_role(conn: Connection, file_id: str, user_id: str) -> tuple[FileRow, str | None] | None:
    row = await conn.one(
        f"SELECT {FILE_COLUMNS}, m.role FROM files f "
        "LEFT JOIN case_members m ON m.case_id = f.case_id AND m.user_id = %s WHERE f.id = %s",
        user_id,
        file_id,
    )
    return None if row is None else (FileRow.of(row), row[15])


async def file_by_id(conn: Connection, file_id: str) -> FileRow | None:
    row = await conn.one(f"SELECT {FILE_COLUMNS} FROM files f WHERE f.id = %s", file_id)
    return None if row is None else FileRow.of(row)


async def insert_file(conn: Connection, f: FileRow) -> None:
    await conn.run(
        "INSERT INTO files (id, log_id, case_id, filename, content_type, size, `key`, sha256, crc64nvme, "
        "verified_by, etag, status, created_by, created_at, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        f.id,
        f.log_id,
        f.case_id,
        f.filename,
        f.content_type,
        f.size,
        f.key,
        f.sha256,
        f.crc64nvme,
        f.verified_by,
        f.etag,
        f.status,
        f.created_by,
        f.created_at,
        f.updated_at,
    )


async def insert_upload(conn: Connection, u: UploadRow) -> None:
    await conn.run(
        "INSERT INTO uploads (id, file_id, log_id, case_id, s3_upload_id, filename, `key`, size, part_size, "
        "part_count, content_type, checksum_algorithm, sha256, crc64nvme, status, expires_at, claim_token, "
        "claimed_at, created_by, created_at, updated_at, kind, idempotency_key, needs_sweep) "
        f"VALUES ({', '.join(['%s'] * 24)})",
        u.id,
        u.file_id,
        u.log_id,
        u.case_id,
        u.s3_upload_id,
        u.filename,
        u.key,
        u.size,
        u.part_size,
        u.part_count,
        u.content_type,
        u.checksum_algorithm,
        u.sha256,
        u.crc64nvme,
        u.status,
        u.expires_at,
        u.claim_token,
        u.claimed_at,
        u.created_by,
        u.created_at,
        u.updated_at,
        u.kind,
        u.idempotency_key,
        u.needs_sweep,
    )


async def page_of_uploads(
    conn: Connection, user_id: str, status: str | None, log_id: str | None, after_id: str | None, limit: int
) -> list[UploadRow]:
    """The user's uploads, newest first, ``limit + 1`` of them after ``after_id``."""
    where, params = ["u.created_by = %s"], [user_id]
    for clause, value in (("u.status = %s", status), ("u.log_id = %s", log_id), ("u.id < %s", after_id)):
        if value is not None:
            where.append(clause)
            params.append(value)
    rows = await conn.all(
        f"SELECT {UPLOAD_COLUMNS} FROM uploads u WHERE {' AND '.join(where)} ORDER BY u.id DESC LIMIT %s",
        *params,
        limit + 1,
    )
    return [UploadRow.of(r) for r in rows]


async def page_of_files(
    conn: Connection, log_id: str, status: str | None, after_id: str | None, limit: int
) -> list[FileRow]:
    where, params = ["f.log_id = %s"], [log_id]
    for clause, value in (("f.status = %s", status), ("f.id < %s", after_id)):
        if value is not None:
            where.append(clause)
            params.append(value)
    rows = await conn.all(
        f"SELECT {FILE_COLUMNS} FROM files f WHERE {' AND '.join(where)} ORDER BY f.id DESC LIMIT %s",
        *params,
        limit + 1,
    )
    return [FileRow.of(r) for r in rows]


async def log_with_role(conn: Connection, log_id: str, user_id: str) -> tuple[str, str, str | None] | None:
    """``(log id, case id, the caller's role)`` of a log. One query."""
    row = await conn.one(
        "SELECT l.id, l.case_id, m.role FROM logs l "
        "LEFT JOIN case_members m ON m.case_id = l.case_id AND m.user_id = %s WHERE l.id = %s",
        user_id,
        log_id,
    )
    return None if row is None else (row[0], row[1], row[2])
