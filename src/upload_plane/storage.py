"""The narrow storage gateway: what the upload service needs from S3, and the boto3 implementation.

``Storage`` is the protocol the services depend on; ``S3Storage`` is the only module that talks to
boto3 (tests add an in-memory fake). ``StorageWrapper`` is the one delegating ``Storage``: it passes
every call to the store it wraps through one hook, which the metered wrapper (``metrics.py``) and the
tests' counting wrapper override. Blocking boto3 calls run in worker threads; presigning is local
(``signing.Presigner``) and needs none.

Provider errors become domain errors here, per operation:
- a multipart upload the store no longer knows (``NoSuchUpload``) is ``StoredUploadGone`` — it was
  completed, aborted or purged, and the caller decides which with HeadObject;
- parts the store refuses to assemble (``InvalidPart``, ``InvalidPartOrder``, ``EntityTooSmall``) are
  ``PartsChanged``: a part was sent again while complete ran, a client race;
- a declared checksum the data does not have (``XAmzContentChecksumMismatch``, ``BadDigest``) is
  ``ChecksumMismatch``; the multipart upload stays, so the right parts can still be sent;
- a missing bucket (``NoSuchBucket``), a 5xx or no answer is ``StorageUnavailable`` (503, nothing
  changed) — never a verdict about an upload;
- any other refusal is ``StorageRejected``.

S3/MinIO notes:
- ListParts pages at 1000 parts; a 10,000-part upload needs ten calls.
- MinIO answers NoSuchUpload to a second CompleteMultipartUpload, where moto repeats the first answer;
  callers must not rely on either and recover with HeadObject.
- HeadObject has no body, so a missing key and a missing bucket both arrive as a bare 404; the
  gateway asks HeadBucket before calling an object missing.
- MinIO answers AbortMultipartUpload with 204 for any upload id, one it completed or never knew
  included; whether an abort came after a complete is only known from HeadObject.
- MinIO cannot list multipart uploads by prefix, so orphans are found from the database.
- A HeadObject of an assembled object reports its full-object checksum, but moto reports the value
  the client declared at complete without checking it; HeadObject with ``partNumber`` reports a
  part's own checksum only from a store that computed it (MinIO), never from moto.
- Full-object CRC64NVME (MinIO, AWS S3): the algorithm and type must be declared at
  CreateMultipartUpload; each part is then refused without its (signed) ``x-amz-checksum-crc64nvme``;
  CompleteMultipartUpload must list every part's checksum (else ``InvalidPart``) and the whole-file
  value, which the store checks by combining the part checksums it verified (no re-read). MinIO
  answers with the value it checked; moto checks nothing and answers none.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import anyio.to_thread
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .errors import (
    ChecksumMismatch,
    DomainError,
    FileRetained,
    PartsChanged,
    StorageRejected,
    StorageUnavailable,
    StoredUploadGone,
)
from .s3http import NS, S3Http, StoreError, text
from .settings import ObjectLock, Settings, SettingsError
from .signing import Presigner

log = logging.getLogger("upload_plane.storage")
T = TypeVar("T")

_UPLOAD_GONE = frozenset({"NoSuchUpload"})
_VERSION_GONE = frozenset({"NoSuchVersion", "NoSuchKey", "404"})
#: A delete the store refuses because of a legal hold or retention (MinIO: InvalidRequest "Object is
#: WORM protected"; AWS S3: AccessDenied).
_RETAINED = frozenset({"InvalidRequest", "AccessDenied"})
_OBJECT_GONE = frozenset({"NoSuchKey", "404", "NotFound"})
_PARTS_CHANGED = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall"})
_CHECKSUM_MISMATCH = frozenset({"XAmzContentChecksumMismatch", "BadDigest"})
CRC64NVME = "CRC64NVME"
FULL_OBJECT = "FULL_OBJECT"
_UNAVAILABLE = frozenset(
    {"NoSuchBucket", "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}
)


@dataclass(frozen=True, slots=True)
class StoredPart:
    part_number: int
    size: int
    etag: str
    checksum_crc64nvme: str | None = None


@dataclass(frozen=True, slots=True)
class StoredObject:
    size: int
    etag: str
    content_type: str
    checksum_crc64nvme: str | None = None
    checksum_type: str | None = None
    checksum_sha256: str | None = None  # base64, as the store reports one it checked on a PUT
    version_id: str | None = None  # in a versioned (or lock-enabled) bucket


@dataclass(frozen=True, slots=True)
class CompletedObject:
    """What CompleteMultipartUpload answered: the ETag, and the whole-object checksum the store
    checked (``None`` when it checked none)."""

    etag: str
    checksum_crc64nvme: str | None = None
    checksum_type: str | None = None
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class PartToSign:
    part_number: int
    size: int
    checksum_sha256: str | None = None
    checksum_crc64nvme: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectToSign:
    """A whole object a client PUTs in one request (a small file), to its final key."""

    key: str
    size: int
    content_type: str
    checksum_sha256: str | None = None  # base64
    checksum_crc64nvme: str | None = None  # base64
    lock: tuple[tuple[str, str], ...] = ()  # Object Lock headers the PUT places (``lock_headers``)

    def headers(self) -> dict[str, str]:
        """What the URL signs and the client must send: the exact length and type, ``If-None-Match:
        *`` (the store refuses to write over any object, so the URL can never replace a file), and
        one checksum the store checks the bytes against: the SHA-256 when declared (it pins the
        bytes; a CRC can be forged), else the CRC64NVME. S3 takes one ``x-amz-checksum-*`` per
        request (MinIO refuses two: ``InvalidArgument``)."""
        headers = {
            "Content-Length": str(self.size),
            "Content-Type": self.content_type,
            "If-None-Match": "*",
        }
        if self.checksum_sha256:
            headers["x-amz-checksum-sha256"] = self.checksum_sha256
        elif self.checksum_crc64nvme:
            headers["x-amz-checksum-crc64nvme"] = self.checksum_crc64nvme
        headers.update(self.lock)
        return headers


def lock_headers(lock: ObjectLock, now: datetime) -> tuple[tuple[str, str], ...]:
    """The headers that make a PUT place ``lock`` on the version it writes (signed into the URL, the
    lock costs no call of its own): a legal hold, or a retention counted from ``now``."""
    if not lock.on:
        return ()
    if lock.mode == "legal-hold":
        return (("x-amz-object-lock-legal-hold", "ON"),)
    until = (now + timedelta(days=lock.days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (("x-amz-object-lock-mode", lock.mode.upper()), ("x-amz-object-lock-retain-until-date", until))


@dataclass(frozen=True, slots=True)
class SignedUrl:
    url: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class PresignedPost:
    """A browser form upload: POST ``fields`` then the file to ``url`` (the bucket, ending in ``/``)."""

    url: str
    fields: dict[str, str]


class Storage(Protocol):
    """What the services need from object storage. Every method raises only domain errors."""

    async def ping(self) -> None: ...

    async def create_multipart(self, key: str, content_type: str, crc64nvme: bool = False) -> str:
        """Start a multipart upload (with a full-object CRC64NVME when ``crc64nvme``); its id."""
        ...

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        """Every part the store holds (all pages). ``StoredUploadGone`` if it no longer knows it."""
        ...

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], crc64nvme: str | None = None
    ) -> CompletedObject:
        """Assemble ``parts`` in order, asking the store to check the whole-object ``crc64nvme``.
        ``StoredUploadGone``, ``PartsChanged``, ``ChecksumMismatch``."""
        ...

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort; an upload the store no longer knows (completed, aborted, purged) is not an error.
        Stores differ in saying so (MinIO never does): ask ``head_object`` whether it was completed."""
        ...

    async def list_multipart_uploads(self, key: str) -> list[str]:
        """The ids of the multipart uploads open on exactly ``key`` (MinIO lists by exact key only)."""
        ...

    async def head_object(self, key: str) -> StoredObject | None:
        """The object's size, ETag and full-object checksum, ``None`` if there is no such object."""
        ...

    async def part_checksum(self, key: str, part_number: int) -> str | None:
        """The CRC64NVME the store computed for one part of an assembled object, ``None`` if it
        reports none (a store that checks nothing, or no such object)."""
        ...

    async def delete_object(
        self, key: str, version_id: str | None = None, *, bypass_governance: bool = False
    ) -> None:
        """Delete the object (one version of it, when ``version_id`` is given); deleting one that
        does not exist succeeds. ``ObjectRetained`` if a legal hold or retention keeps it."""
        ...

    async def copy_object(self, source_key: str, key: str) -> CompletedObject:
        """Copy an object inside the bucket (its bytes never leave the store): ETag and version of
        the copy. ``StoredUploadGone`` if there is no object at ``source_key``."""
        ...

    async def protect(self, key: str, version_id: str, lock: ObjectLock, now: datetime) -> None:
        """Place ``lock``'s legal hold, or its retention counted from ``now``, on one version."""
        ...

    async def unprotect(self, key: str, version_id: str) -> None:
        """Lift the legal hold of one version (retention cannot be lifted)."""
        ...

    async def purge(self, key: str) -> int:
        """Delete every version and delete marker of exactly ``key``; how many there were."""
        ...

    async def object_lock_enabled(self) -> bool:
        """Whether the bucket was created with Object Lock."""
        ...

    async def put_tombstone(self, key: str) -> bool:
        """Write an empty object at ``key`` if nothing is there (``If-None-Match: *``): a deleted
        file's key that a conditional PUT URL still valid can then no longer write. ``False`` if
        something was there."""
        ...

    def presign_parts(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[PartToSign],
        expires_in: int,
        now: datetime | None = None,
    ) -> list[SignedUrl]:
        """A PUT URL per part signing its exact Content-Length (and checksum), with the headers the
        client must send; local, no I/O."""
        ...

    def presign_puts(
        self, objects: Sequence[ObjectToSign], expires_in: int, now: datetime | None = None
    ) -> list[SignedUrl]:
        """A conditional PUT URL per object, signing ``ObjectToSign.headers``, with the headers the
        client must send; local, no I/O."""
        ...

    def presign_get(
        self, key: str, content_disposition: str, expires_in: int, version_id: str | None = None
    ) -> str:
        """A download URL; of the recorded version when ``version_id`` is given."""
        ...

    def presign_post(self, key: str, content_type: str, size: int, expires_in: int) -> PresignedPost:
        """A form upload of exactly ``size`` bytes to ``key``; local, no I/O."""
        ...

    def object_url(self, key: str) -> str:
        """Where clients see the object (not a signed URL: Uppy reports it as ``location``)."""
        ...

    async def aclose(self) -> None:
        """Release connections (at shutdown)."""
        ...


