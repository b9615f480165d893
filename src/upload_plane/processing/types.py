"""Whether a detected media type agrees with the declared one.

A declared type says what the uploader claims; libmagic says what the bytes are. They agree when
they name the same type up to well-known aliases (``image/jpg`` is ``image/jpeg``), when the
detected type is the container the declared one is made of (a ``.docx`` is a ZIP archive), or when
both are text. ``None`` when there is nothing to compare: no claim (``application/octet-stream``, or
nothing declared), or bytes libmagic does not know (``application/octet-stream``).
"""

from __future__ import annotations

NO_CLAIM = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/x-empty"})

ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/heif": "image/heic",
    "image/heic-sequence": "image/heic",
    "image/heif-sequence": "image/heic",
    "application/x-pdf": "application/pdf",
    "audio/mp3": "audio/mpeg",
    "audio/x-wav": "audio/wav",
    "audio/x-m4a": "audio/mp4",
    "video/x-m4v": "video/mp4",
    "video/x-matroska": "video/webm",
    "application/x-zip-compressed": "application/zip",
    "image/x-ms-bmp": "image/bmp",
}

#: Types stored inside a container that libmagic may report instead of them.
CONTAINERS = {
    "application/zip": ("application/vnd.openxmlformats-", "application/vnd.oasis.opendocument.",
                        "application/epub+zip", "application/java-archive", "application/vnd.android"),
    "application/x-ole-storage": ("application/msword", "application/vnd.ms-"),
    "application/cdfv2": ("application/msword", "application/vnd.ms-"),
    "video/quicktime": ("video/mp4",),
    "video/mp4": ("video/quicktime", "audio/mp4"),
    "audio/mp4": ("video/mp4",),
}  # fmt: skip


def normalise(media_type: str | None) -> str:
    bare = (media_type or "").split(";", 1)[0].strip().lower()
    return ALIASES.get(bare, bare)


def type_matches(declared: str | None, detected: str | None) -> bool | None:
    claimed, found = normalise(declared), normalise(detected)
    if claimed in NO_CLAIM or not found:
        return None
    if found in ("application/octet-stream", "application/x-empty"):
        return None if claimed in NO_CLAIM else False
    if claimed == found:
        return True
    if claimed.startswith("text/") and found.startswith("text/"):
        return True
    return any(claimed.startswith(p) for p in CONTAINERS.get(found, ()))
