"""Processing results for the API: a file's processing fields, and its preview link."""

from __future__ import annotations

import json
from datetime import timedelta

import msgspec

from ..auth.principal import Principal
from ..errors import NotFound
from ..files.schemas import DownloadOut, FileOut
from ..files.service import FileService
from ..models import utcnow
from ..uploads.context import Uploads
from .rows import PROCESSING_OF, PROCESSING_OF_FILES, ProcessingRecord
from .schemas import MediaOut, ProcessingOut


class PreviewNotAvailable(NotFound):
    code, title = "PREVIEW_NOT_AVAILABLE", "The file has no preview"


def decorate(out: FileOut, row: ProcessingRecord | None) -> FileOut:
    """``out`` with what processing found. The SHA-256 is the client's when it declared one
    (``sha256_verified`` says whether the stored bytes have it), else the server's."""
    if row is None:
        return out
    out.processing = ProcessingOut(row.status, row.error, row.finished_at)
    out.sha256_server = row.sha256
    if out.sha256:
        out.sha256_source = "client"
        out.sha256_verified = None if row.sha256 is None else row.sha256 == out.sha256
    elif row.sha256:
        out.sha256, out.sha256_source = row.sha256, "server"
    out.detected_type, out.type_matches = row.detected_type, row.type_matches
    if row.media:
        out.media = msgspec.convert(json.loads(row.media), MediaOut)
    out.has_preview = row.preview_key is not None
    return out


class ProcessingService:
    def __init__(self, ctx: Uploads) -> None:
        self.ctx = ctx

    async def decorate(self, outs: list[FileOut]) -> list[FileOut]:
        if not outs:
            return outs
        async with self.ctx.db.connect() as conn:
            rows = {r.file_id: r for r in await conn.all(PROCESSING_OF_FILES, file_ids=[o.id for o in outs])}
        return [decorate(o, rows.get(o.id)) for o in outs]

    async def preview_link(self, who: Principal, file_id: str) -> DownloadOut:
        """A presigned GET of the file's preview, for anyone who may see the file."""
        await FileService(self.ctx).get(who, file_id)
        async with self.ctx.db.connect() as conn:
            row = await conn.one(PROCESSING_OF, file_id=file_id)
        if row is None or row.preview_key is None:
            status = row.status if row is not None else "not processed"
            raise PreviewNotAvailable(f"the file has no preview (processing: {status})")
        ttl = self.ctx.settings.download_url_ttl
        url = self.ctx.storage.presign_get(row.preview_key, "inline", ttl)
        return DownloadOut(url=url, expires_at=utcnow() + timedelta(seconds=ttl))
