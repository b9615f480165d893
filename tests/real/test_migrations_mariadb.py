"""Migrations on a real MariaDB: upgrade from empty, downgrade to base, and agreement with the models."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import upload_plane.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from tests.services import MariaDB
from upload_plane.migrate import downgrade, upgrade

pytestmark = pytest.mark.real

APP_TABLES = {"users", "cases", "logs", "files", "uploads"}


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
