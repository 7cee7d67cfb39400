"""S3: per-version metadata, share purge policy, share-creating users, access keys

Revision ID: 0007
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

from archive.catalog.migration_checks import has as _has

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None



def upgrade() -> None:
    for table, col in (("versions", sa.Column("meta", sa.Text(), nullable=True)),
                       ("shares", sa.Column("allow_purge", sa.Boolean(), nullable=False, server_default=sa.false())),
                       ("users", sa.Column("create_shares", sa.Boolean(), nullable=False,
                                           server_default=sa.false()))):
        if not _has(table, col.name):
            with op.batch_alter_table(table) as b:
                b.add_column(col)
    if _has("access_keys"):
        return
    op.create_table(
        "access_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("user_name", sa.String(255), nullable=False),
        sa.Column("sealed_secret", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_access_keys_user_name", "access_keys", ["user_name"])


def downgrade() -> None:
    op.drop_index("ix_access_keys_user_name", "access_keys")
    op.drop_table("access_keys")
    with op.batch_alter_table("users") as b:
        b.drop_column("create_shares")
    with op.batch_alter_table("shares") as b:
        b.drop_column("allow_purge")
    with op.batch_alter_table("versions") as b:
        b.drop_column("meta")
