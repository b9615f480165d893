"""What every HTTP request leaves behind: its request id (``X-Request-ID``, in every log line it
causes), one access-log line, and its latency in ``upload_plane_http_request_duration_seconds``.
And what every response carries: the security headers and the Content-Security-Policy
(``headers.py``), added here so that no answer (an error, a middleware's refusal, a fast path)
can go without them.

It wraps the whole application, so 404s, refusals made by middleware and error responses are counted
too; the ``route`` label is the matched route's template (``/api/v1/uploads/{upload_id}/complete``),
``unmatched`` when none matched, so no client controls the metric's cardinality.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .logs import REQUEST_ID, access_log, loggable_path, request_id_from
from .metrics import Metrics

AsgiCall = Callable[[Any, Any, Any], Awaitable[None]]
# Probes and scrapes arrive every few seconds; their access lines are DEBUG.
_QUIET = frozenset({"/health", "/ready", "/metrics"})
_LOGGED_PATH = 512  # characters of a path an access line keeps (a client chooses how long it is)


class RequestObserver:
    def __init__(self, metrics: Metrics, headers: list[tuple[bytes, bytes]]) -> None:
        self.metrics = metrics
        self.headers = headers

    async def __call__(self, scope: Any, receive: Any, send: Any, call: AsgiCall) -> None:
        started = time.perf_counter()
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = request_id_from(value)
                break
        request_id = request_id or secrets.token_hex(8)
        token = REQUEST_ID.set(request_id)
        status = 500  # what a client sees when the application fails before answering

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in self.headers if h[0] not in present]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await call(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).observe(elapsed)
            level = logging.DEBUG if scope["path"] in _QUIET else logging.INFO
            if access_log.isEnabledFor(level):
                path = loggable_path(scope["path"][:_LOGGED_PATH])
                fields = {
                    "method": scope["method"],
                    "path": path,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                }
                # Made of the redacted path and plain values only: no second redaction pass.
                extra = {"fields": fields, "redacted": True}
                access_log.log(level, "%s %s %s", scope["method"], path, status, extra=extra)
            REQUEST_ID.reset(token)
