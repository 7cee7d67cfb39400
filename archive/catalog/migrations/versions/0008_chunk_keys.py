"""integer chunk keys: chunks.n, version_chunks.chunk, packs (pack names by integer key)

The 32-byte chunk id was stored four times per chunk reference (the chunk row, its primary key
index, the version_chunks row and its index on chunk_id) and the 32-character pack name twice
(the chunk row and ix_chunks_pack).  Now the chunk id lives in `chunks` and its unique index
only; version_chunks refers to chunks.n (a WITHOUT ROWID table in SQLite: its primary key is
the table) and chunks to packs.id.

Data moves with INSERT ... SELECT into new tables that then take the old names (SQLite and
PostgreSQL alike).  A chunk a version references but the catalog no longer has (a damaged
catalog) gets a row without a pack (`pack` NULL), so the reference survives and check and
reads report it missing as before.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

from archive.catalog.migration_checks import has as _has

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")



def upgrade() -> None:
    if _has("chunks", "n"):            # a catalog re-stamped to an older revision (tests do)
        return
    op.create_table(
        "packs",
        sa.Column("id", _KEY, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(32), nullable=False),
        sa.UniqueConstraint("name", name="uq_packs_name"),
    )
    op.execute("INSERT INTO packs (name) SELECT DISTINCT pack_id FROM chunks ORDER BY pack_id")
    op.create_table(
        "chunks_new",
        sa.Column("n", _KEY, primary_key=True, autoincrement=True),
        sa.Column("id", sa.LargeBinary(32), nullable=False),
        sa.Column("pack", sa.BigInteger(), nullable=True),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("raw_len", sa.Integer(), nullable=False),
        sa.Column("orphaned_at", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("id", name="uq_chunks_id"),
    )
    # pack by pack, in pack order: the chunks of one pack get neighbouring keys
    op.execute('INSERT INTO chunks_new (id, pack, "offset", length, raw_len, orphaned_at) '
               'SELECT c.id, p.id, c."offset", c.length, c.raw_len, c.orphaned_at '
               'FROM chunks c JOIN packs p ON p.name = c.pack_id ORDER BY p.id, c."offset"')
    op.execute('INSERT INTO chunks_new (id, pack, "offset", length, raw_len, orphaned_at) '
               'SELECT DISTINCT vc.chunk_id, CAST(NULL AS BIGINT), 0, 0, 0, CAST(NULL AS BIGINT) FROM version_chunks vc '
               'WHERE NOT EXISTS (SELECT 1 FROM chunks_new c WHERE c.id = vc.chunk_id)')
    op.create_table(
        "version_chunks_new",
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("chunk", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("version_id", "offset"),
        sqlite_with_rowid=False,
    )
    op.execute('INSERT INTO version_chunks_new (version_id, "offset", chunk, length) '
               'SELECT vc.version_id, vc."offset", c.n, vc.length FROM version_chunks vc '
               'JOIN chunks_new c ON c.id = vc.chunk_id ORDER BY vc.version_id, vc."offset"')
    op.drop_index("ix_version_chunks_chunk", "version_chunks")
    op.drop_table("version_chunks")
    op.drop_index("ix_chunks_pack", "chunks")
    op.drop_table("chunks")
    op.rename_table("chunks_new", "chunks")
    op.rename_table("version_chunks_new", "version_chunks")
    op.create_index("ix_chunks_pack", "chunks", ["pack"])


def downgrade() -> None:
    op.create_table(
        "chunks_old",
        sa.Column("id", sa.LargeBinary(32), primary_key=True),
        sa.Column("pack_id", sa.String(32), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("raw_len", sa.Integer(), nullable=False),
        sa.Column("orphaned_at", sa.BigInteger(), nullable=True),
    )
    op.execute('INSERT INTO chunks_old (id, pack_id, "offset", length, raw_len, orphaned_at) '
               'SELECT c.id, p.name, c."offset", c.length, c.raw_len, c.orphaned_at '
               'FROM chunks c JOIN packs p ON p.id = c.pack')
    op.create_table(
        "version_chunks_old",
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("chunk_id", sa.LargeBinary(32), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("version_id", "offset"),
    )
    op.execute('INSERT INTO version_chunks_old (version_id, "offset", chunk_id, length) '
               'SELECT vc.version_id, vc."offset", c.id, vc.length FROM version_chunks vc '
               'JOIN chunks c ON c.n = vc.chunk')
    op.drop_index("ix_chunks_pack", "chunks")
    op.drop_table("version_chunks")
    op.drop_table("chunks")
    op.drop_table("packs")
    op.rename_table("chunks_old", "chunks")
    op.rename_table("version_chunks_old", "version_chunks")
    op.create_index("ix_chunks_pack", "chunks", ["pack_id"])
    op.create_index("ix_version_chunks_chunk", "version_chunks", ["chunk_id"])
