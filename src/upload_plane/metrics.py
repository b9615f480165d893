"""Prometheus metrics (``GET /metrics``), in a registry of the application's own.

- ``upload_plane_http_request_duration_seconds{method,route,status}``: every request (``route`` is
  the route template, never a raw path);
- ``upload_plane_store_call_duration_seconds{operation,outcome}``: every call to the object store
  (``outcome`` is ``ok`` or the domain error's code); its ``_count`` counts CompleteMultipartUploads;
- ``upload_plane_db_statement_duration_seconds{operation,outcome}``: every statement (hot path
  and ORM), by verb and table;
- ``upload_plane_presigned_urls_total{kind}``: part, put (a small file's one PUT), download and form
  (POST) URLs signed;
- ``upload_plane_uploads{status}``: uploads by state (read from the database at each scrape);
- ``upload_plane_reaper_actions_total{action}``: what the reapers did.

With ``uvicorn --workers N`` each worker counts alone; set ``PROMETHEUS_MULTIPROC_DIR`` (the
prometheus-client multiprocess mode) to have ``/metrics`` add them up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from .errors import DomainError
from .statements import statement_kind
from .storage import Storage, StorageWrapper

T = TypeVar("T")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Histogram(
            "upload_plane_http_request_duration_seconds",
            "HTTP requests by route template",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.store_calls = Histogram(
            "upload_plane_store_call_duration_seconds",
            "Calls to the object store by operation and outcome",
            ["operation", "outcome"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.db_statements = Histogram(
            "upload_plane_db_statement_duration_seconds",
            "Hot-path database statements by verb and table, and outcome",
            ["operation", "outcome"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.presigned = Counter("upload_plane_presigned_urls", "Presigned URLs issued", ["kind"], registry=r)
        self.uploads = Gauge(
            "upload_plane_uploads", "Uploads by state", ["status"], registry=r, multiprocess_mode="max"
        )
        self.reaper = Counter("upload_plane_reaper_actions", "Reaper actions", ["action"], registry=r)
        self._statement_series: dict[tuple[str, bool], Any] = {}  # labelled once, not per statement

    def observe_statement(self, kind: str, seconds: float, ok: bool) -> None:
        """A statement of ``kind`` (``statements.statement_kind``) took ``seconds``."""
        series = self._statement_series.get((kind, ok))
        if series is None:
            series = self.db_statements.labels(kind, "ok" if ok else "error")
            self._statement_series[(kind, ok)] = series
        series.observe(seconds)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(combined))
        return bytes(generate_latest(self.registry))


class MeteredStorage(StorageWrapper):
    """``Storage`` that times and counts every call to the store it wraps, and counts the URLs it
    presigns."""

    #: Operation labels that are not the method's name (the store's own name for the request).
    LABELS = {"ping": "head_bucket", "part_checksum": "head_object_part"}

    def __init__(self, inner: Storage, metrics: Metrics) -> None:
        super().__init__(inner)
        self.metrics = metrics

    async def around(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await call()
        except DomainError as exc:
            outcome = exc.code
            raise
        finally:
            label = self.LABELS.get(operation, operation)
            self.metrics.store_calls.labels(label, outcome).observe(time.perf_counter() - started)

    def presigned(self, kind: str, count: int) -> None:
        self.metrics.presigned.labels(kind).inc(count)


def meter_engine(engine: Any, metrics: Metrics) -> None:
    """Time the ORM's statements (the cold routes) into the same histogram as the hot path's."""
    from sqlalchemy import event

    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _started(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("upload_plane_started", []).append(time.perf_counter())

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _done(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started = conn.info["upload_plane_started"].pop()
        metrics.observe_statement(statement_kind(statement), time.perf_counter() - started, True)

    @event.listens_for(sync_engine, "handle_error")
    def _failed(context: Any) -> None:
        stack = context.connection.info.get("upload_plane_started") if context.connection else None
        if stack and context.statement:
            seconds = time.perf_counter() - stack.pop()
            metrics.observe_statement(statement_kind(context.statement), seconds, False)
