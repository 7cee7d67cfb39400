"""drop ix_versions_created: no query looks versions up by creation time alone (18 B a version)

Every statement that filters on versions.created_at also names the node (`node_id = ?`), which
the (node_id, number) key answers; the snapshots list has its own table (share_changes).

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if any(ix["name"] == "ix_versions_created" for ix in sa.inspect(op.get_bind()).get_indexes("versions")):
        op.drop_index("ix_versions_created", "versions")


def downgrade() -> None:
    op.create_index("ix_versions_created", "versions", ["created_at"])
