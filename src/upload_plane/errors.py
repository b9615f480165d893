"""Domain errors with stable codes, and the single mapping from any error to problem+json.

Services raise ``DomainError`` subclasses and never know about HTTP. ``problem_response`` is the only
place that turns an error into a status code.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("upload_plane.errors")

PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    code = "ERROR"
    title = "Error"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class ValidationFailed(DomainError):
    code, title = "VALIDATION_ERROR", "The request is not valid"


class Unauthenticated(DomainError):
    code, title = "UNAUTHENTICATED", "Authentication is required"


class Forbidden(DomainError):
    code, title = "FORBIDDEN", "Not allowed"


class NotFound(DomainError):
    code, title = "NOT_FOUND", "Not found"


class Conflict(DomainError):
    code, title = "CONFLICT", "Conflicts with the current state"


class UploadNotUploading(DomainError):
    code, title = "UPLOAD_NOT_UPLOADING", "The upload is no longer accepting parts"


class UploadExpired(DomainError):
    code, title = "UPLOAD_EXPIRED", "The upload has expired"


class PartsMissing(DomainError):
    code, title = "PARTS_MISSING", "Some parts have not been uploaded"


class PartSizeMismatch(DomainError):
    code, title = "PART_SIZE_MISMATCH", "Some parts do not have their planned size"


class PartEtagMismatch(DomainError):
    code, title = "PART_ETAG_MISMATCH", "Some parts' ETags differ from what the store holds"


class FileNotAvailable(DomainError):
    code, title = "FILE_NOT_AVAILABLE", "The file has no finished object to download"


class UploadBusy(DomainError):
    code, title = "UPLOAD_COMPLETING", "Another request is completing this upload"


class ObjectMismatch(DomainError):
    code, title = "OBJECT_MISMATCH", "The stored object does not match the upload"


class FileTooLarge(DomainError):
    code, title = "FILE_TOO_LARGE", "The file is larger than allowed"


class ContentTypeNotAllowed(DomainError):
    code, title = "CONTENT_TYPE_NOT_ALLOWED", "This content type is not allowed"


class StorageUnavailable(DomainError):
    code, title = "STORAGE_UNAVAILABLE", "Object storage is unavailable"


class StoredUploadGone(NotFound):
    """The store no longer knows this multipart upload or object (completed, aborted, purged)."""

    code, title = "NOT_FOUND", "Object storage does not have it"


class StorageRejected(DomainError):
    code, title = "STORAGE_REJECTED", "Object storage refused the request"


class DatabaseUnavailable(DomainError):
    code, title = "DATABASE_UNAVAILABLE", "The database is unavailable"


class RequestTooLarge(DomainError):
    code, title = "REQUEST_TOO_LARGE", "The request body is too large"


class RateLimited(DomainError):
    code, title = "RATE_LIMITED", "Too many requests"


_STATUS: dict[type[DomainError], int] = {
    ValidationFailed: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    UploadNotUploading: 409,
    PartsMissing: 409,
    PartSizeMismatch: 409,
    ObjectMismatch: 409,
    PartEtagMismatch: 409,
    FileNotAvailable: 409,
    UploadBusy: 409,
    UploadExpired: 410,
    FileTooLarge: 413,
    RequestTooLarge: 413,
    ContentTypeNotAllowed: 415,
    RateLimited: 429,
    StoredUploadGone: 404,
    StorageRejected: 502,
    StorageUnavailable: 503,
    DatabaseUnavailable: 503,
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


def _problem(
    status: int, code: str, title: str, detail: str, instance: str, extra: dict[str, Any] | None = None
) -> Response[Any]:
    body = dict(extra or {})
    body.update(type="about:blank", title=title, status=status, code=code, detail=detail, instance=instance)
    headers = {"Retry-After": "5"} if status == 503 else None
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The single error -> HTTP mapping for the whole application."""
    path = request.url.path
    if isinstance(exc, DBAPIError):
        from .db import translate_db_error  # db imports this module

        log.warning("database error on %s %s: %s", request.method, path, exc.__class__.__name__)
        exc = translate_db_error(exc)
    if isinstance(exc, DomainError):
        status = _STATUS.get(type(exc), 400)
        return _problem(status, exc.code, exc.title, exc.detail, path, exc.extra)
    if isinstance(exc, RecursionError):  # JSON nested deeper than the decoder's recursion limit
        return _problem(400, "VALIDATION_ERROR", "The request is not valid", "JSON nested too deeply", path)
    if isinstance(exc, ValidationException):
        errors = exc.extra if isinstance(exc.extra, list) else []
        return _problem(
            400, "VALIDATION_ERROR", "The request is not valid", exc.detail, path, {"errors": errors}
        )
    if isinstance(exc, NotFoundException):
        return _problem(404, "NOT_FOUND", "Not found", "No such resource", path)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        code, title = _HTTP_CODES.get(exc.status_code, ("HTTP_ERROR", "Request failed"))
        return _problem(exc.status_code, code, title, exc.detail, path)
    log.exception("unhandled error on %s %s", request.method, path, exc_info=exc)
    return _problem(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
        "Internal server error",
        "An unexpected error occurred; it has been logged",
        path,
    )


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
    401: "Missing or invalid token (UNAUTHENTICATED)",
    403: "Visible, but not allowed to the caller (FORBIDDEN)",
    404: "No such resource, or not visible to the caller (NOT_FOUND)",
    409: "Conflicts with the current state (e.g. UPLOAD_NOT_UPLOADING, PARTS_MISSING, PART_SIZE_MISMATCH)",
    410: "The upload expired (UPLOAD_EXPIRED)",
    413: "Too large (FILE_TOO_LARGE, REQUEST_TOO_LARGE)",
    415: "Content type not allowed (CONTENT_TYPE_NOT_ALLOWED)",
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
