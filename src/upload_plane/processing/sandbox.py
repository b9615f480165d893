"""Running ``examine.py`` on one stored file, in a process of its own under limits.

Each worker process keeps one fork server (``python -m upload_plane.processing.examine --serve``):
the decoders are imported once there, and every file is inspected in a child forked for it, which
limits itself (address space, CPU seconds) before reading anything. Here the parent adds a
wall-clock deadline and kills the child's whole process group (ffmpeg included) when it passes. What
the child said before it died still counts (the detected type comes first), and how it died is the
job's error: killed at the deadline or by the CPU limit (``timeout``), a crash (``crashed``).
A fork server that dies is started again for the next file; the files it was inspecting are tried
again (``SandboxLost``: a passing failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class Examined:
    detected_type: str | None = None
    media: dict[str, Any] = field(default_factory=dict)
    preview: bytes | None = None  # a JPEG at most preview_size on its long side
    error: str | None = None
    error_kind: str | None = None  # too_large, corrupt, memory, timeout, crashed, store


@dataclass(frozen=True, slots=True)
class Limits:
    max_pixels: int
    timeout: int  # seconds, wall clock and CPU
    memory: int  # bytes of address space
    preview_size: int


class SandboxLost(Exception):
    """The fork server went away while it inspected a file (not the file's fault)."""


class Sandbox:
    """This process's fork server, started on first use."""

    def __init__(self) -> None:
        self._server: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, tuple[asyncio.Future[int], asyncio.Future[int]]] = {}
        self._ids = itertools.count()
        self._lock = asyncio.Lock()

    async def _started(self) -> asyncio.subprocess.Process:
        async with self._lock:
            if self._server is None or self._server.returncode is not None:
                self._server = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "upload_plane.processing.examine", "--serve",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
                self._reader = asyncio.create_task(self._read(self._server))
            return self._server

    async def _read(self, server: asyncio.subprocess.Process) -> None:
        assert server.stdout is not None
        async for line in server.stdout:
            with contextlib.suppress(ValueError, KeyError):
                said = json.loads(line)
                pid, ended = self._waiting[said["id"]]
                if "pid" in said and not pid.done():
                    pid.set_result(int(said["pid"]))
                if "exit" in said and not ended.done():
                    ended.set_result(int(said["exit"]))
        for pid, ended in self._waiting.values():  # the server is gone: so are its answers
            for future in (pid, ended):
                if not future.done():
                    future.set_exception(SandboxLost("the decoder server stopped"))

    async def run(self, request: dict[str, Any], deadline: float) -> tuple[int, bool]:
        """Inspect in a forked child; its exit code (minus a signal) and whether it was killed at
        ``deadline`` seconds."""
        server = await self._started()
        loop = asyncio.get_running_loop()
        key = str(next(self._ids))
        pid_future, exit_future = loop.create_future(), loop.create_future()
        self._waiting[key] = (pid_future, exit_future)
        try:
            assert server.stdin is not None
            server.stdin.write((json.dumps({**request, "id": key}) + "\n").encode())
            try:
                await server.stdin.drain()
                pid = await asyncio.wait_for(pid_future, 60)
            except (ConnectionError, TimeoutError) as exc:
                raise SandboxLost("the decoder server did not answer") from exc
            try:
                return await asyncio.wait_for(asyncio.shield(exit_future), deadline), False
            except TimeoutError:
                _kill_group(pid)
                return await asyncio.wait_for(exit_future, 60), True
            except asyncio.CancelledError:
                _kill_group(pid)
                raise
        finally:
            del self._waiting[key]

    async def aclose(self) -> None:
        if self._server is not None and self._server.returncode is None:
            _kill_group(self._server.pid)
            await self._server.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, SandboxLost):
                await self._reader


async def examine(sandbox: Sandbox, url: str, size: int, limits: Limits) -> Examined:
    """Identify the object at ``url`` and describe it (media facts, a preview) in a sandbox."""
    with tempfile.TemporaryDirectory(prefix="upload-plane-examine-") as workdir:
        work = Path(workdir)
        request = {
            "url": url,
            "size": size,
            "max_pixels": limits.max_pixels,
            "preview_size": limits.preview_size,
            "memory": limits.memory,
            "cpu": limits.timeout,
            "preview_path": str(work / "preview.jpg"),
            "out": str(work / "out.jsonl"),
            "err": str(work / "err.txt"),
        }
        code, timed_out = await sandbox.run(request, limits.timeout + 5)
        result = Examined()
        out = (work / "out.jsonl").read_text(errors="replace") if (work / "out.jsonl").exists() else ""
        for line in out.splitlines():
            with contextlib.suppress(ValueError):
                said = json.loads(line)
                result.detected_type = said.get("detected_type", result.detected_type)
                if "media" in said:
                    result.media = {k: v for k, v in said["media"].items() if v is not None}
                    if said.get("preview") and (work / "preview.jpg").exists():
                        result.preview = (work / "preview.jpg").read_bytes()
                if "error" in said:
                    result.error, result.error_kind = said["error"], said.get("kind", "corrupt")
        if result.error is None and (timed_out or code != 0 or '"media"' not in out):
            err = (work / "err.txt").read_bytes() if (work / "err.txt").exists() else b""
            result.error, result.error_kind = _death(code, timed_out, limits, err)
        return result


def _death(code: int | None, timed_out: bool, limits: Limits, err: bytes) -> tuple[str, str]:
    if timed_out or code in (-signal.SIGXCPU, -signal.SIGKILL):
        return f"the decoder took longer than {limits.timeout} s and was stopped", "timeout"
    tail = err.decode("utf-8", "replace").strip().splitlines()
    if tail and "MemoryError" in tail[-1]:
        return f"the decoder needed more than {limits.memory // 2**20} MiB", "memory"
    reason = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
    return f"the decoder crashed ({reason}){': ' + tail[-1][:300] if tail else ''}", "crashed"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
