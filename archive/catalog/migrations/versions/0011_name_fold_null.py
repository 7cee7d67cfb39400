"""dentries.name_fold is NULL when the name is its own case fold; its index holds the others only

A case-insensitive share looks a name up by its case fold (paths.fold: casefold + NFC).  Most
names are their own fold (lower case, digits, punctuation), and stored it twice: in the row and
in ix_dentries_parent_fold (~13 + 25 B per name at 20,000 small files).  Now `name_fold` is
NULL for those, ix_dentries_parent_fold is a partial index (WHERE name_fold IS NOT NULL: the
names that differ from their fold), and a case-insensitive lookup of the folded key k asks

    parent_id = ? AND ((name_fold IS NULL AND name = k) OR name_fold = k)

which ix_dentries_parent_name answers for the first arm and the partial index for the second
(SQLite: MULTI-INDEX OR; PostgreSQL: BitmapOr).  Which names a lookup finds is unchanged: a
row matches k exactly when fold(name) == k, as before.

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_PARTIAL = sa.text("name_fold IS NOT NULL")


def _fold_index() -> dict | None:
    for ix in sa.inspect(op.get_bind()).get_indexes("dentries"):
        if ix["name"] == "ix_dentries_parent_fold":
            return ix
    return None


def upgrade() -> None:
    nullable = any(c["name"] == "name_fold" and c["nullable"]
                   for c in sa.inspect(op.get_bind()).get_columns("dentries"))
    if _fold_index() is not None:
        op.drop_index("ix_dentries_parent_fold", "dentries")
    if not nullable:                  # (a catalog re-stamped to an older revision: already done)
        with op.batch_alter_table("dentries") as b:     # SQLite: the table is copied
            b.alter_column("name_fold", existing_type=sa.String(255), nullable=True)
    op.execute("UPDATE dentries SET name_fold = NULL WHERE name_fold = name")
    op.create_index("ix_dentries_parent_fold", "dentries", ["parent_id", "name_fold"],
                    sqlite_where=_PARTIAL, postgresql_where=_PARTIAL)


def downgrade() -> None:
    op.drop_index("ix_dentries_parent_fold", "dentries")
    op.execute("UPDATE dentries SET name_fold = name WHERE name_fold IS NULL")
    with op.batch_alter_table("dentries") as b:
        b.alter_column("name_fold", existing_type=sa.String(255), nullable=False)
    op.create_index("ix_dentries_parent_fold", "dentries", ["parent_id", "name_fold"])
