"""processing after the upload: each file's processing state and results, and the outbox

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

- ``file_processing``: per file, the processing state (``pending``, ``running``, ``done``, ``failed``)
  and what the workers found: the SHA-256 computed from the store, the detected type, media facts,
  the preview's object key, the last error.
- ``processing_outbox``: files whose processing was asked for and not yet put on the job queue.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from upload_plane.db import mysql_collation
from upload_plane.models import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _pinned() -> dict[str, Any]:
    """utf8mb4 with the binary collation on MySQL/MariaDB, whatever the database's default."""
    bind = op.get_bind()
    if bind.dialect.name != "mysql":
        return {}
    return {"mysql_charset": "utf8mb4", "mysql_collate": mysql_collation(bind.dialect)}


def upgrade() -> None:
    pinned = _pinned()
    op.create_table(
        "file_processing",
        sa.Column("file_id", sa.String(length=36), primary_key=True),
        sa.Column("status", sa.String(length=16), nullable=False, index=True),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.String(length=32), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("crc64nvme_matches", sa.Boolean(), nullable=True),
        sa.Column("detected_type", sa.String(length=255), nullable=True),
        sa.Column("type_matches", sa.Boolean(), nullable=True),
        sa.Column("media", sa.Text(), nullable=True),
        sa.Column("preview_key", sa.String(length=800), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        **pinned,
    )
    op.create_table(
        "processing_outbox",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("file_id", sa.String(length=36), nullable=False, index=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        **pinned,
    )


def downgrade() -> None:
    op.drop_table("processing_outbox")
    op.drop_table("file_processing")
