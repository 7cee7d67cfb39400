"""auth generation (revocation on the next request) and per-share change instants (.snapshots)

Revision ID: 0004
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "auth_state" not in tables:
        _auth_state()
    if "share_changes" not in tables:
        _share_changes()


def _auth_state() -> None:
    op.create_table(
        "auth_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO auth_state (id, generation) VALUES (1, 0)")


def _share_changes() -> None:
    op.create_table(
        "share_changes",
        sa.Column("share_id", sa.Integer(), nullable=False),
        sa.Column("at_s", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("share_id", "at_s"),
    )
    # Existing history: every second in which a version was made or a name came or went.
    op.execute("""
        INSERT INTO share_changes (share_id, at_s)
        SELECT DISTINCT share_id, t FROM (
            SELECT n.share_id AS share_id, v.created_at / 1000000 AS t
              FROM versions v JOIN nodes n ON n.id = v.node_id
            UNION SELECT n.share_id, d.valid_from / 1000000
              FROM dentries d JOIN nodes n ON n.id = d.node_id
            UNION SELECT n.share_id, d.valid_to / 1000000
              FROM dentries d JOIN nodes n ON n.id = d.node_id WHERE d.valid_to IS NOT NULL
        ) AS changes""")


def downgrade() -> None:
    op.drop_table("share_changes")
    op.drop_table("auth_state")
