"""Private MariaDB and MinIO servers for the real-service tier (a pytest plugin).

Each server runs from its own binary in a temporary directory on a free 127.0.0.1 port, once per
test session, and is stopped (SIGTERM, then SIGKILL on timeout) when the session ends. Readiness is
polled against a deadline; when a server does not come up, the error carries the tail of its log.

A missing binary skips the tier with a reason that says how to get it, unless
``REQUIRE_REAL_SERVICES=1`` (CI), where it fails. A server that fails to start always fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncmy
import boto3
import pytest
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

MARIADB_HOWTO = "install MariaDB: `apt-get install mariadb-server` (or set MARIADBD_BIN)"
MINIO_HOWTO = (
    "build MinIO with `make minio`, which runs `GOBIN=$PWD/.cache/bin go install "
    "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c` (needs Go; or set MINIO_BIN)"
)


class ServiceStartError(RuntimeError):
    """A server binary was found but the server did not become ready."""


def find_binary(name: str, env_var: str) -> str | None:
    """``$env_var``, then ``<repo>/.cache/bin/<name>``, then PATH, then ``/usr/sbin/<name>``."""
    from_env = os.environ.get(env_var)
    if from_env:
        return from_env if os.access(from_env, os.X_OK) else None
    for candidate in (str(REPO_ROOT / ".cache" / "bin" / name), shutil.which(name), f"/usr/sbin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def real_services_required() -> bool:
    return os.environ.get("REQUIRE_REAL_SERVICES") == "1"


def free_port() -> int:
    """A port that was free a moment ago (the server binds it right after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float
) -> None:
    """Poll ``ready`` until it is true; fail early if ``proc`` exits, or at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServiceStartError(f"{what} exited with {proc.returncode}; log tail:\n{_log_tail(log)}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise ServiceStartError(f"{what} not ready after {timeout:.0f}s; log tail:\n{_log_tail(log)}")
        time.sleep(0.05)  # polling interval, not a wait for the condition


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- MariaDB -----------------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_]{1,64}$")

#: The server runs with defaults the application did not choose, as many installed servers do:
#: latin1 (MariaDB's built-in default) and a case-insensitive collation, a permissive sql_mode that
#: truncates instead of refusing, and a time zone that is not UTC. The application must pin what it
#: needs (utf8mb4 tables, strict mode, UTC) itself.
SERVER_DEFAULTS = (
    "--character-set-server=latin1",
    "--collation-server=latin1_swedish_ci",
    "--sql-mode=",
    "--default-time-zone=+05:30",
)


@dataclass(frozen=True)
class MariaDB:
    host: str
    port: int
    user: str
    password: str
    socket_path: Path
    pid: int = 0

    def url(self, database: str) -> str:
        """As an operator would write it: no charset (the application pins utf8mb4 itself)."""
        return f"mysql+asyncmy://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def execute(self, *statements: str) -> None:
        """Run statements as root over the unix socket (root has no TCP account)."""
        asyncio.run(_execute_as_root(self.socket_path, statements))

    def create_database(self, name: str) -> str:
        """Create a new, empty database with the server's defaults (latin1, see ``SERVER_DEFAULTS``),
        as ``CREATE DATABASE`` without a character set does in production; return its async URL."""
        if not _IDENTIFIER.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.execute(f"CREATE DATABASE `{name}`")
        return self.url(name)


async def _execute_as_root(socket_path: Path, statements: tuple[str, ...]) -> None:
    conn: Any = await asyncmy.connect(unix_socket=str(socket_path), user="root", connect_timeout=2)
    try:
        async with conn.cursor() as cursor:
            for statement in statements:
                await cursor.execute(statement)
    finally:
        conn.close()


def _mariadb_accepts(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        asyncio.run(_execute_as_root(socket_path, ("SELECT 1",)))
    except Exception:
        return False
    return True


def _root_flags() -> list[str]:
    """mariadbd refuses to run as root unless told to."""
    return ["--user=root"] if os.geteuid() == 0 else []


@contextmanager
def run_mariadb(
    workdir: Path, *, mariadbd: str | None = None, install_db: str | None = None
) -> Iterator[MariaDB]:
    """Initialise a datadir under ``workdir``, start ``mariadbd`` on a free port, yield, stop it."""
    mariadbd = mariadbd or find_binary("mariadbd", "MARIADBD_BIN")
    install_db = install_db or find_binary("mariadb-install-db", "MARIADB_INSTALL_DB_BIN")
    if mariadbd is None or install_db is None:
        raise FileNotFoundError(f"mariadbd or mariadb-install-db not found; {MARIADB_HOWTO}")
    datadir, socket_path, log = workdir / "data", workdir / "mariadb.sock", workdir / "mariadb.log"
    install = subprocess.run(
        [
            install_db,
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            *_root_flags(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if install.returncode != 0:
        raise ServiceStartError(
            f"mariadb-install-db failed ({install.returncode}):\n"
            f"{install.stdout[-3000:]}{install.stderr[-3000:]}"
        )
    port = free_port()
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                mariadbd,
                "--no-defaults",
                f"--datadir={datadir}",
                f"--socket={socket_path}",
                f"--pid-file={workdir / 'mariadb.pid'}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                *_root_flags(),
                "--skip-log-bin",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=32M",
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-doublewrite=0",
                *SERVER_DEFAULTS,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until(lambda: _mariadb_accepts(socket_path), proc, "mariadbd", log, START_TIMEOUT)
        server = MariaDB("127.0.0.1", port, "upload_plane", "upload-plane-test-pw", socket_path, proc.pid)
        server.execute(
            f"CREATE USER '{server.user}'@'127.0.0.1' IDENTIFIED BY '{server.password}'",
            f"GRANT ALL PRIVILEGES ON *.* TO '{server.user}'@'127.0.0.1'",
        )
        yield server
    finally:
        _stop(proc)


# --- MinIO -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MinIO:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    pid: int = 0

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style, SigV4)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def run_minio(workdir: Path, *, minio: str | None = None) -> Iterator[MinIO]:
    """Start ``minio server`` on a data dir under ``workdir`` and a free port, yield, stop it."""
    minio = minio or find_binary("minio", "MINIO_BIN")
    if minio is None:
        raise FileNotFoundError(f"minio not found; {MINIO_HOWTO}")
    server = MinIO(f"http://127.0.0.1:{free_port()}", "upload-plane-test", "upload-plane-test-secret")
    address = server.endpoint.removeprefix("http://")
    env = {
        **os.environ,
        "MINIO_ROOT_USER": server.access_key,
        "MINIO_ROOT_PASSWORD": server.secret_key,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
    }
    log = workdir / "minio.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                minio,
                "server",
                str(workdir / "data"),
                "--address",
                address,
                "--console-address",
                f"127.0.0.1:{free_port()}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        health = f"{server.endpoint}/minio/health/live"
        _wait_until(lambda: _http_ok(health), proc, "minio", log, START_TIMEOUT)
        yield dataclasses.replace(server, pid=proc.pid)
    finally:
        _stop(proc)


# --- fixtures ----------------------------------------------------------------------------------


def _require(binaries: dict[str, str], howto: str) -> None:
    """Skip (or fail under REQUIRE_REAL_SERVICES=1) when any binary is missing."""
    missing = [name for name, env_var in binaries.items() if find_binary(name, env_var) is None]
    if not missing:
        return
    reason = f"{', '.join(missing)} not found; {howto}"
    if real_services_required():
        pytest.fail(f"REQUIRE_REAL_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    _require({"mariadbd": "MARIADBD_BIN", "mariadb-install-db": "MARIADB_INSTALL_DB_BIN"}, MARIADB_HOWTO)
    try:
        with run_mariadb(tmp_path_factory.mktemp("mariadb")) as server:
            yield server
    except ServiceStartError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinIO]:
    _require({"minio": "MINIO_BIN"}, MINIO_HOWTO)
    try:
        with run_minio(tmp_path_factory.mktemp("minio")) as server:
            yield server
    except ServiceStartError as exc:
        pytest.fail(str(exc), pytrace=False)
