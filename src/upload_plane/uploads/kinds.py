"""How an upload's bytes reach the store: the one place that knows the kinds of upload.

- ``multipart``: a multipart upload; the client PUTs parts with URLs signed one by one, the server
  checks every planned part (ListParts) and assembles them (CompleteMultipartUpload).
- ``post``: one presigned form POST of the whole file (Uppy's small files, ``/s3/params``); the
  server never hears whether it landed. A POST policy cannot be made conditional (the store accepts
  it again until it expires, whatever is at its key), so the form writes to an *incoming* key of
  its own, and the server copies the object to the file's key inside the store when it settles:
  no POST, replayed or not, can ever write a file's key. The incoming key is emptied by the reaper
  once the policy has expired.
- ``put``: one presigned PUT of the whole file to its final key (a file of at most one part, started
  in a batch): the URL signs the exact length, the type, one checksum the store checks the bytes
  against and ``If-None-Match: *``, so it can never write over an object (a replay after the file is
  recorded is refused, 412). No multipart upload, no ListParts, no CompleteMultipartUpload: the
  object is there (HEAD) or not.

Everything else (claims, checks, the completion step) is the same for every kind.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..errors import PartEtagMismatch, PartSizeMismatch, PartsMissing, StoredUploadGone, UploadExpired
from ..models import utcnow
from ..settings import ObjectLock
from ..storage import (
    CRC64NVME,
    CompletedObject,
    ObjectToSign,
    Storage,
    StoredObject,
    StoredPart,
    lock_headers,
    normalize_etag,
)
from .queries import UploadRecord
from .rules import PartPlan
from .state import UploadStatus


@dataclass(frozen=True, slots=True)
class PartState:
    uploaded: list[StoredPart]
    missing: list[int]
    bytes_uploaded: int


def plan_of(upload: UploadRecord) -> PartPlan:
    return PartPlan(size=upload.size, part_size=upload.part_size, part_count=upload.part_count)


class Kind(Protocol):
    name: str
    #: The client sends parts with URLs it asks for (``POST /uploads/{id}/parts``).
    signs_parts: bool
    #: No object yet means the client's bytes are still on their way (until the upload expires),
    #: not that the store lost them.
    pending_until_object: bool
    #: The client sends the whole file with one PUT URL it gets when the upload starts (and again
    #: when it asks for the upload again): ``object_to_sign``.
    one_put: bool
    #: With Object Lock on, the client's own request places the lock on what it writes (the
    #: completion step need not lock the version).
    locks_on_write: bool

    async def assemble(
        self, storage: Storage, upload: UploadRecord, client_parts: list[tuple[int, str]] | None
    ) -> CompletedObject | None:
        """Have the store make the object from what the client sent; its answer (``None``: the
        client wrote the object itself). ``StoredUploadGone``: nothing left to assemble."""
        ...

    async def abandon(self, storage: Storage, upload: UploadRecord) -> None:
        """Make the store forget what the client sent so far (abort, expiry)."""
        ...

    async def part_state(self, storage: Storage, upload: UploadRecord) -> PartState:
        """What the store holds of an open upload, for a client that resumes."""
        ...

    def leftovers(self, upload: UploadRecord, ended: UploadStatus) -> list[tuple[str, datetime]]:
        """Keys a URL handed out for this upload can still write after it ended ``ended``, and
        until when (the reaper empties them then): never a completed file's own key."""
        ...

    def writes_key_until(self, upload: UploadRecord) -> datetime | None:
        """Until when a URL handed out for this upload can write the file's own key once nothing is
        there (a deleted file's), if it ever can."""
        ...

    async def checked_by_store(
        self, storage: Storage, upload: UploadRecord, completed: CompletedObject | None, stored: StoredObject
    ) -> bool:
        """Whether the store itself checked the object against a declared whole-file checksum
        (the file then records ``verified_by: "store"``)."""
        ...


async def whole_crc_checked(
    storage: Storage, upload: UploadRecord, completed: CompletedObject | None, stored: StoredObject
) -> bool:
    """Whether the store checked the whole file against the declared CRC64NVME at complete. Its
    answer to CompleteMultipartUpload says so. When that answer never arrived (an earlier complete
    assembled the object: its worker died, or the answer was lost), the object says so, if the store
    computes checksums itself: it reports the first part's own CRC64NVME (moto reports none; it also
    reports back as the object's checksum whatever was declared, unchecked), and the full-object
    CRC64NVME it combined from the parts it verified equals the declared one (else it would have
    refused)."""
    declared = upload.crc64nvme
    if not declared:
        return False
    if completed is not None:
        return completed.checksum_crc64nvme == declared
    if stored.checksum_crc64nvme != declared:
        return False
    return await storage.part_checksum(upload.key, 1) is not None


