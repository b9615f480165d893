"""With one of four MinIO nodes killed mid-run, 20 uploads of 20–100 MiB complete and read back
byte-identical (lifecycle at scale, acceptance point 5).

Four ``minio server`` processes form one erasure set (2 data + 2 parity shards, write quorum 3); the
API talks to node 1 and so do the clients' presigned URLs. Four uploads run at once. Once a quarter
of all parts are in the store, while uploads are part-way and a part PUT is under way, node 3 is
killed with SIGKILL and stays dead: uploads that were under way finish through the remaining three
nodes, later ones run on them entirely, and every file read back (through the API's download
redirect) has the SHA-256 it was declared with. The API must not fail meanwhile (no 5xx); the
clients' part PUTs may, and are tried again, as real clients do.

File contents are derived from a seed per file, one MiB block at a time, so nothing is held in
memory whole: the bytes are made again for each part and compared by hash when read back.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import MIB, assert_store_agrees, new_log, new_user, sign
from tests.conftest import Backend, real_settings, serve
from tests.services import MariaDB, MinIOCluster, ServerProcess

pytestmark = pytest.mark.real

SEED = 20260117
UPLOADS = 20
SIZES = (20 * MIB, 100 * MIB)
UPLOADS_IN_FLIGHT = 4
PART_PUT_ATTEMPTS = 5
PART_PUT_BACKOFF = 0.5  # seconds, times the attempt number: the client's own pause before a retry
BLOCK = MIB  # the unit in which file contents are derived from their seed
VICTIM = 2  # node 3: any node but the one the API and the clients talk to
KILL_AFTER_FRACTION = 0.25  # of all planned parts, PUT to the store
KILL_WITH_UPLOADS_PART_WAY = 2
RUN_TIMEOUT = 900.0


def block(seed: int, index: int, size: int) -> bytes:
    return random.Random(f"{seed}:{index}").randbytes(size)


def content(seed: int, start: int, end: int) -> bytes:
    """Bytes ``start``..``end`` of the file made from ``seed`` (``start`` on a block boundary; part
    sizes are whole MiB)."""
    assert start % BLOCK == 0, start
    return b"".join(
        block(seed, offset // BLOCK, min(BLOCK, end - offset)) for offset in range(start, end, BLOCK)
    )


def sha256_of(seed: int, size: int) -> str:
    digest = hashlib.sha256()
    for offset in range(0, size, BLOCK):
        digest.update(block(seed, offset // BLOCK, min(BLOCK, size - offset)))
    return digest.hexdigest()


@dataclass
class Run:
    """What the uploads report while they run (shared by the worker threads)."""

    kill_after_parts: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    parts_put: int = 0
    bytes_put: int = 0
    puts_in_flight: int = 0
    parts_done: dict[int, int] = field(default_factory=dict)  # upload index -> parts PUT
    parts_planned: dict[int, int] = field(default_factory=dict)
    failed_puts: list[str] = field(default_factory=list)

    def put_started(self) -> None:
        with self.lock:
            self.puts_in_flight += 1

    def put_ended(self) -> None:
        with self.lock:
            self.puts_in_flight -= 1

    def part_put(self, index: int, size: int) -> None:
        with self.lock:
            self.parts_put += 1
            self.bytes_put += size
            self.parts_done[index] = self.parts_done.get(index, 0) + 1

    def partly_done(self) -> list[int]:
        """Uploads with some of their parts in the store and some still to send."""
        return [i for i, planned in self.parts_planned.items() if 0 < self.parts_done.get(i, 0) < planned]

    def time_to_kill(self) -> bool:
        """Enough parts are in the store, uploads are part-way and a part PUT is under way (call
        holding ``lock``)."""
        return (
            self.parts_put >= self.kill_after_parts
            and len(self.partly_done()) >= KILL_WITH_UPLOADS_PART_WAY
            and self.puts_in_flight > 0
        )


@pytest.fixture
def store_http() -> Iterator[httpx.Client]:
    """The clients' connection to the store. Unlike the ``http`` fixture it does not fail the test on
    a 5xx: a store that loses a node may refuse a part, which the client sends again (and counts)."""
    with httpx.Client(timeout=120) as client:
        yield client


@pytest.fixture
def erasure_backend(mariadb: MariaDB, minio_cluster: MinIOCluster) -> Iterator[Backend]:
    node = minio_cluster.nodes[0]
    settings = real_settings(mariadb.create_database("erasure_tests"), node)
    try:
        with serve(settings) as url:
            yield Backend("real", settings, url)
    finally:
        mariadb.execute("DROP DATABASE IF EXISTS erasure_tests")


def put_part(http: httpx.Client, part: dict[str, Any], body: bytes, run: Run) -> None:
    """PUT one part to its presigned URL, trying again after a failure, as real clients do."""
    for attempt in range(1, PART_PUT_ATTEMPTS + 1):
        run.put_started()
        try:
            resp = http.put(part["url"], content=body, headers=part["headers"])
        except httpx.TransportError as exc:
            failure = f"part {part['part_number']} attempt {attempt}: {exc!r}"
        else:
            if resp.status_code == 200:
                return
            failure = f"part {part['part_number']} attempt {attempt}: {resp.status_code} {resp.text[:200]}"
        finally:
            run.put_ended()
        with run.lock:
            run.failed_puts.append(failure)
        time.sleep(PART_PUT_BACKOFF * attempt)  # a client's backoff, not a wait for a condition
    raise AssertionError(f"part {part['part_number']} failed {PART_PUT_ATTEMPTS} times: {failure}")


def upload_one(
    api: httpx.Client, http: httpx.Client, log_id: str, index: int, size: int, sha256: str, run: Run
) -> dict[str, Any]:
    seed = SEED + index
    started = api.post(
        f"/logs/{log_id}/uploads",
        json={"filename": f"evidence-{index:02}.bin", "size": size, "sha256": sha256},
    )
    assert started.status_code == 201, started.text
    upload = started.json()
    part_size, count = upload["part_size"], upload["part_count"]
    with run.lock:
        run.parts_planned[index] = count
    signed = sign(api, upload["id"], list(range(1, count + 1)))
    for n in range(1, count + 1):
        body = content(seed, (n - 1) * part_size, min(n * part_size, size))
        assert len(body) == signed[n]["size"]
        put_part(http, signed[n], body, run)
        run.part_put(index, len(body))
    done = api.post(f"/uploads/{upload['id']}/complete", json={})
    assert done.status_code == 200, done.text
    file = done.json()
    assert file["status"] == "available" and file["size"] == size
    return {"upload": upload, "file": file, "seed": seed, "size": size}


def read_back(api: httpx.Client, http: httpx.Client, file_id: str) -> tuple[int, str]:
    """Download through the API's redirect, hashing as the bytes stream in."""
    redirect = api.get(f"/files/{file_id}/download")
    assert redirect.status_code == 307, redirect.text
    digest, size = hashlib.sha256(), 0
    with http.stream("GET", redirect.headers["location"]) as resp:
        assert resp.status_code == 200, resp.read()[:300]
        for chunk in resp.iter_bytes(BLOCK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def drive_bytes(drive: Path) -> int:
    return sum(p.stat().st_size for p in drive.rglob("*") if p.is_file())


@dataclass(frozen=True)
class AtKill:
    started: int
    partly_done: list[int]
    parts_put: int
    bytes_put: int
    puts_in_flight: int


def kill_when_due(run: Run, victim: ServerProcess, futures: list[Future[Any]], timeout: float) -> AtKill:
    """Poll ``run`` until it is time to kill ``victim``, then kill it holding ``run.lock``, so the
    progress reported is the progress at the kill. Fail at once if an upload failed first."""
    deadline = time.monotonic() + timeout
    while True:
        with run.lock:
            if run.time_to_kill():
                victim.kill()
                return AtKill(
                    len(run.parts_planned),
                    run.partly_done(),
                    run.parts_put,
                    run.bytes_put,
                    run.puts_in_flight,
                )
        for future in futures:
            if future.done():
                future.result()  # raises its failure
        assert not all(f.done() for f in futures), "the uploads ended before it was time to kill"
        assert time.monotonic() < deadline, f"{run.kill_after_parts} parts not PUT within {timeout:.0f} s"
        time.sleep(0.01)  # polling interval while waiting for the condition above


def test_uploads_complete_and_read_back_with_a_node_killed_mid_run(
    erasure_backend: Backend, minio_cluster: MinIOCluster, store_http: httpx.Client
) -> None:
    http = store_http
    backend = erasure_backend
    rng = random.Random(SEED)
    sizes = [rng.randint(*SIZES) for _ in range(UPLOADS)]
    digests = [sha256_of(SEED + i, size) for i, size in enumerate(sizes)]
    planned_parts = sum(-(-size // (8 * MIB)) for size in sizes)
    run = Run(kill_after_parts=int(planned_parts * KILL_AFTER_FRACTION))
    victim = minio_cluster.nodes[VICTIM]
    victim_process = victim.process
    assert isinstance(victim_process, ServerProcess) and victim_process.running
    began = time.monotonic()

    with new_user(backend) as api:
        log_id = new_log(api)["id"]
        with ThreadPoolExecutor(max_workers=UPLOADS_IN_FLIGHT) as pool:
            futures = [
                pool.submit(upload_one, api, http, log_id, i, size, digests[i], run)
                for i, size in enumerate(sizes)
            ]
            at_kill = kill_when_due(run, victim_process, futures, RUN_TIMEOUT)
            victim_held = drive_bytes(minio_cluster.drives[VICTIM])
            results = [f.result(timeout=RUN_TIMEOUT) for f in futures]
        uploaded = time.monotonic()

        # The kill came mid-run: some uploads had parts in the store and more to send, others had
        # not started; the victim held shards of what had been sent.
        assert len(at_kill.partly_done) >= KILL_WITH_UPLOADS_PART_WAY, at_kill
        assert at_kill.started < UPLOADS, at_kill
        assert at_kill.puts_in_flight > 0
        # 2 data + 2 parity shards: each drive holds about half of every part's bytes.
        assert victim_held > at_kill.bytes_put // 4, (victim_held, at_kill.bytes_put)
        parts_total = sum(r["upload"]["part_count"] for r in results)
        assert run.parts_put == parts_total
        assert parts_total - at_kill.parts_put > parts_total // 2  # most of the run without the node

        with ThreadPoolExecutor(max_workers=UPLOADS_IN_FLIGHT) as pool:
            read = list(pool.map(lambda r: read_back(api, http, r["file"]["id"]), results))
        for i, (result, (size, digest)) in enumerate(zip(results, read, strict=True)):
            assert size == sizes[i]
            assert digest == digests[i] == result["file"]["sha256"], f"upload {i} read back other bytes"
        for result in results:
            assert asyncio.run(assert_store_agrees(backend, result["upload"])) == "completed"
    finished = time.monotonic()

    # The node stayed dead for the rest of the run: the process it was killed as, never restarted,
    # and nothing answers on its port.
    assert victim_process.returncode == -9
    assert not victim_process.running
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{victim.endpoint}/minio/health/live", timeout=2)
    assert minio_cluster.healthy_on(minio_cluster.nodes[0])  # three nodes keep write quorum
    print(
        f"\n{UPLOADS} uploads, {sum(sizes) / MIB:.0f} MiB, {planned_parts} parts; node {VICTIM + 1} "
        f"killed after {at_kill.parts_put} parts, {at_kill.puts_in_flight} PUTs in flight, "
        f"{len(at_kill.partly_done)} uploads part-way, {UPLOADS - at_kill.started} not started; "
        f"its drive held {victim_held / MIB:.0f} MiB of {at_kill.bytes_put / MIB:.0f} MiB sent; "
        f"{len(run.failed_puts)} part PUTs retried; upload {uploaded - began:.1f} s, "
        f"read back {finished - uploaded:.1f} s"
    )
    for failure in run.failed_puts:
        print("  retried:", failure)
