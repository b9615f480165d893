"""Chaos uploads: many uploads by clients that die and resume, while API replicas and MinIO are killed.

The cast:

- **Replicas**: two or three ``upload-plane serve`` processes on one database and one bucket, which
  the monkey SIGKILLs and starts again (same port) many times. Python clients pick the next replica
  that is up (a client-side round robin); the CLI sees one address, a small TCP balancer
  (``FrontDoor``) that hands each connection to the next live replica and drops it when that replica
  dies, as a real balancer would.
- **Python clients** (threads): start with an ``Idempotency-Key``, ask which parts the store holds,
  sign the missing ones, PUT them straight to MinIO, complete. At random points a client "dies": it
  drops everything it knew but the key (the start's or the complete's answer is never read, a PUT is
  cut off half-way, it stops between parts) and resumes from the server alone: start again with the
  key (the same upload comes back), list the parts, send what is missing, complete.
- **CLI clients**: ``upload-plane upload`` in a subprocess, SIGKILLed at random moments and run
  again until it succeeds (it resumes from its own state file).
- **The monkey**: SIGKILLs replicas (one, sometimes two at once) at random moments and at least at
  evenly spaced points of the run's progress, and kills MinIO (SIGKILL, then started on the same
  port and data directory) a few times.

Content is generated from a seed, one MiB at a time (``Content``), so a file of any size is checked
by its SHA-256 and CRC64NVME without being kept in memory (the CLI's files are written to disk while
it uploads them and removed afterwards).

After the run, one ``upload-plane reap``, then ``verify`` reads the truth from the database and the
store: every file ``available`` with the right SHA-256 (downloaded through the presigned redirect),
store-verified CRC64NVME where declared, no multipart upload open in the bucket, database rows and
store objects one for one, one ``upload.started`` and one ``upload.completed`` audit event per
completed upload.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from awscrt import checksums

from tests.api.helpers import sql_rows
from tests.cli_helpers import cli_env, command
from tests.real.processes import ApiProcess
from tests.services import MinIO, ServerProcess
from upload_plane.settings import Settings

MIB = 1024 * 1024
CHUNK = MIB  # content is generated (and read back) one MiB at a time
PART_SIZE = 5 * MIB  # the smallest part S3 allows: the most parts, the most to resume
SIGN_BATCH = 16


# -- what to run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosConfig:
    uploads: int = 48
    max_bytes: int = 16 * MIB
    seed: int = 20261123
    replicas: int = 3
    workers: int = 6
    cli_share: float = 0.1  # of the uploads, done by the CLI in a subprocess
    client_kill_chance: float = 0.35  # per Python upload session: it dies at one random point
    cli_kills_max: int = 3  # SIGKILLs per CLI upload before it is let finish
    api_kills: int = 6  # at least this many replica SIGKILLs, spread over the run's progress
    minio_kills: int = 1  # at least this many MinIO SIGKILLs
    api_kill_every: tuple[float, float] = (2.0, 8.0)  # and more at random moments in between (s)
    deadline: float = 900.0  # the whole run, seconds
    results: str = ""  # where to write the figures as JSON ("" = only print them)

    @classmethod
    def from_env(cls, **defaults: Any) -> ChaosConfig:
        """The defaults, overridden by CHAOS_UPLOADS, CHAOS_MAX_MIB, CHAOS_SEED, CHAOS_API_KILLS,
        CHAOS_MINIO_KILLS, CHAOS_WORKERS, CHAOS_DEADLINE, CHAOS_RESULTS."""
        base = cls(**defaults)
        env = os.environ
        return cls(
            **{
                **asdict(base),
                "uploads": int(env.get("CHAOS_UPLOADS", base.uploads)),
                "max_bytes": int(float(env.get("CHAOS_MAX_MIB", base.max_bytes / MIB)) * MIB),
                "seed": int(env.get("CHAOS_SEED", base.seed)),
                "api_kills": int(env.get("CHAOS_API_KILLS", base.api_kills)),
                "minio_kills": int(env.get("CHAOS_MINIO_KILLS", base.minio_kills)),
                "workers": int(env.get("CHAOS_WORKERS", base.workers)),
                "deadline": float(env.get("CHAOS_DEADLINE", base.deadline)),
                "results": env.get("CHAOS_RESULTS", base.results),
                "api_kill_every": tuple(base.api_kill_every),
            }
        )


@dataclass(frozen=True)
class Planned:
    """One upload of the run: its content, how it is sent, the key its client keeps."""

    index: int
    size: int
    seed: int
    mode: str  # "cli"; or Python: "crc" (store-verified CRC64NVME), "sha-parts", "plain"
    idempotency_key: str

    @property
    def filename(self) -> str:
        return f"chaos-{self.index:04d}.bin"

    @property
    def store_checks(self) -> bool:
        """The store checks the whole file's CRC64NVME (not for 0 bytes: MinIO refuses that value)."""
        return self.mode in ("crc", "cli") and self.size > 0