class Multipart:
    name = "multipart"
    signs_parts = True
    pending_until_object = False
    one_put = False
    locks_on_write = False
    checked_by_store = staticmethod(whole_crc_checked)

    async def assemble(
        self, storage: Storage, upload: UploadRecord, client_parts: list[tuple[int, str]] | None
    ) -> CompletedObject:
        """Verify every planned part from ListParts, then CompleteMultipartUpload (passing the parts'
        checksums and the whole-file CRC64NVME when the store is to check it)."""
        plan = plan_of(upload)
        stored = {p.part_number: p for p in await storage.list_parts(upload.key, upload.store_upload_id)}
        missing = [n for n in range(1, plan.part_count + 1) if n not in stored]
        if missing:
            raise PartsMissing(
                f"{len(missing)} of {plan.part_count} parts are missing", missing_parts=missing[:1000]
            )
        wrong = [
            {"part_number": n, "expected_size": plan.part_bytes(n), "size": stored[n].size}
            for n in range(1, plan.part_count + 1)
            if stored[n].size != plan.part_bytes(n)
        ]
        if wrong:
            raise PartSizeMismatch(
                f"{len(wrong)} parts do not have their planned size; upload them again", parts=wrong[:1000]
            )
        if client_parts:
            differing = sorted(
                n for n, etag in client_parts if n not in stored or stored[n].etag != normalize_etag(etag)
            )
            if differing:
                raise PartEtagMismatch(
                    "the store holds different data for some parts", part_numbers=differing[:1000]
                )
        ordered = [stored[n] for n in range(1, plan.part_count + 1)]
        crc = upload.crc64nvme if upload.checksum_algorithm == CRC64NVME else None
        return await storage.complete_multipart(upload.key, upload.store_upload_id, ordered, crc)

    async def abandon(self, storage: Storage, upload: UploadRecord) -> None:
        if upload.s3_upload_id is not None:
            await storage.abort_multipart(upload.key, upload.s3_upload_id)

    async def part_state(self, storage: Storage, upload: UploadRecord) -> PartState:
        try:
            stored = await storage.list_parts(upload.key, upload.store_upload_id)
        except StoredUploadGone as exc:
            if upload.status == UploadStatus.COMPLETING:  # the store finished; the row follows
                return PartState(uploaded=[], missing=[], bytes_uploaded=upload.size)
            raise UploadExpired("The store no longer holds this upload's parts") from exc
        plan = plan_of(upload)
        # A part whose size differs from the plan (a store that did not enforce the signed
        # Content-Length) must be sent again: it counts as missing, not as uploaded.
        good = sorted(
            (
                p
                for p in stored
                if p.part_number <= plan.part_count and p.size == plan.part_bytes(p.part_number)
            ),
            key=lambda p: p.part_number,
        )
        held = {p.part_number for p in good}
        missing = [n for n in range(1, plan.part_count + 1) if n not in held]
        return PartState(uploaded=good, missing=missing, bytes_uploaded=sum(p.size for p in good))

    def leftovers(self, upload: UploadRecord, ended: UploadStatus) -> list[tuple[str, datetime]]:
        return []  # part URLs die with the multipart upload

    def writes_key_until(self, upload: UploadRecord) -> datetime | None:
        return None


