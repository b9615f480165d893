"""Moving bytes to and from object storage over presigned URLs (the API never sees them)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import cast

import httpx

from .api import ApiError, Retry, RetryNotice, with_retries

CHUNK = 1024 * 1024  # bytes handed to the socket per write (and per progress step)


@contextlib.asynccontextmanager
async def first_error_group() -> AsyncIterator[asyncio.TaskGroup]:
    """A TaskGroup that raises its first real failure itself, not wrapped in an ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as group_error:
        raise first_error(group_error) from None


def first_error(error: BaseException) -> BaseException:
    """The first leaf of nested exception groups, preferring anything over a cancellation."""
    if isinstance(error, BaseExceptionGroup):
        leaves = [first_error(e) for e in error.exceptions]
        real = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
        return (real or leaves)[0]
    return error


class Progress:
    """What an engine reports while it works; the default shows nothing. A context manager (a live
    display starts and stops with it)."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self, key: str, name: str, total: int) -> None:
        """A transfer of ``total`` bytes begins."""

    def advance(self, key: str, done: int) -> None:
        """``done`` more bytes moved (negative: a failed try gives its bytes back)."""

    def finish(self, key: str) -> None:
        """The transfer ended (completed or not)."""

    def moved(self, done: int) -> None:
        """``done`` more bytes of files that have no transfer of their own (small files, sent in
        batches: they count in the whole set only)."""

    def file_done(self) -> None:
        """One more file of the set ended (done or not)."""

    def notice(self, message: str) -> None:
        """A retry or other event worth a line."""


class RateLimit:
    """Paces writes to ``bytes_per_second`` across every transfer sharing it (``--limit-rate``);
    safe to share between threads."""

    def __init__(self, bytes_per_second: int) -> None:
        self.rate = float(bytes_per_second)
        self.next_free = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + n / self.rate
        if start > now:
            time.sleep(start - now)


def store_error(response: httpx.Response, what: str) -> ApiError:
    """An S3 error answer (XML ``<Code>``/``<Message>``) as an :class:`ApiError`."""
    text = response.text[:2000]
    code = re.search(r"<Code>([^<]*)</Code>", text)
    message = re.search(r"<Message>([^<]*)</Message>", text)
    detail = f"{what}: HTTP {response.status_code}"
    if code:
        detail += f" {code.group(1)}"
    if message:
        detail += f" ({message.group(1)})"
    return ApiError(response.status_code, "STORE_REJECTED", detail)


class Store:
    """The object store as seen through presigned URLs.

    PUTs run in worker threads on a blocking ``httpx.Client`` (its socket writes release the GIL, so
    sending, hashing and the event loop share the cores; measured faster than streaming the same
    parts through ``httpx.AsyncClient``, whose transport copies unsent bytes into its own buffer).
    A cancelled PUT stops at its next 1 MiB chunk.
    """

    def __init__(
        self,
        *,
        retry: Retry | None = None,
        connections: int = 8,
        timeout: float = 120.0,
        rate_limit: RateLimit | None = None,
        notice: RetryNotice | None = None,
    ) -> None:
        self.retry = retry or Retry()
        self.rate_limit = rate_limit
        self.notice = notice
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), limits=limits)

    def close(self) -> None:
        self.http.close()

    def _body(self, data: memoryview, moved: Callable[[int], None], stop: threading.Event) -> Iterator[bytes]:
        step = CHUNK // 4 if self.rate_limit else CHUNK
        for offset in range(0, len(data), step):
            if stop.is_set():
                raise _Stopped
            chunk = data[offset : offset + step]
            if self.rate_limit is not None:
                self.rate_limit.take(len(chunk))
            yield cast(bytes, chunk)  # httpx writes any bytes-like object; no copy
            moved(len(chunk))

    async def put(
        self,
        url: str,
        headers: dict[str, str],
        data: bytes | memoryview,
        moved: Callable[[int], None],
        what: str,
    ) -> httpx.Response:
        """PUT ``data`` with exactly ``headers`` (the signed Content-Length and checksum); retries
        transport errors, 5xx and 429. ``moved`` hears (on the event loop) of every byte sent, and
        gets them back (negative) when a try fails. Returns the final answer, whatever its status."""
        view = memoryview(data)
        loop = asyncio.get_running_loop()

        def send(stop: threading.Event) -> httpx.Response:
            sent = 0

            def count(n: int) -> None:
                nonlocal sent
                sent += n
                loop.call_soon_threadsafe(moved, n)

            try:
                response = self.http.put(url, content=self._body(view, count, stop), headers=headers)
            except BaseException:
                loop.call_soon_threadsafe(moved, -sent)
                raise
            if response.status_code != 200:
                loop.call_soon_threadsafe(moved, -sent)
            return response

        async def attempt() -> httpx.Response:
            stop = threading.Event()
            try:
                return await asyncio.to_thread(send, stop)
            except asyncio.CancelledError:
                stop.set()
                raise

        return await with_retries(attempt, self.retry, what, self.notice)


class _Stopped(Exception):
    """The PUT was cancelled (Ctrl-C, or another part failed)."""
