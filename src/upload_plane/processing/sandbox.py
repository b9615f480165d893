"""Running ``examine.py`` on one stored file, in a process of its own under limits.

The child limits itself (address space, CPU seconds) before reading anything; here the parent adds a
wall-clock deadline and kills the child's whole process group (ffmpeg included) when it passes. What
the child said before it died still counts (the detected type comes first), and how it died is the
job's error: killed at the deadline or by the CPU limit (``timeout``), a crash (``crashed``).
"""

from __future__ import annotations

import asyncio
import contextlib
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


async def examine(url: str, size: int, limits: Limits) -> Examined:
    """Identify the object at ``url`` and describe it (media facts, a preview) in a sandbox."""
    with tempfile.TemporaryDirectory(prefix="upload-plane-examine-") as workdir:
        preview_path = Path(workdir) / "preview.jpg"
        request = {
            "url": url,
            "size": size,
            "max_pixels": limits.max_pixels,
            "preview_size": limits.preview_size,
            "memory": limits.memory,
            "cpu": limits.timeout,
            "preview_path": str(preview_path),
        }
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "upload_plane.processing.examine",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, cwd=workdir,
        )  # fmt: skip
        timed_out = False
        try:
            out, err = await asyncio.wait_for(
                child.communicate(json.dumps(request).encode()), limits.timeout + 5
            )
        except TimeoutError:
            timed_out = True
            _kill_group(child.pid)
            out, err = await child.communicate()
        finally:
            if child.returncode is None:
                _kill_group(child.pid)
                await child.wait()
        result = Examined()
        for line in out.decode("utf-8", "replace").splitlines():
            with contextlib.suppress(ValueError):
                said = json.loads(line)
                result.detected_type = said.get("detected_type", result.detected_type)
                if "media" in said:
                    result.media = {k: v for k, v in said["media"].items() if v is not None}
                    if said.get("preview") and preview_path.exists():
                        result.preview = preview_path.read_bytes()
                if "error" in said:
                    result.error, result.error_kind = said["error"], said.get("kind", "corrupt")
        if result.error is None and (
            timed_out or child.returncode != 0 or "media" not in out.decode("utf-8", "replace")
        ):
            result.error, result.error_kind = _death(child.returncode, timed_out, limits, err)
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