def draw_sizes(rng: random.Random, count: int, max_bytes: int) -> list[int]:
    """Mostly small, some medium, a few large: the edge cases first (0, 1 byte, around one part, the
    maximum), then 80 % log-uniform up to 5 MiB, 15 % log-uniform 5-40 MiB, 5 % uniform 40 MiB up to
    the maximum (each band cut at the maximum)."""
    edges = [0, 1, PART_SIZE - 1, PART_SIZE, PART_SIZE + 1, max_bytes]
    sizes = sorted({s for s in edges if s <= max_bytes})[:count]
    small, medium = min(PART_SIZE, max_bytes), min(40 * MIB, max_bytes)
    while len(sizes) < count:
        u = rng.random()
        if u < 0.80 or medium <= PART_SIZE:
            sizes.append(int(math.exp(rng.uniform(0, math.log(small)))))
        elif u < 0.95 or max_bytes <= medium:
            sizes.append(int(math.exp(rng.uniform(math.log(PART_SIZE), math.log(medium)))))
        else:
            sizes.append(rng.randint(medium, max_bytes))
    rng.shuffle(sizes)
    return sizes


def plan_uploads(config: ChaosConfig) -> list[Planned]:
    rng = random.Random(config.seed)
    sizes = draw_sizes(rng, config.uploads, config.max_bytes)
    cli = set(rng.sample(range(config.uploads), max(2, round(config.cli_share * config.uploads))))
    return [
        Planned(
            index=i,
            size=size,
            seed=rng.getrandbits(64),
            mode="cli" if i in cli else rng.choice(["crc", "crc", "sha-parts", "plain"]),
            idempotency_key=f"chaos-{config.seed}-{i}-{rng.getrandbits(32):08x}",
        )
        for i, size in enumerate(sizes)
    ]


# -- content from a seed ---------------------------------------------------------------------------


class Content:
    """A file's bytes, generated one MiB at a time from its seed (never held whole)."""

    def __init__(self, seed: int, size: int) -> None:
        self.seed, self.size = seed, size

    def chunk(self, i: int) -> bytes:
        length = min(CHUNK, self.size - i * CHUNK)
        return random.Random(self.seed * 1_000_003 + i).randbytes(length)

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (parts start on a MiB boundary, so whole chunks mostly)."""
        first, last = offset // CHUNK, (offset + length - 1) // CHUNK
        data = b"".join(self.chunk(i) for i in range(first, last + 1)) if length else b""
        skip = offset - first * CHUNK
        return data[skip : skip + length]

    def chunks(self) -> Iterator[bytes]:
        for i in range((self.size + CHUNK - 1) // CHUNK):
            yield self.chunk(i)

    def write_to(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            for chunk in self.chunks():
                out.write(chunk)


def crc_b64(value: int) -> str:
    return base64.b64encode(int(value).to_bytes(8, "big")).decode()


@dataclass(frozen=True)
class Digests:
    sha256: str  # hex, the whole file
    crc64nvme: str  # base64, the whole file
    part_crc64nvme: list[str]  # base64, per part (of PART_SIZE)
    part_sha256: list[str]  # base64, per part


def digests_of(content: Content) -> Digests:
    whole, crc = hashlib.sha256(), 0
    part_crcs: list[str] = []
    part_shas: list[str] = []
    per_part = PART_SIZE // CHUNK
    chunks = list(range((content.size + CHUNK - 1) // CHUNK)) or [0]
    for start in range(0, len(chunks), per_part):
        part_crc, part_sha = 0, hashlib.sha256()
        for i in chunks[start : start + per_part]:
            data = content.chunk(i) if content.size else b""
            whole.update(data)
            crc = checksums.crc64nvme(data, crc)
            part_crc = checksums.crc64nvme(data, part_crc)
            part_sha.update(data)
        part_crcs.append(crc_b64(part_crc))
        part_shas.append(base64.b64encode(part_sha.digest()).decode())
    return Digests(whole.hexdigest(), crc_b64(crc), part_crcs, part_shas)


# -- figures ---------------------------------------------------------------------------------------


class Figures:
    """Thread-safe counters of what happened during the run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.notes: list[str] = []

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def note(self, text: str) -> None:
        with self._lock:
            if len(self.notes) < 200:
                self.notes.append(text)

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self.counts[name]


