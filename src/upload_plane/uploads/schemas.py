"""Wire types of the uploads API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from ..files.schemas import FileOut
from .rules import MAX_BATCH


def whole(pattern: str) -> str:
    """A ``pattern`` that must match the whole value. msgspec checks patterns with Python's
    ``re.search``, whose ``$`` also matches before a final line break: ``"text/plain\\n"`` passed
    ``^...$`` and reached the store's Content-Type header. The lookahead refuses that, and changes
    nothing where the OpenAPI document's (ECMAScript) ``$`` is read."""
    return rf"^(?:{pattern})$(?!\n)"


# The original name is display-only (TEXT column: 16,000 characters fit in 64 KiB of utf8mb4).
Filename = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=16_000,
        pattern=r"^[^\x00]*$",
        description="any name but empty or with NUL; the object key gets a cleaned copy",
    ),
]
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"  # RFC 9110 token characters that make sense in a media type
# RFC 9110 quoted-string restricted to ASCII: qdtext is HTAB, SP, and visible ASCII but DQUOTE and
# backslash; quoted-pair escapes one of those. (obs-text, bytes >= 0x80, is not accepted: the value
# goes into an HTTP header of the store, which only carries ASCII.)
_QUOTED = r'"([\t \x21\x23-\x5b\x5d-\x7e]|\\[\t \x21-\x7e])*"'
MEDIA_TYPE = rf"{_TOKEN}/{_TOKEN}([ \t]*;[ \t]*{_TOKEN}=({_TOKEN}|{_QUOTED}))*"
ContentType = Annotated[str, msgspec.Meta(max_length=255, pattern=whole(MEDIA_TYPE))]
Sha256Hex = Annotated[str, msgspec.Meta(pattern=whole("[0-9a-fA-F]{64}"))]
Sha256B64 = Annotated[str, msgspec.Meta(pattern=whole("[A-Za-z0-9+/]{43}="))]
# base64 of the 8-byte big-endian CRC64NVME, as S3 writes it (``x-amz-checksum-crc64nvme``)
Crc64B64 = Annotated[str, msgspec.Meta(pattern=whole("[A-Za-z0-9+/]{11}="))]
PartNumber = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
PartKey = Annotated[str, msgspec.Meta(pattern=whole("[1-9][0-9]{0,4}"))]  # a part number as a JSON key


class UploadCreate(msgspec.Struct, forbid_unknown_fields=True):
    filename: Filename
    size: Annotated[int, msgspec.Meta(ge=0)]
    content_type: ContentType | None = None
    sha256: Sha256Hex | None = None
    crc64nvme: Annotated[
        Crc64B64 | None,
        msgspec.Meta(description="the whole file's CRC64NVME (base64); the store checks it at complete"),
    ] = None
    checksum_algorithm: Annotated[
        Literal["CRC64NVME"] | None,
        msgspec.Meta(description="have the store check a whole-file CRC64NVME given at complete"),
    ] = None
    part_size: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1,
                le=5 * 1024**3,
                description="the part size wished for; raised to 5 MiB and to what 10,000 parts need",
            ),
        ]
        | None
    ) = None


class UploadOut(msgspec.Struct):
    id: str
    kind: Annotated[
        str,
        msgspec.Meta(
            description="how the bytes go: multipart (parts signed one by one), put (one PUT of the whole "
            "file, started in a batch) or post (one form POST, Uppy)"
        ),
    ]
    file_id: str
    log_id: str
    case_id: str
    filename: str
    key: str
    size: int
    content_type: str
    part_size: int
    part_count: int
    status: str
    expires_at: datetime
    created_at: datetime
    sha256: str | None
    crc64nvme: str | None
    checksum_algorithm: str | None


class UploadedPart(msgspec.Struct):
    part_number: int
    size: int
    etag: str
    checksum_crc64nvme: str | None = None


class PartStateOut(msgspec.Struct):
    uploaded: list[UploadedPart]
    missing: list[int]
    bytes_uploaded: int


class UploadStatusOut(UploadOut):
    parts: PartStateOut


class UploadPage(msgspec.Struct):
    items: list[UploadOut]
    next_cursor: str | None


class SignRequest(msgspec.Struct, forbid_unknown_fields=True):
    part_numbers: Annotated[list[int], msgspec.Meta(min_length=1, max_length=10_000)]
    checksums_sha256: dict[PartKey, Sha256B64] | None = None
    checksums_crc64nvme: dict[PartKey, Crc64B64] | None = None


class SignedPartOut(msgspec.Struct):
    part_number: int
    url: str
    method: Literal["PUT"]
    headers: dict[str, str]
    size: int


class SignResponse(msgspec.Struct):
    parts: list[SignedPartOut]
    expires_at: datetime


class CompletePart(msgspec.Struct, forbid_unknown_fields=True):
    part_number: PartNumber
    etag: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class CompleteRequest(msgspec.Struct, forbid_unknown_fields=True):
    parts: Annotated[list[CompletePart], msgspec.Meta(max_length=10_000)] | None = None
    sha256: Sha256Hex | None = None
    crc64nvme: Crc64B64 | None = None


# -- batches -------------------------------------------------------------------------------------------


class BatchFile(msgspec.Struct, forbid_unknown_fields=True):
    """A file of a batch: the fields of a single start, each held to the same rules (a file whose
    fields break them is refused alone, with the reason)."""

    filename: str
    size: int
    content_type: str | None = None
    sha256: str | None = None
    crc64nvme: str | None = None
    checksum_algorithm: str | None = None
    part_size: int | None = None


class BatchStart(msgspec.Struct, forbid_unknown_fields=True):
    files: Annotated[list[BatchFile], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class ItemProblem(msgspec.Struct):
    """Why one file of a batch was refused: what a single request would have answered (its HTTP
    status, its stable ``code``, the detail, and its machine-readable members in ``extra``)."""

    status: int
    code: str
    detail: str
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class PutUrl(msgspec.Struct):
    """The one PUT of a small file: send the whole file to ``url`` with exactly ``headers`` (its
    length, type, checksum and ``If-None-Match: *``: the store refuses anything else, and refuses
    to write over the file once it is there)."""

    url: str
    method: Literal["PUT"]
    headers: dict[str, str]
    expires_at: datetime


class BatchStartedItem(msgspec.Struct):
    index: int
    status: Literal["started", "refused"]
    upload: UploadOut | None = None
    put: PutUrl | None = None
    parts: list[SignedPartOut] | None = None
    parts_expire_at: datetime | None = None
    error: ItemProblem | None = None


class BatchStarted(msgspec.Struct):
    items: list[BatchStartedItem]
    started: int
    refused: int


class BatchCompleteUpload(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    sha256: Sha256Hex | None = None
    crc64nvme: Crc64B64 | None = None


class BatchComplete(msgspec.Struct, forbid_unknown_fields=True):
    uploads: Annotated[list[BatchCompleteUpload], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class BatchCompletedItem(msgspec.Struct):
    id: str
    status: Literal["done", "missing", "refused"]
    file: FileOut | None = None
    missing_parts: list[int] | None = None
    error: ItemProblem | None = None


class BatchCompleted(msgspec.Struct):
    items: list[BatchCompletedItem]
    done: int
    missing: int
    refused: int
