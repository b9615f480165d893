"""The HTTP edge of errors: the single mapping from any exception to an RFC 9457 problem+json.

Domain errors (``errors.py``) get their status here and nowhere else; database errors are first
translated by ``db.translate_db_error``; Litestar's own client errors keep their status with a stable
code; anything else is a 500 that is logged.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi import ResponseSpec
from sqlalchemy.exc import SQLAlchemyError

from . import errors as e
from .db import translate_db_error
from .logs import loggable_path

log = logging.getLogger("upload_plane.errors")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5

STATUS: dict[type[e.DomainError], int] = {
    e.ValidationFailed: 400,
    e.Unauthenticated: 401,
    e.Forbidden: 403,
    e.CredentialNotAllowed: 403,
    e.CrossSiteRequest: 403,
    e.NotFound: 404,
    e.StoredUploadGone: 404,
    e.Conflict: 409,
    e.UploadNotUploading: 409,
    e.UploadBusy: 409,
    e.PartsMissing: 409,
    e.PartSizeMismatch: 409,
    e.PartEtagMismatch: 409,
    e.PartsChanged: 409,
    e.ChecksumMismatch: 409,
    e.ObjectMismatch: 409,
    e.FileNotAvailable: 409,
    e.FileRetained: 409,
    e.UploadExpired: 410,
    e.UploadLinkExpired: 410,
    e.UploadLinkRevoked: 410,
    e.LinkFilesExhausted: 409,
    e.LinkBytesExhausted: 413,
    e.KeyMismatch: 403,
    e.IdempotencyKeyReused: 422,
    e.FileTooLarge: 413,
    e.RequestTooLarge: 413,
    e.UriTooLong: 414,
    e.ContentTypeNotAllowed: 415,
    e.UnsupportedMediaType: 415,
    e.RateLimited: 429,
    e.DatabaseFailed: 500,
    e.StorageRejected: 502,
    e.StorageUnavailable: 503,
    e.DatabaseUnavailable: 503,
    e.QueueUnavailable: 503,
}

_HTTP_CODES = {
    400: ("VALIDATION_ERROR", "The request is not valid"),
    401: ("UNAUTHENTICATED", "Authentication is required"),
    403: ("FORBIDDEN", "Not allowed"),
    404: ("NOT_FOUND", "Not found"),
    405: ("METHOD_NOT_ALLOWED", "Method not allowed"),
    413: ("REQUEST_TOO_LARGE", "The request body is too large"),
    415: ("UNSUPPORTED_MEDIA_TYPE", "Unsupported media type"),
    429: ("RATE_LIMITED", "Too many requests"),
}


def status_of(exc: e.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    body = dict(extra or {})
    body.update(type="about:blank", title=title, status=status, code=code, detail=detail, instance=instance)
    headers = dict(headers or {})
    if status in (429, 503):
        headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers or None)


def problem_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The single error -> HTTP mapping for the whole application."""
    path = request.url.path
    if isinstance(exc, SQLAlchemyError):
        exc = translate_db_error(exc)
    if isinstance(exc, e.DomainError):
        status = status_of(exc)
        if status >= 500 and not isinstance(exc, e.StorageUnavailable | e.DatabaseUnavailable):
            log.error("%s on %s %s: %s", exc.code, request.method, loggable_path(path), exc.detail)
        extra = dict(exc.extra)
        retry = extra.pop("retry_after", None)
        headers = {"Retry-After": str(retry)} if retry is not None else None
        return problem(status, exc.code, exc.title, exc.detail, path, extra, headers)
    if isinstance(exc, ValidationException):
        errors = exc.extra if isinstance(exc.extra, list) else []
        return problem(
            400, "VALIDATION_ERROR", "The request is not valid", exc.detail, path, {"errors": errors}
        )
    if isinstance(exc, NotFoundException):
        return problem(404, "NOT_FOUND", "Not found", "No such resource", path)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        code, title = _HTTP_CODES.get(exc.status_code, ("HTTP_ERROR", "Request failed"))
        # Litestar's own headers stay: a 405 carries the Allow header RFC 9110 requires.
        return problem(exc.status_code, code, title, exc.detail, path, headers=exc.headers)
    log.exception("unhandled error on %s %s", request.method, loggable_path(path), exc_info=exc)
    return problem(
        500,
        "INTERNAL_ERROR",
        "Internal server error",
        "An unexpected error occurred; it has been logged",
        path,
    )


