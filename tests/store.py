"""The store as the tests look at it: boto3 straight to the backend's S3, never the gateway under test.

``StoreChecker`` answers in the gateway's shapes (``StoredObject``, ``StoredPart``, ``StoredUploadGone``)
so assertions read the same, but every answer comes from botocore's own client and parser.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from upload_plane.errors import StoredUploadGone
from upload_plane.settings import Settings
from upload_plane.storage import StoredObject, StoredPart


def s3_client(settings: Settings) -> Any:
    """One boto3 client per store and credentials (they are thread-safe, and making one loads the
    service model from disk)."""
    return _client(
        settings.s3_endpoint_url, settings.s3_region, settings.s3_access_key_id, settings.s3_secret_access_key
    )


@functools.lru_cache(maxsize=32)
def _client(endpoint: str, region: str, access_key: str, secret_key: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class StoreChecker:
    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.client = s3_client(settings)

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.client, operation), Bucket=self.bucket, **kwargs)

    async def head_object(self, key: str) -> StoredObject | None:
        try:
            head = await self._call("head_object", Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return StoredObject(
            size=head["ContentLength"],
            etag=head["ETag"].strip('"'),
            content_type=head.get("ContentType", ""),
            checksum_crc64nvme=head.get("ChecksumCRC64NVME"),
            checksum_type=head.get("ChecksumType"),
            checksum_sha256=head.get("ChecksumSHA256"),
        )

    async def keys(self, prefix: str) -> list[str]:
        """Every object key under ``prefix`` (all pages)."""
        found: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = await self._call("list_objects_v2", Prefix=prefix, **token)
            found += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        parts: list[StoredPart] = []
        marker = 0
        while True:
            try:
                page = await self._call(
                    "list_parts", Key=key, UploadId=upload_id, PartNumberMarker=marker, MaxParts=1000
                )
            except ClientError as exc:
                if _code(exc) == "NoSuchUpload":
                    raise StoredUploadGone("NoSuchUpload") from exc
                raise
            parts += [
                StoredPart(p["PartNumber"], p["Size"], p["ETag"].strip('"'), p.get("ChecksumCRC64NVME"))
                for p in page.get("Parts", [])
            ]
            if not page.get("IsTruncated"):
                return parts
            marker = int(page["NextPartNumberMarker"])

    async def list_multipart_uploads(self, key: str) -> list[str]:
        page = await self._call("list_multipart_uploads", Prefix=key)
        return [u["UploadId"] for u in page.get("Uploads", []) if u["Key"] == key]

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[StoredPart], crc64nvme: str | None = None
    ) -> None:
        """Complete behind the API's back (as if its answer had been lost)."""
        listed = [
            {"PartNumber": p.part_number, "ETag": f'"{p.etag}"'}
            | ({"ChecksumCRC64NVME": p.checksum_crc64nvme} if crc64nvme and p.checksum_crc64nvme else {})
            for p in parts
        ]
        extra = {"ChecksumCRC64NVME": crc64nvme, "ChecksumType": "FULL_OBJECT"} if crc64nvme else {}
        await self._call(
            "complete_multipart_upload",
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": listed},
            **extra,
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort behind the API's back (as the store's own stale-upload expiry does)."""
        await self._call("abort_multipart_upload", Key=key, UploadId=upload_id)

    async def aclose(self) -> None:
        self.client.close()
