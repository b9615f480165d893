"""The upload engine: files and directories, parts in parallel, checksums while reading, resume.

Files of at most ``batches.SMALL_FILE_MAX`` bytes go in batches, one PUT each (``batches.py``); the
others each in a multipart upload, as follows.

For each file: start an upload (``checksum_algorithm: CRC64NVME``) or resume the one in its state
file; read the file once, in order, part by part (in a worker thread, into one of ``parallel`` reused
buffers), feeding SHA-256 and the whole-file CRC64NVME; PUT each part straight to the store with
exactly the headers its URL was signed with (its size and its own CRC64NVME; parts are signed a
window at a time, see ``_Signer``); then complete with both whole-file values, so the store checks
the whole file. At most ``parallel`` parts (of all files together) are in memory and in flight. A
part URL that expired (403 from the store, or about to) is signed again.

Resuming (same absolute path, log, size and mtime): the store's parts (``GET /uploads/{id}``) are not
sent again. They are still read for the whole-file checksums, and a part whose local CRC64NVME differs
from the one the store reports (or, when it reports none, from the one sent earlier) is sent again.
An upload that is gone, expired, or was aborted is replaced by a new one; so is the upload of a file
that changed (the old one is aborted).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import mimetypes
import os
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .api import Api, ApiError, SignedPart, StoredPart, Upload, UploadStatus
from .batches import SMALL_FILE_MAX, SmallFiles, SmallResult
from .checksums import FileDigest, crc64nvme, crc_b64
from .state import ResumeState, ResumeStore
from .transfer import CHUNK, Progress, RateLimit, Store, first_error_group, store_error

DEFAULT_PARALLEL = 4
RESIGNS_PER_PART = 3
SIGN_WINDOW_BYTES = 256 * 1024 * 1024  # parts signed per call: this many bytes' worth...
SIGN_WINDOW_PARTS = 64  # ...but at most this many (URLs live 15 minutes by default)
STATE_SAVE_INTERVAL = 1.0  # seconds between rewrites of a state file while parts finish
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
    seconds: float  # from opening the upload to the answer of complete


@dataclass
class _Opened:
    state: ResumeState
    upload: Upload
    held: dict[int, StoredPart] | None  # the parts the store holds; None: all (completing/completed)
    resumed: bool


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
        self.buffers = _Buffers(self.parallel)
        #: The states of uploads that completed: kept until their results were reported.
        self.finished: list[ResumeState] = []

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
        began = time.perf_counter()
        try:
            for fresh_start in (False, True):
                self.progress.start(key, item.name, stat.st_size)
                opened = await self._open(log_id, item, stat, fresh=fresh_start)
                try:
                    result = await self._send(item, stat, opened)
                    return dataclasses.replace(result, seconds=round(time.perf_counter() - began, 3))
                except ApiError as exc:
                    if exc.code not in UPLOAD_GONE or fresh_start:
                        raise
                    self.progress.notice(f"{item.name}: {exc.code}, starting a new upload")
                    self.resume.forget(opened.state)
            raise AssertionError("unreachable")
        finally:
            self.progress.finish(key)

    def forget_finished(self) -> None:
        """Forget the resume states of the completed uploads (once their results were reported)."""
        for state in self.finished:
            self.resume.forget(state)
        self.finished.clear()

    async def _open(self, log_id: str, item: LocalFile, stat: os.stat_result, *, fresh: bool) -> _Opened:
        """The upload to continue, or a new one. The start's Idempotency-Key is in the state file
        before the start is sent, so a start whose answer never arrived is asked for again."""
        saved = self.resume.load(self.api.api_url, str(item.path), log_id)
        start_key = None
        if saved is not None and not fresh:
            unchanged = (saved.size, saved.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
            if unchanged and not saved.upload_id:  # started, but the answer was never recorded
                start_key = saved.start_key or None
            elif unchanged:
                status = await self._status(saved.upload_id)
                if status is not None and status.status in ("completing", "completed"):
                    return _Opened(saved, status, None, resumed=True)
                if status is not None and status.status == "uploading" and not _expired(status):
                    held = status.parts.uploaded if status.parts else []
                    return _Opened(saved, status, {p.part_number: p for p in held}, resumed=True)
            elif saved.upload_id:  # the file changed since: its old upload can never complete
                with contextlib.suppress(ApiError):
                    await self.api.abort(saved.upload_id)
            if start_key is None:
                self.resume.forget(saved)
        state = ResumeState(
            api_url=self.api.api_url,
            path=str(item.path),
            log_id=log_id,
            size=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            upload_id="",
            part_size=0,
            part_count=0,
            start_key=start_key or secrets.token_urlsafe(24),
        )
        if start_key is None:
            await asyncio.to_thread(self.resume.save, state)
        upload = await self.api.start_upload(
            log_id,
            item.name,
            stat.st_size,
            content_type=mimetypes.guess_type(item.name)[0],
            part_size=self.part_size,
            # Not for empty files: MinIO refuses the (correct) CRC64NVME of zero bytes at complete
            # (XAmzContentChecksumMismatch; measured on the pinned build). Nothing to verify anyway.
            store_checks=stat.st_size > 0,
            idempotency_key=state.start_key,
        )
        state.upload_id, state.part_size, state.part_count = upload.id, upload.part_size, upload.part_count
        await asyncio.to_thread(self.resume.save, state)
        finishing = upload.status in ("completing", "completed")  # an earlier run got this far
        return _Opened(state, upload, None if finishing else {}, resumed=start_key is not None)

    async def _status(self, upload_id: str) -> UploadStatus | None:
        try:
            return await self.api.upload_status(upload_id)
        except ApiError as exc:
            if exc.code in ("NOT_FOUND", "UPLOAD_EXPIRED"):
                return None
            raise

    async def _send(self, item: LocalFile, stat: os.stat_result, opened: _Opened) -> UploadResult:
        key, state, upload = str(item.path), opened.state, opened.upload
        digest = FileDigest()
        saved_at = 0.0
        skipped = sent = 0

        def record(n: int, crc: str) -> None:
            """Remember a sent part; the state file is rewritten at most once a second (the store
            is the authority on parts: a part missing from the file is only checked by the store's
            own checksum on resume)."""
            nonlocal saved_at
            state.parts[str(n)] = crc
            if time.monotonic() - saved_at >= STATE_SAVE_INTERVAL:
                saved_at = time.monotonic()
                self.resume.save(state)

        async def send(n: int, buffer: bytearray, data: memoryview, crc: str, part: SignedPart) -> None:
            nonlocal sent
            try:
                await self._put_part(key, upload, n, data, crc, part)
            finally:
                data.release()
                self.buffers.put(buffer)
            sent += 1
            record(n, crc)

        signer = _Signer(self.api, upload, item.path, opened.held, dict(state.parts))
        try:
            with item.path.open("rb") as f:
                async with first_error_group() as group:
                    for n in range(1, upload.part_count + 1):
                        window = await signer.window_of(n)
                        size = upload.part_bytes(n)
                        buffer = await self.buffers.take(size)
                        try:
                            data, part_crc = await asyncio.to_thread(_read_part, f, buffer, size, digest)
                        except BaseException:
                            self.buffers.put(buffer)
                            raise
                        crc = crc_b64(part_crc)
                        changed = len(data) != size or crc != window.crcs[n]
                        if changed or n not in window.signed:
                            data.release()
                            self.buffers.put(buffer)
                            if changed:
                                raise ApiError(
                                    0, "FILE_CHANGED", f"{item.path}: the file changed while it was read"
                                )
                            skipped += 1
                            self.progress.advance(key, size)
                            continue
                        group.create_task(send(n, buffer, data, crc, window.signed[n]))
                now = os.fstat(f.fileno())
        finally:
            signer.close()
        if (now.st_size, now.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            with contextlib.suppress(ApiError):
                await self.api.abort(upload.id)
            self.resume.forget(state)
            raise ApiError(0, "FILE_CHANGED", f"{item.path}: the file changed while it was uploaded")
        crc64nvme = digest.crc64nvme if upload.store_checks else None
        file = await self.api.complete(upload.id, digest.sha256, crc64nvme)
        if (file.sha256, file.crc64nvme) != (digest.sha256, crc64nvme):
            raise ApiError(0, "INTEGRITY_ERROR", f"{item.name}: the API recorded other checksums")
        self.finished.append(state)
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
            seconds=0.0,
        )

    async def _put_part(
        self, key: str, upload: Upload, n: int, data: memoryview, crc: str, part: SignedPart
    ) -> None:
        """PUT part ``n``; sign it again when its URL expired (or is about to, or the store says
        403, e.g. after long retries)."""
        what = f"{upload.filename} part {n}"
        for attempt in range(RESIGNS_PER_PART + 1):
            if attempt or part.expires_soon():
                checksums = {n: crc} if upload.store_checks else None
                part = (await self.api.sign_parts(upload.id, [n], checksums)).parts[0]
            response = await self.store.put(
                part.url, part.headers, data, lambda done: self.progress.advance(key, done), what
            )
            if response.status_code == 200:
                return
            if response.status_code != 403:
                raise store_error(response, what)
            self.progress.notice(f"{what}: the store refused the URL (403), signing it again")
        raise store_error(response, what)


@dataclass(frozen=True)
class _Window:
    crcs: dict[int, str]  # every part of the window: its CRC64NVME (base64)
    signed: dict[int, SignedPart]  # the parts to send (not those the store holds)


class _Signer:
    """Signs parts a window ahead of the reader, one API call per window of parts.

    A part's URL signs its CRC64NVME, so the CRC must be known before the part is sent. Each window
    (``SIGN_WINDOW_BYTES``) is therefore read once ahead, for its parts' CRCs only (CRC64NVME runs at
    GB/s, and the window is usually still in the page cache when it is read again to be sent), and
    its parts are signed in one call; the reader then checks that each part still has that CRC.
    This is also where a resumed upload decides which parts the store already holds: same size,
    and the same CRC64NVME as the store reports (or, if it reports none, as recorded when sent).
    """

    def __init__(
        self,
        api: Api,
        upload: Upload,
        path: Path,
        held: dict[int, StoredPart] | None,
        recorded: dict[str, str],
    ) -> None:
        self.api = api
        self.upload = upload
        self.path = path
        self.held = held
        self.recorded = recorded
        self.size = max(1, min(SIGN_WINDOW_PARTS, SIGN_WINDOW_BYTES // max(1, upload.part_size)))
        self.windows: dict[int, asyncio.Task[_Window]] = {}

    def window_of(self, n: int) -> asyncio.Task[_Window]:
        """The window holding part ``n``; the next one starts being prepared too."""
        k = (n - 1) // self.size
        for j in (k, k + 1):
            if j * self.size < self.upload.part_count and j not in self.windows:
                self.windows[j] = asyncio.create_task(self._prepare(j))
        self.windows.pop(k - 1, None)
        return self.windows[k]

    def close(self) -> None:
        for task in self.windows.values():
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a window read ahead may have failed unseen
            task.cancel()

    def _held(self, n: int, crc: str) -> bool:
        if self.held is None:  # completing or completed: the store holds every part
            return True
        stored = self.held.get(n)
        if stored is None or stored.size != self.upload.part_bytes(n):
            return False
        known = stored.checksum_crc64nvme or self.recorded.get(str(n))
        return known is None or known == crc

    async def _prepare(self, k: int) -> _Window:
        first = k * self.size + 1
        last = min(self.upload.part_count, first + self.size - 1)
        crcs = await asyncio.to_thread(_part_crcs, self.path, self.upload, first, last)
        needed = [n for n in range(first, last + 1) if not self._held(n, crcs[n])]
        signed: dict[int, SignedPart] = {}
        if needed:
            checksums = {n: crcs[n] for n in needed} if self.upload.store_checks else None
            answer = await self.api.sign_parts(self.upload.id, needed, checksums)
            signed = {p.part_number: p for p in answer.parts}
        return _Window(crcs, signed)


def _part_crcs(path: Path, upload: Upload, first: int, last: int) -> dict[int, str]:
    """The CRC64NVME of parts ``first..last``, read in 1 MiB chunks (a worker thread)."""
    crcs: dict[int, str] = {}
    with path.open("rb") as f:
        f.seek((first - 1) * upload.part_size)
        for n in range(first, last + 1):
            left, crc = upload.part_bytes(n), 0
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise ApiError(0, "FILE_CHANGED", f"{path}: the file is shorter than when started")
                crc = crc64nvme(chunk, crc)
                left -= len(chunk)
            crcs[n] = crc_b64(crc)
    return crcs


def _read_part(f: IO[bytes], buffer: bytearray, size: int, digest: FileDigest) -> tuple[memoryview, int]:
    """Read the next part into ``buffer`` and feed the file's checksums (a worker thread)."""
    view = memoryview(buffer)[:size]
    done = 0
    while done < size:
        n = f.readinto(view[done:])  # type: ignore[attr-defined]
        if not n:
            break
        done += n
    data = view[:done]
    view.release()
    return data, digest.add_part(data)


