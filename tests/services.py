"""Private MariaDB and MinIO servers for the real-service tier (a pytest plugin).

Each server runs from its own binary in a temporary directory on a free 127.0.0.1 port, once per
test session, and is stopped (SIGTERM, then SIGKILL on timeout) when the session ends. Readiness is
polled against a deadline; when a server does not come up, the error carries the tail of its log.

Every server is a ``ServerProcess`` that a test may stop, kill and start again on the same port and
data directory (outage tests). Such tests use servers of their own (``private_mariadb``,
``private_minio``, ``minio_cluster``: four MinIO nodes in one erasure set), so the session servers
stay up for everyone else.

A missing binary skips the tier with a reason that says how to get it, unless
``REQUIRE_REAL_SERVICES=1`` (CI), where it fails. A server that fails to start always fails.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncmy
import boto3
import pytest
from botocore.config import Config

from upload_plane.settings import Settings

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


class ServerProcess:
    """One server that a test may stop, kill and start again: the same command line and environment,
    so the same port and data directory. Its output is appended to ``log`` across restarts.

    ``start`` returns once ``ready`` holds (or raises ``ServiceStartError`` with the log's tail);
    ``stop`` is SIGTERM and a wait (SIGKILL after ``STOP_TIMEOUT``), ``kill`` is SIGKILL and a wait.
    """

    def __init__(
        self, what: str, argv: Sequence[str], log: Path, ready: Callable[[], bool], env: dict[str, str]
    ) -> None:
        self.what = what
        self.argv = list(argv)
        self.log = log
        self.ready = ready
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"ServerProcess({self.what!r}, pid={self.pid}, running={self.running})"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The current (or last) process's id."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """How the last process ended (``-signal.SIGKILL`` after ``kill``); ``None`` while it runs."""
        return self._proc.poll() if self._proc is not None else None

    def launch(self) -> None:
        """Start the process without waiting for it to be ready (nodes of a cluster wait for each
        other, so all are launched before any is waited for)."""
        if self.running:
            raise RuntimeError(f"{self.what} is already running")
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env)

    def wait_until(self, condition: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        """Poll ``condition`` against a deadline; fail at once if the process exits."""
        if self._proc is None:
            raise RuntimeError(f"{self.what} was never started")
        _wait_until(condition, self._proc, self.what, self.log, timeout)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.launch()
        self.wait_until(self.ready, timeout)

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


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
    pid: int = 0  # the first process's; after a restart, ``process.pid``
    #: The server's process, to stop, kill and start again (outage tests, on a private server only).
    process: ServerProcess | None = field(default=None, compare=False, repr=False)

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
    process = ServerProcess(
        "mariadbd",
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
        log,
        lambda: _mariadb_accepts(socket_path),
        dict(os.environ),
    )
    try:
        process.start()
        server = MariaDB(
            "127.0.0.1", port, "upload_plane", "upload-plane-test-pw", socket_path, process.pid or 0, process
        )
        server.execute(
            f"CREATE USER '{server.user}'@'127.0.0.1' IDENTIFIED BY '{server.password}'",
            f"GRANT ALL PRIVILEGES ON *.* TO '{server.user}'@'127.0.0.1'",
        )
        yield server
    finally:
        process.stop()


# --- MinIO -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MinIO:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    pid: int = 0  # the first process's; after a restart, ``process.pid``
    #: The server's process, to stop, kill and start again (outage tests, on a private server only).
    process: ServerProcess | None = field(default=None, compare=False, repr=False)

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


MINIO_ACCESS_KEY = "upload-plane-test"
MINIO_SECRET_KEY = "upload-plane-test-secret"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _minio_env() -> dict[str, str]:
    return {
        **os.environ,
        "MINIO_ROOT_USER": MINIO_ACCESS_KEY,
        "MINIO_ROOT_PASSWORD": MINIO_SECRET_KEY,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
        # Tests may count the requests that reached the store (/minio/metrics/v3/api/requests).
        "MINIO_PROMETHEUS_AUTH_TYPE": "public",
    }


def _minio_binary(minio: str | None) -> str:
    found = minio or find_binary("minio", "MINIO_BIN")
    if found is None:
        raise FileNotFoundError(f"minio not found; {MINIO_HOWTO}")
    return found


@contextmanager
def run_minio(workdir: Path, *, minio: str | None = None) -> Iterator[MinIO]:
    """Start ``minio server`` on a data dir under ``workdir`` and a free port, yield, stop it."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    health = f"{endpoint}/minio/health/live"
    process = ServerProcess(
        "minio",
        [
            _minio_binary(minio),
            "server",
            str(workdir / "data"),
            "--address",
            endpoint.removeprefix("http://"),
            "--console-address",
            f"127.0.0.1:{free_port()}",
        ],
        workdir / "minio.log",
        lambda: _http_ok(health),
        _minio_env(),
    )
    try:
        process.start()
        yield MinIO(endpoint, MINIO_ACCESS_KEY, MINIO_SECRET_KEY, pid=process.pid or 0, process=process)
    finally:
        process.stop()


# --- Redis -------------------------------------------------------------------------------------

REDIS_HOWTO = "install Redis: `apt-get install redis-server` (or set REDIS_SERVER_BIN)"
REDIS_BINARIES = {"redis-server": "REDIS_SERVER_BIN"}


@dataclass(frozen=True)
class Redis:
    """A private ``redis-server`` without persistence (``--save ''``, no AOF): stopped and started
    again, it is empty, as a queue server that lost its memory is."""

    port: int
    process: ServerProcess = field(compare=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def run_redis(workdir: Path, *, redis_server: str | None = None) -> Iterator[Redis]:
    """Start ``redis-server`` on a free loopback port with its files in ``workdir``; yield; stop it."""
    binary = redis_server or find_binary("redis-server", "REDIS_SERVER_BIN")
    if binary is None:
        raise FileNotFoundError(f"redis-server not found; {REDIS_HOWTO}")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = ServerProcess(
        "redis-server",
        [*argv, "--dir", str(workdir), "--daemonize", "no"],
        workdir / "redis.log",
        lambda: _redis_answers(port),
        dict(os.environ),
    )
    try:
        process.start()
        yield Redis(port, process)
    finally:
        process.stop()


@dataclass(frozen=True)
class MinIOCluster:
    """MinIO nodes forming one erasure set (one drive each); any node serves the whole cluster."""

    nodes: tuple[MinIO, ...]
    drives: tuple[Path, ...]

    @property
    def endpoint(self) -> str:
        return self.nodes[0].endpoint

    def healthy_on(self, node: MinIO) -> bool:
        """``node`` sees the cluster able to write (enough drives online for write quorum)."""
        return _http_ok(f"{node.endpoint}/minio/health/cluster")


@dataclass
class Services:
    """A private MariaDB and MinIO, and the settings of a service that uses both."""

    mariadb: MariaDB
    minio: MinIO
    settings: Settings


@contextmanager
def mariadb_and_minio(workdir: Path, database: str, **fields: Any) -> Iterator[Services]:
    """Start a MariaDB and a MinIO in ``workdir`` and create ``database``; ``fields`` complete the
    settings (bucket, JWT secret, tuning). For benches and scripts; tests use the fixtures below."""
    (workdir / "mariadb").mkdir()
    (workdir / "minio").mkdir()
    with run_mariadb(workdir / "mariadb") as mariadb, run_minio(workdir / "minio") as minio:
        settings = Settings(
            database_url=mariadb.create_database(database),
            s3_endpoint_url=minio.endpoint,
            s3_public_endpoint_url=minio.endpoint,
            s3_access_key_id=minio.access_key,
            s3_secret_access_key=minio.secret_key,
            **fields,
        )
        yield Services(mariadb, minio, settings)


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@contextmanager
def run_minio_cluster(workdir: Path, nodes: int = 4, *, minio: str | None = None) -> Iterator[MinIOCluster]:
    """``nodes`` ``minio server`` processes on loopback ports, each given the same ``nodes`` endpoint
    URLs (``http://127.0.0.1:PORT/<its drive>``), so that they form one distributed erasure set.
    Yields once every node sees a healthy cluster; stops every node and removes the drives after."""
    binary = _minio_binary(minio)
    ports = _distinct_free_ports(2 * nodes)
    drives = tuple(workdir / f"drive{i + 1}" for i in range(nodes))
    urls = [f"http://127.0.0.1:{ports[i]}{drives[i]}" for i in range(nodes)]
    env = {
        **_minio_env(),
        # Drives on the root file system are refused in a distributed setup, except for CI/CD.
        "MINIO_CI_CD": "1",
    }
    # In a container (/.dockerenv) MinIO does not take a loopback endpoint for its own unless told
    # which one is (``_MINIO_SERVER_LOCAL``); otherwise it waits for DNS to give another address.
    processes = []
    for i in range(nodes):
        health = f"http://127.0.0.1:{ports[i]}/minio/health/live"
        processes.append(
            ServerProcess(
                f"minio node {i + 1}",
                [
                    binary,
                    "server",
                    "--address",
                    f"127.0.0.1:{ports[i]}",
                    "--console-address",
                    f"127.0.0.1:{ports[nodes + i]}",
                    *urls,
                ],
                workdir / f"minio-node{i + 1}.log",
                lambda health=health: _http_ok(health),
                {**env, "_MINIO_SERVER_LOCAL": f"127.0.0.1:{ports[i]}"},
            )
        )
    try:
        for process in processes:  # the nodes wait for each other: launch all, then wait
            process.launch()
        cluster = MinIOCluster(
            tuple(
                MinIO(
                    f"http://127.0.0.1:{port}", MINIO_ACCESS_KEY, MINIO_SECRET_KEY, pid=p.pid or 0, process=p
                )
                for port, p in zip(ports[:nodes], processes, strict=True)
            ),
            drives,
        )
        for node, process in zip(cluster.nodes, processes, strict=True):
            process.wait_until(process.ready)
            process.wait_until(lambda node=node: cluster.healthy_on(node))
        yield cluster
    finally:
        for process in processes:
            process.stop()
        for drive in drives:  # gigabytes of erasure-coded test data
            shutil.rmtree(drive, ignore_errors=True)


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


T = TypeVar("T")

MARIADB_BINARIES = {"mariadbd": "MARIADBD_BIN", "mariadb-install-db": "MARIADB_INSTALL_DB_BIN"}
MINIO_BINARIES = {"minio": "MINIO_BIN"}


def _started(
    binaries: dict[str, str], howto: str, run: Callable[[Path], AbstractContextManager[T]], workdir: Path
) -> Iterator[T]:
    """What a fixture yields: the server(s) ``run`` starts in ``workdir`` (skipped, or failed when
    real services are required, if a binary is missing; failed if it does not start)."""
    _require(binaries, howto)
    try:
        with run(workdir) as server:
            yield server
    except ServiceStartError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    yield from _started(MARIADB_BINARIES, MARIADB_HOWTO, run_mariadb, tmp_path_factory.mktemp("mariadb"))


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinIO]:
    yield from _started(MINIO_BINARIES, MINIO_HOWTO, run_minio, tmp_path_factory.mktemp("minio"))


@pytest.fixture
def private_mariadb(tmp_path: Path) -> Iterator[MariaDB]:
    """A MariaDB of this test's own, which it may stop, kill and start again (``process``)."""
    (workdir := tmp_path / "mariadb").mkdir()
    yield from _started(MARIADB_BINARIES, MARIADB_HOWTO, run_mariadb, workdir)


@pytest.fixture
def private_minio(tmp_path: Path) -> Iterator[MinIO]:
    """A MinIO of this test's own, which it may stop, kill and start again (``process``)."""
    (workdir := tmp_path / "minio").mkdir()
    yield from _started(MINIO_BINARIES, MINIO_HOWTO, run_minio, workdir)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A Redis for a test module, which its tests may stop and start again (empty: no persistence)."""
    yield from _started(REDIS_BINARIES, REDIS_HOWTO, run_redis, tmp_path_factory.mktemp("redis"))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Redis]:
    """A Redis of this test's own, which it may stop and start again (empty: no persistence)."""
    (workdir := tmp_path / "redis").mkdir()
    yield from _started(REDIS_BINARIES, REDIS_HOWTO, run_redis, workdir)


@pytest.fixture
def minio_cluster(tmp_path: Path) -> Iterator[MinIOCluster]:
    """Four MinIO nodes in one erasure set, of this test's own: it may kill and restart nodes."""
    (workdir := tmp_path / "minio-cluster").mkdir()
    yield from _started(MINIO_BINARIES, MINIO_HOWTO, run_minio_cluster, workdir)
