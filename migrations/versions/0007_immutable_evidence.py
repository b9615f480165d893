"""immutable evidence: the recorded version of a file's bytes, and keys to empty once no handed-out
URL can write them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

- ``files.version_id``: the store's version of the recorded bytes (versioned or lock-enabled bucket);
  downloads name it.
- ``store_purges``: keys the reaper empties (every version) once ``not_before`` has passed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from upload_plane.db import pinned_table_options
from upload_plane.models import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("files") as files:
        files.add_column(sa.Column("version_id", sa.String(length=255), nullable=True))
    op.create_table(
        "store_purges",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("key", sa.String(length=700), nullable=False),
        sa.Column("not_before", UTCDateTime(), nullable=False, index=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        **pinned_table_options(op.get_bind().dialect),
    )


def downgrade() -> None:
    op.drop_table("store_purges")
    with op.batch_alter_table("files") as files:
        files.drop_column("version_id")
