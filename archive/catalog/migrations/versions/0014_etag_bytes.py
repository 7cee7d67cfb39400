"""versions.etag: the hex digest's 16 bytes instead of its 32 characters (16 B a version)

Every etag the core writes is a hex digest (`streams.content_etag`; "" for a deletion), and every
reader of the column turns it back into the same text: the ORM through the column's type
(`models.HexBytes`), the plain-SQL readers with `types.etag_text` (the listing, the current
version, the S3 listing, the CLI's lean reader); the commit event keeps the text, and
`events._insert_version` stores `types.etag_blob` of it, so recover writes the same bytes.

SQLite: the values are converted row by row (3.40 has no unhex()), then the column's declared type
changes with a table copy (the view version_chunks is dropped around it: SQLite refuses to rename
a table while a view names a missing one).  PostgreSQL: one ALTER ... USING, the same rule in SQL.  An etag that
is not a lower-case 32-character digest (none the core writes) keeps its text (`types.etag_blob`).

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

from archive.types import etag_blob, etag_text

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

VIEW = ('CREATE VIEW version_chunks (version_id, "offset", chunk, length) AS '
        'SELECT id, 0, chunk, size FROM versions WHERE chunk IS NOT NULL '
        'UNION ALL SELECT version_id, "offset", chunk, length FROM chunk_lists')

# types.etag_blob and etag_text in SQL
_PG_UP = ("CASE WHEN etag ~ '^[0-9a-f]{32}$' THEN decode(etag, 'hex') WHEN etag = '' THEN ''::bytea "
          "WHEN octet_length(etag) = 15 THEN '\\x7e3d'::bytea || convert_to(etag, 'UTF8') "
          "ELSE '\\x3d'::bytea || convert_to(etag, 'UTF8') END")
_PG_DOWN = ("CASE WHEN length(etag) = 16 THEN encode(etag, 'hex') WHEN length(etag) = 0 THEN '' "
            "WHEN length(etag) = 17 AND substring(etag from 1 for 2) = '\\x7e3d'::bytea "
            "THEN convert_from(substring(etag from 3), 'UTF8') "
            "ELSE convert_from(substring(etag from 2), 'UTF8') END")


def _is_text() -> bool:
    col = [c for c in sa.inspect(op.get_bind()).get_columns("versions") if c["name"] == "etag"][0]
    return isinstance(col["type"], sa.String)


def _convert(fn) -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, etag FROM versions WHERE etag IS NOT NULL")).fetchall()
    changed = [{"i": i, "e": v} for i, v in ((i, fn(e)) for i, e in rows) if v is not None]
    if changed:
        bind.execute(sa.text("UPDATE versions SET etag = :e WHERE id = :i"), changed)


def _sqlite_retype(type_) -> None:
    op.execute("DROP VIEW IF EXISTS version_chunks")
    with op.batch_alter_table("versions") as b:
        b.alter_column("etag", type_=type_, existing_nullable=True)
    op.execute(VIEW)


def upgrade() -> None:
    if not _is_text():
        return                        # (a catalog re-stamped to an older revision: already done)
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("versions", "etag", type_=sa.LargeBinary(), existing_nullable=True,
                        postgresql_using=_PG_UP)
        return
    _convert(lambda e: etag_blob(e) if isinstance(e, str) else None)
    _sqlite_retype(sa.LargeBinary())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("versions", "etag", type_=sa.String(64), existing_nullable=True,
                        postgresql_using=_PG_DOWN)
        return
    _convert(lambda e: etag_text(e) if isinstance(e, (bytes, memoryview)) else None)
    _sqlite_retype(sa.String(64))
