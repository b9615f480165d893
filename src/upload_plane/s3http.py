"""The store calls on the hot path — create, list parts, complete, head, abort, delete — signed with
our own SigV4 signer (``Presigner.sign_request``, botocore's signatures) and sent over aiohttp.

Why not boto3 here: measured on the target machine, a boto3 call costs about 2 ms of CPU and runs in a
worker thread that contends for the interpreter lock; httpx costs about 1 ms; aiohttp about 0.2 ms
(bench/s3_client.py prints the comparison). Four such calls per upload lifecycle would otherwise
cost more than the store itself. boto3 remains the S3 library for everything else (bucket set-up,
CORS, tests, the comparison benches).

Retries: a request that got no answer, or a 5xx, is sent again (twice), except one that is not safe
to send twice (CreateMultipartUpload: each one opens another upload) once it may have reached the
store — no answer after the connection was made, or any 5xx (a store may fail after doing the work):
that is ``StorageOutcomeUnknown`` at once, and the caller decides what the store may now hold. A
refused connection reached nothing and is always retried.

S3 quirks handled here: a CompleteMultipartUpload may answer 200 with an ``<Error>`` document
(treated as that error); HEAD answers carry no error body (the status alone decides); object keys and
upload ids go into the URL exactly as signed (``encoded=True``, so aiohttp does not re-quote them).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import aiohttp
from yarl import URL

from .errors import DomainError, StorageOutcomeUnknown, StorageUnavailable
from .signing import EMPTY_SHA256, Presigner

log = logging.getLogger("upload_plane.s3http")

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
ATTEMPTS = 3
_RETRY_DELAYS = (0.05, 0.25)
_RETRYABLE_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})


@dataclass(frozen=True, slots=True)
class S3Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def xml(self) -> ET.Element:
        # MinIO may send spaces before a slow CompleteMultipartUpload's document (keep-alive)
        return ET.fromstring(self.body.lstrip())  # noqa: S314 - the store's own answer, not user input


class StoreError(Exception):
    """The store answered with an error document (or an error status without one)."""

    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def text(element: ET.Element, name: str) -> str | None:
    found = element.find(f"{NS}{name}")
    if found is None:
        found = element.find(name)  # some stores answer without the namespace
    return found.text if found is not None else None


def _error_of(status: int, body: bytes) -> StoreError:
    code, message = str(status), ""
    if body:
        try:
            root = ET.fromstring(body.lstrip())  # noqa: S314 - the store's own answer
            code = text(root, "Code") or code
            message = text(root, "Message") or ""
        except ET.ParseError:
            pass
    return StoreError(status, code, message)


class S3Http:
    """One aiohttp session per event loop (created on first use), closed by ``aclose``."""

    def __init__(self, signer: Presigner, connections: int = 100) -> None:
        self.signer = signer
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=30, ttl_dns_cache=60)
            timeout = aiohttp.ClientTimeout(total=60, connect=3, sock_read=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def request(
        self,
        method: str,
        key: str | None,
        *,
        params: Sequence[tuple[str, str | None]] = (),
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        idempotent: bool = True,
    ) -> S3Response:
        """Send a signed request; the response if its status is below 300 (and it is not an S3 error
        document), else ``StoreError``. Transport failures and 5xx are retried; after the last
        attempt they are ``StorageUnavailable``. When not ``idempotent``, a transport failure after
        the connection was made is ``StorageOutcomeUnknown``, not retried."""
        payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        failure: DomainError | StoreError | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(_RETRY_DELAYS[min(attempt - 1, len(_RETRY_DELAYS) - 1)])
            url, signed = self.signer.sign_request(
                method, key, params=params, headers=headers, payload_sha256=payload
            )
            try:
                async with self._client().request(
                    method, URL(url, encoded=True), headers=signed, data=body or None
                ) as resp:
                    data = await resp.read()
                    status, answer = resp.status, S3Response(resp.status, resp.headers, data)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "store %s %s failed (attempt %d): %r",
                    method,
                    "bucket" if key is None else "key",
                    attempt + 1,
                    exc,
                )
                if not idempotent and not isinstance(exc, aiohttp.ClientConnectorError):
                    raise StorageOutcomeUnknown(
                        "Object storage did not answer; retry (with the same Idempotency-Key)"
                    ) from exc
                failure = StorageUnavailable("Object storage did not answer; nothing was changed")
                continue
            if status >= 300:
                failure = _error_of(status, data)
                if status >= 500 or failure.code in _RETRYABLE_CODES:
                    if not idempotent:  # a 5xx can come after the store did it: never send it twice
                        raise StorageOutcomeUnknown(
                            "Object storage failed; retry (with the same Idempotency-Key)"
                        ) from failure
                    continue
                raise failure
            if method == "POST" and data.lstrip().startswith(b"<?xml") and b"<Error>" in data[:200]:
                failure = _error_of(500, data)  # an error document inside a 200 (CompleteMultipartUpload)
                if failure.code in _RETRYABLE_CODES:
                    continue
                raise failure
            return answer
        assert failure is not None
        raise failure

    # -- the calls ----------------------------------------------------------------------------------

    async def create_multipart(self, key: str, headers: Mapping[str, str]) -> str:
        answer = await self.request(
            "POST", key, params=(("uploads", None),), headers=headers, idempotent=False
        )
        root = answer.xml()
        upload_id = text(root, "UploadId")
        if not upload_id:
            raise StoreError(500, "MalformedResponse", "no UploadId in the store's answer")
        return upload_id

    async def list_parts_page(self, key: str, upload_id: str, marker: int) -> ET.Element:
        params = (("max-parts", "1000"), ("part-number-marker", str(marker)), ("uploadId", upload_id))
        return (await self.request("GET", key, params=params)).xml()

    async def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str, str | None]],
        headers: Mapping[str, str],
    ) -> S3Response:
        """``parts``: ``(number, etag without quotes, CRC64NVME or None)``."""
        body = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>&quot;{escape(etag)}&quot;</ETag>"
            + (f"<ChecksumCRC64NVME>{escape(crc)}</ChecksumCRC64NVME>" if crc else "")
            + "</Part>"
            for n, etag, crc in parts
        )
        document = f'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{body}</CompleteMultipartUpload>'
        return await self.request(
            "POST", key, params=(("uploadId", upload_id),), headers=headers, body=document.encode()
        )

    async def head(self, key: str | None, headers: Mapping[str, str] | None = None) -> S3Response:
        return await self.request("HEAD", key, headers=headers)

    async def delete(self, key: str, params: Sequence[tuple[str, str | None]] = ()) -> S3Response:
        return await self.request("DELETE", key, params=params)


def header(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    return None if value is None else str(value)
