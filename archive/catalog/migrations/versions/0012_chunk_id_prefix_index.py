"""chunks: the unique index on the 32-byte id becomes a unique index on its first 16 bytes

The chunk id (a keyed BLAKE3-256 of the chunk's bytes) was stored twice: in the chunk row and
in its unique index (~45 B per chunk at 20,000 small files).  The index now holds the id's first
16 bytes (`substr(id, 1, 16)`, unique), the row the whole id; a lookup names both,

    substr(id, 1, 16) = substr(?, 1, 16) AND id = ?

so it searches the short index and compares the full id.  Two ids alike in their first 128 bits
of a keyed hash cannot be made on purpose without the repository's id key, and by chance they
are ~2^64 chunks away; if it ever happened, the second chunk would be refused at its commit (the
upsert in archive/store.py only takes over a row of the same full id), never mixed up.

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

from archive.catalog.migration_checks import has_index

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

PREFIX = "substr(id, 1, 16)"


def upgrade() -> None:
    if has_index("uq_chunks_id16"):
        return                        # (a catalog re-stamped to an older revision: already done)
    insp = sa.inspect(op.get_bind())
    names = [u["name"] for u in insp.get_unique_constraints("chunks") if u["column_names"] == ["id"]]
    if names:
        with op.batch_alter_table("chunks") as b:       # SQLite: the table is copied (same keys)
            for name in names:
                b.drop_constraint(name, type_="unique")
    op.create_index("uq_chunks_id16", "chunks", [sa.text(PREFIX)], unique=True)


def downgrade() -> None:
    op.drop_index("uq_chunks_id16", "chunks")
    with op.batch_alter_table("chunks") as b:
        b.create_unique_constraint("uq_chunks_id", ["id"])
