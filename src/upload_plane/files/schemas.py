"""Wire types of files."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ..processing.schemas import MediaOut, ProcessingOut


class FileOut(msgspec.Struct):
    id: str
    status: str
    filename: str
    content_type: str
    size: int
    sha256: str | None
    crc64nvme: str | None
    verified_by: str | None
    etag: str | None
    key: str
    log_id: str
    case_id: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    # the store's version of the recorded bytes (a versioned bucket): every download is of it
    version_id: str | None = None
    # in lists: the uploader's username, and the upload link the file came through (if any)
    uploaded_by: str | None = None
    upload_link_id: str | None = None
    # after the upload (processing/): null until the file was processed
    processing: ProcessingOut | None = None
    sha256_source: str | None = None  # "client" (declared) or "server" (computed from the store)
    sha256_verified: bool | None = None  # a declared sha256 checked against the stored bytes
    sha256_server: str | None = None  # the SHA-256 the server computed from the stored bytes
    detected_type: str | None = None  # from the first bytes (magic numbers)
    type_matches: bool | None = None  # detected_type agrees with content_type (null: nothing to compare)
    media: MediaOut | None = None
    has_preview: bool = False


class FilePage(msgspec.Struct):
    items: list[FileOut]
    next_cursor: str | None


class DownloadOut(msgspec.Struct):
    url: str
    expires_at: datetime
