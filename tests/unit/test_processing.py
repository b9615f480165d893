"""Processing at the service level (SQLite, no store, no Redis): the completion step asks for the
file's processing in its transaction, the relay hands requests to the queue once (and keeps them
when the queue is down), a job records its results and audit events once however often it is
delivered, a job taken over records nothing, the reconciler asks again for lost jobs and gives up on
files whose worker dies every time; the in-process queue's one-job-per-file, retries and final
failure; type matching; and the sandbox's limits against a local HTTP server."""

from __future__ import annotations

import asyncio
import http.server
import io
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image

from tests import samples
from tests.unit.conftest import World
from upload_plane.errors import QueueUnavailable
from upload_plane.models import AuditEvent, FileProcessing, utcnow
from upload_plane.processing.job import Outcome, Processor
from upload_plane.processing.metrics import ProcessingMetrics
from upload_plane.processing.outbox import ask_again, reconcile, relay
from upload_plane.processing.queue import Attempt, InProcessQueue, JobOptions
from upload_plane.processing.sandbox import Limits, Sandbox, examine
from upload_plane.processing.types import type_matches
from upload_plane.processing.verify import Digest

pytestmark = pytest.mark.anyio


class FakeQueue:
    def __init__(self) -> None:
        self.enqueued: list[str] = []
        self.down = False
        self.holding: set[str] = set()

    async def enqueue(self, file_id: str) -> None:
        if self.down:
            raise QueueUnavailable("down")
        self.enqueued.append(file_id)

    async def holds(self, file_id: str) -> bool:
        return file_id in self.holding

    async def depth(self) -> dict[str, int]:
        return {}

    async def aclose(self) -> None:
        pass


