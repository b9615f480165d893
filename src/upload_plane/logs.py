"""Logging: one JSON object per line (``serve``) or readable text (``dev``), each carrying the request
id of the request it belongs to; and the access line written for every request.

The request id is the client's ``X-Request-ID`` when it is a plain token (letters, digits, ``-_.``, at
most 64), else a new one; it is returned in the ``X-Request-ID`` response header. Access lines never
hold a query string or a credential: their path is redacted (``loggable_path``), and they say so
(``redacted``), which spares them a second pass.

Every other line, whatever wrote it (an error's message, a traceback, a library), is redacted as it
is formatted (``redact``): upload-link, personal-access and refresh tokens keep their first
characters, JWTs, Uppy capabilities, bearer values, session cookies and presigned URL signatures
are cut, so no whole credential reaches a log even through a path nobody thought of.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("upload_plane_request_id", default=None)
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

access_log = logging.getLogger("upload_plane.access")


def request_id_from(header: bytes | None) -> str | None:
    if header is None:
        return None
    try:
        value = header.decode("ascii")
    except UnicodeDecodeError:
        return None
    return value if _VALID_ID.match(value) else None


def loggable_path(path: str) -> str:
    """The path without a credential in it: ``/links/uplnk_ab…/s3/multipart/c1.…/1`` (a link token
    keeps 8 characters, an Uppy capability its version)."""
    return redact(path)


# Each shape is looked for only where its literal mark is in the line (a substring test costs far
# less than a regular expression that tries every shape at every position: the access line of
# every request passes here).
_A = re.ASCII
_CAPABILITY_PATH = re.compile(r"(/links/|/u/)([^/\s\"'?#]{9,})")
_OPAQUE = re.compile(r"(uplnk_|uppat_|uprt_)([\w-]{8,})", _A)
_JWT = re.compile(r"eyJ[\w-]{6,}\.[\w-]{6,}\.[\w-]*", _A)
_UPPY = re.compile(r"c1\.[\w-]{16,}\.[\w-]{16,}", _A)
_NAMED = {  # lower-case mark -> the value after it
    "x-amz-signature=": re.compile(r"(x-amz-signature=)[^\s&;,\"']+", _A | re.IGNORECASE),
    "bearer": re.compile(r"(bearer\s+)[^\s&;,\"']+", _A | re.IGNORECASE),
    "upload_plane_session=": re.compile(r"(upload_plane_session=)[^\s&;,\"']+", _A),
}


def redact(line: str) -> str:
    """``line`` with every credential shape this service knows cut short (see the module's text)."""
    if "/links/" in line or "/u/" in line:
        line = _CAPABILITY_PATH.sub(lambda m: f"{m[1]}{m[2][:8]}…", line)
    if "uplnk_" in line or "uppat_" in line or "uprt_" in line:
        line = _OPAQUE.sub(lambda m: f"{m[1]}{m[2][:4]}…", line)
    if "eyJ" in line:
        line = _JWT.sub("eyJ…", line)
    if "c1." in line:
        line = _UPPY.sub("c1.…", line)
    lower = line.lower()
    for mark, value in _NAMED.items():
        if mark in lower:
            line = value.sub(r"\1…", line)
    return line


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id", ...fields}``; ``extra={"fields": {...}}`` adds
    fields; exceptions come as ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            payload["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        line = json.dumps(payload, default=str, ensure_ascii=False)
        return line if getattr(record, "redacted", False) else redact(line)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        request_id = REQUEST_ID.get()
        line = f"{line} [{request_id}]" if request_id else line
        return line if getattr(record, "redacted", False) else redact(line)


def configure(fmt: str = "json", level: int = logging.INFO) -> None:
    """Send every logger (uvicorn's included) to stderr in ``fmt`` ("json" or "text")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # replaced by upload_plane.access
    for noisy in ("alembic", "werkzeug", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
