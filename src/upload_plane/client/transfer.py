"""Moving bytes to and from object storage over presigned URLs (the API never sees them)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

import httpx

from .api import ApiError, Retry, RetryNotice, with_retries

CHUNK = 1024 * 1024  # bytes handed to the socket per write (and per progress step)


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

    def notice(self, message: str) -> None:
        """A retry or other event worth a line."""


class RateLimit:
    """Paces writes to ``bytes_per_second`` across every transfer sharing it (``--limit-rate``)."""

    def __init__(self, bytes_per_second: int) -> None:
        self.rate = float(bytes_per_second)
        self.next_free = time.monotonic()

    async def take(self, n: int) -> None:
        now = time.monotonic()
        start = max(now, self.next_free)
        self.next_free = start + n / self.rate
        if start > now:
            await asyncio.sleep(start - now)


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
    """The object store as seen through presigned URLs: one pooled ``httpx.AsyncClient``."""

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
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0), limits=limits)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _body(self, data: memoryview, moved: Callable[[int], None]) -> AsyncIterator[bytes]:
        step = CHUNK // 4 if self.rate_limit else CHUNK
        for offset in range(0, len(data), step):
            chunk = data[offset : offset + step]
            if self.rate_limit is not None:
                await self.rate_limit.take(len(chunk))
            yield cast(bytes, chunk)  # httpx writes any bytes-like object; no copy
            moved(len(chunk))

    async def put(
        self, url: str, headers: dict[str, str], data: bytes, moved: Callable[[int], None], what: str
    ) -> httpx.Response:
        """PUT ``data`` with exactly ``headers`` (the signed Content-Length and checksum); retries
        transport errors, 5xx and 429. ``moved`` hears of every byte sent, and gets them back
        (negative) when a try fails. Returns the final answer, whatever its status."""
        view = memoryview(data)

        async def attempt() -> httpx.Response:
            sent = 0

            def count(n: int) -> None:
                nonlocal sent
                sent += n
                moved(n)

            try:
                response = await self.http.put(url, content=self._body(view, count), headers=headers)
            except BaseException:
                moved(-sent)
                raise
            if response.status_code != 200:
                moved(-sent)
            return response

        return await with_retries(attempt, self.retry, what, self.notice)