async def send_problem(send: Any, exc: e.DomainError, path: str) -> None:
    """Answer ``exc`` as problem+json straight on an ASGI ``send``: for refusals made before the
    framework sees the request (``oversize.py``). The same document as ``problem``."""
    status = status_of(exc)
    body = msgspec.json.encode(
        {
            "type": "about:blank",
            "title": exc.title,
            "status": status,
            "code": exc.code,
            "detail": exc.detail,
            "instance": path[:256],
        }
    )
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class ApiRequest(Request[Any, Any, Any]):
    """Requests whose JSON body cannot be decoded at all are the client's mistake (400), whatever the
    reason: bytes that are not UTF-8 (msgspec raises ``UnicodeDecodeError``, not a decode error) or
    nesting deeper than the decoder's recursion limit.

    And bodies are checked against their route's type *strictly* before Litestar converts them (which
    it does leniently: ``"10"`` would pass as the integer 10, ``"true"`` as a boolean): a value of the
    wrong JSON type is a 400 that names it."""

    async def json(self) -> Any:
        try:
            value = await super().json()
        except UnicodeDecodeError as exc:
            raise e.ValidationFailed("The request body is not valid UTF-8") from exc
        except RecursionError as exc:
            raise e.ValidationFailed("JSON nested too deeply") from exc
        body_type = _body_type(self.route_handler)
        if body_type is not None:
            try:
                msgspec.convert(value, body_type, strict=True)
            except msgspec.ValidationError as exc:
                raise e.ValidationFailed(f"Invalid request body: {exc}") from exc
        return value


def _body_type(handler: Any) -> Any:
    """The type of the handler's ``data`` parameter (``None`` without one)."""
    data = handler.parsed_fn_signature.parameters.get("data")
    return data.annotation if data is not None else None


class Problem(msgspec.Struct):
    """RFC 9457 problem details, as every error of this API is shaped (OpenAPI documentation)."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str


_DESCRIPTIONS = {
    400: "Invalid request (VALIDATION_ERROR)",
    401: "Missing or invalid credentials (UNAUTHENTICATED)",
    404: "No such resource, or not visible to the caller (NOT_FOUND)",
    409: (
        "Conflicts with the current state (e.g. UPLOAD_NOT_UPLOADING, UPLOAD_COMPLETING, PARTS_MISSING, "
        "PART_SIZE_MISMATCH, PARTS_CHANGED, CHECKSUM_MISMATCH)"
    ),
    403: "Not allowed (FORBIDDEN, CROSS_SITE_REQUEST, KEY_MISMATCH, CREDENTIAL_NOT_ALLOWED)",
    410: "Gone (UPLOAD_EXPIRED, UPLOAD_LINK_EXPIRED, UPLOAD_LINK_REVOKED)",
    413: "Too large (FILE_TOO_LARGE, REQUEST_TOO_LARGE)",
    415: "Content type not allowed (CONTENT_TYPE_NOT_ALLOWED, UNSUPPORTED_MEDIA_TYPE)",
    422: "The Idempotency-Key was used for another request (IDEMPOTENCY_KEY_REUSED)",
    429: "Too many requests; retry after Retry-After seconds (RATE_LIMITED)",
    502: "Object storage refused the request (STORAGE_REJECTED)",
    503: "A dependency is unavailable; nothing changed (STORAGE_UNAVAILABLE, DATABASE_UNAVAILABLE)",
}


def problems(*extra: int, public: bool = False) -> dict[int, ResponseSpec]:
    """OpenAPI error responses for a handler: the common ones plus ``extra`` status codes."""
    common = (400, 413, 503) if public else (400, 401, 404, 413, 503)
    return {
        status: ResponseSpec(
            data_container=Problem, media_type=PROBLEM_JSON, description=_DESCRIPTIONS[status]
        )
        for status in sorted({*common, *extra})
    }
