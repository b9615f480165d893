"""A fault-injecting HTTP proxy in front of the store, for the faults a real store makes rarely: an
answer lost or replaced after the store did the work.

Every request is forwarded as it came (the Host header included, so SigV4 signatures still hold) and
counted by what it is (``CreateMultipartUpload``, ``PutObject``, ...). A ``Fault`` replaces the store's
answer to the requests it matches with an error after the store has acted on them.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from upload_plane.embedded import free_port

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def operation(method: str, query: dict[str, str]) -> str:
    """The S3 operation of a request, as far as the tests need to tell them apart."""
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "PUT" and "partNumber" in query:
        return "UploadPart"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    if method == "GET" and "uploadId" in query:
        return "ListParts"
    if method == "POST":
        return "PostObject"
    if method == "GET" and "list-type" in query:
        return "ListObjectsV2"
    return {"PUT": "PutObject", "HEAD": "HeadObject", "GET": "GetObject", "DELETE": "DeleteObject"}[method]


@dataclass
class Fault:
    """Answer ``status`` with an S3 error document to the next ``times`` requests of ``op``, after the
    store has done them."""

    op: str
    status: int = 500
    code: str = "InternalError"
    times: int = 1_000_000


@dataclass
class FaultProxy:
    upstream: str
    url: str = ""
    faults: list[Fault] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    #: Every request the store answered: its operation, path and the store's status.
    answered: list[tuple[str, str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, op: str) -> int:
        with self._lock:
            return self.seen[op]

    def requests(self, op: str) -> list[tuple[str, int]]:
        """``(path, the store's status)`` of every ``op`` request that reached the store."""
        with self._lock:
            return [(path, status) for seen, path, status in self.answered if seen == op]

    def _fault_for(self, op: str, path: str, status: int) -> Fault | None:
        with self._lock:
            self.seen[op] += 1
            self.answered.append((op, path, status))
            for fault in self.faults:
                if fault.op == op and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    async def handle(self, request: web.Request, session: aiohttp.ClientSession) -> web.StreamResponse:
        op = operation(request.method, dict(request.query))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = request.headers["Host"]
        body = await request.read()
        async with session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            skip_auto_headers=("Content-Type",),
        ) as upstream:
            data = await upstream.read()
            fault = self._fault_for(op, request.path, upstream.status)
            if fault is not None:
                error = f"<Error><Code>{fault.code}</Code><Message>injected</Message></Error>".encode()
                return web.Response(status=fault.status, body=error, content_type="application/xml")
            answer = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=upstream.status, body=data, headers=answer)


@contextmanager
def fault_proxy(upstream: str, *faults: Fault) -> Iterator[FaultProxy]:
    """The proxy, serving on a free loopback port in a thread of its own."""
    proxy = FaultProxy(upstream.rstrip("/"), faults=list(faults))
    port = free_port("127.0.0.1")
    proxy.url = f"http://127.0.0.1:{port}"
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        async with aiohttp.ClientSession(auto_decompress=False) as session:

            async def handler(request: web.Request) -> web.StreamResponse:
                return await proxy.handle(request, session)

            app = web.Application(client_max_size=1024**3)
            app.router.add_route("*", "/{tail:.*}", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            ready.set()
            await stop.wait()
            await runner.cleanup()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the fault proxy did not start")
    try:
        yield proxy
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