class InFlight:
    """Requests in flight by target (a replica's index, or ``"store"``): the monkey waits until some
    are, so that its kills hit work in progress."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.counts: Counter[object] = Counter()

    @contextlib.contextmanager
    def on(self, target: object) -> Iterator[None]:
        with self.cond:
            self.counts[target] += 1
            self.cond.notify_all()
        try:
            yield
        finally:
            with self.cond:
                self.counts[target] -= 1

    def wait_busy(self, targets: list[Any], timeout: float) -> list[Any]:
        """The ``targets`` with requests in flight, once there are any (or none after ``timeout``)."""
        with self.cond:
            self.cond.wait_for(lambda: any(self.counts[t] > 0 for t in targets), timeout)
            return [t for t in targets if self.counts[t] > 0]


class Progress:
    """Which uploads have started and finished, and which scheduled kills were done.

    The monkey's schedule ties kills to the run's progress: kill ``j`` is due once upload ``mark``
    has started, and upload ``mark + workers`` does not start before kill ``j`` was done. So every
    scheduled kill lands while uploads are in flight, however fast they go.
    """

    def __init__(self, schedule: list[tuple[int, str]], slack: int) -> None:
        self.cond = threading.Condition()
        self.schedule = schedule  # (start mark, "api" | "minio"), by mark
        self.slack = slack
        self.started = 0
        self.finished = 0
        self.kills_done = 0  # of the schedule
        self.done = False

    def start(self, index: int) -> None:
        """Wait until the scheduled kills that must come before upload ``index`` were done."""
        with self.cond:
            owed = sum(1 for mark, _ in self.schedule if mark + self.slack <= index)
            self.cond.wait_for(lambda: self.kills_done >= owed or self.done)
            self.started += 1
            self.cond.notify_all()

    def due(self) -> str | None:
        """The next scheduled kill, if its mark was reached (call with ``cond`` held)."""
        if self.kills_done < len(self.schedule) and self.started >= self.schedule[self.kills_done][0]:
            return self.schedule[self.kills_done][1]
        return None

    def kill_done(self) -> None:
        with self.cond:
            self.kills_done += 1
            self.cond.notify_all()

    def one_finished(self) -> None:
        with self.cond:
            self.finished += 1
            self.cond.notify_all()

    def all_done(self) -> None:
        with self.cond:
            self.done = True
            self.cond.notify_all()


def kill_schedule(config: ChaosConfig) -> list[tuple[int, str]]:
    """``api_kills`` and ``minio_kills`` start marks, each kind spread evenly over the uploads."""
    n = config.uploads

    def marks(count: int) -> list[int]:
        return [max(1, math.floor(n * (k + 1) / (count + 1))) for k in range(count)]

    return sorted(
        [(m, "api") for m in marks(config.api_kills)] + [(m, "minio") for m in marks(config.minio_kills)]
    )


# -- the replicas, and the way in ------------------------------------------------------------------


class Replicas:
    """The API replicas and which are up. The monkey marks one down before killing it and up once it
    answers again; clients take the next one that is up (round robin)."""

    def __init__(self, processes: list[ApiProcess]) -> None:
        self.processes = processes
        self.up = [True] * len(processes)
        self.cond = threading.Condition()
        self._turn = itertools.count()

    def pick(self, timeout: float = 120.0) -> tuple[int, ApiProcess]:
        """The next replica that is up (its index and process)."""
        with self.cond:
            if not self.cond.wait_for(lambda: any(self.up), timeout):
                raise TimeoutError("no API replica came back")
            up = [i for i, is_up in enumerate(self.up) if is_up]
            i = up[next(self._turn) % len(up)]
            return i, self.processes[i]

    def taking_down(self, i: int) -> None:
        with self.cond:
            self.up[i] = False

    def back(self, i: int) -> None:
        with self.cond:
            self.up[i] = True
            self.cond.notify_all()

    def wait_any_back(self, timeout: float) -> None:
        with self.cond:
            self.cond.wait(timeout)


class FrontDoor:
    """A TCP load balancer in front of the replicas, the one address the CLI is given: each connection
    goes to the next replica that accepts it; when that replica dies, its connections are dropped."""

    def __init__(self, replicas: Replicas) -> None:
        self.replicas = replicas
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _upstream(self) -> socket.socket | None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, replica = self.replicas.pick()
            try:
                return socket.create_connection(("127.0.0.1", replica.port), timeout=5)
            except OSError:
                self.replicas.wait_any_back(0.2)  # a replica being restarted: try the next one
        return None

    def _serve(self, conn: socket.socket) -> None:
        upstream = self._upstream()
        if upstream is None:
            conn.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((conn, upstream))
        pump = threading.Thread(target=self._pump, args=(upstream, conn), daemon=True)
        pump.start()
        self._pump(conn, upstream)
        pump.join()
        with self._lock:
            self._open.difference_update((conn, upstream))
        conn.close()
        upstream.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):  # one side ended: end both, as a balancer does
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


# -- a Python client ---------------------------------------------------------------------------------


class ClientKilled(Exception):
    """The client died at this point; it resumes from the server alone."""


class Lost(Exception):
    """The server says the upload can no longer be completed (its parts are gone): a lost file."""


class Resume(Exception):
    """The upload moved on under the client (an earlier session's complete is running): resume."""


def settle_conflict(resp: httpx.Response, upload_id: str) -> None:
    """A 409/410 on an upload: ``Resume`` while a complete holds or finished it, else ``Lost``."""
    problem = resp.json()
    if problem.get("upload_status") in ("completing", "completed"):
        raise Resume(problem.get("upload_status"))
    raise Lost(f"upload {upload_id}: {resp.text[:300]}")


class Chaos:
    """What the clients share: the replicas, the store's address and state, the token, the figures."""

    def __init__(
        self,
        config: ChaosConfig,
        replicas: Replicas,
        minio: MinIO,
        token: str,
        log_id: str,
        workdir: Path,
    ) -> None:
        self.config = config
        self.replicas = replicas
        self.minio = minio
        self.token = token
        self.log_id = log_id
        self.workdir = workdir
        self.figures = Figures()
        self.progress = Progress(kill_schedule(config), slack=config.workers)
        self.in_flight = InFlight()
        self.store_up = threading.Event()
        self.store_up.set()
        self.deadline = time.monotonic() + config.deadline
        self.front_door = FrontDoor(replicas)

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError("the chaos run passed its deadline")

    def back_off(self, attempt: int, came_back: threading.Event | None = None) -> None:
        """Before a retry: while the monkey holds a server down, until it is back; then the client's
        retry policy (jittered exponential backoff, as the CLI's)."""
        self.check_time()
        if came_back is not None and not came_back.is_set():
            came_back.wait(60)
        time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))


