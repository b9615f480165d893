"""Wire types of upload links."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec


class LinkCreate(msgspec.Struct, forbid_unknown_fields=True):
    expires_in: Annotated[int, msgspec.Meta(ge=1, description="seconds until the link stops working")]
    max_files: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    max_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = None


class LinkOut(msgspec.Struct):
    id: str
    log_id: str
    case_id: str
    hint: str
    status: str  # active | expired | revoked | used_up
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    max_files: int | None
    max_bytes: int | None
    files_used: int
    bytes_used: int


class LinkCreated(LinkOut):
    token: str  # shown once
    url: str  # the upload page for the link's holder
    companion_endpoint: str  # Uppy AwsS3's companionEndpoint


class LinkPage(msgspec.Struct):
    items: list[LinkOut]
    next_cursor: str | None


class LinkInfo(msgspec.Struct):
    """What a link's holder may know: where it uploads, until when, and what is left."""

    log_name: str
    expires_at: datetime
    files_left: int | None
    bytes_left: int | None
