"""Processing on workers over a real job queue: MariaDB + MinIO + a private Redis, and two
``upload-plane worker`` processes (as production runs them), the API in front.

1. Every kind of file ends ``done`` with its detected type, media facts and a preview; a PNG that is
   a PDF, a wrong declared SHA-256 and an Uppy upload (nothing declared) end as they should.
2. A worker SIGKILLed while hashing a 1 GiB file: the job is re-delivered (SAQ's heartbeat and
   sweep), finishes, and leaves one ``file.verified``. Redis stopped while 20 uploads complete: all
   complete, and all are processed within a minute of Redis coming back (the outbox).
3. A decompression bomb and a truncated video fail their own jobs; the workers keep finishing others.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import samples
from tests.api.helpers import MIB, complete, new_log, new_user, put_parts, sql_rows, start_upload
from tests.api.test_processing import audit_of, metric, preview_of, processed, send
from tests.api.test_uppy_contract import anonymous, endpoint, new_link, uppy_post
from tests.conftest import Backend, real_backend
from tests.real.processes import WorkerProcess
from tests.services import MinIO, Redis

pytestmark = pytest.mark.real


@dataclass
class Stack:
    backend: Backend
    minio: MinIO
    redis: Redis
    workers: list[WorkerProcess]
    workdir: Path

    def worker(self) -> WorkerProcess:
        worker = WorkerProcess(
            self.backend, self.minio, self.redis.url, self.workdir / f"worker{len(self.workers) + 1}.log"
        )
        worker.start()
        self.workers.append(worker)
        return worker

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.running]


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, minio: MinIO, redis: Redis
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("processing-workers")
    # A job silent for 15 s (not the default 60) is taken as dead: the re-delivery test waits less
    # for the same thing to happen.
    with real_backend(
        request, "processing_workers", queue_url=redis.url, processing="auto", processing_heartbeat=15
    ) as backend:
        running = Stack(backend, minio, redis, [], workdir)
        for _ in range(2):
            running.worker()
        try:
            yield running
        finally:
            for worker in running.workers:
                worker.stop()


def test_every_kind_of_file_is_processed_by_the_workers(stack: Stack, http: httpx.Client) -> None:
    kinds = samples.every_kind()
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    with new_user(stack.backend) as api:
        log = new_log(api)
        files = {name: send(http, api, log["id"], data, name, declared) for name, data, declared, _ in kinds}
        disguised = send(http, api, log["id"], samples.pdf(1), "holiday.png", "image/png")
        lying = send(http, api, log["id"], samples.png(), "a.png", "image/png", sha256=wrong)
        with anonymous(stack.backend) as anon:
            witness_id = uppy_post(
                http, anon, endpoint(new_link(api, log["id"])), samples.jpeg_with_gps(), "witness.jpg"
            )

        for name, data, _, detected in kinds:
            got = processed(api, files[name]["id"])
            assert got["processing"]["status"] == "done", (name, got["processing"])
            assert got["detected_type"] == detected, name
            assert (got["sha256"], got["sha256_verified"]) == (hashlib.sha256(data).hexdigest(), True)
            if detected != "application/octet-stream":
                assert got["has_preview"] and max(preview_of(api, http, got["id"]).size) <= 512
        camera = processed(api, files["camera.jpg"]["id"])["media"]
        assert camera["gps"]["latitude"] == pytest.approx(samples.LATITUDE, abs=1e-4)
        assert camera["gps"]["longitude"] == pytest.approx(samples.LONGITUDE, abs=1e-4)
        assert camera["camera"] == "Canon EOS 5D Mark IV" and camera["taken_at"] == "2026-03-14T09:26:53"
        assert processed(api, files["clip.mp4"]["id"])["media"]["duration_seconds"] == pytest.approx(
            2, abs=0.1
        )
        assert processed(api, files["report.pdf"]["id"])["media"]["pages"] == 3
        assert processed(api, files["phone.heic"]["id"])["media"]["width"] == 1024

        got = processed(api, disguised["id"])
        assert (got["detected_type"], got["type_matches"]) == ("application/pdf", False)
        assert [e["action"] for e in audit_of(api, log["case_id"], disguised["id"])].count(
            "file.type_mismatch"
        ) == 1
        got = processed(api, lying["id"])
        assert got["sha256_verified"] is False
        integrity = [
            e for e in audit_of(api, log["case_id"], lying["id"]) if e["action"] == "file.integrity_mismatch"
        ]
        assert len(integrity) == 1
        assert integrity[0]["details"]["declared_sha256"] == wrong
        assert integrity[0]["details"]["computed_sha256"] == hashlib.sha256(samples.png()).hexdigest()
        got = processed(api, witness_id)
        assert got["sha256_source"] == "server" and got["sha256_verified"] is None
        assert got["sha256"] == hashlib.sha256(samples.jpeg_with_gps()).hexdigest()
    # The API reports the queue's depth from Redis (the jobs' own series are the workers')
    for state in ("queued", "active", "scheduled", "outbox"):
        assert metric(stack.backend.base_url, "upload_plane_processing_queue_jobs", state=state) == 0, state
    assert metric(stack.backend.base_url, "upload_plane_processing_files", status="pending") == 0


def test_hostile_files_fail_their_own_jobs_and_the_workers_go_on(stack: Stack, http: httpx.Client) -> None:
    pids = {w.pid for w in stack.alive()}
    with new_user(stack.backend) as api:
        log = new_log(api)
        bomb = send(http, api, log["id"], samples.png_bomb(), "bomb.png", "image/png")
        broken = send(http, api, log["id"], samples.truncated_mp4(), "cut.mp4", "video/mp4")
        others = [
            send(http, api, log["id"], samples.png(64 + i, 48), f"ok{i}.png", "image/png") for i in range(6)
        ]
        got = processed(api, bomb["id"])
        assert got["processing"]["status"] == "failed" and "pixels" in got["processing"]["error"]
        got = processed(api, broken["id"])
        assert got["processing"]["status"] == "failed" and got["processing"]["error"]
        assert all(processed(api, f["id"])["processing"]["status"] == "done" for f in others)
    assert {w.pid for w in stack.alive()} == pids, "a worker died"


def _holder(stack: Stack, file_id: str) -> int | None:
    """The pid of the worker running ``file_id``'s job, once SAQ says it is active."""
    from saq.job import Status

    from upload_plane.processing.queue import QUEUE_NAME, job_key

    async def ask() -> int | None:
        from redis import asyncio as aioredis
        from saq.queue.redis import RedisQueue

        queue = RedisQueue(aioredis.from_url(stack.redis.url), name=QUEUE_NAME)
        try:
            job = await queue.job(job_key(file_id))
        finally:
            await queue.disconnect()
        if job is None or job.status != Status.ACTIVE or not job.worker_id:
            return None
        return int(job.worker_id.rsplit(":", 1)[1])

    return asyncio.run(ask())