class PythonClient:
    """One worker thread's client: its own connections to each replica and to the store."""

    def __init__(self, chaos: Chaos) -> None:
        self.chaos = chaos
        self.figures = chaos.figures
        self.apis: dict[str, httpx.Client] = {}
        self.store = httpx.Client(timeout=httpx.Timeout(120, connect=5))

    def close(self) -> None:
        for api in self.apis.values():
            api.close()
        self.store.close()

    def _api(self, replica: ApiProcess) -> httpx.Client:
        if replica.url not in self.apis:
            self.apis[replica.url] = httpx.Client(
                base_url=f"{replica.url}/api/v1",
                headers={"Authorization": f"Bearer {self.chaos.token}"},
                timeout=httpx.Timeout(180, connect=5),
            )
        return self.apis[replica.url]

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        lose_answer: bool = False,
    ) -> httpx.Response:
        """One API call on the next live replica, retried on no answer, 503, and 409 while another
        request holds the upload. ``lose_answer``: send it, then die before reading the answer."""
        for attempt in itertools.count():
            i, replica = self.chaos.replicas.pick()
            timeout = httpx.Timeout(180, connect=5, read=0.002) if lose_answer else None
            try:
                with self.chaos.in_flight.on(i):
                    resp = self._api(replica).request(
                        method,
                        path,
                        json=json_body,
                        headers=headers,
                        **({"timeout": timeout} if timeout is not None else {}),
                    )
            except httpx.ReadTimeout as exc:
                if lose_answer:
                    raise ClientKilled("died waiting for the answer") from exc
                self.figures.add("api_connection_errors")
                self.chaos.back_off(attempt)
                continue
            except httpx.TransportError:
                if lose_answer:  # it never got there: still a client that died with it in flight
                    raise ClientKilled("died sending") from None
                self.figures.add("api_connection_errors")
                self.chaos.back_off(attempt)
                continue
            if lose_answer:  # the answer came before the client could die: it dies anyway
                raise ClientKilled("died before reading the answer")
            if resp.status_code == 503:
                self.figures.add("responses_503")
                self.chaos.back_off(attempt, self.chaos.store_up)
                continue
            if resp.status_code >= 500:
                self.figures.add("responses_5xx_other")
                self.figures.note(f"{method} {path} -> {resp.status_code} {resp.text[:300]}")
                self.chaos.back_off(attempt)
                continue
            code = resp.json().get("code") if resp.headers.get("content-type", "").endswith("json") else None
            if resp.status_code == 409 and code in ("UPLOAD_COMPLETING", "PARTS_CHANGED"):
                self.figures.add("busy_409")
                self.chaos.back_off(attempt)
                continue
            if resp.status_code == 429:
                self.figures.add("rate_limited")
                self.chaos.back_off(attempt)
                continue
            return resp
        raise AssertionError("unreachable")

    def put_part(self, url: str, headers: dict[str, str], body: bytes, cut: bool) -> None:
        """PUT a part straight to the store, retried while MinIO is down; ``cut``: die half-way."""
        for attempt in itertools.count():
            if cut and body:

                def half(data: bytes = body) -> Iterator[bytes]:
                    yield data[: len(data) // 2]
                    raise ClientKilled("died half-way through a part")

                with contextlib.suppress(Exception):
                    self.store.put(url, content=half(), headers=headers)
                raise ClientKilled("died half-way through a part")
            try:
                with self.chaos.in_flight.on("store"):
                    resp = self.store.put(url, content=body, headers=headers)
            except httpx.TransportError:
                self.figures.add("store_connection_errors")
                self.chaos.back_off(attempt, self.chaos.store_up)
                continue
            if resp.status_code == 200:
                self.figures.add("parts_sent")
                return
            if resp.status_code >= 500:
                self.figures.add("store_5xx")
                self.chaos.back_off(attempt, self.chaos.store_up)
                continue
            raise AssertionError(f"the store refused a part: {resp.status_code} {resp.text[:300]}")

    def upload(self, planned: Planned, digests: Digests) -> dict[str, Any]:
        """Sessions until one completes the upload; the file as the API answered it."""
        rng = random.Random(planned.seed)
        content = Content(planned.seed, planned.size)
        for session in itertools.count():
            self.chaos.check_time()
            # Each session may die at one point; after a few deaths the client is let finish.
            die_at = rng.choice(["start", "parts", "cut", "complete"]) if session < 4 else None
            if die_at is not None and rng.random() >= self.chaos.config.client_kill_chance:
                die_at = None
            if session:
                self.figures.add("client_resumes")
            try:
                return self._session(planned, content, digests, die_at, rng)
            except ClientKilled:
                self.figures.add("client_kills")
            except Resume:
                self.figures.add("resumed_after_conflict")
        raise AssertionError("unreachable")

    def _session(
        self, planned: Planned, content: Content, digests: Digests, die_at: str | None, rng: random.Random
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "filename": planned.filename,
            "size": planned.size,
            "sha256": digests.sha256,
            "content_type": "application/octet-stream",
            "part_size": PART_SIZE,
        }
        if planned.store_checks:
            body["crc64nvme"] = digests.crc64nvme
        start = self.call(
            "POST",
            f"/logs/{self.chaos.log_id}/uploads",
            json_body=body,
            headers={"Idempotency-Key": planned.idempotency_key},
            lose_answer=die_at == "start",
        )
        assert start.status_code == 201, start.text
        upload = start.json()
        assert upload["part_size"] == PART_SIZE, upload
        if upload["status"] == "completed":
            return self._file(upload["file_id"])
        if upload["status"] in ("aborted", "expired"):
            raise Lost(f"upload {upload['id']} is {upload['status']}")
        state = self.call("GET", f"/uploads/{upload['id']}")
        if state.status_code in (409, 410):
            settle_conflict(state, upload["id"])
        assert state.status_code == 200, state.text
        missing: list[int] = state.json()["parts"]["missing"]
        if state.json()["status"] == "uploading":
            stop_after = rng.randrange(len(missing) + 1) if die_at in ("parts", "cut") else None
            for batch_start in range(0, len(missing), SIGN_BATCH):
                batch = missing[batch_start : batch_start + SIGN_BATCH]
                signed = self._sign(planned, upload, digests, batch)
                for n in batch:
                    sent = missing.index(n)
                    if stop_after is not None and sent == stop_after and die_at == "parts":
                        raise ClientKilled("died between parts")
                    part = signed[n]
                    data = content.read((n - 1) * PART_SIZE, part["size"])
                    self.put_part(
                        part["url"], part["headers"], data, cut=sent == stop_after and die_at == "cut"
                    )
        done = self.call(
            "POST", f"/uploads/{upload['id']}/complete", json_body={}, lose_answer=die_at == "complete"
        )
        if done.status_code == 409 and done.json().get("code") == "PARTS_MISSING":
            self.figures.add("parts_missing_at_complete")
            self.figures.note(f"upload {planned.index}: {done.text[:300]}")
            raise ClientKilled("parts missing: resume")
        if done.status_code in (409, 410):
            settle_conflict(done, upload["id"])
        assert done.status_code == 200, done.text
        return dict(done.json())

    def _sign(
        self, planned: Planned, upload: dict[str, Any], digests: Digests, numbers: list[int]
    ) -> dict[int, dict[str, Any]]:
        body: dict[str, Any] = {"part_numbers": numbers}
        if planned.store_checks:
            body["checksums_crc64nvme"] = {str(n): digests.part_crc64nvme[n - 1] for n in numbers}
        elif planned.mode == "sha-parts":
            body["checksums_sha256"] = {str(n): digests.part_sha256[n - 1] for n in numbers}
        resp = self.call("POST", f"/uploads/{upload['id']}/parts", json_body=body)
        if resp.status_code in (409, 410):
            settle_conflict(resp, upload["id"])
        assert resp.status_code == 200, resp.text
        return {p["part_number"]: p for p in resp.json()["parts"]}

    def _file(self, file_id: str) -> dict[str, Any]:
        resp = self.call("GET", f"/files/{file_id}")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())


