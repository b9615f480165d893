"""The upload engine: files and directories, parts in parallel, checksums while reading, resume.

For each file: start an upload (``checksum_algorithm: CRC64NVME``) or resume the one in its state
file; read the file once, in order, part by part (in a worker thread), feeding SHA-256 and the
whole-file CRC64NVME and computing each part's own CRC64NVME; sign that part with its CRC and PUT it
straight to the store with exactly the signed headers; then complete with both whole-file values, so
the store checks the whole file. At most ``parallel`` parts (of all files together) are held in memory
and in flight. A part URL that expired (403 from the store) is signed again.

Resuming (same absolute path, log, size and mtime): the store's parts (``GET /uploads/{id}``) are not
sent again. They are still read for the whole-file checksums, and a part whose local CRC64NVME differs
from the one the store reports (or, when it reports none, from the one sent earlier) is sent again.
An upload that is gone, expired, or was aborted is replaced by a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .api import Api, ApiError, StoredPart, Upload, UploadStatus
from .checksums import FileDigest, crc_b64
from .state import ResumeState, ResumeStore
from .transfer import Progress, RateLimit, Store, store_error

DEFAULT_PARALLEL = 4
RESIGNS_PER_PART = 3
#: Codes that mean the upload can no longer take parts: start a new one.
UPLOAD_GONE = frozenset({"UPLOAD_EXPIRED", "UPLOAD_NOT_UPLOADING"})


@dataclass(frozen=True)
class LocalFile:
    path: Path  # absolute
    name: str  # the filename the API records (relative path inside an uploaded directory)


@dataclass(frozen=True)
class UploadResult:
    path: str
    filename: str
    file_id: str
    upload_id: str
    size: int
    sha256: str
    crc64nvme: str
    verified_by: str | None
    parts_uploaded: int
    parts_skipped: int
    resumed: bool


@dataclass
class _Opened:
    state: ResumeState
    upload: Upload
    held: dict[int, StoredPart] | None  # the parts the store holds; None: all (completing/completed)
    resumed: bool


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


def collect(paths: Sequence[str | Path]) -> list[LocalFile]:
    """Files to upload: each file given, and every regular file under each directory given (the
    recorded name is its path relative to the directory's parent, so ``dir/a/b.bin``)."""
    found: list[LocalFile] = []
    for given in paths:
        path = Path(given).absolute()
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    child = Path(root) / name
                    if child.is_file():
                        found.append(LocalFile(child, child.relative_to(path.parent).as_posix()))
        elif path.is_file():
            found.append(LocalFile(path, path.name))
        else:
            raise ApiError(0, "NO_SUCH_FILE", f"{given}: no such file or directory")
    return found


def _expired(upload: Upload) -> bool:
    try:
        return datetime.fromisoformat(upload.expires_at) <= datetime.now(UTC)
    except ValueError:
        return False


class Uploader:
    def __init__(
        self,
        api: Api,
        store: Store,
        *,
        parallel: int = DEFAULT_PARALLEL,
        part_size: int | None = None,
        resume: ResumeStore | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.api = api
        self.store = store
        self.parallel = max(1, parallel)
        self.part_size = part_size
        self.resume = resume or ResumeStore()
        self.progress = progress or Progress()
        self.slots = asyncio.Semaphore(self.parallel)

    async def upload_all(self, log_id: str, files: Sequence[LocalFile]) -> list[UploadResult]:
        """Upload every file (up to ``parallel`` files at once); the first failure stops the rest."""
        gate = asyncio.Semaphore(self.parallel)

        async def one(item: LocalFile) -> UploadResult:
            async with gate:
                return await self.upload(log_id, item)

        async with first_error_group() as group:
            tasks = [group.create_task(one(item)) for item in files]
        return [t.result() for t in tasks]

    async def upload(self, log_id: str, item: LocalFile) -> UploadResult:
        key = str(item.path)
        stat = item.path.stat()
        try:
            for fresh_start in (False, True):
                self.progress.start(key, item.name, stat.st_size)
                opened = await self._open(log_id, item, stat, fresh=fresh_start)
                try:
                    return await self._send(item, stat, opened)
                except ApiError as exc:
                    if exc.code not in UPLOAD_GONE or fresh_start:
                        raise
                    self.progress.notice(f"{item.name}: {exc.code}, starting a new upload")
                    self.resume.forget(opened.state)
            raise AssertionError("unreachable")
        finally:
            self.progress.finish(key)

    async def _open(self, log_id: str, item: LocalFile, stat: os.stat_result, *, fresh: bool) -> _Opened:
        """The upload to continue, or a new one (recorded in the state file at once)."""
        saved = self.resume.load(self.api.api_url, str(item.path), log_id)
        if saved is not None and not fresh:
            if (saved.size, saved.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                status = await self._status(saved.upload_id)
                if status is not None and status.status in ("completing", "completed"):
                    return _Opened(saved, status, None, resumed=True)
                if status is not None and status.status == "uploading" and not _expired(status):
                    held = status.parts.uploaded if status.parts else []
                    return _Opened(saved, status, {p.part_number: p for p in held}, resumed=True)
            else:  # the file changed since: its old upload can never complete
                with contextlib.suppress(ApiError):
                    await self.api.abort(saved.upload_id)
            self.resume.forget(saved)
        content_type = mimetypes.guess_type(item.name)[0]
        upload = await self.api.start_upload(
            log_id, item.name, stat.st_size, content_type=content_type, part_size=self.part_size
        )
        state = ResumeState(
            api_url=self.api.api_url,
            path=str(item.path),
            log_id=log_id,
            size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            upload_id=upload.id,
            part_size=upload.part_size,
            part_count=upload.part_count,
        )
        await asyncio.to_thread(self.resume.save, state)
        return _Opened(state, upload, {}, resumed=False)

    async def _status(self, upload_id: str) -> UploadStatus | None:
        try:
            return await self.api.upload_status(upload_id)
        except ApiError as exc:
            if exc.code in ("NOT_FOUND", "UPLOAD_EXPIRED"):
                return None
            raise

    async def _send(self, item: LocalFile, stat: os.stat_result, opened: _Opened) -> UploadResult:
        key, state, upload, held = str(item.path), opened.state, opened.upload, opened.held
        digest = FileDigest()
        saving = asyncio.Lock()
        skipped = sent = 0

        async def record(n: int, crc: str) -> None:
            async with saving:
                state.parts[str(n)] = crc
                await asyncio.to_thread(self.resume.save, state)

        async def send(n: int, data: bytes, crc: str) -> None:
            nonlocal sent
            try:
                await self._put_part(key, upload, n, data, crc)
            finally:
                self.slots.release()
            sent += 1
            await record(n, crc)

        with item.path.open("rb") as f:
            async with first_error_group() as group:
                for n in range(1, upload.part_count + 1):
                    size = min(upload.part_size, upload.size - (n - 1) * upload.part_size)
                    await self.slots.acquire()
                    try:
                        data, part_crc = await asyncio.to_thread(_read_part, f, size, digest)
                    except BaseException:
                        self.slots.release()
                        raise
                    if len(data) != size:
                        self.slots.release()
                        raise ApiError(
                            0, "FILE_CHANGED", f"{item.path}: the file is shorter than when started"
                        )
                    crc = crc_b64(part_crc)
                    stored = held.get(n) if held is not None else None
                    known = (stored.checksum_crc64nvme or state.parts.get(str(n))) if stored else None
                    if held is None or (stored and stored.size == size and known in (None, crc)):
                        self.slots.release()
                        skipped += 1
                        self.progress.advance(key, size)
                        continue
                    group.create_task(send(n, data, crc))
            now = os.fstat(f.fileno())
        if (now.st_size, now.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            with contextlib.suppress(ApiError):
                await self.api.abort(upload.id)
            self.resume.forget(state)
            raise ApiError(0, "FILE_CHANGED", f"{item.path}: the file changed while it was uploaded")
        file = await self.api.complete(upload.id, digest.sha256, digest.crc64nvme)
        if (file.sha256, file.crc64nvme) != (digest.sha256, digest.crc64nvme):
            raise ApiError(0, "INTEGRITY_ERROR", f"{item.name}: the API recorded other checksums")
        self.resume.forget(state)
        return UploadResult(
            path=key,
            filename=item.name,
            file_id=file.id,
            upload_id=upload.id,
            size=file.size,
            sha256=digest.sha256,
            crc64nvme=digest.crc64nvme,
            verified_by=file.verified_by,
            parts_uploaded=sent,
            parts_skipped=skipped,
            resumed=opened.resumed,
        )

    async def _put_part(self, key: str, upload: Upload, n: int, data: bytes, crc: str) -> None:
        """Sign part ``n`` with its CRC64NVME and PUT it; sign again when the URL expired."""
        what = f"{upload.filename} part {n}"
        for _ in range(RESIGNS_PER_PART + 1):
            part = (await self.api.sign_parts(upload.id, {n: crc})).parts[0]
            response = await self.store.put(
                part.url, part.headers, data, lambda done: self.progress.advance(key, done), what
            )
            if response.status_code == 200:
                return
            if response.status_code != 403:  # 403: the URL expired (or its clock is off): re-sign
                raise store_error(response, what)
            self.progress.notice(f"{what}: the store refused the URL (403), signing it again")
        raise store_error(response, what)


def _read_part(f: IO[bytes], size: int, digest: FileDigest) -> tuple[bytes, int]:
    """Read the next part and feed the file's checksums (runs in a worker thread)."""
    data = f.read(size)
    return data, digest.add_part(data)


async def upload_files(
    api: Api,
    log_id: str,
    files: Sequence[LocalFile],
    *,
    parallel: int = DEFAULT_PARALLEL,
    part_size: int | None = None,
    limit_rate: int | None = None,
    progress: Progress | None = None,
    resume: ResumeStore | None = None,
) -> list[UploadResult]:
    """Upload ``files`` (see :func:`collect`) into a log; see the module docstring."""
    store = Store(
        retry=api.retry,
        connections=max(1, parallel),
        rate_limit=RateLimit(limit_rate) if limit_rate else None,
        notice=api.notice,
    )
    try:
        uploader = Uploader(
            api, store, parallel=parallel, part_size=part_size, resume=resume, progress=progress
        )
        return await uploader.upload_all(log_id, files)
    finally:
        await store.aclose()


async def upload_paths(
    api: Api, log_id: str, paths: Sequence[str | Path], **options: Any
) -> list[UploadResult]:
    """Upload files and directories into a log (options as :func:`upload_files`)."""
    return await upload_files(api, log_id, collect(paths), **options)