class FormPost:
    name = "post"
    signs_parts = False
    pending_until_object = True
    one_put = False
    locks_on_write = False
    checked_by_store = staticmethod(whole_crc_checked)

    INCOMING = "incoming/"

    def incoming_key(self, upload: UploadRecord) -> str:
        """Where the form's POST writes (the policy's key)."""
        return f"{self.INCOMING}{upload.id}"

    def upload_id_of(self, key: str) -> str | None:
        """The upload an incoming key belongs to (what a page reports after the POST)."""
        rest = key.removeprefix(self.INCOMING)
        return rest if rest != key and rest and "/" not in rest else None

    async def assemble(
        self, storage: Storage, upload: UploadRecord, client_parts: list[tuple[int, str]] | None
    ) -> CompletedObject | None:
        """Copy what the POST wrote to the file's key (inside the store), then drop it; ``None``
        when nothing has landed yet."""
        incoming = self.incoming_key(upload)
        try:
            copied = await storage.copy_object(incoming, upload.key)
        except StoredUploadGone:
            return None
        await storage.delete_object(incoming)
        return copied

    async def abandon(self, storage: Storage, upload: UploadRecord) -> None:
        await storage.delete_object(self.incoming_key(upload))

    async def part_state(self, storage: Storage, upload: UploadRecord) -> PartState:
        return PartState(uploaded=[], missing=[1], bytes_uploaded=0)  # the object is there or not

    def leftovers(self, upload: UploadRecord, ended: UploadStatus) -> list[tuple[str, datetime]]:
        return [(self.incoming_key(upload), upload.expires_at)]  # the policy is dead by then

    def writes_key_until(self, upload: UploadRecord) -> datetime | None:
        return None  # the form writes its incoming key only


def sha256_b64(hex_digest: str) -> str:
    """A SHA-256 as S3 writes it (``x-amz-checksum-sha256``): base64 of the digest, from its hex."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


class SinglePut:
    name = "put"
    signs_parts = False
    pending_until_object = True
    one_put = True
    locks_on_write = True

    async def assemble(
        self, storage: Storage, upload: UploadRecord, client_parts: list[tuple[int, str]] | None
    ) -> None:
        return None  # the client's PUT writes the file's key itself

    async def abandon(self, storage: Storage, upload: UploadRecord) -> None:
        return None  # nothing is open in the store; an object that lands later is judged like any

    async def part_state(self, storage: Storage, upload: UploadRecord) -> PartState:
        return PartState(uploaded=[], missing=[1], bytes_uploaded=0)  # the object is there or not

    def leftovers(self, upload: UploadRecord, ended: UploadStatus) -> list[tuple[str, datetime]]:
        """The URL writes only the file's key, and only while no object is there: a completed
        file's stays; an upload that ended without one leaves the key writable until it expires
        (the URL ends before)."""
        return [] if ended == UploadStatus.COMPLETED else [(upload.key, upload.expires_at)]

    def writes_key_until(self, upload: UploadRecord) -> datetime | None:
        return upload.expires_at

    async def checked_by_store(
        self, storage: Storage, upload: UploadRecord, completed: CompletedObject | None, stored: StoredObject
    ) -> bool:
        """The store reports the checksum the URL signed, which it checked on the PUT (MinIO and S3
        refuse other bytes; moto checks none and reports none)."""
        signed = object_to_sign(upload)
        if signed.checksum_sha256:
            return stored.checksum_sha256 == signed.checksum_sha256
        crc = signed.checksum_crc64nvme
        return crc is not None and stored.checksum_crc64nvme == crc


def object_to_sign(
    upload: UploadRecord, lock: ObjectLock | None = None, now: datetime | None = None
) -> ObjectToSign:
    """What the one PUT of a ``put`` upload signs: its size, type and declared checksum, and with
    Object Lock on, the lock (a retention counted from ``now``)."""
    return ObjectToSign(
        upload.key, upload.size, upload.content_type,
        checksum_sha256=sha256_b64(upload.sha256) if upload.sha256 else None,
        checksum_crc64nvme=upload.crc64nvme,
        lock=lock_headers(lock, now or utcnow()) if lock is not None else (),
    )  # fmt: skip


MULTIPART, FORM_POST, SINGLE_PUT = Multipart(), FormPost(), SinglePut()
KINDS: dict[str, Kind] = {k.name: k for k in (MULTIPART, FORM_POST, SINGLE_PUT)}


def kind_of(upload: UploadRecord) -> Kind:
    return KINDS[upload.kind]


def kind_for(plan: PartPlan, checksum_algorithm: str | None, crc64nvme: str | None) -> Kind:
    """How a new file's bytes go (the batch start asks): a file of at most one part in one PUT,
    unless the store is to check a CRC64NVME the client declares only at complete, which only a
    multipart upload can do (a PUT signs its checksum when it starts)."""
    if plan.part_count == 1 and (checksum_algorithm != CRC64NVME or crc64nvme):
        return SINGLE_PUT
    return MULTIPART