class StorageWrapper:
    """A ``Storage`` that hands every call to ``inner``: each call to the store (the async methods)
    through ``around``, named by its method, and each local presigning past ``presigned``. Subclasses
    override the hooks, never the methods, so a method added to ``Storage`` is added here once and
    every wrapper has it (``tests/unit/test_storage_wrapper.py`` holds this class to the protocol)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    async def around(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """Make the call to the store named ``operation`` (a ``Storage`` method's name)."""
        return await call()

    def presigned(self, kind: str, count: int) -> None:
        """``count`` URLs of ``kind`` (``part``, ``put``, ``download``, ``form``) were signed (locally)."""

    async def ping(self) -> None:
        await self.around("ping", self.inner.ping)

    async def create_multipart(self, key: str, content_type: str, crc64nvme: bool = False) -> str:
        return await self.around(
            "create_multipart", lambda: self.inner.create_multipart(key, content_type, crc64nvme)
        )

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        return await self.around("list_parts", lambda: self.inner.list_parts(key, upload_id))

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], crc64nvme: str | None = None
    ) -> CompletedObject:
        return await self.around(
            "complete_multipart", lambda: self.inner.complete_multipart(key, upload_id, parts, crc64nvme)
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self.around("abort_multipart", lambda: self.inner.abort_multipart(key, upload_id))

    async def list_multipart_uploads(self, key: str) -> list[str]:
        return await self.around("list_multipart_uploads", lambda: self.inner.list_multipart_uploads(key))

    async def head_object(self, key: str) -> StoredObject | None:
        return await self.around("head_object", lambda: self.inner.head_object(key))

    async def part_checksum(self, key: str, part_number: int) -> str | None:
        return await self.around("part_checksum", lambda: self.inner.part_checksum(key, part_number))

    async def delete_object(
        self, key: str, version_id: str | None = None, *, bypass_governance: bool = False
    ) -> None:
        await self.around(
            "delete_object",
            lambda: self.inner.delete_object(key, version_id, bypass_governance=bypass_governance),
        )

    async def copy_object(self, source_key: str, key: str) -> CompletedObject:
        return await self.around("copy_object", lambda: self.inner.copy_object(source_key, key))

    async def protect(self, key: str, version_id: str, lock: ObjectLock, now: datetime) -> None:
        await self.around("protect", lambda: self.inner.protect(key, version_id, lock, now))

    async def unprotect(self, key: str, version_id: str) -> None:
        await self.around("unprotect", lambda: self.inner.unprotect(key, version_id))

    async def purge(self, key: str) -> int:
        return await self.around("purge", lambda: self.inner.purge(key))

    async def object_lock_enabled(self) -> bool:
        return await self.around("object_lock_enabled", self.inner.object_lock_enabled)

    async def put_tombstone(self, key: str) -> bool:
        return await self.around("put_tombstone", lambda: self.inner.put_tombstone(key))

    def presign_parts(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[PartToSign],
        expires_in: int,
        now: datetime | None = None,
    ) -> list[SignedUrl]:
        signed = self.inner.presign_parts(key, upload_id, parts, expires_in, now)
        self.presigned("part", len(signed))
        return signed

    def presign_puts(
        self, objects: Sequence[ObjectToSign], expires_in: int, now: datetime | None = None
    ) -> list[SignedUrl]:
        signed = self.inner.presign_puts(objects, expires_in, now)
        self.presigned("put", len(signed))
        return signed

    def presign_get(
        self, key: str, content_disposition: str, expires_in: int, version_id: str | None = None
    ) -> str:
        url = self.inner.presign_get(key, content_disposition, expires_in, version_id)
        self.presigned("download", 1)
        return url

    def presign_post(self, key: str, content_type: str, size: int, expires_in: int) -> PresignedPost:
        post = self.inner.presign_post(key, content_type, size, expires_in)
        self.presigned("form", 1)
        return post

    def object_url(self, key: str) -> str:
        return self.inner.object_url(key)

    async def aclose(self) -> None:
        await self.inner.aclose()


class S3Storage:
    """``Storage`` over the store: the hot-path calls header-signed over aiohttp (``s3http.py``),
    bucket set-up with boto3 (in worker threads), and part/download URLs presigned locally."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.settings = settings
        self._boto: Any = None
        self.presigner = Presigner(
            endpoint_url=settings.presign_endpoint_url,
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )
        self.http = S3Http(
            Presigner(
                endpoint_url=settings.s3_endpoint_url,
                bucket=settings.s3_bucket,
                region=settings.s3_region,
                access_key_id=settings.s3_access_key_id,
                secret_access_key=settings.s3_secret_access_key,
            )
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- the hot path -------------------------------------------------------------------------------

    async def ping(self) -> None:
        try:
            await self.http.head(None)
        except StoreError as exc:  # HEAD has no error body: 404 is a missing bucket, 403 bad keys
            raise StorageUnavailable(f"the bucket is not reachable ({exc.status})") from exc

    async def create_multipart(self, key: str, content_type: str, crc64nvme: bool = False) -> str:
        headers = {"Content-Type": content_type}
        if crc64nvme:
            headers.update({"x-amz-checksum-algorithm": CRC64NVME, "x-amz-checksum-type": FULL_OBJECT})
        try:
            return await self.http.create_multipart(key, headers)
        except StoreError as exc:
            raise translate_store_error(exc.code, exc.status) from exc

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        parts: list[StoredPart] = []
        marker = 0
        while True:
            try:
                page = await self.http.list_parts_page(key, upload_id, marker)
            except StoreError as exc:
                raise translate_store_error(exc.code, exc.status, _UPLOAD_GONE) from exc
            for p in page.iter(f"{NS}Part"):
                parts.append(
                    StoredPart(
                        int(text(p, "PartNumber") or 0),
                        int(text(p, "Size") or 0),
                        normalize_etag(text(p, "ETag") or ""),
                        text(p, "ChecksumCRC64NVME"),
                    )
                )
            if (text(page, "IsTruncated") or "false").lower() != "true":
                return parts
            next_marker = int(text(page, "NextPartNumberMarker") or 0)
            if next_marker <= marker:
                return parts
            marker = next_marker

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], crc64nvme: str | None = None
    ) -> CompletedObject:
        headers = (
            {"x-amz-checksum-crc64nvme": crc64nvme, "x-amz-checksum-type": FULL_OBJECT} if crc64nvme else {}
        )
        listed = [(p.part_number, p.etag, p.checksum_crc64nvme if crc64nvme else None) for p in parts]
        try:
            resp = await self.http.complete_multipart(key, upload_id, listed, headers)
        except StoreError as exc:
            raise translate_store_error(exc.code, exc.status, _UPLOAD_GONE) from exc
        root = resp.xml()
        return CompletedObject(
            normalize_etag(text(root, "ETag") or ""),
            text(root, "ChecksumCRC64NVME") or resp.headers.get("x-amz-checksum-crc64nvme"),
            text(root, "ChecksumType") or resp.headers.get("x-amz-checksum-type"),
            resp.headers.get("x-amz-version-id"),  # a header only: not in the XML
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            await self.http.delete(key, (("uploadId", upload_id),))
        except StoreError as exc:
            error = translate_store_error(exc.code, exc.status, _UPLOAD_GONE)
            if not isinstance(error, StoredUploadGone):
                raise error from exc

    async def delete_object(
        self, key: str, version_id: str | None = None, *, bypass_governance: bool = False
    ) -> None:
        params = (("versionId", version_id),) if version_id else ()
        headers = {"x-amz-bypass-governance-retention": "true"} if bypass_governance else None
        try:
            await self.http.request("DELETE", key, params=params, headers=headers)
        except StoreError as exc:
            if version_id and exc.code in _RETAINED:
                raise FileRetained(f"the store keeps this version under a lock ({exc.code})") from exc
            error = translate_store_error(exc.code, exc.status, _VERSION_GONE)
            if not isinstance(error, StoredUploadGone):
                raise error from exc

    async def copy_object(self, source_key: str, key: str) -> CompletedObject:
        source = f"/{self.bucket}/{quote(source_key, safe='/~')}"
        try:
            resp = await self.http.request("PUT", key, headers={"x-amz-copy-source": source})
        except StoreError as exc:
            raise translate_store_error(exc.code, exc.status, _OBJECT_GONE) from exc
        root = resp.xml()
        if root.tag.endswith("Error"):  # a copy may fail after its 200 (like a complete)
            code = text(root, "Code") or "InternalError"
            raise translate_store_error(code, 500, _OBJECT_GONE)
        return CompletedObject(
            normalize_etag(text(root, "ETag") or ""), version_id=resp.headers.get("x-amz-version-id")
        )

    async def protect(self, key: str, version_id: str, lock: ObjectLock, now: datetime) -> None:
        if lock.mode == "legal-hold":
            subresource, body = "legal-hold", "<LegalHold><Status>ON</Status></LegalHold>"
        else:
            until = (now + timedelta(days=lock.days)).strftime("%Y-%m-%dT%H:%M:%SZ")
            subresource = "retention"
            body = (
                f"<Retention><Mode>{lock.mode.upper()}</Mode>"
                f"<RetainUntilDate>{until}</RetainUntilDate></Retention>"
            )
        await self._put_lock(key, version_id, subresource, body)

    async def unprotect(self, key: str, version_id: str) -> None:
        await self._put_lock(key, version_id, "legal-hold", "<LegalHold><Status>OFF</Status></LegalHold>")

    async def _put_lock(self, key: str, version_id: str, subresource: str, body: str) -> None:
        """The lock calls need a Content-MD5 (or checksum) of their body (S3 and MinIO refuse them
        without: MissingContentMD5)."""
        data = body.encode()
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        try:
            await self.http.request(
                "PUT",
                key,
                params=((subresource, None), ("versionId", version_id)),
                headers={"Content-MD5": md5, "Content-Type": "application/xml"},
                body=data,
            )
        except StoreError as exc:
            raise translate_store_error(exc.code, exc.status) from exc

    async def purge(self, key: str) -> int:
        versions: list[str] = []
        key_marker, version_marker = "", ""
        while True:
            params: list[tuple[str, str | None]] = [("prefix", key), ("versions", None)]
            if key_marker:
                params += [("key-marker", key_marker), ("version-id-marker", version_marker)]
            try:
                page = (await self.http.request("GET", None, params=params)).xml()
            except StoreError as exc:
                raise translate_store_error(exc.code, exc.status) from exc
            for kind in ("Version", "DeleteMarker"):
                versions += [
                    text(v, "VersionId") or "null" for v in page.iter(f"{NS}{kind}") if text(v, "Key") == key
                ]
            key_marker = text(page, "NextKeyMarker") or ""
            version_marker = text(page, "NextVersionIdMarker") or ""
            if (text(page, "IsTruncated") or "false").lower() != "true" or not key_marker:
                break
        for version in versions:
            await self.delete_object(key, None if version == "null" else version, bypass_governance=True)
        if not versions:
            await self.delete_object(key)  # a store that lists no versions (unversioned)
        return len(versions)

    async def put_tombstone(self, key: str) -> bool:
        try:
            await self.http.request("PUT", key, headers={"If-None-Match": "*", "Content-Length": "0"})
        except StoreError as exc:
            if exc.code in ("PreconditionFailed", "412"):
                return False
            raise translate_store_error(exc.code, exc.status) from exc
        return True

    async def object_lock_enabled(self) -> bool:
        try:
            root = (await self.http.request("GET", None, params=(("object-lock", None),))).xml()
        except StoreError as exc:
            if exc.code in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration", "404"):
                return False
            raise translate_store_error(exc.code, exc.status) from exc
        return (text(root, "ObjectLockEnabled") or "") == "Enabled"

    async def list_multipart_uploads(self, key: str) -> list[str]:
        found: list[str] = []
        key_marker, id_marker = "", ""
        while True:
            params = [("prefix", key), ("uploads", None)]
            if key_marker:
                params += [("key-marker", key_marker), ("upload-id-marker", id_marker)]
            try:
                page = (await self.http.request("GET", None, params=params)).xml()
            except StoreError as exc:
                raise translate_store_error(exc.code, exc.status) from exc
            found += [text(u, "UploadId") or "" for u in page.iter(f"{NS}Upload") if text(u, "Key") == key]
            if (text(page, "IsTruncated") or "false").lower() != "true":
                return [u for u in found if u]
            key_marker = text(page, "NextKeyMarker") or ""
            id_marker = text(page, "NextUploadIdMarker") or ""
            if not key_marker:
                return [u for u in found if u]

    async def head_object(self, key: str) -> StoredObject | None:
        try:
            resp = await self.http.head(key, {"x-amz-checksum-mode": "ENABLED"})
        except StoreError as exc:
            error = translate_store_error(exc.code, exc.status, _OBJECT_GONE)
            if not isinstance(error, StoredUploadGone):
                raise error from exc
            await self.ping()  # a bare 404 may mean the bucket is gone: that is an outage
            return None
        headers = resp.headers
        return StoredObject(
            size=int(headers.get("Content-Length", "0")),
            etag=normalize_etag(headers.get("ETag", "")),
            content_type=headers.get("Content-Type", ""),
            checksum_crc64nvme=headers.get("x-amz-checksum-crc64nvme"),
            checksum_type=headers.get("x-amz-checksum-type"),
            checksum_sha256=headers.get("x-amz-checksum-sha256"),
            version_id=headers.get("x-amz-version-id"),
        )

    async def part_checksum(self, key: str, part_number: int) -> str | None:
        try:
            resp = await self.http.request(
                "HEAD",
                key,
                params=(("partNumber", str(part_number)),),
                headers={"x-amz-checksum-mode": "ENABLED"},
            )
        except StoreError as exc:
            error = translate_store_error(exc.code, exc.status, _OBJECT_GONE)
            if isinstance(error, StoredUploadGone):
                return None
            raise error from exc
        return resp.headers.get("x-amz-checksum-crc64nvme")

    # -- bucket set-up with boto3, off the event loop ----------------------------------------------

    def _client(self) -> Any:
        if self._boto is None:
            settings = self.settings
            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=3,
                read_timeout=30,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            self._boto = boto3.session.Session().client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.s3_region,
                aws_access_key_id=settings.s3_access_key_id,
                aws_secret_access_key=settings.s3_secret_access_key,
                config=config,
            )
        return self._boto

    async def _run(self, operation: str, /, *, gone: frozenset[str] = frozenset(), **kwargs: Any) -> Any:
        def call() -> Any:
            try:
                return getattr(self._client(), operation)(Bucket=self.bucket, **kwargs)
            except ClientError as exc:
                raise translate_s3_error(exc, gone) from exc
            except BotoCoreError as exc:
                raise StorageUnavailable("Object storage did not answer; nothing was changed") from exc

        return await anyio.to_thread.run_sync(call)

    async def ensure_bucket(self, cors_origins: Sequence[str], lock: ObjectLock | None = None) -> None:
        """Create the bucket if missing (with Object Lock when ``lock`` is on: it can only be chosen
        when the bucket is made) and set the CORS rules browsers need to PUT parts."""
        try:
            await self._run("head_bucket", gone=frozenset({"404", "NoSuchBucket", "NotFound"}))
        except StoredUploadGone:
            extra: dict[str, Any] = {"ObjectLockEnabledForBucket": True} if lock and lock.on else {}
            await self._run("create_bucket", **extra)
        if lock is not None and lock.on and not await self.object_lock_enabled():
            raise SettingsError(
                f"UPLOAD_PLANE_OBJECT_LOCK is {lock.mode}, but bucket {self.bucket!r} was made without "
                "Object Lock, which cannot be added later: use a new bucket (init-storage creates it "
                "with Object Lock) and copy the objects over"
            )
        rules = {
            "CORSRules": [
                {
                    "AllowedOrigins": list(cors_origins) or ["*"],
                    "AllowedMethods": ["GET", "PUT", "POST", "HEAD"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag"],
                    "MaxAgeSeconds": 3600,
                }
            ]
        }
        try:
            await self._run("put_bucket_cors", CORSConfiguration=rules)
        except StorageRejected as exc:  # MinIO: not implemented; it applies its global CORS setting
            log.info("bucket CORS not set by the store (%s); relying on its global CORS", exc)

    # -- local presigning -------------------------------------------------------------------------

    def presign_parts(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[PartToSign],
        expires_in: int,
        now: datetime | None = None,
    ) -> list[SignedUrl]:
        crc = any(p.checksum_crc64nvme for p in parts)
        header = "x-amz-checksum-crc64nvme" if crc else "x-amz-checksum-sha256"
        rows = [(p.part_number, p.size, p.checksum_crc64nvme if crc else p.checksum_sha256) for p in parts]
        urls = self.presigner.presign_parts(key, upload_id, rows, expires_in, now, checksum_header=header)
        signed = []
        for (_, size, checksum), url in zip(rows, urls, strict=True):
            headers = {"Content-Length": str(size)}
            if checksum:
                headers[header] = checksum
            signed.append(SignedUrl(url, headers))
        return signed

    def presign_puts(
        self, objects: Sequence[ObjectToSign], expires_in: int, now: datetime | None = None
    ) -> list[SignedUrl]:
        headers = [o.headers() for o in objects]
        urls = self.presigner.presign_puts(
            [(o.key, h) for o, h in zip(objects, headers, strict=True)], expires_in, now
        )
        return [SignedUrl(url, h) for url, h in zip(urls, headers, strict=True)]

    def presign_get(
        self, key: str, content_disposition: str, expires_in: int, version_id: str | None = None
    ) -> str:
        params = [("response-content-disposition", content_disposition)]
        if version_id:
            params.append(("versionId", version_id))  # botocore's order: GetObject's members'
        return self.presigner.presign("GET", key, params=params, expires_in=expires_in)

    def presign_post(self, key: str, content_type: str, size: int, expires_in: int) -> PresignedPost:
        url, fields = self.presigner.presign_post(
            key,
            fields={"Content-Type": content_type},
            content_length=(size, size),
            expires_in=expires_in,
        )
        return PresignedPost(url, fields)

    def object_url(self, key: str) -> str:
        return self.presigner.object_url(key)


def normalize_etag(etag: str) -> str:
    """An ETag without surrounding whitespace and quotes (stores and clients differ)."""
    return etag.strip().strip('"')


def translate_s3_error(exc: ClientError, gone: frozenset[str] = frozenset()) -> DomainError:
    """A store's error answer through boto3 as a domain error (see ``translate_store_error``)."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return translate_store_error(code, status, gone)


def translate_store_error(code: str, status: int, gone: frozenset[str] = frozenset()) -> DomainError:
    """A store's error answer as a domain error; ``gone`` are the codes that mean "no such thing"
    for this operation (see the module docstring)."""
    if code in gone:
        return StoredUploadGone(f"Object storage does not have it ({code})")
    if code in _CHECKSUM_MISMATCH:
        return ChecksumMismatch(
            f"the store computed another checksum than the one declared ({code}); nothing was assembled"
        )
    if code in _PARTS_CHANGED:
        return PartsChanged(
            f"the store refused to assemble the parts ({code}); a part was sent again while completing. "
            "Check the parts and complete again"
        )
    if code == "NotImplemented":  # e.g. MinIO's PutBucketCors (501): a refusal, not an outage
        return StorageRejected(f"Object storage does not implement this ({code})", store_code=code)
    if code in _UNAVAILABLE or status >= 500:
        if code == "NoSuchBucket":
            log.error("the bucket does not exist: check UPLOAD_PLANE_S3_BUCKET or run init-storage")
        return StorageUnavailable("Object storage failed; nothing was changed")
    return StorageRejected(f"Object storage refused the request ({code})", store_code=code)
