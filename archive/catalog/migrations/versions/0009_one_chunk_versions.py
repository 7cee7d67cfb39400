"""one-chunk versions keep their chunk in the version row (versions.chunk); version_chunks is a view

A small file is one chunk: its version_chunks row (version, offset 0, chunk, length = size) and
that table's primary key entry cost more than the version row itself.  Now `versions.chunk`
holds the chunk key of a one-chunk version, `chunk_lists` the rows of longer ones (and of
nothing else), and the view `version_chunks` puts both together as the old table was, so every
reader stays as it was:

    SELECT id, 0, chunk, size FROM versions WHERE chunk IS NOT NULL
    UNION ALL SELECT version_id, "offset", chunk, length FROM chunk_lists

A lookup by version_id reaches both arms' primary keys (SQLite pushes the WHERE into each arm
of a UNION ALL view; PostgreSQL flattens it into an Append).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

from archive.catalog.migration_checks import has as _has

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

VIEW = ('CREATE VIEW version_chunks (version_id, "offset", chunk, length) AS '
        'SELECT id, 0, chunk, size FROM versions WHERE chunk IS NOT NULL '
        'UNION ALL SELECT version_id, "offset", chunk, length FROM chunk_lists')



def upgrade() -> None:
    if _has("chunk_lists"):             # a catalog re-stamped to an older revision (tests do)
        return
    op.add_column("versions", sa.Column("chunk", sa.BigInteger(), nullable=True))
    op.rename_table("version_chunks", "chunk_lists")
    # one-chunk versions: the chunk moves into the version row
    op.execute("UPDATE versions SET chunk = (SELECT cl.chunk FROM chunk_lists cl WHERE cl.version_id = versions.id) "
               "WHERE size > 0 AND (SELECT count(*) FROM chunk_lists cl WHERE cl.version_id = versions.id) = 1 "
               "AND EXISTS (SELECT 1 FROM chunk_lists cl WHERE cl.version_id = versions.id "
               'AND cl."offset" = 0 AND cl.length = versions.size)')
    op.execute("DELETE FROM chunk_lists WHERE version_id IN (SELECT id FROM versions WHERE chunk IS NOT NULL)")
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW version_chunks")
    op.execute('INSERT INTO chunk_lists (version_id, "offset", chunk, length) '
               "SELECT id, 0, chunk, size FROM versions WHERE chunk IS NOT NULL")
    op.rename_table("chunk_lists", "version_chunks")
    with op.batch_alter_table("versions") as b:
        b.drop_column("chunk")
