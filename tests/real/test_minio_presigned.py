"""What a real MinIO enforces on the part URLs our ``Presigner`` signs.

Every rejection below is checked together with the positive control (a correctly signed URL is
accepted), and, where it matters, with ListParts showing that nothing was stored.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions
import httpx
import pytest

from tests.services import MinIO
from upload_plane.signing import Presigner

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def bucket(minio: MinIO) -> str:
    name = f"presigned-{uuid.uuid4().hex[:12]}"
    minio.create_bucket(name)
    return name


@pytest.fixture
def s3(minio: MinIO) -> Any:
    return minio.client()


@pytest.fixture
def presigner(minio: MinIO, bucket: str) -> Presigner:
    return Presigner(minio.endpoint, bucket, minio.region, minio.access_key, minio.secret_key)


def start_upload(s3: Any, bucket: str, **extra: str) -> tuple[str, str]:
    key = f"objects/{uuid.uuid4().hex}.bin"
    return key, s3.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]


def part_url(
    presigner: Presigner,
    key: str,
    upload_id: str,
    part: int,
    headers: Mapping[str, str],
    *,
    expires_in: int = 900,
    now: datetime | None = None,
) -> str:
    params = (("uploadId", upload_id), ("partNumber", str(part)))
    return presigner.presign("PUT", key, params=params, headers=headers, expires_in=expires_in, now=now)


def stored_parts(s3: Any, bucket: str, key: str, upload_id: str) -> dict[int, int]:
    """Part number -> size, as MinIO reports them."""
    listing = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    return {p["PartNumber"]: p["Size"] for p in listing.get("Parts", [])}


def error_code(response: httpx.Response) -> str | None:
    return ET.fromstring(response.content).findtext("Code")


def test_correctly_signed_part_url_is_accepted(s3: Any, bucket: str, presigner: Presigner) -> None:
    key, upload_id = start_upload(s3, bucket)
    body = b"x" * 1000
    url = part_url(presigner, key, upload_id, 3, {"content-length": str(len(body))})

    response = httpx.put(url, content=body)

    assert response.status_code == 200, response.text
    assert response.headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert stored_parts(s3, bucket, key, upload_id) == {3: len(body)}


def test_tampered_signature_is_refused(s3: Any, bucket: str, presigner: Presigner) -> None:
    key, upload_id = start_upload(s3, bucket)
    url = part_url(presigner, key, upload_id, 1, {"content-length": "5"})
    last = url[-1]
    tampered = url[:-1] + ("0" if last != "0" else "1")  # the URL ends with X-Amz-Signature's hex

    response = httpx.put(tampered, content=b"hello")

    assert response.status_code == 403
    assert error_code(response) == "SignatureDoesNotMatch"
    assert stored_parts(s3, bucket, key, upload_id) == {}


def test_expired_url_is_refused(s3: Any, bucket: str, presigner: Presigner) -> None:
    key, upload_id = start_upload(s3, bucket)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    url = part_url(presigner, key, upload_id, 1, {"content-length": "5"}, expires_in=60, now=an_hour_ago)

    response = httpx.put(url, content=b"hello")

    assert response.status_code == 403
    assert error_code(response) == "AccessDenied"
    assert "expired" in response.text
    assert stored_parts(s3, bucket, key, upload_id) == {}


def test_url_for_part_3_cannot_be_replayed_as_part_4(s3: Any, bucket: str, presigner: Presigner) -> None:
    key, upload_id = start_upload(s3, bucket)
    url = part_url(presigner, key, upload_id, 3, {"content-length": "5"})
    assert url.count("partNumber=3") == 1
    replayed = url.replace("partNumber=3", "partNumber=4")

    response = httpx.put(replayed, content=b"hello")

    assert response.status_code == 403
    assert error_code(response) == "SignatureDoesNotMatch"
    assert stored_parts(s3, bucket, key, upload_id) == {}


def test_more_bytes_than_the_signed_content_length_are_refused(
    s3: Any, bucket: str, presigner: Presigner, record_property: Any
) -> None:
    """Observed on the pinned MinIO: refused, 403 SignatureDoesNotMatch, nothing stored.

    ``content-length`` is a signed header, so a request whose real Content-Length differs from the
    signed one has a different canonical request. (Had MinIO accepted the part, ListParts would show
    the wrong size and only the API's size check at complete time would catch it; that check is
    tested through the API.)
    """
    key, upload_id = start_upload(s3, bucket)
    url = part_url(presigner, key, upload_id, 1, {"content-length": "5"})

    response = httpx.put(url, content=b"hello!", headers={"content-length": "6"})

    outcome = f"MinIO answered {response.status_code} {error_code(response)} to 6 bytes signed for 5"
    print(outcome)
    record_property("oversized_part", outcome)
    assert response.status_code == 403
    assert error_code(response) == "SignatureDoesNotMatch"
    assert stored_parts(s3, bucket, key, upload_id) == {}


def test_completing_a_completed_upload_again_is_no_such_upload(
    s3: Any, bucket: str, presigner: Presigner
) -> None:
    key, upload_id = start_upload(s3, bucket)
    body = b"the only part"
    response = httpx.put(
        part_url(presigner, key, upload_id, 1, {"content-length": str(len(body))}), content=body
    )
    assert response.status_code == 200, response.text
    parts = {"Parts": [{"PartNumber": 1, "ETag": response.headers["etag"]}]}

    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload=parts)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body

    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload=parts)
    assert excinfo.value.response["Error"]["Code"] == "NoSuchUpload"


def test_signed_sha256_checksum_binds_the_part_bytes(s3: Any, bucket: str, presigner: Presigner) -> None:
    """A part URL signed with ``x-amz-checksum-sha256`` accepts only the bytes with that checksum.

    Observed on the pinned MinIO: the upload is created with ``ChecksumAlgorithm="SHA256"``, but MinIO
    verifies an ``x-amz-checksum-sha256`` header on UploadPart whether or not the upload declared an
    algorithm; altered bytes get 400 ``XAmzContentChecksumMismatch``. A client that also replaces the
    header with the checksum of its altered bytes breaks the signature (403 SignatureDoesNotMatch).
    One that drops the header gets 400 AccessDenied (MinIO's ErrUnsignedHeaders, whose message
    "headers present in the request which were not signed" also covers a signed header gone missing):
    the checksum is signed, so it is mandatory.
    """
    key, upload_id = start_upload(s3, bucket, ChecksumAlgorithm="SHA256")
    good, altered = b"the right bytes", b"the wrong bytes"

    def sha256_b64(data: bytes) -> str:
        return base64.b64encode(hashlib.sha256(data).digest()).decode()

    signed = {"content-length": str(len(good)), "x-amz-checksum-sha256": sha256_b64(good)}
    url = part_url(presigner, key, upload_id, 1, signed)

    wrong_bytes = httpx.put(url, content=altered, headers=signed)
    assert wrong_bytes.status_code == 400
    assert error_code(wrong_bytes) == "XAmzContentChecksumMismatch"

    recomputed = {**signed, "x-amz-checksum-sha256": sha256_b64(altered)}
    wrong_checksum = httpx.put(url, content=altered, headers=recomputed)
    assert wrong_checksum.status_code == 403
    assert error_code(wrong_checksum) == "SignatureDoesNotMatch"

    no_checksum = httpx.put(url, content=good)
    assert no_checksum.status_code == 400
    assert error_code(no_checksum) == "AccessDenied"  # a signed header is missing

    assert stored_parts(s3, bucket, key, upload_id) == {}

    right_bytes = httpx.put(url, content=good, headers=signed)
    assert right_bytes.status_code == 200, right_bytes.text
    assert right_bytes.headers["x-amz-checksum-sha256"] == sha256_b64(good)
    listing = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    assert [(p["PartNumber"], p["Size"], p["ChecksumSHA256"]) for p in listing["Parts"]] == [
        (1, len(good), sha256_b64(good))
    ]
