"""SHA-256 and CRC64NVME of a file computed while it is read, part by part.

CRC64NVME comes from ``awscrt`` (AWS's own implementation). Each part's CRC is computed once; the
whole file's is combined from the parts' (``combine_crc64nvme``) instead of a second pass. S3 writes a
CRC64NVME as base64 of its 8 big-endian bytes (``x-amz-checksum-crc64nvme``).
"""

from __future__ import annotations

import base64
import hashlib

from awscrt import checksums


def crc64nvme(data: bytes | bytearray | memoryview, previous: int = 0) -> int:
    return int(checksums.crc64nvme(data, previous))


def crc_b64(value: int) -> str:
    """The S3 wire form: base64 of the 8 big-endian bytes."""
    return base64.b64encode(value.to_bytes(8, "big")).decode()


class FileDigest:
    """Both whole-file checksums, fed with the file's parts in order."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._crc = 0
        self.size = 0

    def add_part(self, data: bytes | bytearray | memoryview) -> int:
        """Feed the next part; returns that part's own CRC64NVME."""
        self._sha256.update(data)
        part = crc64nvme(data)
        self._crc = int(checksums.combine_crc64nvme(self._crc, part, len(data))) if self.size else part
        self.size += len(data)
        return part

    def add(self, data: bytes | bytearray | memoryview) -> None:
        """Feed more bytes (a download's chunks): one running CRC, no per-chunk value."""
        self._sha256.update(data)
        self._crc = crc64nvme(data, self._crc)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def crc64nvme(self) -> str:
        return crc_b64(self._crc)
