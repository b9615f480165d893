"""whole-file checksums: uploads may declare a full-object CRC64NVME (and SHA-256) that the store checks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("checksum_algorithm", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("crc64nvme", sa.String(length=16), nullable=True))
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("crc64nvme", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("verified_by", sa.String(length=16), nullable=True))
    # Uploads started before this revision recorded their declared SHA-256 on the file only.
    op.execute(
        "UPDATE uploads SET sha256 = (SELECT files.sha256 FROM files WHERE files.id = uploads.file_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("verified_by")
        batch.drop_column("crc64nvme")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("crc64nvme")
        batch.drop_column("sha256")
        batch.drop_column("checksum_algorithm")
