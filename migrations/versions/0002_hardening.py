"""claims, per-creator case references, normalised usernames, utf8mb4 pinned on every table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

- uploads: ``completing_since`` becomes ``claimed_at`` beside a new ``claim_token`` (the claim that
  holds a row in completing/aborting/expiring/deleting; see uploads/state.py).
- cases: a reference is unique per creator, not across all cases (a clash leaked other cases).
- users: usernames are stored normalised (NFKC, trimmed, lower-case) and compared exactly.
- MySQL/MariaDB: every table is converted to utf8mb4 with a binary, no-pad collation, whatever the
  server's or the database's default character set (MariaDB's built-in default is latin1).
"""

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql as mysql_types

from upload_plane.db import mysql_collation

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("users", "cases", "logs", "files", "uploads", "alembic_version")


def _normalise(username: str) -> str:
    # Frozen copy of the rule at this revision (auth/usernames.py may change later).
    return unicodedata.normalize("NFKC", username).strip().lower()


def _datetime(bind: sa.Connection) -> sa.types.TypeEngine[object]:
    return mysql_types.DATETIME(fsp=6) if bind.dialect.name == "mysql" else sa.DateTime()


def _convert_to_utf8mb4(bind: sa.Connection) -> None:
    """Convert every table; MariaDB refuses to change a column a foreign key uses (even with
    foreign_key_checks off), so the keys are dropped first and re-created as they were."""
    collation = mysql_collation(bind.dialect)
    inspector = sa.inspect(bind)
    keys = {table: inspector.get_foreign_keys(table) for table in TABLES if table != "alembic_version"}
    for table, table_keys in keys.items():
        for key in table_keys:
            op.drop_constraint(key["name"], table, type_="foreignkey")
    for table in TABLES:
        op.execute(f"ALTER TABLE `{table}` CONVERT TO CHARACTER SET utf8mb4 COLLATE {collation}")
    # Converting a latin1 TEXT widens it to MEDIUMTEXT to keep its length in bytes; a filename of at
    # most 16,000 characters fits a utf8mb4 TEXT, as the models say.
    for table in ("files", "uploads"):
        op.execute(f"ALTER TABLE `{table}` MODIFY `filename` TEXT NOT NULL")
    for table, table_keys in keys.items():
        for key in table_keys:
            op.create_foreign_key(
                key["name"], table, key["referred_table"], key["constrained_columns"], key["referred_columns"]
            )


def _username_renames(bind: sa.Connection, users: sa.TableClause) -> dict[str, str]:
    """User id -> normalised name, for the names that change; refuses clashes before any change
    (MySQL's DDL is not transactional: a failure after it would leave a half-migrated schema)."""
    rows = bind.execute(sa.select(users.c.id, users.c.username)).all()
    owners: dict[str, list[str]] = {}
    for user_id, username in rows:
        owners.setdefault(_normalise(username), []).append(user_id)
    clashes = {name: ids for name, ids in owners.items() if len(ids) > 1}
    if clashes:
        raise RuntimeError(
            "these users have the same normalised username; rename all but one before migrating: "
            + "; ".join(f"{name!r}: {', '.join(ids)}" for name, ids in sorted(clashes.items()))
        )
    return {user_id: _normalise(name) for user_id, name in rows if _normalise(name) != name}


def upgrade() -> None:
    bind = op.get_bind()
    mysql = bind.dialect.name == "mysql"
    users = sa.table("users", sa.column("id", sa.String), sa.column("username", sa.String))
    renames = _username_renames(bind, users)

    if mysql:
        _convert_to_utf8mb4(bind)

    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("claim_token", sa.String(length=32), nullable=True))
        batch.alter_column(
            "completing_since",
            new_column_name="claimed_at",
            existing_type=_datetime(bind),
            existing_nullable=True,
        )

    if mysql:
        op.drop_index("reference", table_name="cases")  # MySQL names an unnamed unique key by its column
        op.create_unique_constraint("uq_cases_creator_reference", "cases", ["created_by", "reference"])
    else:
        with op.batch_alter_table(
            "cases", naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"}
        ) as batch:
            batch.drop_constraint("uq_cases_reference", type_="unique")
            batch.create_unique_constraint("uq_cases_creator_reference", ["created_by", "reference"])

    for user_id, normal in renames.items():
        bind.execute(sa.update(users).where(users.c.id == user_id).values(username=normal))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "mysql":
        op.drop_constraint("uq_cases_creator_reference", "cases", type_="unique")
        op.create_unique_constraint("reference", "cases", ["reference"])
    else:
        with op.batch_alter_table("cases") as batch:
            batch.drop_constraint("uq_cases_creator_reference", type_="unique")
            batch.create_unique_constraint("uq_cases_reference", ["reference"])
    with op.batch_alter_table("uploads") as batch:
        batch.alter_column(
            "claimed_at",
            new_column_name="completing_since",
            existing_type=_datetime(bind),
            existing_nullable=True,
        )
        batch.drop_column("claim_token")
    # Usernames stay normalised and tables stay utf8mb4: both are valid under revision 0001.
