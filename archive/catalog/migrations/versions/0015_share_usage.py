"""shares.used: a share's usage counter, computed for the existing data

The quota's usage (logical bytes of the share's current files) was a SUM over the share's
live names and their newest versions, run when every upload started: O(N^2) for a tree put
into a quota'd share.  It is now a counter in the share's row that every event moves in its
own transaction (archive/usage.py).  The upgrade computes it with that same SUM; the
downgrade drops the column (the SUM is the usage again).

Revision ID: 0015
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

from archive.catalog.migration_checks import has

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

#: the reference SUM, per share (archive/usage.SUM_SQL; kept here as it was at this revision)
_SUM = ("SELECT n.share_id, coalesce(sum(v.size), 0) FROM dentries d JOIN nodes n ON n.id = d.node_id "
        "JOIN versions v ON v.node_id = n.id AND v.number = (SELECT max(number) FROM versions WHERE node_id = n.id) "
        "WHERE n.kind = 'file' AND d.valid_to IS NULL GROUP BY n.share_id")


def upgrade() -> None:
    if not has("shares", "used"):
        op.add_column("shares", sa.Column("used", sa.BigInteger(), nullable=False, server_default="0"))
    bind = op.get_bind()
    totals = dict(bind.execute(sa.text(_SUM)).all())
    bind.execute(sa.text("UPDATE shares SET used = 0"))
    for share, total in totals.items():
        bind.execute(sa.text("UPDATE shares SET used = :u WHERE id = :s"), {"u": int(total), "s": share})


def downgrade() -> None:
    if has("shares", "used"):
        with op.batch_alter_table("shares") as b:      # SQLite: the (small) table is copied
            b.drop_column("used")