async def count(world: World, model: Any, **where: Any) -> int:
    async with world.db.sessions() as session:
        query = sa.select(sa.func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int((await session.exec(query)).one()[0])  # type: ignore[call-overload]


async def processing_row(world: World, file_id: str) -> FileProcessing:
    async with world.db.sessions() as session:
        return (await session.exec(sa.select(FileProcessing).where(FileProcessing.file_id == file_id))).one()[
            0
        ]  # type: ignore[call-overload]


async def outbox(world: World) -> list[str]:
    """The files whose processing rows are marked for the relay."""
    query = sa.select(FileProcessing.file_id).where(FileProcessing.outbox_at.is_not(None))  # type: ignore[union-attr]
    async with world.db.sessions() as session:
        return [row[0] for row in (await session.exec(query)).all()]  # type: ignore[call-overload]


async def completed_file(world: World) -> str:
    upload = await world.started()
    file = await world.call(lambda u, _: u.complete(world.user, upload.id))
    return file.id


async def test_completion_asks_and_the_relay_hands_over_once(world: World) -> None:
    file_id = await completed_file(world)
    assert (await processing_row(world, file_id)).status == "pending"
    assert await outbox(world) == [file_id]
    queue = FakeQueue()
    queue.down = True
    with pytest.raises(QueueUnavailable):
        await relay(world.db, queue)
    assert await outbox(world) == [file_id], "a queue that is down loses nothing"
    queue.down = False
    assert await relay(world.db, queue) == 1
    assert await relay(world.db, queue) == 0
    assert queue.enqueued == [file_id]
    assert await outbox(world) == []


def processor(world: World, outcome: Outcome, gate: asyncio.Event | None = None) -> Processor:
    p = Processor(
        world.db, None, world.settings, ProcessingMetrics(__import__("prometheus_client").CollectorRegistry())
    )  # type: ignore[arg-type]

    async def process(file: Any) -> Outcome:
        if gate is not None:
            await gate.wait()
        return outcome

    p._process = process  # type: ignore[method-assign]
    return p


def verified(sha256: str) -> Outcome:
    return Outcome(digest=Digest(9000, sha256, None), detected_type="application/octet-stream")


async def events(world: World, action: str) -> int:
    return await count(world, AuditEvent, action=action)


async def test_a_job_delivered_twice_records_once(world: World) -> None:
    file_id = await completed_file(world)
    job = processor(world, verified("ab" * 32))
    await job.run(file_id, Attempt(1, False))
    await job.run(file_id, Attempt(2, False))  # a re-delivery, or a second relay's job
    row = await processing_row(world, file_id)
    assert (row.status, row.sha256, row.attempts) == ("done", "ab" * 32, 1)
    assert await events(world, "file.verified") == 1


async def test_a_job_taken_over_records_nothing(world: World) -> None:
    file_id = await completed_file(world)
    gate = asyncio.Event()
    slow = asyncio.create_task(processor(world, verified("11" * 32), gate).run(file_id, Attempt(1, False)))
    await asyncio.sleep(0.1)  # the slow job holds the row (its worker is presumed dead)
    await processor(world, verified("22" * 32)).run(file_id, Attempt(2, False))
    gate.set()
    await slow
    row = await processing_row(world, file_id)
    assert (row.status, row.sha256, row.attempts) == ("done", "22" * 32, 2)
    assert await events(world, "file.verified") == 1


async def test_a_declared_sha256_that_differs_is_flagged_and_audited(world: World) -> None:
    file_id = await completed_file(world)
    async with world.db.sessions() as session:
        await session.exec(
            sa.text("UPDATE files SET sha256 = :s WHERE id = :i").bindparams(s="ff" * 32, i=file_id)
        )  # type: ignore[call-overload]
        await session.commit()
    await processor(world, verified("00" * 32)).run(file_id, Attempt(1, False))
    assert await events(world, "file.integrity_mismatch") == 1
    assert await events(world, "file.verified") == 0


async def test_the_allow_list_can_refuse_by_detected_type(world: World) -> None:
    file_id = await completed_file(world)
    async with world.db.sessions() as session:
        await session.exec(
            sa.text("UPDATE files SET content_type = 'image/png' WHERE id = :i").bindparams(i=file_id)
        )  # type: ignore[call-overload]
        await session.commit()
    world.settings = world.settings.with_(allowed_content_types=("image/*",), refuse_detected_types=True)
    outcome = Outcome(digest=Digest(9000, "ab" * 32, None), detected_type="application/pdf")
    await processor(world, outcome).run(file_id, Attempt(1, False))
    row = await processing_row(world, file_id)
    assert (row.status, row.error_kind, row.type_matches) == ("failed", "type_not_allowed", False)
    assert "application/pdf" in (row.error or "")
    async with world.db.sessions() as session:
        details = (
            await session.exec(sa.select(AuditEvent.details).where(AuditEvent.action == "file.type_mismatch"))
        ).one()[0]  # type: ignore[call-overload]
    assert '"refused": true' in details
    assert await events(world, "file.verified") == 1  # its bytes are still what was declared


async def test_a_passing_failure_is_retried_and_the_last_one_ends_failed(world: World) -> None:
    from upload_plane.processing.job import Passing

    file_id = await completed_file(world)
    job = processor(world, verified("ab" * 32))

    async def store_down(file: Any) -> Outcome:
        raise Passing("the store did not answer", "store")

    job._process = store_down  # type: ignore[method-assign]
    with pytest.raises(Passing):
        await job.run(file_id, Attempt(1, False))
    row = await processing_row(world, file_id)
    assert (row.status, row.error_kind) == ("pending", "store")  # back for the queue's retry, error showing
    await job.run(file_id, Attempt(5, True))
    row = await processing_row(world, file_id)
    assert row.status == "failed" and "the store did not answer" in (row.error or "")


async def test_the_reconciler_asks_again_for_lost_jobs_and_gives_up_on_dead_ends(world: World) -> None:
    lost, doomed, alive = [await completed_file(world) for _ in range(3)]
    queue = FakeQueue()
    await relay(world.db, queue)
    queue.holding = {alive}
    async with world.db.sessions() as session:
        past = utcnow() - timedelta(hours=1)
        await session.exec(sa.update(FileProcessing).values(updated_at=past))  # type: ignore[call-overload]
        await session.exec(
            sa.update(FileProcessing).where(FileProcessing.file_id == doomed).values(attempts=7)
        )  # type: ignore[call-overload]
        await session.commit()
    done = await reconcile(world.db, queue, quiet=60, give_up_after=7)
    assert (done.alive, done.asked_again, done.given_up) == (1, 1, 1)
    assert await outbox(world) == [lost]
    assert (await processing_row(world, doomed)).status == "failed"
    assert (await processing_row(world, alive)).status == "pending"
    assert (await reconcile(world.db, queue, quiet=60, give_up_after=7)).asked_again == 0  # not twice


async def test_process_again_makes_a_done_file_pending_with_a_new_request(world: World) -> None:
    file_id = await completed_file(world)
    await relay(world.db, FakeQueue())
    await processor(world, verified("ab" * 32)).run(file_id, Attempt(1, False))
    assert await ask_again(world.db, [file_id]) == 1
    assert (await processing_row(world, file_id)).status == "pending"
    assert await outbox(world) == [file_id]


async def test_the_in_process_queue_runs_one_job_per_file_retries_and_gives_up() -> None:
    runs: list[tuple[str, int]] = []
    failed: list[tuple[str, str]] = []
    release = asyncio.Event()

    async def run(file_id: str, attempt: Attempt) -> None:
        runs.append((file_id, attempt.number))
        if file_id == "slow":
            await release.wait()
        if file_id == "bad":
            raise ValueError("always")

    async def on_failed(file_id: str, error: str) -> None:
        failed.append((file_id, error))

    queue = InProcessQueue(run, on_failed, JobOptions(timeout=5, retries=3, heartbeat=0, retry_delay=0.01), 2)
    queue.start()
    try:
        await queue.enqueue("slow")
        await queue.enqueue("slow")  # while queued or running: no second job
        await queue.enqueue("bad")
        for _ in range(200):
            if failed:
                break
            await asyncio.sleep(0.02)
        assert await queue.holds("slow")
        release.set()
        await asyncio.sleep(0.05)
        assert not await queue.holds("slow")
    finally:
        await queue.aclose()
    assert runs.count(("slow", 1)) == 1 and len([r for r in runs if r[0] == "slow"]) == 1
    assert [n for f, n in runs if f == "bad"] == [1, 2, 3]
    assert failed == [("bad", "always")]


@pytest.mark.parametrize(
    ("declared", "detected", "expected"),
    [
        ("image/png", "image/png", True),
        ("image/jpg", "image/jpeg", True),
        ("image/heif", "image/heic", True),
        ("image/png", "application/pdf", False),
        ("image/png", "application/octet-stream", False),
        ("application/octet-stream", "application/pdf", None),
        ("", "image/png", None),
        ("text/csv", "text/plain", True),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "application/zip", True),
        ("video/quicktime", "video/mp4", True),
        ("application/pdf; charset=binary", "application/pdf", True),
    ],
)
def test_type_matching(declared: str, detected: str, expected: bool | None) -> None:
    assert type_matches(declared, detected) is expected


