"""Download a file: stream its presigned GET to a temporary file beside the target, hashing as it
comes, verify size, SHA-256 and CRC64NVME against what the API recorded, then rename.

An interrupted transfer continues with a ``Range`` request where it stopped (the running checksums
carry on); a URL that expired (403) is asked for again. Nothing appears at the target unless every
check passed; a failed check removes the temporary file and raises ``INTEGRITY_ERROR``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from .api import RETRY_STATUS, Api, ApiError, describe, retry_after_seconds
from .checksums import FileDigest
from .transfer import CHUNK, Progress, store_error

URL_REFRESHES = 3


@dataclass(frozen=True)
class DownloadResult:
    file_id: str
    path: str
    size: int
    sha256: str
    crc64nvme: str
    verified: list[str]  # what was compared with the API's record: size, sha256, crc64nvme


def target_path(filename: str, dest: str | Path | None) -> Path:
    """``dest`` itself (replaced if it exists), or a file named after the upload inside ``dest`` when
    it is a directory, or in the current directory when no ``dest`` is given; such a named file is
    never replaced. The recorded name is reduced to its last path component, so it cannot point
    elsewhere."""
    name = Path(filename.replace("\\", "/")).name.lstrip(".") or "download"
    path = Path(dest) if dest is not None else Path.cwd()
    if not path.is_dir():
        return path.absolute()
    target = (path / name).absolute()
    if target.exists():
        raise ApiError(0, "FILE_EXISTS", f"{target} exists; name the output with -o PATH")
    return target


async def download_file(
    api: Api, file_id: str, dest: str | Path | None = None, *, progress: Progress | None = None
) -> DownloadResult:
    progress = progress or Progress()
    info = await api.file(file_id)
    if info.status != "available":
        raise ApiError(409, "FILE_NOT_AVAILABLE", f"file {file_id} is {info.status}")
    target = target_path(info.filename, dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    progress.start(file_id, info.filename, info.size)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as a plain open() would have created it
        with os.fdopen(fd, "wb") as out:
            digest = await _fetch(api, file_id, out, progress)
            out.flush()
            os.fsync(out.fileno())
        verified = _verify(info.size, info.sha256, info.crc64nvme, digest, info.filename)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        progress.finish(file_id)
    return DownloadResult(file_id, str(target), digest.size, digest.sha256, digest.crc64nvme, verified)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _verify(size: int, sha256: str | None, crc64nvme: str | None, digest: FileDigest, name: str) -> list[str]:
    checks = [("size", str(size), str(digest.size))]
    if sha256:
        checks.append(("sha256", sha256.lower(), digest.sha256))
    if crc64nvme:
        checks.append(("crc64nvme", crc64nvme, digest.crc64nvme))
    for what, expected, got in checks:
        if expected != got:
            raise ApiError(
                0, "INTEGRITY_ERROR", f"{name}: downloaded {what} is {got}, the API recorded {expected}"
            )
    return [what for what, _, _ in checks]


async def _fetch(api: Api, file_id: str, out: BinaryIO, progress: Progress) -> FileDigest:
    """Stream the object into ``out``, resuming with Range after a failure; the running digest."""
    digest = FileDigest()
    url: str | None = None
    refreshes = 0
    failures = 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0)) as http:
        while True:
            if url is None:
                url = (await api.download_link(file_id)).url
            headers = {"Range": f"bytes={digest.size}-"} if digest.size else {}
            try:
                async with http.stream("GET", url, headers=headers) as response:
                    if response.status_code == 403 and refreshes < URL_REFRESHES:
                        refreshes, url = refreshes + 1, None  # the URL expired: ask for a new one
                        continue
                    if response.status_code in RETRY_STATUS:
                        raise _Transient(f"HTTP {response.status_code}", retry_after_seconds(response))
                    if response.status_code == 200 and digest.size:  # the store ignored Range
                        out.seek(0)
                        out.truncate()
                        progress.advance(file_id, -digest.size)
                        digest = FileDigest()
                    elif response.status_code not in (200, 206):
                        await response.aread()
                        raise store_error(response, f"GET file {file_id}")
                    async for chunk in response.aiter_bytes(CHUNK):
                        out.write(chunk)
                        digest.add(chunk)
                        progress.advance(file_id, len(chunk))
                return digest
            except (httpx.TransportError, _Transient) as exc:
                if failures + 1 >= api.retry.attempts:
                    raise ApiError(0, "UNREACHABLE", f"GET file {file_id}: {describe(exc)}") from exc
                wait = api.retry.delay(failures, exc.retry_after if isinstance(exc, _Transient) else None)
                if api.notice is not None:
                    api.notice(f"GET file {file_id}: {describe(exc)}", wait, failures + 1)
                failures += 1
                await asyncio.sleep(wait)


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
