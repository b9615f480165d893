"""upload links: write-only, expiring capabilities to upload into one log, with budgets

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

- ``upload_links``: the token's SHA-256 (the token is shown once), its log, expiry, revocation,
  optional ``max_files``/``max_bytes`` and the counters that are kept within them.
- ``upload_link_uploads``: which upload came through which link and the bytes it reserved.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from upload_plane.db import mysql_collation
from upload_plane.models import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
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
        "upload_links",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("log_id", sa.String(length=36), sa.ForeignKey("logs.id"), nullable=False, index=True),
        sa.Column("case_id", sa.String(length=36), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("hint", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=36), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("max_files", sa.Integer(), nullable=True),
        sa.Column("max_bytes", sa.BigInteger(), nullable=True),
        sa.Column("files_used", sa.Integer(), nullable=False),
        sa.Column("bytes_used", sa.BigInteger(), nullable=False),
        **pinned,
    )
    op.create_table(
        "upload_link_uploads",
        # no foreign key to uploads: deleting a file (admins) leaves the link's history
        sa.Column("upload_id", sa.String(length=36), primary_key=True),
        sa.Column(
            "link_id", sa.String(length=36), sa.ForeignKey("upload_links.id"), nullable=False, index=True
        ),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("released_at", UTCDateTime(), nullable=True),
        **pinned,
    )


def downgrade() -> None:
    op.drop_table("upload_link_uploads")
    op.drop_table("upload_links")
