"""Pure rules of the upload domain: part plan, object keys, filename hygiene (states: ``state.py``)."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_PARTS = 10_000
MAX_BATCH = 1000  # files started, or uploads completed, by one batch request
SAFE_NAME_MAX_BYTES = 200
DISPOSITION_MAX_BYTES = 255  # keeps the presigned download URL (which carries it twice) short


@dataclass(frozen=True, slots=True)
class PartPlan:
    size: int
    part_size: int
    part_count: int

    def part_bytes(self, part_number: int) -> int:
        """The exact number of bytes part ``part_number`` (1-based) must hold."""
        if not 1 <= part_number <= self.part_count:
            raise ValueError(f"part {part_number} outside 1..{self.part_count}")
        if part_number < self.part_count:
            return self.part_size
        return self.size - self.part_size * (self.part_count - 1)


def plan_parts(size: int, default_part_size: int, requested: int | None = None) -> PartPlan:
    """part_size = max(requested or default, ceil(size / 10000) rounded up to 1 MiB), in 5 MiB..5 GiB.

    A 0-byte file is one empty part. ``size`` must already be within the allowed maximum.
    """
    if size < 0:
        raise ValueError("size must not be negative")
    floor_for_count = math.ceil(math.ceil(size / MAX_PARTS) / MIB) * MIB
    part_size = max(requested or default_part_size, floor_for_count)
    part_size = min(max(part_size, MIN_PART_SIZE), MAX_PART_SIZE)
    part_count = max(1, math.ceil(size / part_size))
    if part_count > MAX_PARTS:
        raise ValueError("file too large for 10,000 parts of at most 5 GiB")
    return PartPlan(size=size, part_size=part_size, part_count=part_count)


_RESERVED = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_BIDI_AND_INVISIBLE = {"Cf", "Cc", "Cs", "Co", "Cn", "Zl", "Zp"}
_SPACES = re.compile(r"\s+")
FALLBACK_NAME = "file"


def safe_name(filename: str) -> str:
    """A filename safe to put in an object key; never empty, never a path, at most 200 bytes.

    NFC-normalised; only the last path component is kept; control, format (RTL override, zero-width)
    and reserved characters become ``_``; leading dots and spaces are dropped.
    """
    name = unicodedata.normalize("NFC", filename)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join("_" if unicodedata.category(ch) in _BIDI_AND_INVISIBLE else ch for ch in name)
    name = _RESERVED.sub("_", name)
    name = _SPACES.sub(" ", name).strip()
    name = name.lstrip(". ")
    name = name.rstrip(". ")
    name = truncate_name(name, SAFE_NAME_MAX_BYTES)
    if not name.strip("_"):
        return FALLBACK_NAME
    return name


def truncate_name(name: str, max_bytes: int) -> str:
    """Cut ``name`` to ``max_bytes`` of UTF-8, keeping a short extension when there is one."""
    if len(name.encode()) <= max_bytes:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode()) > 16 or not stem:
        stem, ext = name, ""
    budget = max_bytes - (len(ext.encode()) + 1 if ext else 0)
    stem = stem.encode()[:budget].decode(errors="ignore").rstrip(". ")
    return f"{stem}.{ext}" if ext else stem


def object_key(case_id: str, log_id: str, file_id: str, filename: str) -> str:
    return f"{log_prefix(case_id, log_id)}{file_id}/{safe_name(filename)}"


def log_prefix(case_id: str, log_id: str) -> str:
    return f"cases/{case_id}/logs/{log_id}/"


def content_disposition(filename: str) -> str:
    """RFC 6266 attachment header: an ASCII fallback plus the UTF-8 ``filename*``."""
    from urllib.parse import quote

    display = unicodedata.normalize("NFC", filename).replace("\\", "/").rsplit("/", 1)[-1]
    display = "".join(ch for ch in display if unicodedata.category(ch) not in _BIDI_AND_INVISIBLE)
    display = truncate_name(display, DISPOSITION_MAX_BYTES)
    fallback = (
        "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%;' else "_" for ch in display).strip()
        or FALLBACK_NAME
    )
    encoded = quote(display or FALLBACK_NAME, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
