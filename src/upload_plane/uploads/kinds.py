"""How an upload's bytes reach the store: the one place that knows the kinds of upload.

- ``multipart``: a multipart upload; the client PUTs parts with URLs signed one by one, the server
  checks every planned part (ListParts) and assembles them (CompleteMultipartUpload).
- ``post``: one presigned form POST of the whole file (Uppy's small files, ``/s3/params``); the
  server never hears whether it landed. A POST policy cannot be made conditional (the store accepts
  it again until it expires, whatever is at its key), so the form writes to an *incoming* key of
  its own, and the server copies the object to the file's key inside the store when it settles:
  no POST, replayed or not, can ever write a file's key. The incoming key is emptied by the reaper
  once the policy has expired.

Everything else (claims, checks, the completion step) is the same for every kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..errors import PartEtagMismatch, PartSizeMismatch, PartsMissing, StoredUploadGone, UploadExpired
from ..storage import CRC64NVME, CompletedObject, Storage, StoredPart, normalize_etag
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

    def leftovers(self, upload: UploadRecord) -> list[tuple[str, datetime]]:
        """Keys other than the file's that a URL handed out for this upload can still write after
        it ended, and until when (the reaper empties them then)."""
        ...


class Multipart:
    name = "multipart"
    signs_parts = True
    pending_until_object = False

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

    def leftovers(self, upload: UploadRecord) -> list[tuple[str, datetime]]:
        return []  # part URLs die with the multipart upload


class FormPost:
    name = "post"
    signs_parts = False
    pending_until_object = True

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

    def leftovers(self, upload: UploadRecord) -> list[tuple[str, datetime]]:
        return [(self.incoming_key(upload), upload.expires_at)]  # the policy is dead by then


MULTIPART, FORM_POST = Multipart(), FormPost()
KINDS: dict[str, Kind] = {k.name: k for k in (MULTIPART, FORM_POST)}


def kind_of(upload: UploadRecord) -> Kind:
    return KINDS[upload.kind]
