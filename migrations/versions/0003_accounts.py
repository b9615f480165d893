"""accounts: sessions and refresh tokens, personal access tokens, case members, audit events,
shared rate counters

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Every existing case gets its creator as manager (until now only the creator and admins saw a case).
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from upload_plane.db import mysql_collation
from upload_plane.models import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _pinned() -> dict[str, Any]:
    """utf8mb4 with the binary collation on MySQL/MariaDB, whatever the database's default."""
    bind = op.get_bind()
    if bind.dialect.name != "mysql":
        return {}
    return {"mysql_charset": "utf8mb4", "mysql_collate": mysql_collation(bind.dialect)}


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(length=36), primary_key=True)


def upgrade() -> None:
    pinned = _pinned()
    op.create_table(
        "auth_sessions",
        _id(),
        sa.Column("user_id", sa.String(length=36), sa.ForeignKey("users.id"), nullable=False, index=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=True),
        **pinned,
    )
    op.create_table(
        "refresh_tokens",
        _id(),
        sa.Column(
            "session_id", sa.String(length=36), sa.ForeignKey("auth_sessions.id"), nullable=False, index=True
        ),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        **pinned,
    )
    op.create_table(
        "personal_access_tokens",
        _id(),
        sa.Column("user_id", sa.String(length=36), sa.ForeignKey("users.id"), nullable=False, index=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("hint", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        **pinned,
    )
    op.create_table(
        "case_members",
        sa.Column("case_id", sa.String(length=36), sa.ForeignKey("cases.id"), primary_key=True),
        sa.Column("user_id", sa.String(length=36), sa.ForeignKey("users.id"), primary_key=True, index=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("added_by", sa.String(length=36), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        **pinned,
    )
    op.create_table(
        "audit_events",
        _id(),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor_id", sa.String(length=36), nullable=True, index=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        sa.Column("case_id", sa.String(length=36), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Index("ix_audit_events_case_id_id", "case_id", "id"),
        **pinned,
    )
    op.create_table(
        "rate_counters",
        sa.Column("key", sa.String(length=200), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
        **pinned,
    )
    op.execute(
        "INSERT INTO case_members (case_id, user_id, role, added_by, created_at, updated_at) "
        "SELECT id, created_by, 'manager', created_by, created_at, created_at FROM cases"
    )


def downgrade() -> None:
    for table in (
        "rate_counters",
        "audit_events",
        "case_members",
        "personal_access_tokens",
        "refresh_tokens",
        "auth_sessions",
    ):
        op.drop_table(table)
