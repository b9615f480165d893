"""Signing part URLs, and reporting which parts the store already holds (for a client resuming)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..auth.principal import Principal
from ..errors import UploadExpired, ValidationFailed
from ..models import utcnow
from ..storage import CRC64NVME, PartToSign
from .claims import not_uploading
from .context import Uploads
from .kinds import PartState, kind_of, plan_of
from .queries import UploadRecord
from .read import get_upload
from .state import UploadStatus

MAX_PARTS_PER_CALL = 10_000


@dataclass(frozen=True, slots=True)
class SignedPart:
    part_number: int
    url: str
    headers: dict[str, str]
    size: int


@dataclass(frozen=True, slots=True)
class SignedParts:
    parts: list[SignedPart]
    expires_at: datetime


async def part_state(ctx: Uploads, upload: UploadRecord) -> PartState:
    """Live part state from the store while the upload is open; a finished one reports its end."""
    if upload.status == UploadStatus.COMPLETED:
        return PartState(uploaded=[], missing=[], bytes_uploaded=upload.size)
    if upload.status not in (UploadStatus.UPLOADING, UploadStatus.COMPLETING):
        return PartState(uploaded=[], missing=[], bytes_uploaded=0)
    return await kind_of(upload).part_state(ctx.storage, upload)


def _checked_checksums(
    wanted: list[int],
    full_object: bool,
    checksums_sha256: dict[str, str] | None,
    checksums_crc64nvme: dict[str, str] | None,
) -> dict[str, str]:
    if full_object and checksums_sha256:
        raise ValidationFailed(
            "this upload's parts are signed with checksums_crc64nvme, not checksums_sha256"
        )
    if not full_object and checksums_crc64nvme:
        raise ValidationFailed(
            "checksums_crc64nvme needs an upload started with checksum_algorithm CRC64NVME"
        )
    field = "checksums_crc64nvme" if full_object else "checksums_sha256"
    checksums = (checksums_crc64nvme if full_object else checksums_sha256) or {}
    wanted_set = set(wanted)
    unknown = sorted(k for k in checksums if not (k.isascii() and k.isdigit()) or int(k) not in wanted_set)
    if unknown:
        raise ValidationFailed(
            f"{field} names parts that are not being signed", invalid_part_numbers=unknown[:100]
        )
    if full_object:
        without = [n for n in wanted if str(n) not in checksums]
        if without:
            raise ValidationFailed(
                "this upload's store checks the whole file: send checksums_crc64nvme for every part",
                invalid_part_numbers=without[:100],
            )
    return checksums


async def sign_parts(
    ctx: Uploads,
    who: Principal,
    upload_id: str,
    part_numbers: list[int],
    checksums_sha256: dict[str, str] | None = None,
    checksums_crc64nvme: dict[str, str] | None = None,
) -> SignedParts:
    """Part URLs signing each part's exact size, and its checksum: SHA-256 when given, or, for an
    upload whose store checks the whole file, the part's CRC64NVME, which is then required (the
    store refuses a part without it)."""
    upload = await get_upload(ctx, who, upload_id)
    now = utcnow()
    if upload.status != UploadStatus.UPLOADING:
        raise not_uploading(upload)
    if not kind_of(upload).signs_parts:
        raise ValidationFailed(
            f"this upload ({upload.kind}) has no parts to sign: its file goes to the store in one request"
        )
    if upload.expires_at <= now:
        raise UploadExpired("the upload expired; start a new one")
    plan = plan_of(upload)
    if not part_numbers:
        raise ValidationFailed("part_numbers must not be empty")
    if len(part_numbers) > MAX_PARTS_PER_CALL:
        raise ValidationFailed(f"at most {MAX_PARTS_PER_CALL} part numbers per call")
    bad = sorted({n for n in part_numbers if not 1 <= n <= plan.part_count})
    if bad:
        raise ValidationFailed(
            f"part numbers must be within 1..{plan.part_count}", invalid_part_numbers=bad[:100]
        )
    wanted = list(dict.fromkeys(part_numbers))
    full_object = upload.checksum_algorithm == CRC64NVME
    checksums = _checked_checksums(wanted, full_object, checksums_sha256, checksums_crc64nvme)
    ttl = max(min(ctx.settings.part_url_ttl, int((upload.expires_at - now).total_seconds())), 1)
    to_sign = [
        PartToSign(n, plan.part_bytes(n), None, checksums[str(n)])
        if full_object
        else PartToSign(n, plan.part_bytes(n), checksums.get(str(n)))
        for n in wanted
    ]
    signed = ctx.storage.presign_parts(upload.key, upload.store_upload_id, to_sign, ttl, now)
    parts = [
        SignedPart(part_number=p.part_number, url=s.url, headers=s.headers, size=p.size)
        for p, s in zip(to_sign, signed, strict=True)
    ]
    return SignedParts(parts=parts, expires_at=now + timedelta(seconds=ttl))
