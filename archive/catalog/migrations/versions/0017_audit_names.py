"""the audit trail's repeated strings as keys of one names table; `audit` becomes a view

Every record of the trail (one per write) repeated its user, protocol, client address, action
and share name as text, and each path its folder: ~14 B a record for the bench's short names
("root", "cli", "write"), more for real users, addresses and folders.  They are now keys
(1-2 B) of `audit_names`, the user, protocol and address together one key of `audit_origins`
(a triple of name keys); the records live in `audit_log`, and `audit` is a view with the same columns and values as the table was, so
`archivectl audit` (the ORM's AuditEvent) and ad-hoc SQL read the same.  Writers go through
archive/auditlog.py (`insert_rows`).  The downgrade makes the table again from the view.

Revision ID: 0017
Revises: 0016
"""
import sqlalchemy as sa
from alembic import op

from archive.catalog.migration_checks import has

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

VIEW = ('CREATE VIEW audit (id, at, "user", protocol, address, action, share, path, version, detail) AS '
         "SELECT a.id, a.at, u.name, p.name, ad.name, ac.name, sh.name, coalesce(f.name || a.path, a.path), "
         "a.version, a.detail "
         "FROM audit_log a LEFT JOIN audit_origins o ON o.id = a.origin_n LEFT JOIN audit_names u ON u.id = o.user_n "
         "LEFT JOIN audit_names p ON p.id = o.protocol_n LEFT JOIN audit_names ad ON ad.id = o.address_n "
         "LEFT JOIN audit_names ac ON ac.id = a.action_n LEFT JOIN audit_names sh ON sh.id = a.share_n "
         "LEFT JOIN audit_names f ON f.id = a.folder_n")
NAMED = ('"user"', "protocol", "address", "action", "share")
#: a path's folder, up to its last "/" (rtrim drops the trailing characters that are not "/"),
#: stored as a name too ('' for a path without "/": no name, the whole path in `path`)
FOLDER = "rtrim({p}, replace({p}, '/', ''))"
#: folders longer than a name may be (VARCHAR(255)) stay in the record's path (auditlog.MAX_NAME)
SHORT = "length({f}) <= 255"
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    if has("audit_log"):                # (a catalog re-stamped to an older revision: already done)
        return
    op.create_table("audit_names",
                    sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("name", sa.String(length=255), nullable=False),
                    sa.PrimaryKeyConstraint("id"), sa.UniqueConstraint("name"))
    op.create_table("audit_origins",
                    sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("user_n", sa.Integer(), nullable=False),
                    sa.Column("protocol_n", sa.Integer(), nullable=False),
                    sa.Column("address_n", sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint("id"), sa.UniqueConstraint("user_n", "protocol_n", "address_n"))
    op.create_table("audit_log",
                    sa.Column("id", _ID, autoincrement=True, nullable=False),
                    sa.Column("at", sa.BigInteger(), nullable=False),
                    sa.Column("origin_n", sa.Integer(), nullable=False),
                    sa.Column("action_n", sa.Integer(), nullable=False),
                    sa.Column("share_n", sa.Integer(), nullable=True),
                    sa.Column("folder_n", sa.Integer(), nullable=True),
                    sa.Column("path", sa.Text(), nullable=True),
                    sa.Column("version", sa.Integer(), nullable=True),
                    sa.Column("detail", sa.Text(), nullable=True),
                    sa.PrimaryKeyConstraint("id"))
    union = " UNION ".join(f"SELECT {c} AS n FROM audit WHERE {c} IS NOT NULL"
                           for c in NAMED + (FOLDER.format(p="path"),))
    short = SHORT.format(f=FOLDER.format(p="path"))
    union = union.replace(f"WHERE {FOLDER.format(p='path')} IS NOT NULL",
                          f"WHERE {FOLDER.format(p='path')} IS NOT NULL AND {short}")
    op.execute(f"INSERT INTO audit_names (name) SELECT n FROM ({union}) AS u WHERE n <> '' ORDER BY n")
    key = "(SELECT id FROM audit_names WHERE name = {})".format
    origin = [f"coalesce({key('a.' + c)}, 0)" for c in NAMED[:3]]
    op.execute("INSERT INTO audit_origins (user_n, protocol_n, address_n) "
               f"SELECT DISTINCT {', '.join(origin)} FROM audit a")
    folder = FOLDER.format(p="a.path")
    fits = SHORT.format(f=folder)
    op.execute("INSERT INTO audit_log (id, at, origin_n, action_n, share_n, folder_n, path, version, detail) "
               "SELECT a.id, a.at, (SELECT o.id FROM audit_origins o WHERE "
               f"o.user_n = {origin[0]} AND o.protocol_n = {origin[1]} AND o.address_n = {origin[2]}), "
               f"{', '.join(key('a.' + c) for c in NAMED[3:])}, CASE WHEN {fits} THEN {key(folder)} END, "
               f"CASE WHEN {fits} THEN substr(a.path, length({folder}) + 1) ELSE a.path END, "
               "a.version, a.detail FROM audit a ORDER BY a.id")
    op.drop_table("audit")
    op.execute(VIEW)
    if op.get_bind().dialect.name == "postgresql":     # (ids go on from the copied records)
        op.execute("SELECT setval(pg_get_serial_sequence('audit_log', 'id'), "
                   "coalesce((SELECT max(id) FROM audit_log), 0) + 1, false)")


def downgrade() -> None:
    if not has("audit_log"):
        return
    op.create_table("audit_down",
                    sa.Column("id", _ID, autoincrement=True, nullable=False),
                    sa.Column("at", sa.BigInteger(), nullable=False),
                    sa.Column("user", sa.String(length=255), nullable=True),
                    sa.Column("protocol", sa.String(length=16), nullable=True),
                    sa.Column("address", sa.String(length=64), nullable=True),
                    sa.Column("action", sa.String(length=32), nullable=False),
                    sa.Column("share", sa.String(length=255), nullable=True),
                    sa.Column("path", sa.Text(), nullable=True),
                    sa.Column("version", sa.Integer(), nullable=True),
                    sa.Column("detail", sa.Text(), nullable=True),
                    sa.PrimaryKeyConstraint("id"))
    op.execute('INSERT INTO audit_down (id, at, "user", protocol, address, action, share, path, version, detail) '
               'SELECT id, at, "user", protocol, address, action, share, path, version, detail FROM audit ORDER BY id')
    op.execute("DROP VIEW audit")
    op.rename_table("audit_down", "audit")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT setval(pg_get_serial_sequence('audit', 'id'), "
                   "coalesce((SELECT max(id) FROM audit), 0) + 1, false)")
    op.drop_table("audit_log")
    op.drop_table("audit_origins")
    op.drop_table("audit_names")
