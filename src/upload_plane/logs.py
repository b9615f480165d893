"""Logging: one JSON object per line (``serve``) or readable text (``dev``), each carrying the request
id of the request it belongs to; and the access line written for every request.

The request id is the client's ``X-Request-ID`` when it is a plain token (letters, digits, ``-_.``, at
most 64), else a new one; it is returned in the ``X-Request-ID`` response header. Access lines never
hold a query string or a credential: paths carrying an upload-link token are shortened.

And every line, whatever wrote it (an error's message, a traceback, a library), is redacted as it is
formatted (``redact``): upload-link, personal-access and refresh tokens keep their first
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
# Paths whose next segment is a bearer capability (an upload link's token).
_TOKEN_PATHS = re.compile(r"^(/links/|/u/)([^/]+)")

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
    """The path without a capability in it: ``/links/uplk_abc…/s3/...`` keeps 8 characters."""
    return _TOKEN_PATHS.sub(lambda m: f"{m.group(1)}{m.group(2)[:8]}…", path)


_SECRETS = re.compile(
    r"(?P<path>/links/|/u/)(?P<capability>[^/\s\"'?#]{9,})"
    r"|(?P<prefix>\b(?:uplnk|uppat|uprt)_)(?P<opaque>[\w-]{8,})"
    r"|(?P<jwt>\beyJ[\w-]{6,}\.[\w-]{6,}\.[\w-]*)"
    r"|(?P<uppy>\bc1\.[\w-]{16,}\.[\w-]{16,})"
    r"|(?P<named>(?i:x-amz-signature=|bearer\s+|upload_plane_session=))(?P<value>[^\s&;,\"']+)"
)


def _redacted(match: re.Match[str]) -> str:
    if match["path"]:
        return f"{match['path']}{match['capability'][:8]}…"
    if match["prefix"]:
        return f"{match['prefix']}{match['opaque'][:4]}…"
    if match["jwt"]:
        return "eyJ…"
    if match["uppy"]:
        return "c1.…"
    return f"{match['named']}…"


def redact(line: str) -> str:
    """``line`` with every credential shape this service knows cut short (see the module's text)."""
    return _SECRETS.sub(_redacted, line)


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
        return redact(json.dumps(payload, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        request_id = REQUEST_ID.get()
        return redact(f"{line} [{request_id}]" if request_id else line)


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
