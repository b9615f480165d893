"""A database outage answers 503 DATABASE_UNAVAILABLE and changes nothing, then service resumes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.api.helpers import (
    assert_problem,
    complete,
    db_snapshot,
    new_log,
    new_user,
    put_parts,
    start_upload,
)
from tests.conftest import Backend, base_settings, serve
from tests.services import MariaDB, MinIO

pytestmark = pytest.mark.real

ACCOUNT = "'outage_app'@'127.0.0.1'"


@pytest.fixture
def outage_backend(mariadb: MariaDB, minio: MinIO) -> Iterator[Backend]:
    """An API server whose database account this test may lock, leaving the others alone."""
    mariadb.execute(
        "CREATE DATABASE outage_tests",
        f"CREATE USER {ACCOUNT} IDENTIFIED BY 'outage-pass'",
        f"GRANT ALL PRIVILEGES ON outage_tests.* TO {ACCOUNT}",
    )
    settings = base_settings(
        database_url=f"mysql+asyncmy://outage_app:outage-pass@{mariadb.host}:{mariadb.port}/outage_tests",
        s3_endpoint_url=minio.endpoint,
        s3_public_endpoint_url=minio.endpoint,
        s3_access_key_id=minio.access_key,
        s3_secret_access_key=minio.secret_key,
    )
    try:
        with serve(settings) as url:
            yield Backend("real", settings, url)
    finally:
        mariadb.execute(f"DROP USER IF EXISTS {ACCOUNT}", "DROP DATABASE IF EXISTS outage_tests")


@pytest.mark.expects_5xx
def test_database_outage_is_503_and_changes_nothing(
    outage_backend: Backend, mariadb: MariaDB, http: httpx.Client
) -> None:
    backend = outage_backend
    data = b"evidence bytes"
    with new_user(backend) as api:
        log = new_log(api)
        upload = start_upload(api, log["id"], data)
        put_parts(http, api, upload, data, [1])
        before = asyncio.run(db_snapshot(backend))

        mariadb.execute(f"ALTER USER {ACCOUNT} ACCOUNT LOCK", "KILL CONNECTION USER 'outage_app'")
        try:
            assert_problem(
                api.post(f"/logs/{log['id']}/uploads", json={"filename": "a", "size": 1}),
                503,
                "DATABASE_UNAVAILABLE",
            )
            assert_problem(complete(api, upload["id"]), 503, "DATABASE_UNAVAILABLE")
            assert_problem(api.get("/cases"), 503, "DATABASE_UNAVAILABLE")
            ready = httpx.get(f"{backend.base_url}/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["storage"] == "ok"
            assert ready.json()["checks"]["database"] != "ok"
        finally:
            mariadb.execute(f"ALTER USER {ACCOUNT} ACCOUNT UNLOCK")

        assert asyncio.run(db_snapshot(backend)) == before
        done = complete(api, upload["id"])
        assert done.status_code == 200, done.text
        assert httpx.get(f"{backend.base_url}/ready").status_code == 200
