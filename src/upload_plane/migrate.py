"""Run alembic migrations from code (``upload-plane migrate``, the dev server, the tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from .db import ensure_sqlite_dir
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
