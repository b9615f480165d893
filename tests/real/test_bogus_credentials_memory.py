"""Unauthenticated requests cannot grow the API's memory (issue 16, acceptance 3).

The API runs as production runs it (``upload-plane serve``, its own process, on MariaDB + MinIO),
so its resident set size is read from ``/proc/<pid>/status`` without this test's own allocations
in it. Each batch sends 120 requests with distinct bogus credentials of one kind: 256 KiB bearer
tokens and session cookies, Uppy capabilities in the path (60 KiB, near what uvicorn lets through
at all, and 6 KiB, past what the service issues but within its path limit); every answer must be a
4xx and the batch must grow the server by less than 8 MiB. Before the fix, the token caches kept
every failed token as a key (120 such tokens held 30 MiB) and the framework's cookie cache every
cookie string (59 MiB for 120).
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Backend
from tests.real.processes import api_process
from tests.services import MinIO

pytestmark = pytest.mark.real

MIB = 1024 * 1024
TOKEN_SIZE = 256 * 1024
BATCH = 120
GROWTH_LIMIT = 8 * MIB


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/<pid>/status")


def bogus(size: int = TOKEN_SIZE) -> str:
    return secrets.token_urlsafe(size)[:size]


def raw_get(base: str, target: str, cookie: str) -> int:
    """The status of a GET of ``target`` sent on a socket of its own: httpx refuses URLs over 64 KiB,
    a server must not assume every client does."""
    url = httpx.URL(base)
    with socket.create_connection((url.host, url.port or 80), timeout=60) as sock:
        request = f"GET {target} HTTP/1.1\r\nHost: {url.netloc.decode()}\r\nCookie: {cookie}\r\n"
        sock.sendall(request.encode() + b"Connection: close\r\n\r\n")
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


Send = Callable[[httpx.Client, str], int]
#: What is sent, and the size of each bogus credential.
KINDS: dict[str, tuple[Send, int]] = {
    "bearer": (
        lambda c, t: c.get("/api/v1/me", headers={"Authorization": f"Bearer {t}"}).status_code,
        TOKEN_SIZE,
    ),
    "bearer, JWT-shaped": (
        lambda c, t: c.get("/api/v1/cases", headers={"Authorization": f"Bearer eyJ{t}.a.b"}).status_code,
        TOKEN_SIZE,
    ),
    "session cookie": (
        lambda c, t: c.get("/api/v1/me", headers={"Cookie": f"upload_plane_session={t}"}).status_code,
        TOKEN_SIZE,
    ),
    "Uppy capability, 60 KiB": (
        lambda c, t: raw_get(str(c.base_url), f"/s3/multipart/c1.{t}.x/1?key=k", "upload_plane_session=x"),
        60 * 1024,
    ),
    "Uppy capability, 6 KiB": (
        lambda c, t: raw_get(str(c.base_url), f"/s3/multipart/c1.{t}.x/1?key=k", "upload_plane_session=x"),
        6 * 1024,
    ),
}


def test_bogus_oversized_credentials_do_not_grow_the_api(real: Backend, minio: MinIO, tmp_path: Path) -> None:
    with (
        api_process(real, minio, tmp_path / "api.log") as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        assert server.proc is not None
        pid = server.proc.pid
        for send, size in KINDS.values():  # warm up: the allocator's arenas, the routes' first use
            for _ in range(10):
                assert 400 <= send(http, bogus(size)) < 500
        report = []
        for kind, (send, size) in KINDS.items():
            before = rss(pid)
            statuses = {send(http, bogus(size)) for _ in range(BATCH)}
            grown = rss(pid) - before
            report.append(f"{kind}: {sorted(statuses)}, RSS {before / MIB:.1f} MiB, +{grown / MIB:.2f} MiB")
            assert all(400 <= s < 500 for s in statuses), (kind, statuses)
            assert grown < GROWTH_LIMIT, report
    print("\n" + "\n".join(report))
