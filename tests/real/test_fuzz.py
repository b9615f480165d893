"""Schemathesis over every route, as every role, against the live OpenAPI document on MariaDB + MinIO.

``test_every_route_as_every_role`` is the short, deterministic run of ``make test``. The long run,
``test_long_run``, is ``make fuzz``: bounded by ``FUZZ_MINUTES``, seeded by ``FUZZ_SEED`` (else a
random seed, printed), it writes its figures to ``bench/results/fuzz.json`` and prints them.
The harness (the world, the roles, the checks) is ``tests/real/fuzzing.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis

from tests.conftest import Backend, real_backend
from tests.real.fuzzing import (
    CHECKS,
    ROLES,
    Finding,
    RoleRun,
    World,
    new_seed,
    run_role,
    schema_operations,
    seed_world,
    server_requests,
)

pytestmark = pytest.mark.real

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "fuzz.json"
SHORT_SEED = 20261123
SHORT_EXAMPLES = 5
LONG_EXAMPLES = 100
LONG_MIN_REQUESTS = 10_000


@pytest.fixture(scope="module")
def fuzzed(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A server and a database of its own: what the fuzzer creates stays out of other tests."""
    with real_backend(request, "fuzz") as backend:
        yield backend


@pytest.fixture(scope="module")
def world(fuzzed: Backend) -> World:
    with httpx.Client(timeout=60) as http:
        return seed_world(fuzzed, http)


def test_every_route_as_every_role(fuzzed: Backend, world: World) -> None:
    before = server_requests(fuzzed.base_url)
    runs = [
        run_role(
            fuzzed.base_url,
            world.identities[role],
            world,
            seed=SHORT_SEED,
            max_examples=SHORT_EXAMPLES,
            deterministic=True,
        )
        for role in ROLES
    ]
    served = server_requests(fuzzed.base_url) - before
    operations = schema_operations(fuzzed.base_url)
    print(table(figures(runs, served, operations, seed=SHORT_SEED, minutes=0, seconds=0)))
    assert_clean(runs, served, operations)


@pytest.mark.skipif("FUZZ_MINUTES" not in os.environ, reason="the long run: make fuzz (FUZZ_MINUTES)")
def test_long_run(fuzzed: Backend, world: World) -> None:
    minutes = float(os.environ["FUZZ_MINUTES"])
    seed = int(os.environ.get("FUZZ_SEED") or new_seed())
    per_role = max(1, round(minutes * 60 / len(ROLES)))
    print(f"\nfuzz: seed {seed}, {per_role} s per role, roles {', '.join(ROLES)}", flush=True)
    started = time.monotonic()
    before = server_requests(fuzzed.base_url)
    runs = []
    for role in ROLES:
        run = run_role(
            fuzzed.base_url,
            world.identities[role],
            world,
            seed=seed,
            max_examples=LONG_EXAMPLES,
            max_time=per_role,
        )
        print(
            f"fuzz: {role}: {sum(run.requests.values())} requests in {run.seconds:.0f} s, "
            f"{len(run.findings)} findings, {len(run.errors)} errors",
            flush=True,
        )
        runs.append(run)
    served = server_requests(fuzzed.base_url) - before
    operations = schema_operations(fuzzed.base_url)
    report = figures(runs, served, operations, seed=seed, minutes=minutes, seconds=time.monotonic() - started)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(json.dumps({k: v for k, v in report.items() if k not in ("routes", "findings")}))
    assert report["requests"] >= LONG_MIN_REQUESTS, report["requests"]
    assert_clean(runs, served, operations)


def assert_clean(runs: list[RoleRun], served: Counter[tuple[str, str, str]], operations: set[str]) -> None:
    findings = [f for run in runs for f in run.findings]
    errors = [f"[{run.role}] {e}" for run in runs for e in run.errors]
    kinds: dict[tuple[str, str, str, int | None], list[Finding]] = {}
    for f in findings:
        kinds.setdefault((f.operation, f.check, f.title, f.status), []).append(f)
    assert not findings, f"{len(findings)} findings of {len(kinds)} kinds:\n" + "\n".join(
        f"{len(same)} x {same[0]}" for same in kinds.values()
    )
    assert not errors, "\n".join(errors[:25])
    for run in runs:
        assert run.operations == operations, (run.role, sorted(operations - run.operations))
    server_errors = {key: n for key, n in served.items() if key[2].startswith("5")}
    assert not server_errors, server_errors


def figures(
    runs: list[RoleRun],
    served: Counter[tuple[str, str, str]],
    operations: set[str],
    *,
    seed: int,
    minutes: float,
    seconds: float,
) -> dict[str, object]:
    routes: dict[str, dict[str, object]] = {}
    for route in sorted({r for run in runs for r in run.requests}):
        statuses: Counter[int] = Counter()
        for run in runs:
            statuses.update(run.statuses.get(route, {}))
        routes[route] = {
            "requests": sum(run.requests[route] for run in runs),
            "by_role": {run.role: run.requests[route] for run in runs if run.requests[route]},
            "by_status": {str(s): n for s, n in sorted(statuses.items())},
            "documented": route in operations,
        }
    findings = [f for run in runs for f in run.findings]
    return {
        "schemathesis": schemathesis.__version__,
        "commit": _commit(),
        "seed": seed,
        "minutes": minutes,
        "seconds": round(seconds, 1),
        "requests": sum(sum(run.requests.values()) for run in runs),
        "requests_seen_by_server": sum(served.values()),
        "server_errors_seen_by_server": sum(n for key, n in served.items() if key[2].startswith("5")),
        "operations": len(operations),
        "operations_covered_by_every_role": len(set.intersection(*(run.operations for run in runs))),
        "checks": list(CHECKS),
        "roles": {
            run.role: {
                "requests": sum(run.requests.values()),
                "seconds": round(run.seconds, 1),
                "stop_reason": run.stop_reason,
                "findings": len(run.findings),
                "errors": len(run.errors),
            }
            for run in runs
        },
        "failures_by_kind": dict(Counter(f"{f.check}: {f.title}" for f in findings).most_common()),
        "errors": [f"[{run.role}] {e}" for run in runs for e in run.errors][:50],
        "findings": [vars(f) for f in findings[:50]],
        "routes": routes,
    }


def table(report: dict[str, object]) -> str:
    routes = report["routes"]
    assert isinstance(routes, dict)
    lines = [f"{'route':<58}{'requests':>9}  {'2xx':>6}{'3xx':>6}{'4xx':>6}{'5xx':>6}"]
    for route, row in routes.items():
        by_class: Counter[str] = Counter()
        for status, n in row["by_status"].items():
            by_class[status[0]] += n
        lines.append(f"{route:<58}{row['requests']:>9}  " + "".join(f"{by_class[c]:>6}" for c in "2345"))
    lines.append(f"{'total':<58}{report['requests']:>9}")
    return "\n".join(lines)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()
