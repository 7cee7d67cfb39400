"""versions.mtime and nodes.mtime are NULL when equal to created_at

A version's mtime is its creation instant unless a client set a time (FTP MFMT, WebDAV, SMB,
NFS SETATTR, `put` of a tree keeps the files' times); a file node's mtime is always its
creation instant (a file's times are its versions').  Each stored copy cost 8 B per small file
(16 B with the node's).  Now the column holds NULL for those, and every reader asks
coalesce(mtime, created_at) (the ORM through `models.Version.mtime` / `Node.mtime`, plain SQL
spelled out: archive/sharefs.py, rawsql.list_page_sql, objects, cli/lean.py).  The downgrade
writes the instants back and makes the columns NOT NULL again.

Revision ID: 0016
Revises: 0015
"""
import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

VIEW = ('CREATE VIEW version_chunks (version_id, "offset", chunk, length) AS '
        'SELECT id, 0, chunk, size FROM versions WHERE chunk IS NOT NULL '
        'UNION ALL SELECT version_id, "offset", chunk, length FROM chunk_lists')
TABLES = ("versions", "nodes")


def _nullable(table: str) -> bool:
    return any(c["name"] == "mtime" and c["nullable"] for c in sa.inspect(op.get_bind()).get_columns(table))


def _set_nullable(table: str, nullable: bool) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(table, "mtime", existing_type=sa.BigInteger(), nullable=nullable)
        return
    if table == "versions":
        op.execute("DROP VIEW IF EXISTS version_chunks")      # (SQLite: the table is copied)
    with op.batch_alter_table(table) as b:
        b.alter_column("mtime", existing_type=sa.BigInteger(), nullable=nullable)
    if table == "versions":
        op.execute(VIEW)


def upgrade() -> None:
    for table in TABLES:
        if not _nullable(table):           # (a catalog re-stamped to an older revision: already done)
            _set_nullable(table, True)
        op.execute(f"UPDATE {table} SET mtime = NULL WHERE mtime = created_at")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"UPDATE {table} SET mtime = created_at WHERE mtime IS NULL")
        _set_nullable(table, False)
