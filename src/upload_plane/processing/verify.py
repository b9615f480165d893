"""The stored bytes' SHA-256 (and CRC64NVME), streamed from the store.

One streamed GET of a presigned URL (the store's own address, never the API), read into a few
large buffers by one thread while another hashes them: ``hashlib`` and ``awscrt`` release the
interpreter lock on large buffers and the socket reads release it while waiting, so reading,
hashing and the worker's event loop (heartbeats, other jobs) run side by side. Measured against
``curl <presigned GET> | sha256sum`` on the same object in ``bench/processing.py``.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import queue
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

CHUNK = 4 * 1024 * 1024
BUFFERS = 4


class StoreReadFailed(Exception):
    """The store did not deliver the object (a passing failure: the job is tried again)."""


class ObjectGone(Exception):
    """The store no longer has the object (deleted while the job waited)."""


@dataclass(frozen=True, slots=True)
class Digest:
    size: int
    sha256: str  # hex
    crc64nvme: str | None  # base64 of the 8-byte big-endian value, when asked for


def _crc64nvme(data: memoryview, previous: int) -> int:
    from awscrt import checksums

    return int(checksums.crc64nvme(data, previous))


def crc64nvme_b64(value: int) -> str:
    return base64.b64encode(value.to_bytes(8, "big")).decode()


def open_get(
    url: str, timeout: float = 30.0, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """A GET of ``url`` whose body is still to be read; raises unless the answer is 200 or 206."""
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = connection_class(parts.netloc, timeout=timeout)
    try:
        conn.request(
            "GET", f"{parts.path}?{parts.query}" if parts.query else parts.path, headers=headers or {}
        )
        resp = conn.getresponse()
    except OSError as exc:
        conn.close()
        raise StoreReadFailed(f"the store did not answer: {exc}") from exc
    if resp.status in (200, 206):
        return conn, resp
    body = resp.read(2000)
    conn.close()
    if resp.status == 404:
        raise ObjectGone("the store no longer has the object")
    raise StoreReadFailed(f"the store answered {resp.status}: {body[:300]!r}")


def digest_url(url: str, expected_size: int, *, crc64nvme: bool = False) -> Digest:
    """Stream ``url`` and hash it (blocking: run it in a thread). ``StoreReadFailed`` when the store
    fails or delivers another number of bytes than ``expected_size``."""
    conn, resp = open_get(url)
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(BUFFERS):
        free.put(bytearray(CHUNK))
    full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
    sha = hashlib.sha256()
    crc = [0]

    def hash_all() -> None:
        while (item := full.get()) is not None:
            buf, n = item
            view = memoryview(buf)[:n]
            sha.update(view)
            if crc64nvme:
                crc[0] = _crc64nvme(view, crc[0])
            free.put(buf)

    hasher = threading.Thread(target=hash_all, name="sha256", daemon=True)
    hasher.start()
    size = 0
    try:
        while True:
            buf = free.get()
            n = _fill(resp, buf)
            if n == 0:
                break
            size += n
            full.put((buf, n))
    except OSError as exc:
        raise StoreReadFailed(f"reading the object failed after {size} bytes: {exc}") from exc
    finally:
        full.put(None)
        hasher.join()
        conn.close()
    if size != expected_size:
        raise StoreReadFailed(f"the store delivered {size} bytes, the file has {expected_size}")
    return Digest(size, sha.hexdigest(), crc64nvme_b64(crc[0]) if crc64nvme else None)


def _fill(resp: http.client.HTTPResponse, buf: bytearray) -> int:
    """Read into ``buf`` until it is full or the body ends; the bytes read."""
    view = memoryview(buf)
    n = 0
    while n < len(buf):
        got = resp.readinto(view[n:])
        if not got:
            break
        n += got
    return n
