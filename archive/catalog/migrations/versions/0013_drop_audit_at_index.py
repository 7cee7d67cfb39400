"""drop ix_audit_at: `audit --since` reads the trail instead of an index on it (18 B a record)

The only query that filtered the audit by time was `Repository.audit_events(since=...)`
(`archivectl audit --since`), an administrator's command; the index cost ~18 B for every record
of the trail (one per write), which is most of what the catalog keeps per small version.  The
trail's time is not an order the rows are stored in (a download's or a failed login's record is
written by the batching thread after later writes, and several processes write one catalog), so
there is no exact bisect on the id: `--since` now scans the trail, newest last, as `--user` and
`--protocol` always did.  (SQLite reads a million records in well under a second.)

Revision ID: 0013
Revises: 0012
"""
from alembic import op

from archive.catalog.migration_checks import has_index

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if has_index("ix_audit_at"):
        op.drop_index("ix_audit_at", "audit")


def downgrade() -> None:
    if not has_index("ix_audit_at"):
        op.create_index("ix_audit_at", "audit", ["at"])
