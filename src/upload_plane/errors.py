"""Domain errors with stable machine codes. Nothing here knows about HTTP.

Services, the storage gateway and the database layer raise these; ``problems.py`` (the HTTP edge) is
the one place that gives each a status code. ``extra`` carries machine-readable details (the parts
that are missing, the state an upload is in) that the edge copies into the problem document.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "ERROR"
    title = "Error"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


# -- the request ----------------------------------------------------------------------------------


class ValidationFailed(DomainError):
    code, title = "VALIDATION_ERROR", "The request is not valid"


class RequestTooLarge(DomainError):
    code, title = "REQUEST_TOO_LARGE", "The request body is too large"


class UriTooLong(DomainError):
    """A path or query string longer than any this service serves (refused before it is parsed)."""

    code, title = "URI_TOO_LONG", "The request target is too long"


class Unauthenticated(DomainError):
    code, title = "UNAUTHENTICATED", "Authentication is required"


class Forbidden(DomainError):
    code, title = "FORBIDDEN", "Not allowed"


class CredentialNotAllowed(DomainError):
    """The request's kind of credential may not do this (a personal access token creating tokens:
    a leaked token must not be able to outlive its own revocation)."""

    code, title = "CREDENTIAL_NOT_ALLOWED", "This kind of credential may not do this"


class UnsupportedMediaType(DomainError):
    """The request body is not of the one media type the route reads (sign-in takes JSON only, so a
    cross-site HTML form cannot sign a browser in)."""

    code, title = "UNSUPPORTED_MEDIA_TYPE", "Unsupported media type"


class CrossSiteRequest(DomainError):
    """A state-changing request authenticated only by the session cookie, sent from another site."""

    code, title = "CROSS_SITE_REQUEST", "Cross-site request refused"


class NotFound(DomainError):
    code, title = "NOT_FOUND", "Not found"


class Conflict(DomainError):
    code, title = "CONFLICT", "Conflicts with the current state"


class IdempotencyKeyReused(DomainError):
    """An ``Idempotency-Key`` sent again with a different request."""

    code, title = "IDEMPOTENCY_KEY_REUSED", "This idempotency key belongs to another request"


class RateLimited(DomainError):
    code, title = "RATE_LIMITED", "Too many requests"


# -- uploads and files ------------------------------------------------------------------------------


class FileTooLarge(DomainError):
    code, title = "FILE_TOO_LARGE", "The file is larger than allowed"


class ContentTypeNotAllowed(DomainError):
    code, title = "CONTENT_TYPE_NOT_ALLOWED", "This content type is not allowed"


class UploadNotUploading(DomainError):
    """The upload left ``uploading`` (completed, aborted, expired) or another request holds it."""

    code, title = "UPLOAD_NOT_UPLOADING", "The upload is no longer accepting parts"


class UploadBusy(DomainError):
    """Another request holds the upload (completing, aborting) and did not finish in time."""

    code, title = "UPLOAD_COMPLETING", "Another request is completing or aborting this upload"


class UploadExpired(DomainError):
    code, title = "UPLOAD_EXPIRED", "The upload has expired"


class PartsMissing(DomainError):
    code, title = "PARTS_MISSING", "Some parts have not been uploaded"


class PartSizeMismatch(DomainError):
    code, title = "PART_SIZE_MISMATCH", "Some parts do not have their planned size"


class PartEtagMismatch(DomainError):
    code, title = "PART_ETAG_MISMATCH", "Some parts' ETags differ from what the store holds"


class PartsChanged(DomainError):
    """The store refused to assemble the parts it had just listed: a part was sent again (or
    removed) while complete ran. A client race, not a store failure: completing again succeeds."""

    code, title = "PARTS_CHANGED", "The upload's parts changed while it was being completed"


class ChecksumMismatch(DomainError):
    """The store computed another checksum than the one declared: the bytes are not the file the
    client described. Nothing was assembled; the upload stays open to send the right parts."""

    code, title = "CHECKSUM_MISMATCH", "The data does not match its declared checksum"


class ObjectMismatch(DomainError):
    code, title = "OBJECT_MISMATCH", "The stored object does not match the upload"


class FileRetained(DomainError):
    """The store keeps the file's bytes under a retention that nobody may cut short (compliance
    mode) or a lock this request may not lift: it cannot be deleted before ``retained_until``."""

    code, title = "FILE_RETAINED", "The file is under retention and cannot be deleted yet"


class FileNotAvailable(DomainError):
    code, title = "FILE_NOT_AVAILABLE", "The file has no finished object to download"


# -- upload links and the Uppy routes ---------------------------------------------------------------


class UploadLinkExpired(DomainError):
    code, title = "UPLOAD_LINK_EXPIRED", "The upload link has expired"


class UploadLinkRevoked(DomainError):
    code, title = "UPLOAD_LINK_REVOKED", "The upload link was revoked"


class LinkFilesExhausted(DomainError):
    """The link's ``max_files`` are all taken (counted across every upload through it)."""

    code, title = "LINK_FILES_EXHAUSTED", "The upload link allows no more files"


class LinkBytesExhausted(DomainError):
    """The file does not fit in what is left of the link's ``max_bytes``."""

    code, title = "LINK_BYTES_EXHAUSTED", "The file is larger than what the upload link has left"


class KeyMismatch(DomainError):
    """An Uppy request named an object key that is not the one of its upload."""

    code, title = "KEY_MISMATCH", "The key does not belong to this upload"


# -- dependencies ---------------------------------------------------------------------------------


class StorageUnavailable(DomainError):
    code, title = "STORAGE_UNAVAILABLE", "Object storage is unavailable"


class QueueUnavailable(DomainError):
    """The job queue (Redis) did not answer; processing requests wait in the outbox meanwhile."""

    code, title = "QUEUE_UNAVAILABLE", "The job queue did not answer"


class StorageOutcomeUnknown(StorageUnavailable):
    """The store received a request that is not safe to send twice, and its answer never came back
    (the connection dropped, the store died, the read timed out): it may or may not have done it.
    For the client, an outage like any other (503, retry)."""


class StoredUploadGone(DomainError):
    """The store no longer knows this multipart upload or object (completed, aborted, purged)."""

    code, title = "NOT_FOUND", "Object storage does not have it"


class StorageRejected(DomainError):
    code, title = "STORAGE_REJECTED", "Object storage refused the request"


class DatabaseUnavailable(DomainError):
    """The database could not be reached or refused the connection; the transaction did not happen."""

    code, title = "DATABASE_UNAVAILABLE", "The database is unavailable"


class DatabaseFailed(DomainError):
    """The database answered with an error that is neither the client's nor an outage (a bug)."""

    code, title = "INTERNAL_ERROR", "Internal server error"
