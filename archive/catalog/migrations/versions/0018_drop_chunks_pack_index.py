"""drop ix_chunks_pack: gc and check read the chunk rows by pack in one pass (~11 B a chunk)

The index served four queries, all in archive/gc.py and archive/check.py (nothing on the read or
commit path asks for a pack's chunks): gc's live bytes of each pack (now one GROUP BY over the
rows before its loop), the chunks of a pack it rewrites and the count under the write lock
before it deletes one (a scan each, only for packs being rewritten, next to reading and writing
up to 64 MiB of pack), and check's packs in use (one pass).  Measured in docs/benchmarks.md
"catalog15".

Revision ID: 0018
Revises: 0017
"""
from alembic import op

from archive.catalog.migration_checks import has_index

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if has_index("ix_chunks_pack"):
        op.drop_index("ix_chunks_pack", "chunks")


def downgrade() -> None:
    if not has_index("ix_chunks_pack"):
        op.create_index("ix_chunks_pack", "chunks", ["pack"])