class _Buffers:
    """The part buffers: ``count`` of them, reused, so memory stays at ``count`` parts however
    large the file (fresh 8 MiB objects per part would leave the allocator's arenas fragmented)."""

    def __init__(self, count: int) -> None:
        self.free: asyncio.Queue[bytearray] = asyncio.Queue()
        for _ in range(count):
            self.free.put_nowait(bytearray())

    async def take(self, size: int) -> bytearray:
        buffer = await self.free.get()
        return buffer if len(buffer) >= size else bytearray(size)

    def put(self, buffer: bytearray) -> None:
        self.free.put_nowait(buffer)


class FilesFailed(ApiError):
    """Some files were not uploaded; the others were (and were reported). ``failed``: each file and
    why, in the order given. The code and status are the first failure's."""

    def __init__(self, failed: list[tuple[LocalFile, ApiError]]) -> None:
        first = failed[0][1]
        super().__init__(first.status, first.code, f"{len(failed)} file(s) not uploaded: {first.detail}")
        self.failed = failed


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
    report: Callable[[list[UploadResult]], None] | None = None,
) -> list[UploadResult]:
    """Upload ``files`` (see :func:`collect`) into a log: small files in batches (``batches.py``),
    the others each in its own multipart upload (see the module docstring), all at once. The results
    of the files done, in the order given; ``FilesFailed`` after them when some files were not
    (each file answers alone: one refused does not stop the others).

    The resume states of the completed uploads are forgotten only after ``report`` had the results
    (the CLI prints them there): a client that dies before its results were reported completes the
    same uploads on its next run and reports the same files, instead of uploading them again.
    """
    rate_limit = RateLimit(limit_rate) if limit_rate else None
    store = Store(retry=api.retry, connections=max(1, parallel), rate_limit=rate_limit, notice=api.notice)
    # PUTs, reads and checksum passes run in threads: enough of them for every part in flight.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(parallel + 4))
    progress = progress or Progress()
    resume = resume or ResumeStore()
    sizes = {item.path: item.path.stat().st_size for item in files}
    small = [item for item in files if sizes[item.path] <= SMALL_FILE_MAX]
    large = [item for item in files if sizes[item.path] > SMALL_FILE_MAX]
    try:
        uploader = Uploader(
            api, store, parallel=parallel, part_size=part_size, resume=resume, progress=progress
        )
        batches = SmallFiles(
            api, log_id, parallel=parallel, resume=resume, progress=progress, rate_limit=rate_limit
        )
        outcomes: dict[Path, UploadResult | ApiError] = {}

        async def one_large(item: LocalFile, gate: asyncio.Semaphore) -> None:
            async with gate:
                try:
                    outcomes[item.path] = await uploader.upload(log_id, item)
                except ApiError as exc:
                    outcomes[item.path] = exc

        gate = asyncio.Semaphore(max(1, parallel))
        async with first_error_group() as group:
            group.create_task(batches.run([(str(item.path), item.name) for item in small]))
            for item in large:
                group.create_task(one_large(item, gate))
        for item in small:
            outcomes[item.path] = _small_result(item, batches.results[str(item.path)])
        results = [r for item in files if isinstance(r := outcomes[item.path], UploadResult)]
        if report is not None:
            report(results)
        uploader.forget_finished()
        batches.forget_finished()
        failed = [(item, e) for item in files if isinstance(e := outcomes[item.path], ApiError)]
        if failed:
            raise FilesFailed(failed)
        return results
    finally:
        store.close()


def _small_result(item: LocalFile, done: SmallResult) -> UploadResult | ApiError:
    if done.file is None:
        return done.error or ApiError(0, "UPLOAD_INCOMPLETE", f"{item.path}: not uploaded")
    file = done.file
    return UploadResult(
        path=str(item.path),
        filename=item.name,
        file_id=file.id,
        upload_id=done.upload_id,
        size=file.size,
        sha256=file.sha256 or "",
        crc64nvme=file.crc64nvme or "",
        verified_by=file.verified_by,
        parts_uploaded=1 if done.sent else 0,
        parts_skipped=0 if done.sent else 1,
        resumed=done.resumed,
        seconds=done.seconds,
    )


async def upload_paths(
    api: Api, log_id: str, paths: Sequence[str | Path], **options: Any
) -> list[UploadResult]:
    """Upload files and directories into a log (options as :func:`upload_files`)."""
    return await upload_files(api, log_id, collect(paths), **options)
