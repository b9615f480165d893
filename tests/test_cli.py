"""The operator commands, run as a user would: migrate, users create, init-storage, serve."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.conftest import TEST_HASH_COST
from upload_plane.embedded import EmbeddedS3

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("UPLOAD_PLANE_")},
        "UPLOAD_PLANE_PASSWORD_HASH_COST": TEST_HASH_COST,
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "upload_plane.cli", *args],
        env=full_env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def s3() -> Iterator[str]:
    server = EmbeddedS3()
    endpoint = server.start()
    try:
        yield endpoint
    finally:
        server.stop()


def test_migrate_users_create_and_init_storage(tmp_path: Path, s3: str) -> None:
    env = {
        "UPLOAD_PLANE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}",
        "UPLOAD_PLANE_S3_ENDPOINT_URL": s3,
        "UPLOAD_PLANE_S3_BUCKET": "ops-bucket",
        "UPLOAD_PLANE_CORS_ORIGINS": "https://evidence.example.org",
    }
    migrated = cli("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    created = cli(
        "users",
        "create",
        "--username",
        "Ops",
        "--role",
        "admin",
        env=env,
        cwd=tmp_path,
        stdin="ops-password-1\n",
    )
    assert created.returncode == 0, created.stderr
    assert "'ops' created with role admin" in created.stdout
    again = cli("users", "create", "--username", "OPS", env=env, cwd=tmp_path, stdin="ops-password-1\n")
    assert again.returncode == 1
    assert "CONFLICT" in again.stderr
    short = cli("users", "create", "--username", "x", env=env, cwd=tmp_path, stdin="short\n")
    assert short.returncode == 1
    assert "VALIDATION_ERROR" in short.stderr
    in_argv = cli("users", "create", "--username", "y", "--password", "a-password", env=env, cwd=tmp_path)
    assert in_argv.returncode == 2  # passwords never come from the command line

    assert (
        cli("users", "create", "--username", "field", env=env, cwd=tmp_path, stdin="field-pw-1\n").returncode
        == 0
    )
    listed = cli("users", "list", env=env, cwd=tmp_path)
    assert [line.split("\t")[:3] for line in listed.stdout.splitlines()] == [
        ["field", "user", "enabled"],
        ["ops", "admin", "enabled"],
    ]
    assert cli("users", "disable", "field", env=env, cwd=tmp_path).returncode == 0
    assert "field\tuser\tdisabled" in cli("users", "list", env=env, cwd=tmp_path).stdout
    last_admin = cli("users", "disable", "ops", env=env, cwd=tmp_path)
    assert last_admin.returncode == 1 and "last enabled administrator" in last_admin.stderr
    assert cli("users", "enable", "field", env=env, cwd=tmp_path).returncode == 0
    changed = cli("users", "set-password", "FIELD", env=env, cwd=tmp_path, stdin="new-field-pw\n")
    assert changed.returncode == 0 and "password of 'field' set" in changed.stdout
    assert (
        cli("users", "set-password", "nobody", env=env, cwd=tmp_path, stdin="new-field-pw\n").returncode == 1
    )

    stored = cli("init-storage", env=env, cwd=tmp_path)
    assert stored.returncode == 0, stored.stderr
    client = boto3.client(
        "s3",
        endpoint_url=s3,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    rule = client.get_bucket_cors(Bucket="ops-bucket")["CORSRules"][0]
    assert rule["AllowedOrigins"] == ["https://evidence.example.org"]
    assert rule["ExposeHeaders"] == ["ETag"]
    assert set(rule["AllowedMethods"]) == {"GET", "PUT", "POST", "HEAD"}
    assert cli("init-storage", env=env, cwd=tmp_path).returncode == 0  # idempotent


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "UPLOAD_PLANE_JWT_SECRET must be set"),
        ({"UPLOAD_PLANE_JWT_SECRET": "x" * 40}, "UPLOAD_PLANE_S3_SECRET_ACCESS_KEY"),
        ({"UPLOAD_PLANE_JWT_SECRET": "short", "UPLOAD_PLANE_S3_SECRET_ACCESS_KEY": "k" * 20}, "at least 32"),
        # /metrics is not served to anyone unless a token is set or that is asked for in so many words
        (
            {"UPLOAD_PLANE_JWT_SECRET": "x" * 40, "UPLOAD_PLANE_S3_SECRET_ACCESS_KEY": "k" * 20},
            "UPLOAD_PLANE_METRICS_TOKEN must be set",
        ),
        (
            {
                "UPLOAD_PLANE_JWT_SECRET": "x" * 40,
                "UPLOAD_PLANE_S3_SECRET_ACCESS_KEY": "k" * 20,
                "UPLOAD_PLANE_METRICS_TOKEN": "m" * 20,
                "UPLOAD_PLANE_TRUSTED_PROXIES": "10.0.0.0/8,not-an-address",
            },
            "UPLOAD_PLANE_TRUSTED_PROXIES",
        ),
    ],
)
def test_serve_refuses_unsafe_settings(tmp_path: Path, env: dict[str, str], message: str) -> None:
    result = cli("serve", "--port", "1", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
