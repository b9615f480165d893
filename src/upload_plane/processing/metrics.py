"""Processing metrics, in the registry of the process that runs the jobs (a worker's own
``/metrics`` port, or the API's ``/metrics`` when jobs run in-process):

- ``upload_plane_processing_job_duration_seconds{outcome}`` (histogram): jobs from claim to settle,
  ``outcome`` ``done`` or the failure's kind;
- ``upload_plane_processing_failures_total{kind}``: jobs that ended ``failed`` (``too_large``,
  ``corrupt``, ``memory``, ``timeout``, ``crashed``, ``gone``, ``type_not_allowed``, ``store``,
  ``job``, ``lost``), and attempts that failed for a passing reason and were retried
  (``retried_store``, ...);
- ``upload_plane_processing_bytes_hashed_total``.

The API also reports, at each scrape, ``upload_plane_processing_queue_jobs{state}`` (the queue's
depth: ``queued``, ``active``, ``scheduled``, and ``outbox``, asked for but not yet relayed) and
``upload_plane_processing_files{status}`` (files by processing status, from the database).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
FAILURE_KINDS = (
    "too_large",
    "corrupt",
    "memory",
    "timeout",
    "crashed",
    "gone",
    "type_not_allowed",
    "store",
    "job",
    "lost",
)


class ProcessingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.durations = Histogram(
            "upload_plane_processing_job_duration_seconds",
            "Processing jobs from claim to settle, by outcome",
            ["outcome"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.failures = Counter(
            "upload_plane_processing_failures", "Processing jobs failed, by kind", ["kind"], registry=registry
        )
        self.hashed = Counter(
            "upload_plane_processing_bytes_hashed", "Bytes hashed from the store", registry=registry
        )
        self.queue = Gauge(
            "upload_plane_processing_queue_jobs", "Processing jobs by state", ["state"], registry=registry
        )
        self.files = Gauge(
            "upload_plane_processing_files", "Files by processing status", ["status"], registry=registry
        )
        for kind in FAILURE_KINDS:
            self.failures.labels(kind)

    def finished(self, error_kind: str | None, seconds: float | None, hashed: int) -> None:
        if error_kind is not None:
            self.failures.labels(error_kind).inc()
        if seconds is not None:
            self.durations.labels(error_kind or "done").observe(seconds)
        if hashed:
            self.hashed.inc(hashed)

    def attempt_failed(self, kind: str) -> None:
        self.failures.labels(f"retried_{kind}").inc()
