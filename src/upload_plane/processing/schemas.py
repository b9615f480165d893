"""Wire types of processing results (fields of ``files.schemas.FileOut``)."""

from __future__ import annotations

from datetime import datetime

import msgspec


class ProcessingOut(msgspec.Struct):
    status: str  # pending, running, done, failed
    error: str | None = None
    finished_at: datetime | None = None


class GpsOut(msgspec.Struct):
    latitude: float
    longitude: float
    altitude: float | None = None


class MediaOut(msgspec.Struct):
    """What the file's decoder found; a field that does not apply is null."""

    width: int | None = None  # pixels (after EXIF orientation); PDF: the first page, in points
    height: int | None = None
    duration_seconds: float | None = None
    pages: int | None = None
    taken_at: str | None = None  # EXIF DateTimeOriginal, ISO 8601 (with its offset when recorded)
    camera: str | None = None  # EXIF make and model
    gps: GpsOut | None = None
    codec: str | None = None
    orientation: int | None = None  # the EXIF orientation, applied to the preview
