"""Login limits hold across replicas (two `upload-plane serve` processes on one MariaDB) and lift
after their window; a burst of logins does not stall the event loop (password hashing runs in worker
threads behind a limiter)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import assert_problem, new_account
from tests.conftest import Backend
from tests.real.processes import serve_process
from tests.services import MinIO

pytestmark = pytest.mark.real

WINDOW = 8
FAILURES_PER_ACCOUNT = 5
ATTEMPTS_PER_ADDRESS = 14
GENEROUS = {
    "login_failures_per_account": "1000",
    "login_attempts_per_address": "100000",
}


@pytest.fixture
def two_replicas(real: Backend, minio: MinIO, tmp_path: Path) -> Iterator[tuple[str, str]]:
    limits = {
        "login_window": str(WINDOW),
        "login_failures_per_account": str(FAILURES_PER_ACCOUNT),
        "login_attempts_per_address": str(ATTEMPTS_PER_ADDRESS),
    }
    with ExitStack() as stack:
        a = stack.enter_context(serve_process(real, minio, tmp_path / "a.log", **limits))
        b = stack.enter_context(serve_process(real, minio, tmp_path / "b.log", **limits))
        yield a, b


def login(base: str, username: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{base}/api/v1/auth/login", json={"username": username, "password": password}, timeout=30
    )


def wait_for_a_fresh_window() -> None:
    """Start right after a window boundary, so the attempts below fall into one window."""
    while time.time() % WINDOW > 0.5:
        time.sleep(0.05)  # polling interval while waiting for the boundary


def wait_until_login_works(base: str, username: str, password: str) -> float:
    started = time.monotonic()
    while (resp := login(base, username, password)).status_code == 429:
        assert time.monotonic() - started < 3 * WINDOW, "the limit did not lift after its window"
        time.sleep(0.2)  # polling interval while waiting for the window to pass
    assert resp.status_code == 200, resp.text
    return time.monotonic() - started


def test_brute_force_is_cut_off_across_replicas_and_recovers(
    real: Backend, two_replicas: tuple[str, str]
) -> None:
    a, b = two_replicas
    victim, password = new_account(real)
    bystander, bystander_pw = new_account(real)
    wait_for_a_fresh_window()
    # Account limit: five failures, split over the two replicas, lock the account everywhere.
    for i in range(FAILURES_PER_ACCOUNT):
        assert_problem(login(a if i % 2 else b, victim, "wrong-password"), 401, "UNAUTHENTICATED")
    for replica in (a, b):
        refused = login(replica, victim, password)  # even the right password, until the window ends
        assert_problem(refused, 429, "RATE_LIMITED")
        assert 1 <= int(refused.headers["retry-after"]) <= WINDOW + 1
    assert login(a, bystander, bystander_pw).status_code == 200  # other accounts are not locked
    # Address limit: every attempt from this address counts, on both replicas.
    attempts = FAILURES_PER_ACCOUNT + 1  # the victim's failures and the bystander's login
    for i in range(ATTEMPTS_PER_ADDRESS - attempts):
        resp = login(a if i % 2 else b, f"nobody-{i}", "wrong-password")
        assert resp.status_code == 401, (i, resp.text)
    assert_problem(login(b, bystander, bystander_pw), 429, "RATE_LIMITED")
    assert_problem(login(a, f"nobody-{ATTEMPTS_PER_ADDRESS}", "x"), 429, "RATE_LIMITED")
    waited = wait_until_login_works(a, victim, password)
    assert waited <= 2 * WINDOW
    assert login(b, bystander, bystander_pw).status_code == 200


def test_a_burst_of_logins_does_not_stall_the_event_loop(real: Backend, minio: MinIO, tmp_path: Path) -> None:
    """50 concurrent logins (half of them wrong) while another process probes /health every 5 ms.

    Load generator and prober are processes of their own (no shared interpreter lock with each other
    or the server); the load generator runs at a lower priority, as clients on other hosts would not
    take the API host's CPU. The server runs as production does (`upload-plane serve`).
    """
    name, password = new_account(real)
    root = Path(__file__).resolve().parents[2]
    with serve_process(real, minio, tmp_path / "burst.log", **GENEROUS) as base:
        probe = subprocess.Popen(
            [sys.executable, "-m", "tests.tools.probe_latency", f"{base}/health", "6"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        assert probe.stdout is not None
        assert probe.stdout.readline().strip() == "ready"
        burst = subprocess.run(
            ["nice", "-n", "10", sys.executable, "-m", "tests.tools.login_burst", base, name, password, "50"],
            capture_output=True,
            text=True,
            cwd=root,
            timeout=120,
            check=True,
        )
        out, _ = probe.communicate(timeout=60)
    assert json.loads(burst.stdout) == {"200": 25, "401": 25}, burst.stdout + burst.stderr
    health = json.loads(out.strip().splitlines()[-1])
    print(f"/health while 50 logins ran: {health}")
    assert health["statuses"] == [200]
    assert health["max_ms"] < 50, health
