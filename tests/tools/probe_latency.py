"""Probe a URL from its own process (so the prober shares no interpreter lock with a load generator)
every ``interval`` seconds for ``seconds``; print the latencies' summary as one JSON line.

    python -m tests.tools.probe_latency URL SECONDS [INTERVAL]

SIGINT ends the probing early; the summary is printed all the same.
"""

from __future__ import annotations

import json
import sys
import time

import httpx


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.005
    latencies: list[float] = []
    statuses: set[int] = set()
    with httpx.Client(timeout=10) as client:
        client.get(url)
        print("ready", flush=True)
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                started = time.perf_counter()
                statuses.add(client.get(url).status_code)
                latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(interval)  # the sampling rate
        except KeyboardInterrupt:  # stopped early by whoever started it (SIGINT)
            pass
    latencies.sort()
    summary = {
        "probes": len(latencies),
        "statuses": sorted(statuses),
        "p50_ms": round(latencies[len(latencies) // 2], 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
        "max_ms": round(latencies[-1], 2),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
