"""Where jobs run: ``upload-plane worker`` processes on SAQ over Redis, or in the API process
(``InProcess``, the embedded default, when no queue is configured). Either way a relay loop moves
the outbox onto the queue and a reconciler asks again for jobs the queue lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from ..db import Database, create_database
from ..errors import DomainError
from ..settings import Settings
from ..storage import S3Storage
from .job import Objects, Processor
from .metrics import ProcessingMetrics
from .outbox import reconcile, relay
from .queue import SWEEP_EVERY, InProcessQueue, JobOptions, JobQueue, RedisQueue, saq_function, saq_worker
from .rows import BY_STATUS, OUTBOX_SIZE, STATUSES

log = logging.getLogger("upload_plane.processing")

RECONCILE_EVERY = 60  # seconds


def job_options(settings: Settings) -> JobOptions:
    return JobOptions(
        timeout=settings.processing_timeout,
        retries=settings.processing_retries,
        heartbeat=settings.processing_heartbeat,
    )


def redis_queue(settings: Settings) -> RedisQueue:
    return RedisQueue(settings.queue_url, job_options(settings))


async def relay_loop(db: Database, queue: JobQueue, settings: Settings) -> None:
    """Relay every ``relay_interval`` seconds and reconcile every minute, until cancelled. An outage
    (queue or database) is logged once when it starts and once when it ends."""
    failing = False
    # A job quiet for this long with nothing in the queue is lost: its heartbeat, a sweep, a margin.
    quiet = 2 * settings.processing_heartbeat + 2 * SWEEP_EVERY
    next_reconcile = asyncio.get_running_loop().time() + RECONCILE_EVERY
    while True:
        try:
            while await relay(db, queue) > 0:
                pass
            if asyncio.get_running_loop().time() >= next_reconcile:
                next_reconcile += RECONCILE_EVERY
                await reconcile(db, queue, quiet=quiet, give_up_after=settings.processing_retries + 2)
            if failing:
                log.info("the processing relay works again")
                failing = False
        except (DomainError, SQLAlchemyError, OSError) as exc:
            if not failing:
                log.warning("the processing relay cannot run (%s); the outbox keeps the requests", exc)
                failing = True
        await asyncio.sleep(settings.relay_interval)


def make_processor(
    db: Database, storage: S3Storage, settings: Settings, metrics: ProcessingMetrics
) -> Processor:
    return Processor(db, Objects(storage.http), settings, metrics)


@asynccontextmanager
async def for_api(
    db: Database, settings: Settings, metrics: ProcessingMetrics
) -> AsyncIterator[JobQueue | None]:
    """What the API process runs for processing. With ``UPLOAD_PLANE_QUEUE_URL``: nothing but a
    queue client (``/metrics`` reports its depth; workers relay and run the jobs). Without: the jobs
    themselves, in-process. With ``UPLOAD_PLANE_PROCESSING=off``: nothing (requests wait in the
    outbox)."""
    if settings.processing == "off":
        yield None
        return
    if settings.queue_url:
        queue = redis_queue(settings)
        try:
            yield queue
        finally:
            await queue.aclose()
        return
    storage = S3Storage(settings)
    running = InProcess.start(db, settings, make_processor(db, storage, settings, metrics))
    try:
        yield running.queue
    finally:
        await running.stop()
        await storage.aclose()


async def report(metrics: ProcessingMetrics, db: Database, queue: JobQueue | None) -> None:
    """Set the scrape-time gauges: the queue's depth (and the outbox's), files by processing status.
    What does not answer is left out; the other series still answer."""
    with contextlib.suppress(SQLAlchemyError):
        async with db.connect() as conn:
            counts = dict(await conn.all(BY_STATUS))
            metrics.queue.labels("outbox").set(int(await conn.value(OUTBOX_SIZE) or 0))
        for status in STATUSES:
            metrics.files.labels(status).set(counts.get(status, 0))
    if queue is not None:
        with contextlib.suppress(DomainError):
            for state, count in (await queue.depth()).items():
                metrics.queue.labels(state).set(count)


@dataclass
class InProcess:
    """Jobs on the API's own event loop (decoders still in their sandbox processes)."""

    queue: InProcessQueue
    relaying: asyncio.Task[None]
    processor: Processor

    @classmethod
    def start(cls, db: Database, settings: Settings, processor: Processor) -> InProcess:
        queue = InProcessQueue(
            processor.run, processor.failed, job_options(settings), settings.processing_concurrency
        )
        queue.start()
        return cls(queue, asyncio.create_task(relay_loop(db, queue, settings)), processor)

    async def stop(self) -> None:
        self.relaying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.relaying
        await self.queue.aclose()
        await self.processor.aclose()


async def run_worker(settings: Settings, concurrency: int, metrics_port: int) -> None:
    """``upload-plane worker``: consume the Redis queue until SIGTERM or SIGINT (SAQ stops taking
    jobs and gives running ones a grace period), relaying and reconciling meanwhile."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry(auto_describe=True)
    db, storage = create_database(settings), S3Storage(settings)
    processor = make_processor(db, storage, settings, ProcessingMetrics(registry))
    if metrics_port:
        start_http_server(metrics_port, registry=registry)
    queue = redis_queue(settings)
    function, after_process = saq_function(processor.run, processor.failed)
    worker = saq_worker(
        queue.saq,
        shutdown_grace=30,
        id=f"{socket.gethostname()}:{os.getpid()}",  # where a job runs, in its record (job.worker_id)
        functions=[function],
        concurrency=concurrency,
        after_process=after_process,
        timers={"sweep": SWEEP_EVERY, "abort": 1, "schedule": 1, "worker_info": 10},
    )
    relaying = asyncio.create_task(relay_loop(db, queue, settings))
    try:
        await worker.start()
    finally:
        relaying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relaying
        await queue.aclose()
        await processor.aclose()
        await storage.aclose()
        await db.dispose()
