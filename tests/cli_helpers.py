"""Running the ``upload-plane`` client commands as a user does: a subprocess with its own
configuration and state directories, the API and token from the environment."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Backend


def cli_env(home: Path, api_url: str, token: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a user whose config and state live under ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOAD_PLANE_")}
    env.update(
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_STATE_HOME=str(home / "state"),
        UPLOAD_PLANE_API_URL=api_url,
        **extra,
    )
    if token:
        env["UPLOAD_PLANE_TOKEN"] = token
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "upload_plane.cli", *args]


def cli(
    *args: str, env: dict[str, str], stdin: str = "", timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args), env=env, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def cli_json(*args: str, env: dict[str, str]) -> Any:
    done = cli(*args, "--json", env=env)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: str, exit_status: int) -> None:
    """A failed command says so in one line, ``upload-plane: CODE: detail``, and nothing else."""
    assert done.returncode == exit_status, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"upload-plane: {code}: "), done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout


def personal_token(api: httpx.Client) -> str:
    resp = api.post("/tokens", json={"name": "cli tests", "expires_in_days": 1})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def api_url(backend: Backend) -> str:
    return backend.base_url
