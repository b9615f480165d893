"""Test doubles for the ``Storage`` protocol.

``CountingStorage`` wraps any storage (the real S3 gateway on MinIO included) and counts the calls
that reach it, per operation, so tests assert what the store really saw, not only status codes. It can
also hold a call at a gate until the test releases it, to force an interleaving between requests. It
is a ``StorageWrapper`` (``storage.py``): it implements the hook, the wrapper every method.

``MemoryStorage`` is an in-memory store that may only do what MinIO does: the contract suite
(``tests/unit/test_storage_contract.py``) runs the same cases against it and against the real gateway
on MinIO (a second CompleteMultipartUpload answers NoSuchUpload, an aborted upload is gone, parts are
replaced by a later PUT, parts under 5 MiB but the last are refused, a CRC64NVME upload is checked).
It serves fast state-machine tests; it is never a stand-in for the real tier.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import anyio.to_thread

from upload_plane.client.checksums import crc64nvme, crc_b64
from upload_plane.errors import (
    ChecksumMismatch,
    PartsChanged,
    StorageRejected,
    StorageUnavailable,
    StoredUploadGone,
)
from upload_plane.settings import ObjectLock
from upload_plane.storage import (
    FULL_OBJECT,
    CompletedObject,
    ObjectToSign,
    PartToSign,
    PresignedPost,
    SignedUrl,
    Storage,
    StorageWrapper,
    StoredObject,
    StoredPart,
)

T = TypeVar("T")
GATE_TIMEOUT = 60.0
MIN_PART = 5 * 1024 * 1024  # S3's smallest part but the last (EntityTooSmall)


@dataclass
class Gate:
    """Holds the next call(s) of one operation until ``release``; ``reached`` is set when one arrives."""

    reached: threading.Event = field(default_factory=threading.Event)
    opened: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.opened.set()

    def wait_reached(self, timeout: float = GATE_TIMEOUT) -> None:
        if not self.reached.wait(timeout):
            raise TimeoutError("no call reached the gate")


class CountingStorage(StorageWrapper):
    """A ``Storage`` that counts (thread-safely) every call that reaches ``inner``, by the ``Storage``
    method's name."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.aborted: Counter[str] = Counter()  # multipart upload id -> AbortMultipartUploads sent
        self._lock = threading.Lock()
        self._gates: dict[str, Gate] = {}

    def hold(self, operation: str) -> Gate:
        """Hold calls of ``operation`` (before they reach the store) until the gate is released."""
        gate = Gate()
        with self._lock:
            self._gates[operation] = gate
        return gate

    def count(self, operation: str) -> int:
        with self._lock:
            return self.calls[operation]

    async def around(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        with self._lock:
            self.calls[operation] += 1
            gate = self._gates.pop(operation, None)
        if gate is not None:
            gate.reached.set()
            opened = await anyio.to_thread.run_sync(gate.opened.wait, GATE_TIMEOUT)
            if not opened:
                raise TimeoutError(f"gate on {operation} was never released")
        return await call()

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        with self._lock:  # the hook does not see the upload id
            self.aborted[upload_id] += 1
        await super().abort_multipart(key, upload_id)


@dataclass
class _Multipart:
    key: str
    content_type: str
    crc64nvme: bool  # created with a full-object CRC64NVME: parts carry theirs, complete checks it
    parts: dict[int, bytes] = field(default_factory=dict)


class MemoryStorage:
    """An in-memory store that does what MinIO does, held to it by the contract suite
    (``tests/unit/test_storage_contract.py``, run against both). Tests put part bytes with
    ``put_part`` (there is no HTTP data path); a part of a CRC64NVME upload gets the checksum of its
    bytes, as MinIO checks the one a client signs."""

    def __init__(self) -> None:
        self.uploads: dict[str, _Multipart] = {}
        self.objects: dict[str, bytes] = {}
        self._heads: dict[str, StoredObject] = {}
        self._parts: dict[str, list[str | None]] = {}  # an object's parts: the CRC64NVME computed, if any
        self._signed_puts: dict[str, tuple[str, dict[str, str]]] = {}  # URL -> key, signed headers
        self.down = False
        self._lock = threading.Lock()
        self._next = 0

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailable("Object storage did not answer; nothing was changed")

    def put_part(self, upload_id: str, part_number: int, data: bytes) -> None:
        with self._lock:
            self.uploads[upload_id].parts[part_number] = data

    def put_object(self, url: str, data: bytes, headers: Mapping[str, str]) -> int:
        """A client's PUT of ``data`` with a single-PUT ``url`` and the ``headers`` it sends, answered
        as MinIO answers it: 400 when a signed header is left out (``AccessDenied``), 403 when one
        differs (the signature; the length is signed), 400 when the bytes are not the signed checksum's
        (``XAmzContentChecksumMismatch``), 412 when the key holds an object (``If-None-Match: *``;
        MinIO checks it before the bytes), else 200 with the object stored (HEAD reports its
        checksum). Only 200 stores anything."""
        key, signed = self._signed_puts[url]
        sent = {name.lower(): value for name, value in headers.items()}
        if not signed.keys() <= sent.keys():
            return 400
        if sent != signed or int(sent["content-length"]) != len(data):
            return 403
        sha256 = base64.b64encode(hashlib.sha256(data).digest()).decode()
        crc = _crc(data) if "x-amz-checksum-crc64nvme" in sent else None
        with self._lock:
            if sent.get("if-none-match") == "*" and key in self.objects:
                return 412  # checked before the bytes: a replay with other bytes is 412 too
            if (
                sent.get("x-amz-checksum-sha256", sha256) != sha256
                or sent.get("x-amz-checksum-crc64nvme", crc) != crc
            ):
                return 400
            self.objects[key] = data
            self._heads[key] = StoredObject(
                len(data), _etag(data), sent.get("content-type", "binary/octet-stream"),
                checksum_crc64nvme=crc, checksum_type=FULL_OBJECT if crc else None,
                checksum_sha256=sha256 if "x-amz-checksum-sha256" in sent else None,
            )  # fmt: skip
            self._parts.pop(key, None)
        return 200

    async def ping(self) -> None:
        self._check()

    async def create_multipart(self, key: str, content_type: str, crc64nvme: bool = False) -> str:
        self._check()
        with self._lock:
            self._next += 1
            upload_id = f"mem-{self._next}"
            self.uploads[upload_id] = _Multipart(key, content_type, crc64nvme)
        return upload_id

    def _upload(self, key: str, upload_id: str) -> _Multipart:
        upload = self.uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise StoredUploadGone("Object storage does not have it (NoSuchUpload)")
        return upload

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        self._check()
        with self._lock:
            upload = self._upload(key, upload_id)
            return [
                StoredPart(n, len(b), _etag(b), _crc(b) if upload.crc64nvme else None)
                for n, b in sorted(upload.parts.items())
            ]

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], crc64nvme: str | None = None
    ) -> CompletedObject:
        """MinIO's checks, in its order: some parts, in ascending order, each held with the listed
        ETag (and, for a CRC64NVME upload, the listed checksum: none is listed without a whole-file
        value), all but the last at least 5 MiB; then the whole file's CRC64NVME (a plain upload has
        none to check a declared one against)."""
        self._check()
        with self._lock:
            upload = self._upload(key, upload_id)
            if not parts:
                raise StorageRejected("Object storage refused the request (InvalidRequest)")
            numbers = [p.part_number for p in parts]
            if numbers != sorted(set(numbers)):
                raise PartsChanged("the store refused to assemble the parts (InvalidPartOrder)")
            for part in parts:
                held = upload.parts.get(part.part_number)
                listed_crc = part.checksum_crc64nvme if crc64nvme else None
                if (
                    held is None
                    or _etag(held) != part.etag
                    or (upload.crc64nvme and listed_crc != _crc(held))
                ):
                    raise PartsChanged("the store refused to assemble the parts (InvalidPart)")
            chunks = [upload.parts[n] for n in numbers]
            if any(len(chunk) < MIN_PART for chunk in chunks[:-1]):
                raise PartsChanged("the store refused to assemble the parts (EntityTooSmall)")
            data = b"".join(chunks)
            checked = _crc(data) if upload.crc64nvme else None
            if crc64nvme is not None and crc64nvme != checked:
                raise ChecksumMismatch("the data is not what was declared (XAmzContentChecksumMismatch)")
            etag = multipart_etag(chunks)
            checksum_type = FULL_OBJECT if checked else None
            self.objects[key] = data
            self._heads[key] = StoredObject(len(data), etag, upload.content_type, checked, checksum_type)
            self._parts[key] = [_crc(chunk) if upload.crc64nvme else None for chunk in chunks]
            del self.uploads[upload_id]
        return CompletedObject(etag, checked, checksum_type)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self._check()  # like MinIO: success whether or not the upload existed (on that key)
        with self._lock:
            upload = self.uploads.get(upload_id)
            if upload is not None and upload.key == key:
                del self.uploads[upload_id]

    async def list_multipart_uploads(self, key: str) -> list[str]:
        self._check()
        with self._lock:
            return [upload_id for upload_id, upload in self.uploads.items() if upload.key == key]

    async def head_object(self, key: str) -> StoredObject | None:
        self._check()
        with self._lock:
            return self._heads.get(key) if key in self.objects else None

    async def part_checksum(self, key: str, part_number: int) -> str | None:
        """A part of an object assembled from a CRC64NVME upload has the checksum MinIO computed;
        other objects none; a part number the object does not have is refused (416)."""
        self._check()
        with self._lock:
            parts = self._parts.get(key) if key in self.objects else None
        if parts is None:
            return None
        if not 1 <= part_number <= len(parts):
            raise StorageRejected("Object storage refused the request (InvalidPartNumber)")
        return parts[part_number - 1]

    async def delete_object(
        self, key: str, version_id: str | None = None, *, bypass_governance: bool = False
    ) -> None:
        """An unversioned bucket, as the contract's: a version id names the only version there is."""
        self._check()
        with self._lock:
            self.objects.pop(key, None)
            self._heads.pop(key, None)
            self._parts.pop(key, None)

    async def copy_object(self, source_key: str, key: str) -> CompletedObject:
        self._check()
        with self._lock:
            data = self.objects.get(source_key)
            if data is None:
                raise StoredUploadGone("Object storage does not have it (NoSuchKey)")
            source = self._heads[source_key]
            self.objects[key] = data
            self._heads[key] = StoredObject(len(data), _etag(data), source.content_type)
            self._parts.pop(key, None)
        return CompletedObject(_etag(data))

    async def protect(self, key: str, version_id: str, lock: ObjectLock, now: datetime) -> None:
        self._check()  # like MinIO on a bucket made without Object Lock
        raise StorageRejected(
            "Object storage refused the request (InvalidRequest)", store_code="InvalidRequest"
        )

    async def unprotect(self, key: str, version_id: str) -> None:
        await self.protect(key, version_id, ObjectLock("legal-hold"), datetime.now())

    async def purge(self, key: str) -> int:
        self._check()
        with self._lock:
            there = key in self.objects
        await self.delete_object(key)
        return int(there)

    async def object_lock_enabled(self) -> bool:
        self._check()
        return False

    async def put_tombstone(self, key: str) -> bool:
        self._check()
        with self._lock:
            if key in self.objects:
                return False
            self.objects[key] = b""
            self._heads[key] = StoredObject(0, _etag(b""), "binary/octet-stream")
        return True

    def presign_parts(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[PartToSign],
        expires_in: int,
        now: datetime | None = None,
    ) -> list[SignedUrl]:
        return [
            SignedUrl(f"memory://{upload_id}/{p.part_number}", {"Content-Length": str(p.size)}) for p in parts
        ]

    def presign_puts(
        self, objects: Sequence[ObjectToSign], expires_in: int, now: datetime | None = None
    ) -> list[SignedUrl]:
        signed = []
        for o in objects:
            with self._lock:
                self._next += 1
                url = f"memory://put/{self._next}"
                self._signed_puts[url] = (o.key, {k.lower(): v for k, v in o.headers().items()})
            signed.append(SignedUrl(url, o.headers()))
        return signed

    def presign_get(
        self, key: str, content_disposition: str, expires_in: int, version_id: str | None = None
    ) -> str:
        return f"memory://{key}"

    def presign_post(self, key: str, content_type: str, size: int, expires_in: int) -> PresignedPost:
        return PresignedPost("memory://bucket/", {"key": key, "Content-Type": content_type})

    def object_url(self, key: str) -> str:
        return f"memory://bucket/{key}"

    async def aclose(self) -> None:
        return None


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def multipart_etag(chunks: Sequence[bytes]) -> str:
    """S3's ETag of an assembled object: the MD5 of its parts' MD5s, a dash, their count."""
    digests = b"".join(hashlib.md5(c, usedforsecurity=False).digest() for c in chunks)
    return f"{_etag(digests)}-{len(chunks)}"


def _crc(data: bytes) -> str:
    return crc_b64(crc64nvme(data))
