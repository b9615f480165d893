"""Migrations on a real MariaDB: upgrade from empty, downgrade to base, and agreement with the models."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import upload_plane.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from tests.conftest import Backend
from tests.services import MariaDB
from upload_plane.app import create_app
from upload_plane.embedded import serve_in_thread
from upload_plane.migrate import charset_problems, downgrade, upgrade

pytestmark = pytest.mark.real

APP_TABLES = {
    "users",
    "cases",
    "logs",
    "files",
    "uploads",
    "auth_sessions",
    "refresh_tokens",
    "personal_access_tokens",
    "case_members",
    "audit_events",
    "rate_counters",
    "upload_links",
    "upload_link_uploads",
    "store_purges",
    "file_processing",
}


def _with_connection(url: str, fn: Any) -> Any:
    """Run ``fn(sync_connection)`` on a fresh async engine (``upgrade`` runs its own event loop)."""

    async def run() -> Any:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def table_names(url: str) -> set[str]:
    return set(_with_connection(url, lambda conn: sa.inspect(conn).get_table_names()))


def schema_diff(url: str) -> list[Any]:
    def diff(conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    not (type_ == "table" and name == "alembic_version")
                ),
            },
        )
        return list(compare_metadata(context, SQLModel.metadata))

    result: list[Any] = _with_connection(url, diff)
    return result


def test_upgrade_from_empty_then_downgrade_to_base_then_upgrade_again(mariadb: MariaDB) -> None:
    url = mariadb.create_database("migrations_roundtrip")
    assert table_names(url) == set()

    upgrade(url)
    assert table_names(url) == APP_TABLES | {"alembic_version"}

    downgrade(url, "base")
    assert table_names(url) == {"alembic_version"}  # alembic keeps its (now empty) version table

    upgrade(url)
    assert table_names(url) == APP_TABLES | {"alembic_version"}


def test_models_and_migrations_agree(mariadb: MariaDB) -> None:
    url = mariadb.create_database("migrations_vs_models")
    upgrade(url)
    assert SQLModel.metadata.tables.keys() == APP_TABLES
    assert schema_diff(url) == []


def _execute(url: str, *statements: str) -> list[Any]:
    def run(conn: sa.Connection) -> list[Any]:
        rows: list[Any] = []
        for statement in statements:
            result = conn.execute(sa.text(statement))
            if result.returns_rows:
                rows.extend(result.all())
        conn.commit()
        return rows

    return list(_with_connection(url, run))


def test_revision_0002_converts_latin1_tables_and_keeps_their_data(mariadb: MariaDB) -> None:
    url = mariadb.create_database("migrations_from_latin1")
    upgrade(url, "0001")
    assert _execute(
        url,
        "SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_NAME = 'users' "
        "AND TABLE_SCHEMA = DATABASE()",
    ) == [("latin1_swedish_ci",)]
    _execute(
        url,
        "INSERT INTO users (id, username, password_hash, role, disabled, created_at) "
        "VALUES ('u1', 'Müller ', 'h', 'user', 0, NOW())",
        "INSERT INTO cases (id, title, reference, description, created_by, created_at, updated_at) "
        "VALUES ('c1', 'Ermittlung Müller', 'R-1', 'Straße', 'u1', NOW(), NOW())",
    )
    upgrade(url)
    assert _execute(url, "SELECT username FROM users") == [("müller",)]
    assert _execute(url, "SELECT title, description FROM cases") == [("Ermittlung Müller", "Straße")]
    assert charset_problems(url) == []
    _execute(
        url,
        "INSERT INTO cases (id, title, reference, description, created_by, created_at, updated_at) "
        "VALUES ('c2', '证据 📹', 'R-2', '', 'u1', NOW(), NOW())",
    )
    assert _execute(url, "SELECT title FROM cases WHERE id = 'c2'") == [("证据 📹",)]


def test_revision_0002_refuses_usernames_that_normalise_to_the_same(mariadb: MariaDB) -> None:
    url = mariadb.create_database("migrations_username_clash")
    upgrade(url, "0001")
    _execute(
        url,
        "INSERT INTO users (id, username, password_hash, role, disabled, created_at) VALUES "
        "('u1', 'agent2', 'h', 'user', 0, NOW()), ('u2', 'Agent²', 'h', 'user', 0, NOW())",
    )  # both latin1, distinct under latin1_swedish_ci, both "agent2" under NFKC + lower-case
    with pytest.raises(RuntimeError, match="same normalised username"):
        upgrade(url)


def test_migrate_and_ready_report_tables_that_are_not_utf8mb4(mariadb: MariaDB, real: Backend) -> None:
    url = mariadb.create_database("migrations_drifted")
    upgrade(url)
    _execute(url, "ALTER TABLE logs MODIFY name VARCHAR(200) CHARACTER SET latin1 NOT NULL")
    problems = charset_problems(url)
    assert len(problems) == 1 and problems[0].startswith("logs.name is latin1")

    cli = subprocess.run(
        [sys.executable, "-m", "upload_plane.cli", "migrate"],
        env={**os.environ, "UPLOAD_PLANE_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "not utf8mb4" in cli.stderr and "logs.name" in cli.stderr

    settings = real.settings.with_(database_url=url)
    with serve_in_thread(create_app(settings)) as base:
        ready = httpx.get(f"{base}/ready")
    assert ready.status_code == 503
    assert "logs.name" in ready.json()["checks"]["schema"]


def test_revision_0009_turns_outbox_rows_into_marks_and_back(mariadb: MariaDB) -> None:
    url = mariadb.create_database("migrations_outbox")
    upgrade(url, "0008")
    row = "'pending', '2026-12-07 10:00:00', 0, '2026-12-07 10:00:00'"
    _execute(
        url,
        "INSERT INTO file_processing (file_id, status, requested_at, attempts, updated_at) VALUES "
        f"('asked', {row}), ('asked-twice', {row}), ('relayed', {row})",
        "INSERT INTO processing_outbox (id, file_id, created_at) VALUES "
        "('o1', 'asked', '2026-12-07 10:00:01'), ('o2', 'asked-twice', '2026-12-07 10:00:03'), "
        "('o3', 'asked-twice', '2026-12-07 10:00:02')",
    )
    upgrade(url, "0009")
    assert "processing_outbox" not in table_names(url)
    marks = _execute(url, "SELECT file_id, outbox_at FROM file_processing ORDER BY file_id")
    assert [(file_id, str(at) if at else None) for file_id, at in marks] == [
        ("asked", "2026-12-07 10:00:01"),
        ("asked-twice", "2026-12-07 10:00:02"),  # the earliest ask: the relay takes the oldest first
        ("relayed", None),
    ]
    downgrade(url, "0008")
    assert _execute(url, "SELECT file_id FROM processing_outbox ORDER BY file_id") == [
        ("asked",),
        ("asked-twice",),
    ]
