"""The job queue: SAQ on Redis for ``upload-plane worker`` processes, or an in-process runner for
the embedded default. Both run the same job function, keyed by file.

Why SAQ, and how it is configured, is in the README ("Processing"); in short: a job heartbeats
while it runs (``heartbeat`` below), so a SIGKILLed worker's job is taken back by the next sweep
(``processing_heartbeat`` + 30 s) however long jobs are, while a live job is never taken away;
retries back off exponentially; a job ends ``failed`` with its error; enqueueing with a key that
is already queued or running is a no-op.

SAQ pitfalls this module guards against (each found by experiment): the default job timeout is
10 s and the default is no retry and no heartbeat, so every enqueue sets all of them; the
heartbeat is manual (``job.update()``), so a task beats for the job while it runs, stopped with
an event and awaited (a heartbeat task cancelled inside a Redis call could hang); a job that
blocks the event loop longer than the heartbeat is swept while alive, so all blocking work runs in
threads or subprocesses; a swept job that used its last attempt ends ``aborted`` with no hook
called, which ``outbox.reconcile`` notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import QueueUnavailable

log = logging.getLogger("upload_plane.processing")

QUEUE_NAME = "upload-plane-processing"
JOB = "process_file"
SWEEP_EVERY = 30  # seconds between sweeps for dead jobs (one worker sweeps at a time)


def job_key(file_id: str) -> str:
    return f"process:{file_id}"


@dataclass(frozen=True, slots=True)
class Attempt:
    """Which delivery of a job this is: ``final`` when no retry follows a failure."""

    number: int
    final: bool


#: The job: ``(file_id, attempt)``; raising asks the queue for a retry (until the final attempt).
JobFunction = Callable[[str, Attempt], Awaitable[None]]
#: Told when the queue gives up on a job: ``(file_id, error)``.
FailedHook = Callable[[str, str], Awaitable[None]]


class JobQueue(Protocol):
    async def enqueue(self, file_id: str) -> None:
        """Put ``file_id``'s job on the queue (a no-op if it is already there). ``QueueUnavailable``."""
        ...

    async def holds(self, file_id: str) -> bool:
        """Whether the queue has ``file_id``'s job queued, scheduled for a retry, or running."""
        ...

    async def depth(self) -> dict[str, int]:
        """Jobs by state (``queued``, ``active``, ``scheduled``). ``QueueUnavailable``."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class JobOptions:
    timeout: int
    retries: int
    heartbeat: int
    retry_delay: float = 5.0
    retry_backoff: float = 300.0
    ttl: int = 24 * 3600  # how long a finished job's record stays in Redis


# -- SAQ on Redis -----------------------------------------------------------------------------------


class RedisQueue:
    """SAQ's queue on Redis. The API and the relay use it to enqueue; workers also consume it."""

    def __init__(self, url: str, options: JobOptions) -> None:
        from redis import asyncio as aioredis
        from saq.queue.redis import RedisQueue as SaqQueue

        # A stopped Redis must not hold a relay (or a scrape) for long: the outbox keeps what it
        # could not hand over.
        client = aioredis.from_url(url, socket_connect_timeout=3, health_check_interval=30)
        self.saq = SaqQueue(client, name=QUEUE_NAME)
        self.options = options

    async def enqueue(self, file_id: str) -> None:
        o = self.options
        try:
            await self.saq.enqueue(
                JOB, key=job_key(file_id), file_id=file_id, timeout=o.timeout, retries=o.retries,
                heartbeat=o.heartbeat, retry_delay=o.retry_delay, retry_backoff=o.retry_backoff, ttl=o.ttl,
            )  # fmt: skip
        except Exception as exc:  # redis-py's connection and timeout errors, and anything like them
            raise QueueUnavailable(f"the job queue did not take the job ({type(exc).__name__})") from exc

    async def holds(self, file_id: str) -> bool:
        from saq.job import TERMINAL_STATUSES

        try:
            job = await self.saq.job(job_key(file_id))
        except Exception as exc:
            raise QueueUnavailable(f"the job queue did not answer ({type(exc).__name__})") from exc
        return job is not None and job.status not in TERMINAL_STATUSES

    async def depth(self) -> dict[str, int]:
        try:
            queued = await self.saq.count("queued")
            active = await self.saq.count("active")
            incomplete = await self.saq.count("incomplete")
        except Exception as exc:
            raise QueueUnavailable(f"the job queue did not answer ({type(exc).__name__})") from exc
        return {"queued": queued, "active": active, "scheduled": max(0, incomplete - queued - active)}

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.saq.disconnect()


async def heartbeat(job: Any, every: float, done: asyncio.Event) -> None:
    """Touch ``job`` every ``every`` seconds until ``done`` is set (SAQ's heartbeat is manual)."""
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), every)
        except TimeoutError:
            try:
                await job.update()
            except Exception:  # a missed beat is not fatal; the next one tries again
                log.warning("a job heartbeat failed", exc_info=True)


