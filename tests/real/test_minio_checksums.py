"""What MinIO enforces on part URLs signed with a CRC64NVME (moto checks none of it)."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.api.helpers import crc64_b64, new_user
from tests.api.test_checksums import PART, parts_of, put, sign, start
from tests.conftest import Backend

pytestmark = pytest.mark.real


def test_minio_refuses_a_part_whose_bytes_differ_from_its_signed_checksum(
    real: Backend, http: httpx.Client
) -> None:
    backend = real
    data = os.urandom(PART + 100)
    with new_user(backend) as api:
        upload = start(api, data, crc64nvme=crc64_b64(data))
        chunks = parts_of(data)
        signed = sign(api, upload, {n: crc64_b64(b) for n, b in chunks.items()})
        tampered = bytes([chunks[1][0] ^ 1]) + chunks[1][1:]
        refused = put(http, signed[1], tampered)
        assert refused.status_code == 400 and "XAmzContentChecksumMismatch" in refused.text, refused.text
        own = dict(signed[1]["headers"], **{"x-amz-checksum-crc64nvme": crc64_b64(tampered)})
        forged = http.put(signed[1]["url"], content=tampered, headers=own)  # the attacker's own checksum
        assert forged.status_code == 403, forged.text  # the URL signed the original checksum
        assert api.get(f"/uploads/{upload['id']}").json()["parts"]["missing"] == [1, 2]