def _being_hashed(
    stack: Stack, api: httpx.Client, http: httpx.Client, log_id: str, size: int
) -> tuple[dict[str, Any], int]:
    """Upload ``size`` random bytes and wait until a worker runs the file's job: the upload, the pid."""
    data = os.urandom(size)
    upload = start_upload(api, log_id, data, filename="disk.img", content_type="application/octet-stream")
    put_parts(http, api, upload, data, list(range(1, upload["part_count"] + 1)))
    assert complete(api, upload["id"]).status_code == 200
    deadline = time.monotonic() + 60
    while (pid := _holder(stack, upload["file_id"])) is None:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)  # polling interval while waiting for the condition above
    return upload, pid


def test_a_worker_killed_while_hashing_1_gib_leaves_the_job_to_another(
    stack: Stack, http: httpx.Client
) -> None:
    with new_user(stack.backend) as api:
        log = new_log(api)
        upload, pid = _being_hashed(stack, api, http, log["id"], 1024 * MIB)
        victim = next(w for w in stack.workers if w.pid == pid)
        victim.kill()
        killed_at = time.monotonic()
        got = processed(api, upload["file_id"], deadline=300)
        redelivered_in = time.monotonic() - killed_at
        assert got["processing"]["status"] == "done", got["processing"]
        assert got["sha256_verified"] is True
        attempts = sql_rows(
            stack.backend.settings,
            "SELECT attempts FROM file_processing WHERE file_id = %s",
            upload["file_id"],
        )
        assert attempts == [(2,)], "the job was not killed mid-way (it finished before the kill)"
        verified = [
            e for e in audit_of(api, log["case_id"], upload["file_id"]) if e["action"] == "file.verified"
        ]
        assert len(verified) == 1
    print(f"re-delivered and finished {redelivered_in:.0f} s after the SIGKILL")
    assert redelivered_in < 300
    stack.worker()  # the replacement, for the tests after this one


def test_a_worker_told_to_stop_finishes_its_job_first_and_an_idle_one_stops_at_once(
    stack: Stack, http: httpx.Client
) -> None:
    """SIGTERM (a deploy, a scale-down): the job a worker runs ends there, once; a worker with
    nothing to do does not wait out the grace period."""
    with new_user(stack.backend) as api:
        upload, pid = _being_hashed(stack, api, http, new_log(api)["id"], 512 * MIB)
        busy = next(w for w in stack.workers if w.pid == pid)
        idle = next(w for w in stack.alive() if w is not busy)
        assert busy.proc is not None and idle.proc is not None
        busy.proc.terminate()
        idle.proc.terminate()
        idle.proc.wait(timeout=5)
        busy.proc.wait(timeout=30)  # the grace period
        attempts = sql_rows(
            stack.backend.settings,
            "SELECT status, attempts FROM file_processing WHERE file_id = %s",
            upload["file_id"],
        )
        assert attempts == [("done", 1)], attempts
    for _ in range(2):
        stack.worker()  # replacements, for the tests after this one


def test_redis_down_while_uploads_complete_loses_nothing(stack: Stack, http: httpx.Client) -> None:
    settings = stack.backend.settings
    with new_user(stack.backend) as api:
        log = new_log(api)
        stack.redis.process.stop()
        files = [
            send(http, api, log["id"], samples.png(32 + i, 32), f"r{i}.png", "image/png") for i in range(20)
        ]
        ids = [f["id"] for f in files]
        waiting = sql_rows(settings, "SELECT COUNT(*) FROM file_processing WHERE outbox_at IS NOT NULL")
        assert waiting[0][0] >= 20, waiting
        stack.redis.process.start()
        back_at = time.monotonic()
        for file_id in ids:
            got = processed(api, file_id, deadline=max(1.0, 60 - (time.monotonic() - back_at)))
            assert got["processing"]["status"] == "done"
    print(f"20 files processed {time.monotonic() - back_at:.1f} s after Redis came back")
    assert len(stack.alive()) >= 2