def saq_function(run: JobFunction, failed: FailedHook) -> tuple[Any, Any]:
    """The SAQ job function running ``run`` with a heartbeat, and the ``after_process`` hook that
    tells ``failed`` about a job SAQ gave up on (its last attempt raised or timed out)."""
    from saq.job import Status

    async def process_file(ctx: dict[str, Any], *, file_id: str) -> None:
        job = ctx["job"]
        done = asyncio.Event()
        beat = (
            asyncio.create_task(heartbeat(job, max(1.0, job.heartbeat / 6), done)) if job.heartbeat else None
        )
        try:
            await run(file_id, Attempt(job.attempts, job.attempts >= job.retries))
        finally:
            if beat is not None:
                done.set()
                await beat

    process_file.__name__ = process_file.__qualname__ = JOB

    async def after_process(ctx: dict[str, Any]) -> None:
        job = ctx.get("job")
        if job is None or job.status != Status.FAILED:
            return
        file_id = job.kwargs.get("file_id") if job.kwargs else None
        if file_id:
            error = (job.error or "failed").strip().splitlines()[-1]
            await failed(str(file_id), error)

    return process_file, after_process


# -- in-process (the embedded default) ----------------------------------------------------------------


class InProcessQueue:
    """Runs jobs on this process's event loop, ``concurrency`` at a time, with the same semantics
    as the Redis queue where they matter: one job per file at a time (the key), retries with
    exponential backoff and full jitter, a timeout, and ``failed`` told of a job given up on. Not
    durable: what is queued when the process stops is asked for again by ``outbox.reconcile``."""

    def __init__(self, run: JobFunction, failed: FailedHook, options: JobOptions, concurrency: int) -> None:
        self.run, self.failed, self.options = run, failed, options
        self.concurrency = concurrency
        self._queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._holding: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.Task[None]] = set()
        self.active = 0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.concurrency)]

    async def enqueue(self, file_id: str) -> None:
        if file_id not in self._holding:
            self._holding.add(file_id)
            self._queue.put_nowait((file_id, 1))

    async def holds(self, file_id: str) -> bool:
        return file_id in self._holding

    async def depth(self) -> dict[str, int]:
        queued = self._queue.qsize()
        return {"queued": queued, "active": self.active, "scheduled": len(self._timers)}

    async def aclose(self) -> None:
        for task in [*self._tasks, *self._timers]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._timers, return_exceptions=True)

    async def _later(self, delay: float, item: tuple[str, int]) -> None:
        try:
            await asyncio.sleep(delay)
            self._queue.put_nowait(item)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._timers.discard(task)

    async def _work(self) -> None:
        o = self.options
        while True:
            file_id, number = await self._queue.get()
            self.active += 1
            started = time.monotonic()
            try:
                async with asyncio.timeout(o.timeout):
                    await self.run(file_id, Attempt(number, number >= o.retries))
            except Exception as exc:
                if number < o.retries:
                    delay = random.random() * min(o.retry_backoff, o.retry_delay * 2 ** (number - 1))  # noqa: S311
                    timer = asyncio.create_task(self._later(delay, (file_id, number + 1)))
                    self._timers.add(timer)
                    continue
                error = (
                    f"timed out after {time.monotonic() - started:.0f} s"
                    if isinstance(exc, TimeoutError)
                    else str(exc)
                )
                with contextlib.suppress(Exception):
                    await self.failed(file_id, error or type(exc).__name__)
                self._holding.discard(file_id)
            else:
                self._holding.discard(file_id)
            finally:
                self.active -= 1


def saq_worker(saq_queue: Any, *, shutdown_grace: int, **options: Any) -> Any:
    """A SAQ ``Worker`` that, told to stop, gives the jobs it runs ``shutdown_grace`` seconds and
    stops waiting for new ones at once. (SAQ's own waits out its whole grace period on an idle
    dequeue and on the upkeep timers' sleeps: 30 s for nothing at every SIGTERM of an idle worker.)"""
    from saq import Worker
    from saq.types import Context

    class PromptWorker(Worker[Context]):
        async def stop(self) -> None:
            self.event.set()  # no new job is taken from here on
            running = [context["task"] for context in self.job_task_contexts.values()]
            if running:
                await asyncio.wait(running, timeout=shutdown_grace)
                # the loops that ran them record how they ended; the idle ones wait for nothing
                loops = [t for t in self.tasks if t.get_name() == "process" and not t.done()]
                await asyncio.wait(loops, timeout=2)
            for task in self.tasks:
                task.cancel()
            await super().stop()

    return PromptWorker(saq_queue, shutdown_grace_period_s=shutdown_grace, **options)
