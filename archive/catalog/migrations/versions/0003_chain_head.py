"""chain_head: the newest committed transaction of the commit chain (recover follows the chain)

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("chain_head"):      # a catalog stamped back by hand
        return
    op.create_table(
        "chain_head",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("txid", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("chain_head")