# -- a CLI client ----------------------------------------------------------------------------------


def cli_upload(chaos: Chaos, planned: Planned) -> dict[str, Any]:
    """``upload-plane upload`` SIGKILLed at random moments and run again until it succeeds; the file
    as it reported it. The local file exists only while it is being uploaded."""
    rng = random.Random(planned.seed)
    figures = chaos.figures
    path = chaos.workdir / "cli-files" / planned.filename
    Content(planned.seed, planned.size).write_to(path)
    env = cli_env(chaos.workdir / "cli-home", chaos.front_door.url, chaos.token)
    argv = command(
        "upload", str(path), "--log", chaos.log_id, "--json", "--part-size", "5M", "--parallel", "2"
    )
    # About how long one uninterrupted run takes here (start-up, then the bytes).
    typical = 2.0 + planned.size / (40 * MIB)
    kills = 0
    try:
        for run in itertools.count():
            chaos.check_time()
            assert run < 30, f"the CLI did not finish {planned.filename} in 30 runs"
            figures.add("cli_runs")
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            kill_after = rng.uniform(0.3, typical) if kills < chaos.config.cli_kills_max else None
            try:
                out, err = proc.communicate(
                    timeout=kill_after or max(60.0, chaos.deadline - time.monotonic())
                )
            except subprocess.TimeoutExpired:
                if kill_after is None:
                    proc.kill()
                    proc.communicate()
                    raise AssertionError(f"the CLI hung on {planned.filename}") from None
                proc.send_signal(signal.SIGKILL)
                out, _ = proc.communicate()
                kills += 1
                figures.add("cli_kills")
                # Killed after it had reported the upload done (it forgets the upload only then): the
                # user has the result, and running it again would be asking for a second copy.
                result = _reported(out)
                if result is None:
                    continue
                figures.add("cli_killed_after_report")
            else:
                if proc.returncode != 0:
                    figures.add("cli_failed_runs")
                    figures.note(f"CLI {planned.filename} exit {proc.returncode}: {err.strip()[-300:]}")
                    continue
                (result,) = json.loads(out)["files"]
            return {
                "id": result["file_id"],
                "upload_id": result["upload_id"],
                "size": result["size"],
                "sha256": result["sha256"],
                "verified_by": result["verified_by"],
                "status": "available",
            }
    finally:
        path.unlink(missing_ok=True)
    raise AssertionError("unreachable")


