"""the processing outbox is a mark on the file's processing row

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08

- ``file_processing.outbox_at``: when the file's processing was asked for and not yet put on the job
  queue (``NULL`` once the relay has put it there). The completion step writes the row and its mark
  in one INSERT, instead of a row here and another in ``processing_outbox``.
- ``processing_outbox`` is gone; what it held becomes the marks of the rows it named.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from upload_plane.db import pinned_table_options
from upload_plane.ids import new_id
from upload_plane.models import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PROCESSING = sa.table(
    "file_processing", sa.column("file_id", sa.String()), sa.column("outbox_at", UTCDateTime())
)
_OUTBOX = sa.table(
    "processing_outbox",
    sa.column("id", sa.String()),
    sa.column("file_id", sa.String()),
    sa.column("created_at", UTCDateTime()),
)


def upgrade() -> None:
    with op.batch_alter_table("file_processing") as processing:
        processing.add_column(sa.Column("outbox_at", UTCDateTime(), nullable=True))
        processing.create_index("ix_file_processing_outbox_at", ["outbox_at"])
    earliest = (
        sa.select(sa.func.min(_OUTBOX.c.created_at))
        .where(_OUTBOX.c.file_id == _PROCESSING.c.file_id)
        .scalar_subquery()
    )
    op.execute(_PROCESSING.update().values(outbox_at=earliest))
    op.drop_table("processing_outbox")


def downgrade() -> None:
    op.create_table(
        "processing_outbox",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("file_id", sa.String(length=36), nullable=False, index=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        **pinned_table_options(op.get_bind().dialect),
    )
    bind = op.get_bind()
    marked = bind.execute(
        sa.select(_PROCESSING.c.file_id, _PROCESSING.c.outbox_at).where(_PROCESSING.c.outbox_at.is_not(None))
    ).all()
    if marked:
        op.bulk_insert(
            _OUTBOX,  # type: ignore[arg-type]
            [{"id": new_id(), "file_id": file_id, "created_at": at} for file_id, at in marked],
        )
    with op.batch_alter_table("file_processing") as processing:
        processing.drop_index("ix_file_processing_outbox_at")
        processing.drop_column("outbox_at")
