"""Run alembic migrations from code (``upload-plane migrate``, the dev server, the tests)."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import create_async_engine

from .db import engine_url, ensure_sqlite_dir, schema_charset_problems
from .paths import project_path


def alembic_config(database_url: str) -> Config:
    config = Config(str(project_path("alembic.ini")))
    config.set_main_option("script_location", str(project_path("migrations")))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    ensure_sqlite_dir(database_url)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def charset_problems(database_url: str) -> list[str]:
    """Columns that are not utf8mb4 with the pinned binary collation (MySQL/MariaDB only)."""

    async def check() -> list[str]:
        engine = create_async_engine(engine_url(database_url))
        try:
            return await schema_charset_problems(engine)
        finally:
            await engine.dispose()

    return asyncio.run(check())