def _reported(out: str | None) -> dict[str, Any] | None:
    """The one file a killed CLI run had reported in full on its standard output, if it had."""
    try:
        (result,) = json.loads(out or "")["files"]
    except (ValueError, KeyError, TypeError):
        return None
    return result if isinstance(result, dict) and result.get("file_id") else None


# -- the monkey ------------------------------------------------------------------------------------


class Monkey(threading.Thread):
    """SIGKILLs replicas and MinIO: on the schedule of ``Progress`` (every kill lands while uploads
    are in flight) and a replica at random moments in between. A killed replica is started again at
    once, in a thread of its own (it takes the seconds it takes; the monkey goes on); at least one
    replica stays up. MinIO is started again after an outage of a random 1-4 s."""

    def __init__(self, chaos: Chaos, processes: list[ApiProcess], minio: ServerProcess) -> None:
        super().__init__(name="chaos-monkey", daemon=True)
        self.chaos = chaos
        self.processes = processes
        self.minio = minio
        self.rng = random.Random(chaos.config.seed ^ 0x5EED)
        self.restarts: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test, after the clients stop
            self.errors.append(exc)
            traceback.print_exc()
            self.chaos.progress.all_done()  # no more kills: let the clients finish
        for restart in self.restarts:
            restart.join(120)

    def _run(self) -> None:
        progress = self.chaos.progress
        low, high = self.chaos.config.api_kill_every
        while True:
            with progress.cond:
                progress.cond.wait_for(
                    lambda: progress.done or progress.due() is not None,
                    timeout=self.rng.uniform(low, high),  # random moments, not a wait for a condition
                )
                if progress.done:
                    return
                due = progress.due()
            if due == "minio":
                self.kill_minio(progress.kill_done)
            else:
                self.kill_replicas(scheduled=due is not None)
                if due is not None:
                    progress.kill_done()

    def kill_replicas(self, scheduled: bool) -> None:
        """Kill one replica (sometimes two); a scheduled kill waits (a while) for one that is
        serving a request and takes it."""
        replicas = self.chaos.replicas
        with replicas.cond:  # keep one up: wait for a restarted one when only one is
            replicas.cond.wait_for(lambda: sum(replicas.up) >= 2, timeout=120)
            up = [i for i, is_up in enumerate(replicas.up) if is_up]
        if len(up) < 2:
            raise TimeoutError("the killed replicas did not come back")
        busy = self.chaos.in_flight.wait_busy(up, timeout=10) if scheduled else []
        first = self.rng.choice(busy or up)
        others = [i for i in up if i != first]
        chosen = [first] + (self.rng.sample(others, 1) if len(up) > 2 and self.rng.random() < 0.2 else [])
        for i in chosen:
            replicas.taking_down(i)
            self.processes[i].kill()
            self.chaos.figures.add("api_kills")
            restart = threading.Thread(target=self._restart, args=(i,), daemon=True)
            restart.start()
            self.restarts.append(restart)

    def _restart(self, i: int) -> None:
        try:
            self.processes[i].start()
        except BaseException as exc:
            self.errors.append(exc)
            return
        self.chaos.replicas.back(i)

    def kill_minio(self, killed: Callable[[], None]) -> None:
        """Kill MinIO once parts are being sent to it (after a while, regardless); ``killed`` lets
        the held-back uploads go on into the outage."""
        self.chaos.in_flight.wait_busy(["store"], timeout=10)
        self.chaos.store_up.clear()
        self.minio.kill()
        self.chaos.figures.add("minio_kills")
        killed()
        time.sleep(self.rng.uniform(1.0, 4.0))  # an outage of random length: nothing to wait for
        self.minio.start()
        self.chaos.store_up.set()


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    planned: Planned
    expected_sha256: str = ""
    file: dict[str, Any] | None = None
    lost: str | None = None
    error: str | None = None


@dataclass
class RunResult:
    outcomes: list[Outcome]
    figures: Figures
    seconds: float
    monkey_errors: list[BaseException] = field(default_factory=list)


