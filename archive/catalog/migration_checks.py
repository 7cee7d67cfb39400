"""What the migrations ask of the live schema before a step (archive/catalog/migrations).

Steps are idempotent: a catalog re-stamped to an older revision (tests do) upgrades cleanly,
so each step first asks whether its table or column is already there."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def has(table: str, column: str | None = None) -> bool:
    """Whether `table` (or its `column`) exists on the migration's connection."""
    insp = sa.inspect(op.get_bind())
    if column is None:
        return table in insp.get_table_names()
    return any(c["name"] == column for c in insp.get_columns(table))


def has_index(name: str) -> bool:
    """Whether an index of that name exists (expression indexes included, which SQLAlchemy's
    SQLite inspector leaves out)."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = :n"
    else:
        sql = "SELECT 1 FROM pg_indexes WHERE indexname = :n"
    return bind.execute(sa.text(sql), {"n": name}).first() is not None