# -- the sandbox, against a local server that answers ranged GETs ---------------------------------


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:
        name = self.path.split("?")[0].lstrip("/")
        if name == "stall":
            threading.Event().wait(30)  # a store that never answers
            return
        data = self.files[name]
        start, end = 0, len(data) - 1
        if rng := self.headers.get("Range"):
            first, last = rng.removeprefix("bytes=").split("-")
            start, end = int(first), min(int(last or end), end)
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.wfile.write(data[start : end + 1])

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


async def examined(url: str, size: int, limits: Limits) -> Any:
    """``examine`` on a fork server of this test's own."""
    sandbox = Sandbox()
    try:
        return await examine(sandbox, url, size, limits)
    finally:
        await sandbox.aclose()


LIMITS = Limits(max_pixels=100_000_000, timeout=20, memory=1024 * 1024 * 1024, preview_size=512)


async def test_the_sandbox_describes_a_photo_over_ranged_gets(server: str) -> None:
    _Files.files["photo.jpg"] = data = samples.jpeg_with_gps()
    found = await examined(f"{server}/photo.jpg", len(data), LIMITS)
    assert found.error is None, found.error
    assert found.detected_type == "image/jpeg"
    assert (found.media["width"], found.media["height"], found.media["orientation"]) == (1200, 1600, 6)
    assert found.preview is not None
    assert Image.open(io.BytesIO(found.preview)).size == (384, 512)  # rotated, at most 512


async def test_the_sandbox_refuses_a_bomb(server: str) -> None:
    _Files.files["bomb.png"] = data = samples.png_bomb()
    found = await examined(f"{server}/bomb.png", len(data), LIMITS)
    assert (found.detected_type, found.error_kind) == ("image/png", "too_large")
    assert found.preview is None


async def test_the_sandbox_runs_out_of_memory_alone(server: str) -> None:
    out = io.BytesIO()
    Image.new("RGB", (9000, 9000), (1, 2, 3)).save(out, "PNG")  # 243 MB decoded
    _Files.files["big.png"] = out.getvalue()
    small = Limits(max_pixels=100_000_000, timeout=20, memory=160 * 1024 * 1024, preview_size=512)
    found = await examined(f"{server}/big.png", len(out.getvalue()), small)
    assert found.detected_type == "image/png"
    assert found.error_kind == "memory", found.error


async def test_the_sandbox_is_stopped_at_its_deadline(server: str) -> None:
    quick = Limits(max_pixels=100_000_000, timeout=2, memory=1024 * 1024 * 1024, preview_size=512)
    found = await examined(f"{server}/stall", 1000, quick)
    assert found.error_kind in ("timeout", "store"), found.error