def run_uploads(chaos: Chaos, planned: list[Planned], processes: list[ApiProcess], minio: MinIO) -> RunResult:
    """Every planned upload, ``workers`` at a time, with the monkey loose; returns when all ended."""
    assert minio.process is not None
    monkey = Monkey(chaos, processes, minio.process)
    local = threading.local()
    clients: list[PythonClient] = []
    lock = threading.Lock()

    def client() -> PythonClient:
        if not hasattr(local, "client"):
            local.client = PythonClient(chaos)
            with lock:
                clients.append(local.client)
        return local.client  # type: ignore[no-any-return]

    def one(p: Planned) -> Outcome:
        outcome = Outcome(p)
        chaos.progress.start(p.index)
        try:
            digests = digests_of(Content(p.seed, p.size))
            outcome.expected_sha256 = digests.sha256
            outcome.file = cli_upload(chaos, p) if p.mode == "cli" else client().upload(p, digests)
        except Lost as exc:
            outcome.lost = str(exc)
        except BaseException as exc:  # the test reports every failed upload, not the first
            outcome.error = f"{type(exc).__name__}: {exc}"
            chaos.figures.note(f"upload {p.index}: {traceback.format_exc()[-1500:]}")
        chaos.progress.one_finished()
        return outcome

    began = time.monotonic()
    monkey.start()
    try:
        with ThreadPoolExecutor(max_workers=chaos.config.workers) as pool:
            outcomes = list(pool.map(one, planned))
    finally:
        chaos.progress.all_done()
        monkey.join(300)
        for c in clients:
            c.close()
    return RunResult(outcomes, chaos.figures, time.monotonic() - began, monkey.errors)


# -- the end ---------------------------------------------------------------------------------------


def git_commit(repo: Path) -> str | None:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or None


def reap_once(replica: ApiProcess) -> dict[str, int]:
    """``upload-plane reap`` once, as an operator's cron job runs it (the replicas' environment)."""
    done = subprocess.run(
        [sys.executable, "-m", "upload_plane.cli", "reap"],
        env=replica.environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])["reaper"]
    return report


def open_multipart_uploads(s3: Any, bucket: str) -> list[tuple[str, str]]:
    """Every multipart upload open in the bucket (ListMultipartUploads, all pages)."""
    found: list[tuple[str, str]] = []
    markers: dict[str, str] = {}
    while True:
        page = s3.list_multipart_uploads(Bucket=bucket, **markers)
        found += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        if not page.get("IsTruncated"):
            return found
        markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}


def stored_objects(s3: Any, bucket: str) -> dict[str, int]:
    """Every object in the bucket with its size (ListObjectsV2, all pages)."""
    objects: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return objects


def download_sha256(api: httpx.Client, store: httpx.Client, file_id: str) -> tuple[str, int]:
    """SHA-256 and length of the file as a user downloads it (the presigned redirect, streamed)."""
    redirect = api.get(f"/files/{file_id}/download")
    assert redirect.status_code == 307, redirect.text
    digest, length = hashlib.sha256(), 0
    with store.stream("GET", redirect.headers["location"]) as resp:
        assert resp.status_code == 200, resp.status_code
        for chunk in resp.iter_bytes(CHUNK):
            digest.update(chunk)
            length += len(chunk)
    return digest.hexdigest(), length


def table(figures: dict[str, Any]) -> str:
    width = max(len(k) for k in figures)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in figures.items())


def write_results(path: str, document: dict[str, Any]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def database_rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    return sql_rows(settings, sql)


def logged_errors(logs: list[Path]) -> tuple[int, list[str]]:
    """Error lines in the replicas' JSON logs: how many were a client that hung up while sending
    its request (Litestar logs that as an unhandled error), and every other one."""
    disconnects, others = 0, []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict) or entry.get("level") not in ("error", "critical"):
                continue
            if "client disconnected prematurely" in str(entry.get("exc", "")):
                disconnects += 1
            else:
                others.append(f"{entry.get('msg')} {str(entry.get('exc', ''))[-300:]}")
    return disconnects, others


@dataclass
class Verdict:
    figures: dict[str, Any]
    problems: dict[str, list[str]]


