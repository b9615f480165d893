"""lifecycle at scale: crash-safe start (creating), idempotency keys, upload kinds, orphan sweeps

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

- An upload row is written (``creating``, with its key) and committed before CreateMultipartUpload,
  so ``s3_upload_id`` is empty until the store answers.
- ``idempotency_key``: a retried start with the same key (per user) returns the same upload.
- ``kind``: ``multipart``, or ``post`` (one presigned POST, for small files from Uppy).
- ``needs_sweep``: the store may hold stray multipart uploads on the key; the reaper aborts them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.alter_column("s3_upload_id", existing_type=sa.String(length=1024), nullable=True)
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="multipart"))
        batch.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("needs_sweep", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_index("ix_uploads_needs_sweep", ["needs_sweep"])
        batch.create_index("ix_uploads_status_claimed_at", ["status", "claimed_at"])
        batch.create_unique_constraint(
            "uq_uploads_creator_idempotency_key", ["created_by", "idempotency_key"]
        )
    with op.batch_alter_table("uploads") as batch:  # the defaults were for existing rows only
        batch.alter_column("kind", existing_type=sa.String(length=16), server_default=None)
        batch.alter_column("needs_sweep", existing_type=sa.Boolean(), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_constraint("uq_uploads_creator_idempotency_key", type_="unique")
        batch.drop_index("ix_uploads_status_claimed_at")
        batch.drop_index("ix_uploads_needs_sweep")
        batch.drop_column("needs_sweep")
        batch.drop_column("idempotency_key")
        batch.drop_column("kind")
        batch.alter_column("s3_upload_id", existing_type=sa.String(length=1024), nullable=False)
