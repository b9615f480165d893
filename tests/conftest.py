"""Shared fixtures: the app served for real (uvicorn on loopback) on two backends.

``backend`` is parametrized: ``embedded`` (SQLite + moto's S3 server) and ``real`` (the private MariaDB
and MinIO started by ``tests.services``). The same API test functions run against both.
"""

from __future__ import annotations

import os

# With awscrt installed (the CLI's CRC64NVME), botocore signs with its CRT signer, which orders query
# parameters differently; the presigner is checked against botocore's own Python signer.
os.environ.setdefault("BOTO_DISABLE_CRT", "true")

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import httpx._transports.default as _httpx_transports
import pytest

from upload_plane.app import create_app
from upload_plane.embedded import EmbeddedS3, prepare, serve_in_thread
from upload_plane.settings import Settings
from upload_plane.storage import Storage

if TYPE_CHECKING:
    from tests.services import MinIO

pytest_plugins = ["tests.services"]

# Every client the tests make talks plain HTTP on loopback, and each new one would load the whole CA
# bundle again (a fifth of the embedded tier's time): they share one context, loaded once.
_make_tls = _httpx_transports.create_ssl_context
_DEFAULT_TLS = _make_tls()


def _shared_tls(verify: object = True, cert: object = None, trust_env: bool = True) -> object:
    if verify is True and cert is None:
        return _DEFAULT_TLS
    return _make_tls(verify=verify, cert=cert, trust_env=trust_env)  # type: ignore[arg-type]


_httpx_transports.create_ssl_context = _shared_tls  # type: ignore[assignment]

ADMIN_PASSWORD = "admin-password-for-tests"
JWT_SECRET = "test-secret-0123456789-0123456789-0123456789"
TEST_HASH_COST = "m=1024,t=1,p=1"
PRODUCTION_HASH_COST = Settings().password_hash_cost


@dataclass(frozen=True)
class Backend:
    name: str
    settings: Settings
    base_url: str


@contextmanager
def serve(settings: Settings, storage: Storage | None = None) -> Iterator[str]:
    """Migrate, prepare the bucket and an admin, then run the app under uvicorn in a thread
    (with ``storage`` in place of the S3 gateway when given)."""
    prepare(settings, ADMIN_PASSWORD)
    with serve_in_thread(create_app(settings, storage=storage)) as url:
        yield url


def base_settings(**changes: object) -> Settings:
    """Test servers: everything from one address, many logins a minute (rate-limit tests set theirs);
    no processing after the upload (its requests wait in the outbox) unless a test turns it on, so
    the other tiers count only the store calls and audit events of what they test; cheap password
    hashes (a third of the embedded tier's time was argon2 at its production cost), except where a
    test is about that cost (``PRODUCTION_HASH_COST``)."""
    return Settings(
        jwt_secret=JWT_SECRET,
        s3_bucket="evidence-tests",
        password_hash_cost=TEST_HASH_COST,
        login_attempts_per_address=1_000_000,
        login_failures_per_account_address=10_000,
        login_failures_per_account=10_000,
        processing="off",
    ).with_(**changes)


_EMBEDDED_S3: dict[str, EmbeddedS3] = {}


def stop_embedded_s3(endpoint: str) -> None:
    """Take an embedded backend's store away (for outage tests)."""
    _EMBEDDED_S3.pop(endpoint).stop()


@contextmanager
def embedded_backend(workdir: Path, **changes: object) -> Iterator[Backend]:
    s3 = EmbeddedS3()
    endpoint = s3.start()
    _EMBEDDED_S3[endpoint] = s3
    settings = base_settings(
        database_url=f"sqlite+aiosqlite:///{workdir / 'api.db'}",
        s3_endpoint_url=endpoint,
        s3_public_endpoint_url=endpoint,
        **changes,
    )
    try:
        with serve(settings) as url:
            yield Backend("embedded", settings, url)
    finally:
        if _EMBEDDED_S3.pop(endpoint, None):
            s3.stop()


def real_settings(database_url: str, minio: MinIO, **changes: object) -> Settings:
    """Test settings for a MariaDB database and a MinIO of the real tier."""
    return base_settings(
        **{
            "database_url": database_url,
            "s3_endpoint_url": minio.endpoint,
            "s3_public_endpoint_url": minio.endpoint,
            "s3_access_key_id": minio.access_key,
            "s3_secret_access_key": minio.secret_key,
            "s3_region": minio.region,
            **changes,
        }
    )


@contextmanager
def real_backend(request: pytest.FixtureRequest, database: str, **changes: object) -> Iterator[Backend]:
    mariadb = request.getfixturevalue("mariadb")
    minio = request.getfixturevalue("minio")
    settings = real_settings(mariadb.create_database(database), minio, **changes)
    with serve(settings) as url:
        yield Backend("real", settings, url)


@pytest.fixture(scope="session", params=["embedded", pytest.param("real", marks=pytest.mark.real)])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if request.param == "embedded":
        with embedded_backend(tmp_path_factory.mktemp("embedded")) as b:
            yield b
    else:
        with real_backend(request, "api_tests") as b:
            yield b


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain client for talking to the store directly (presigned URLs), as a browser would."""
    from tests.api.helpers import record_server_errors

    with httpx.Client(timeout=60, event_hooks={"response": [record_server_errors]}) as client:
        yield client


@pytest.fixture(autouse=True)
def no_server_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test whose clients saw a 5xx, unless it is marked ``expects_5xx`` (outage tests)."""
    from tests.api.helpers import SERVER_ERRORS

    SERVER_ERRORS.clear()
    yield
    seen = list(SERVER_ERRORS)
    SERVER_ERRORS.clear()
    if not request.node.get_closest_marker("expects_5xx"):
        assert not seen, f"server errors during the test: {seen[:10]}"