def verify(
    result: RunResult,
    settings: Settings,
    minio: MinIO,
    api: httpx.Client,
    reap: dict[str, int],
    replica_logs: list[Path],
) -> Verdict:
    """The end state, from the database, the store and the API (see the module docstring)."""
    problems: dict[str, list[str]] = {
        k: []
        for k in (
            "lost", "errors", "corrupted", "unverified", "orphans", "db_store", "audit", "rows",
            "server_errors",
        )
    }  # fmt: skip
    disconnects, problems["server_errors"] = logged_errors(replica_logs)
    s3 = minio.client()
    bucket = settings.s3_bucket
    open_uploads = open_multipart_uploads(s3, bucket)
    problems["orphans"] = [f"{key} {upload_id[:16]}..." for key, upload_id in open_uploads]
    objects = stored_objects(s3, bucket)
    files = {
        r[0]: r[1:]
        for r in database_rows(settings, "SELECT id, `key`, size, status, sha256, verified_by FROM files")
    }
    uploads = database_rows(settings, "SELECT id, file_id, status, claim_token FROM uploads")
    events = Counter(
        (r[0], r[1])
        for r in database_rows(
            settings,
            "SELECT subject_id, action FROM audit_events "
            "WHERE action IN ('upload.started', 'upload.completed')",
        )
    )

    # Every planned upload ended as its file, available, with the bytes it was given.
    downloads: list[tuple[Outcome, str]] = []
    for o in result.outcomes:
        name = f"#{o.planned.index} ({o.planned.mode}, {o.planned.size} B)"
        if o.error is not None:
            problems["errors"].append(f"{name}: {o.error}")
            continue
        if o.lost is not None or o.file is None:
            problems["lost"].append(f"{name}: {o.lost}")
            continue
        row = files.get(o.file["id"])
        if row is None or row[2] != "available" or row[1] != o.planned.size:
            problems["lost"].append(f"{name}: file row {row}")
            continue
        if row[3] != o.expected_sha256:
            problems["corrupted"].append(f"{name}: recorded sha256 {row[3]}")
        if o.planned.store_checks and row[4] != "store":
            problems["unverified"].append(f"{name}: verified_by {row[4]}")
        downloads.append((o, o.file["id"]))

    def download(item: tuple[Outcome, str]) -> tuple[Outcome, tuple[str, int]]:
        with httpx.Client(timeout=120) as store:
            return item[0], download_sha256(api, store, item[1])

    with ThreadPoolExecutor(max_workers=4) as pool:
        for o, (sha, length) in pool.map(download, downloads):
            if (sha, length) != (o.expected_sha256, o.planned.size):
                problems["corrupted"].append(f"#{o.planned.index}: downloaded {length} B, sha256 {sha}")

    # The database and the store agree, row for object.
    available = {row[0]: row[1] for row in files.values() if row[2] == "available"}
    for key in sorted(set(objects) - set(available)):
        problems["db_store"].append(f"object without an available file: {key}")
    for key in sorted(set(available) - set(objects)):
        problems["db_store"].append(f"available file without an object: {key}")
    for key in sorted(set(objects) & set(available)):
        if objects[key] != available[key]:
            problems["db_store"].append(f"{key}: object {objects[key]} B, row {available[key]} B")

    # One upload per planned upload, each completed with its claim released; its file available.
    statuses = Counter(u[2] for u in uploads)
    if len(uploads) != len(result.outcomes) or statuses != Counter({"completed": len(result.outcomes)}):
        problems["rows"].append(f"{len(uploads)} upload rows for {len(result.outcomes)} uploads: {statuses}")
        problems["rows"] += [
            f"{name}: {n} files"
            for name, n in database_rows(
                settings, "SELECT filename, COUNT(*) FROM files GROUP BY filename HAVING COUNT(*) > 1"
            )
        ]
    problems["rows"] += [f"claim left on upload {u[0]}" for u in uploads if u[3] is not None]
    problems["rows"] += [f"file {k} is {v[2]}" for k, v in files.items() if v[2] != "available"]

    # One upload.started and one upload.completed event per completed upload; no others.
    completed = {u[0] for u in uploads if u[2] == "completed"}
    for upload_id in sorted(completed):
        got = (events[(upload_id, "upload.started")], events[(upload_id, "upload.completed")])
        if got != (1, 1):
            problems["audit"].append(f"upload {upload_id}: started x{got[0]}, completed x{got[1]}")
    for (subject, action), n in sorted(events.items()):
        if action == "upload.completed" and subject not in completed:
            problems["audit"].append(f"{action} x{n} for upload {subject}, which is not completed")

    f = result.figures
    planned = [o.planned for o in result.outcomes]
    figures: dict[str, Any] = {
        "uploads": len(planned),
        "bytes": sum(p.size for p in planned),
        "largest_bytes": max(p.size for p in planned),
        "python_uploads": sum(p.mode != "cli" for p in planned),
        "cli_uploads": sum(p.mode == "cli" for p in planned),
        "store_verified_uploads": sum(p.store_checks for p in planned),
        "client_kills": f["client_kills"],
        "client_resumes": f["client_resumes"],
        "cli_runs": f["cli_runs"],
        "cli_kills": f["cli_kills"],
        "cli_killed_after_report": f["cli_killed_after_report"],
        "cli_failed_runs": f["cli_failed_runs"],
        "api_kills": f["api_kills"],
        "minio_kills": f["minio_kills"],
        "responses_503": f["responses_503"],
        "responses_5xx_other": f["responses_5xx_other"],
        "busy_409": f["busy_409"],
        "api_connection_errors": f["api_connection_errors"],
        "store_connection_errors": f["store_connection_errors"],
        "parts_sent": f["parts_sent"],
        "parts_missing_at_complete": f["parts_missing_at_complete"],
        "resumed_after_conflict": f["resumed_after_conflict"],
        "reap": reap,
        "objects": len(objects),
        "lost": len(problems["lost"]),
        "errors": len(problems["errors"]),
        "corrupted": len(problems["corrupted"]),
        "unverified": len(problems["unverified"]),
        "orphans": len(problems["orphans"]),
        "db_store_mismatches": len(problems["db_store"]),
        "row_problems": len(problems["rows"]),
        "audit_gaps": len(problems["audit"]),
        "server_errors_logged": len(problems["server_errors"]),
        "client_disconnects_logged": disconnects,
        "duration_s": round(result.seconds, 1),
    }
    return Verdict(figures, {k: v for k, v in problems.items() if v})
