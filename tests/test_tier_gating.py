"""Without MariaDB or MinIO the real tier skips with a how-to; with REQUIRE_REAL_SERVICES=1 it fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SELECTION = ["tests/real/test_mariadb_behaviour.py", "tests/api/test_uploads.py::test_unknown_ids_are_404"]


def run_pytest(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REQUIRE_REAL_SERVICES"}
    env.update(extra_env)
    env.update(MARIADBD_BIN="/nonexistent/mariadbd", MINIO_BIN="/nonexistent/minio")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *SELECTION],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_missing_binaries_skip_with_a_how_to() -> None:
    result = run_pytest({})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout  # the embedded half still runs
    assert "skipped" in result.stdout
    assert "apt-get install mariadb-server" in result.stdout


def test_missing_binaries_fail_when_real_services_are_required() -> None:
    result = run_pytest({"REQUIRE_REAL_SERVICES": "1"})
    assert result.returncode != 0
    assert "apt-get install mariadb-server" in result.stdout
    assert "skipped" not in result.stdout.splitlines()[-1]
