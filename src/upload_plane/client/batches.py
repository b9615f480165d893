"""Small files in batches: one request starts hundreds of them, each goes to the store in one PUT,
one request records them all.

A file of at most ``SMALL_FILE_MAX`` bytes is at most one part on any server (parts are at least
5 MiB), so the API answers it with a single conditional PUT URL that signs its length, type and
SHA-256. For each batch (up to ``BATCH_FILES`` files): read each file once for its SHA-256 and
CRC64NVME (in a worker thread), write the batch's resume state (its Idempotency-Key and exactly the
entries it sends), start it, PUT every file straight to the store (``parallel`` at a time, over one
aiohttp session: a fraction of the CPU of a thread per PUT), then complete it. Several batches are in
flight at once, so the store is kept busy while the API answers.

Per file, not per batch: a file the API refuses (its type, its size, a link's budget) is reported
and the others go on; one the start rate holds back is sent again once the window has passed.

Resuming: a batch kept from a killed run is sent again with its key and entries, and answers the
same uploads. Those completed are reported without a byte sent; those still open are first asked
about (a batch complete: the store may hold them, their PUT landed before the kill), and only the
ones the store does not hold are sent: no file is written twice. A file that changed since is
started afresh (its old upload aborted); a URL that expired is signed again by sending the batch
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from .api import RETRY_STATUS, Api, ApiError, BatchStartedItem, FileInfo, describe
from .checksums import crc64nvme, crc_b64
from .state import BatchState, ResumeStore
from .transfer import Progress, RateLimit, first_error_group

SMALL_FILE_MAX = 5 * 1024 * 1024
BATCH_FILES = 250
BATCH_JSON_BYTES = 800_000  # what a batch's entries may take in its request (the API takes 1 MiB)
BATCHES_IN_FLIGHT = 4
KEEP_BYTES = 32 * 1024 * 1024  # a batch keeps files read for their checksums up to this, to PUT them
ROUNDS = 6  # tries of a batch: a round sends what is left again (a held-back start, an expired URL)
#: Per-file answers of a batch complete that another round may turn into a file.
_AGAIN = frozenset({"STORAGE_UNAVAILABLE", "DATABASE_UNAVAILABLE", "UPLOAD_COMPLETING", "RATE_LIMITED"})


@dataclass(frozen=True)
class SmallResult:
    """What became of one small file: its file, or why not."""

    file: FileInfo | None
    upload_id: str
    sent: bool  # this run PUT its bytes
    resumed: bool
    seconds: float
    error: ApiError | None = None


@dataclass
class _Batch:
    state: BatchState
    sha256: list[str]
    crc64nvme: list[str]
    data: dict[int, bytes]  # the bytes read for the checksums, kept to PUT (up to KEEP_BYTES)
    resumed: bool
    mine: set[int]  # the entries this run acts on
    changed: set[int] = field(default_factory=set)  # entries whose file changed since: abandoned
    transient: bool = False  # a complete answered a failure worth another round
    began: float = field(default_factory=time.perf_counter)


class SmallFiles:
    def __init__(
        self,
        api: Api,
        log_id: str,
        *,
        parallel: int,
        resume: ResumeStore,
        progress: Progress,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.api = api
        self.rate_limit = rate_limit
        self.log_id = log_id
        self.parallel = max(1, parallel)
        self.resume = resume
        self.progress = progress
        self.results: dict[str, SmallResult] = {}  # by absolute path
        self.finished: list[BatchState] = []  # kept until their results were reported
        self._http: aiohttp.ClientSession | None = None
        self._gate = asyncio.Semaphore(self.parallel)

    async def run(self, files: Sequence[tuple[str, str]]) -> None:
        """Upload ``(absolute path, name)`` pairs, each at most ``SMALL_FILE_MAX`` bytes: first the
        batches a killed run left that hold some of them, then the rest in new batches."""
        connector = aiohttp.TCPConnector(limit=self.parallel, keepalive_timeout=30)
        timeout = aiohttp.ClientTimeout(total=300, connect=10, sock_read=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            self._http = http
            try:
                kept = self._kept(dict(files))
                await _together([self._run_batch(batch) for batch in kept])
                await self._run_fresh([(p, n) for p, n in files if p not in self.results])
            finally:
                self._http = None

    def forget_finished(self) -> None:
        for state in self.finished:
            self.resume.forget_batch(state)
        self.finished.clear()

    def _kept(self, names: dict[str, str]) -> list[_Batch]:
        """The batches a killed run left that hold files of this run (each file in one of them). A
        file that changed since is left out of its batch (its open upload is aborted) and goes in a
        new one."""
        batches, claimed = [], set()
        for state in self.resume.batches(self.api.api_url, self.log_id):
            mine = {i for i, p in enumerate(state.paths) if p in names and p not in claimed}
            if not mine:
                continue
            claimed |= {state.paths[i] for i in mine}
            same = {i for i in mine if _stat(state.paths[i]) == (state.files[i]["size"], state.mtimes_ns[i])}
            sums = [str(f.get("sha256", "")) for f in state.files]
            crcs = [str(f.get("crc64nvme", "")) for f in state.files]
            batches.append(_Batch(state, sums, crcs, {}, resumed=True, mine=same, changed=mine - same))
        return batches

    # -- fresh batches ----------------------------------------------------------------------------

    async def _run_fresh(self, files: list[tuple[str, str]]) -> None:
        gate = asyncio.Semaphore(BATCHES_IN_FLIGHT)

        async def one(chunk: list[tuple[str, str]]) -> None:
            async with gate:
                batch = await asyncio.to_thread(self._prepare, chunk)
                if batch is not None:
                    await self._run_batch(batch)

        await _together([one(chunk) for chunk in _chunks(files)])

    def _prepare(self, chunk: list[tuple[str, str]]) -> _Batch | None:
        """Read each file once for its checksums (a worker thread), and keep the batch's state
        before it is sent."""
        entries: list[dict[str, Any]] = []
        paths: list[str] = []
        mtimes: list[int] = []
        sums: list[str] = []
        crcs: list[str] = []
        data: dict[int, bytes] = {}
        kept = 0
        for path, name in chunk:
            try:
                before = os.stat(path)
                with open(path, "rb") as f:
                    content = f.read(SMALL_FILE_MAX + 1)
                    after = os.fstat(f.fileno())
            except OSError as exc:
                self.results[path] = SmallResult(
                    None, "", False, False, 0.0, ApiError(0, "OS_ERROR", str(exc))
                )
                continue
            if len(content) != before.st_size or (after.st_size, after.st_mtime_ns) != (
                before.st_size,
                before.st_mtime_ns,
            ):
                error = ApiError(0, "FILE_CHANGED", f"{path}: the file changed while it was read")
                self.results[path] = SmallResult(None, "", False, False, 0.0, error)
                continue
            sha256 = hashlib.sha256(content).hexdigest()
            crc = crc_b64(crc64nvme(content))
            entry: dict[str, Any] = {
                "filename": name,
                "size": len(content),
                "sha256": sha256,
                "crc64nvme": crc,
            }
            content_type = mimetypes.guess_type(name)[0]
            if content_type:
                entry["content_type"] = content_type
            if kept + len(content) <= KEEP_BYTES:
                data[len(entries)] = content
                kept += len(content)
            entries.append(entry)
            paths.append(path)
            mtimes.append(before.st_mtime_ns)
            sums.append(sha256)
            crcs.append(crc)
        if not entries:
            return None
        state = BatchState(self.api.api_url, self.log_id, secrets.token_urlsafe(24), entries, paths, mtimes)
        self.resume.save_batch(state)
        return _Batch(state, sums, crcs, data, resumed=False, mine=set(range(len(entries))))

    # -- one batch ---------------------------------------------------------------------------------

    async def _run_batch(self, batch: _Batch) -> None:
        """Start (or start again), PUT what the store does not hold, complete; rounds until every
        file of the batch is done or refused."""
        pending = set(batch.mine)
        ask_first = set(pending) if batch.resumed else set()  # their PUT may have landed before
        sent: set[int] = set()
        try:
            for round_ in range(ROUNDS):
                answer = await self.api.start_batch(self.log_id, batch.state.files, batch.state.key)
                await self._abandon(answer.items, batch.changed)
                batch.changed = set()
                wait, to_put, to_complete = 0.0, [], []
                for i in sorted(pending):
                    item = answer.items[i]
                    if item.error is not None:
                        if item.error.code == "RATE_LIMITED":
                            wait = max(wait, float(item.error.extra.get("retry_after", 1)))
                        else:
                            self._fail(batch, i, item, item.error.error(), pending)
                        continue
                    assert item.upload is not None
                    status = item.upload.status
                    if status in ("completed", "completing") or (status == "uploading" and i in ask_first):
                        to_complete.append(i)
                    elif status == "uploading" and item.put is not None:
                        to_put.append(i)
                    elif batch.resumed:  # ended (expired) or too close to its end to sign: afresh
                        pending.discard(i)  # (no result: ``run`` puts it in a new batch)
                    else:
                        self._fail(
                            batch,
                            i,
                            item,
                            ApiError(409, "UPLOAD_NOT_UPLOADING", f"the upload is {status}"),
                            pending,
                        )
                ask_first = set()
                if to_complete:  # those the store may already hold: it says which are missing
                    to_put += await self._complete(
                        batch, answer.items, to_complete, pending, sent, missing_ok=True
                    )
                to_put = [i for i in to_put if i in pending and answer.items[i].put is not None]
                landed = await self._put_all(batch, answer.items, to_put, pending, sent)
                if landed:
                    await self._complete(batch, answer.items, landed, pending, sent, missing_ok=False)
                if not pending:
                    break
                if wait:
                    self.progress.notice(
                        f"{len(pending)} file(s) held back by the start rate; waiting {wait:.0f} s"
                    )
                elif batch.transient:
                    wait = self.api.retry.delay(round_)
                    batch.transient = False
                await asyncio.sleep(wait)
        finally:
            if not pending:
                self.finished.append(batch.state)
        for i in pending:
            error = ApiError(0, "UPLOAD_INCOMPLETE", f"{batch.state.paths[i]}: not done after {ROUNDS} tries")
            self._record(batch, i, None, "", sent, error)

    async def _abandon(self, items: list[BatchStartedItem], indexes: set[int]) -> None:
        """Abort the open uploads of files that changed since they were started."""
        for i in indexes:
            upload = items[i].upload
            if upload is not None and upload.status == "uploading":
                with contextlib.suppress(ApiError):
                    await self.api.abort(upload.id)

    async def _complete(
        self,
        batch: _Batch,
        items: list[BatchStartedItem],
        indexes: list[int],
        pending: set[int],
        sent: set[int],
        *,
        missing_ok: bool,
    ) -> list[int]:
        """Complete ``indexes`` (one request); those the store does not hold yet."""
        ids = {items[i].upload.id: i for i in indexes if items[i].upload is not None}  # type: ignore[union-attr]
        answer = await self.api.complete_batch([{"id": upload_id} for upload_id in ids])
        missing = []
        for done in answer.items:
            i = ids[done.id]
            if done.status == "done" and done.file is not None:
                file = done.file
                if (file.sha256, file.crc64nvme) != (batch.sha256[i], batch.crc64nvme[i]):
                    error = ApiError(
                        0, "INTEGRITY_ERROR", f"{file.filename}: the API recorded other checksums"
                    )
                    self._record(batch, i, None, done.id, sent, error)
                else:
                    self._record(batch, i, file, done.id, sent)
                pending.discard(i)
            elif done.status == "missing" and missing_ok:
                missing.append(i)
            elif done.status == "missing":
                pass  # sent, yet not there: the next round sends it again
            elif done.error is not None and done.error.code in _AGAIN:
                batch.transient = True  # the store away, another request completing it: next round
            else:
                assert done.error is not None
                self._record(batch, i, None, done.id, sent, done.error.error())
                pending.discard(i)
        return missing

    async def _put_all(
        self,
        batch: _Batch,
        items: list[BatchStartedItem],
        indexes: list[int],
        pending: set[int],
        sent: set[int],
    ) -> list[int]:
        """PUT each file straight to the store; those that are there now (sent, or found there)."""

        async def one(i: int) -> int | None:
            put = items[i].put
            assert put is not None
            data = batch.data.get(i)
            if data is None:
                data = await asyncio.to_thread(_read, batch.state.paths[i])
            if self.rate_limit is not None:
                await asyncio.to_thread(self.rate_limit.take, len(data))
            status = await self._put(put.url, put.headers, data, batch.state.paths[i])
            if status in (200, 412):  # 412: the key holds it already (an earlier run's PUT)
                if status == 200:
                    sent.add(i)
                    self.progress.moved(len(data))
                return i
            if status == 403:  # the URL expired: the next round signs it again
                return None
            if status == 400:
                error = ApiError(
                    status, "FILE_CHANGED", f"{batch.state.paths[i]}: the store refused the bytes"
                )
            else:
                error = ApiError(status, "STORE_REJECTED", f"{batch.state.paths[i]}: HTTP {status}")
            self._fail(batch, i, items[i], error, pending)
            return None

        landed = await asyncio.gather(*(one(i) for i in indexes))
        return [i for i in landed if i is not None]

    async def _put(self, url: str, headers: dict[str, str], data: bytes, what: str) -> int:
        """One PUT, retried on no answer, 5xx and 429 (as the API's calls are); its final status."""
        assert self._http is not None
        retry = self.api.retry
        for attempt in range(retry.attempts):
            last = attempt == retry.attempts - 1
            try:
                async with (
                    self._gate,
                    self._http.put(URL(url, encoded=True), data=data, headers=headers) as resp,
                ):
                    await resp.read()
                    if resp.status not in RETRY_STATUS or last:
                        return resp.status
                    reason = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                if last:
                    raise ApiError(0, "UNREACHABLE", f"{what}: {describe(exc)}") from exc
                reason = describe(exc)
            wait = retry.delay(attempt)
            if self.api.notice is not None:
                self.api.notice(f"PUT {what}: {reason}", wait, attempt + 1)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    def _fail(
        self, batch: _Batch, i: int, item: BatchStartedItem, error: ApiError, pending: set[int]
    ) -> None:
        self._record(batch, i, None, item.upload.id if item.upload else "", set(), error)
        pending.discard(i)

    def _record(
        self,
        batch: _Batch,
        i: int,
        file: FileInfo | None,
        upload_id: str,
        sent: set[int],
        error: ApiError | None = None,
    ) -> None:
        if file is not None and i not in sent:
            self.progress.moved(file.size)  # done without a byte sent: it counts all the same
        self.progress.file_done()
        seconds = round(time.perf_counter() - batch.began, 3)
        self.results[batch.state.paths[i]] = SmallResult(
            file, upload_id, i in sent, batch.resumed, seconds, error
        )


async def _together(calls: list[Any]) -> None:
    """Run ``calls`` together; the first failure (of a whole batch: the API away, credentials
    refused) cancels the others and is raised."""
    async with first_error_group() as group:
        for call in calls:
            group.create_task(call)


def _stat(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_size, found.st_mtime_ns


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(SMALL_FILE_MAX + 1)


def _chunks(files: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Batches of at most ``BATCH_FILES`` files whose entries fit ``BATCH_JSON_BYTES``."""
    chunks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    size = 0
    for path, name in files:
        entry = len(json.dumps(name)) + 250  # the name, the checksums and the field names
        if current and (len(current) >= BATCH_FILES or size + entry > BATCH_JSON_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append((path, name))
        size += entry
    if current:
        chunks.append(current)
    return chunks
