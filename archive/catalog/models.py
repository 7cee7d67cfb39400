"""Catalog tables (SQLAlchemy 2.x typed models).

Times are integer microseconds since the epoch (UTC): exact, cheap to compare, and the same in
SQLite and PostgreSQL.  The namespace is temporal: a dentry is valid from `valid_from` until
`valid_to` (NULL while current), so any past instant can be listed.
"""
from __future__ import annotations

from sqlalchemy import (DDL, BigInteger, Boolean, Column, ForeignKey, Index, Integer, LargeBinary, MetaData, String,
                        Table, Text, UniqueConstraint, event, func, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column
from sqlalchemy.types import TypeDecorator

from ..types import etag_blob, etag_text


class Base(DeclarativeBase):
    pass


class HexBytes(TypeDecorator):
    """A hex string (a version's etag) stored as its bytes: 16 B instead of 32 characters
    (migration 0014).  The ORM converts here; the plain-SQL readers with `types.etag_text`."""
    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else etag_blob(value)

    def result_processor(self, dialect, coltype):
        # (not LargeBinary's, which refuses a text value: a bulk loader's row stays readable)
        return _etag_or_none


def _etag_or_none(value):
    return None if value is None else etag_text(value)


class Share(Base):
    __tablename__ = "shares"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    root_node: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    retention: Mapped[str | None] = mapped_column(Text)
    worm_days: Mapped[int] = mapped_column(Integer, default=0)
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    quota: Mapped[int | None] = mapped_column(BigInteger)
    options: Mapped[str | None] = mapped_column(Text)   # JSON: adapter policies (junk files...)
    allow_purge: Mapped[bool] = mapped_column(Boolean, default=False)   # clients may delete versions for good
    # logical bytes of the current files (archive/usage.py: moved by every event in its own
    # transaction, checked against the SUM by `check`, recounted by `recover`; migration 0015)
    used: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    nt_hash: Mapped[str | None] = mapped_column(String(64))   # only for SMB-enabled users
    created_at: Mapped[int] = mapped_column(BigInteger)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    create_shares: Mapped[bool] = mapped_column(Boolean, default=False)   # may create shares (S3 CreateBucket)


class Grant(Base):
    __tablename__ = "grants"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    share_id: Mapped[int] = mapped_column(ForeignKey("shares.id", ondelete="CASCADE"), primary_key=True)
    mode: Mapped[str] = mapped_column(String(2))   # "ro" | "rw"


class Node(Base):
    """A file's or directory's identity: survives renames; its id is the inode number."""
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    share_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(4))       # "file" | "dir"
    created_at: Mapped[int] = mapped_column(BigInteger)
    # directories: last change; files: see versions.  Stored NULL when equal to created_at (8 B a
    # file, migration 0016): `mtime` reads coalesce(mtime, created_at), as every SQL reader does
    stored_mtime: Mapped[int | None] = mapped_column("mtime", BigInteger, nullable=True)
    mtime: Mapped[int] = column_property(func.coalesce(stored_mtime, created_at))


class Dentry(Base):
    __tablename__ = "dentries"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    parent_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(255))
    # the case fold (paths.fold) of a name that is not its own fold; NULL for the others (most
    # names): case-insensitive lookups ask `name_fold = k OR (name_fold IS NULL AND name = k)`
    # (migration 0011; archive/events.py writes it, archive/sharefs.py asks)
    name_fold: Mapped[str | None] = mapped_column(String(255))
    node_id: Mapped[int] = mapped_column(BigInteger)
    valid_from: Mapped[int] = mapped_column(BigInteger)
    valid_to: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (
        Index("ix_dentries_parent_name", "parent_id", "name", "valid_to"),
        Index("ix_dentries_parent_fold", "parent_id", "name_fold",
              sqlite_where=text("name_fold IS NOT NULL"), postgresql_where=text("name_fold IS NOT NULL")),
        Index("ix_dentries_node", "node_id"),
    )


class Version(Base):
    __tablename__ = "versions"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    node_id: Mapped[int] = mapped_column(BigInteger)
    number: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    # NULL when equal to created_at (a client set no time: most versions; 8 B, migration 0016):
    # `mtime` reads coalesce(mtime, created_at), as every SQL reader does (events.stored_time)
    stored_mtime: Mapped[int | None] = mapped_column("mtime", BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[int] = column_property(func.coalesce(stored_mtime, created_at))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    etag: Mapped[str] = mapped_column(HexBytes)      # the hex digest's bytes (0014)
    origin_protocol: Mapped[str | None] = mapped_column(String(16))
    origin_user: Mapped[str | None] = mapped_column(String(255))
    origin_address: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[str | None] = mapped_column(Text)      # JSON: per-version object metadata (S3: md5, type, x-amz-meta-*)
    chunk: Mapped[int | None] = mapped_column(BigInteger)   # a one-chunk version's chunk (chunks.n)
    # no index on created_at (migration 0010): every lookup by time also names the node
    __table_args__ = (UniqueConstraint("node_id", "number"),)


class VersionChunk(Base):
    """The ordered chunk list of a version of two chunks or more (a one-chunk version keeps
    its chunk in `versions.chunk`); `offset` makes random access a range lookup.  `chunk` is
    the chunk's integer key (chunks.n), not its 32-byte id.  No index on `chunk`: only gc and
    check ask which versions use a chunk, and they scan.  Readers use the view
    `version_chunks` (VERSION_CHUNKS_VIEW): both forms as one list."""
    __tablename__ = "chunk_lists"
    version_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    chunk: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(Integer)
    __table_args__ = {"sqlite_with_rowid": False}


#: every chunk row of every version, one-chunk versions included (migration 0009 creates it;
#: `create_all` too, for tests that build a catalog from the models)
VERSION_CHUNKS_VIEW = ('CREATE VIEW version_chunks (version_id, "offset", chunk, length) AS '
                       "SELECT id, 0, chunk, size FROM versions WHERE chunk IS NOT NULL "
                       'UNION ALL SELECT version_id, "offset", chunk, length FROM chunk_lists')
event.listen(Base.metadata, "after_create", DDL(VERSION_CHUNKS_VIEW))
event.listen(Base.metadata, "before_drop", DDL("DROP VIEW IF EXISTS version_chunks"))


class Pack(Base):
    """Pack names (32 hex digits) by integer key: a chunk row holds the key (chunks.pack)."""
    __tablename__ = "packs"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)


class Chunk(Base):
    """A stored chunk: `id` is its 32-byte content id (dedup looks it up: rawsql.CHUNK_BY_ID), `n` the
    integer key version_chunks refer to.  `pack` NULL: a chunk a version references but no
    pack holds (recover found no record of it); reads report it missing, a new upload of the
    same bytes fills it in."""
    __tablename__ = "chunks"
    n: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    id: Mapped[bytes] = mapped_column(LargeBinary(32))   # unique by its first 16 bytes: rawsql.CHUNK_BY_ID
    pack: Mapped[int | None] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(Integer)        # record length in the pack
    raw_len: Mapped[int] = mapped_column(Integer)
    orphaned_at: Mapped[int | None] = mapped_column(BigInteger)
    # no index on `pack` (migration 0018, ~11 B a chunk): gc and check, the only readers by pack,
    # take every pack's figures in one pass over the rows
    __table_args__ = (Index("uq_chunks_id16", text("substr(id, 1, 16)"), unique=True),)


class Property(Base):
    """Dead properties (WebDAV PROPPATCH), per node."""
    __tablename__ = "properties"
    node_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Lock(Base):
    """Protocol locks (WebDAV), in the catalog so several processes agree."""
    __tablename__ = "locks"
    token: Mapped[str] = mapped_column(String(128), primary_key=True)
    share: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    root: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(16))
    depth: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str | None] = mapped_column(Text)
    principal: Mapped[str | None] = mapped_column(String(255))
    timeout: Mapped[float] = mapped_column()
    expires_at: Mapped[float] = mapped_column()
    created_at: Mapped[float] = mapped_column()
    __table_args__ = (Index("ix_locks_share_path", "share", "path"), Index("ix_locks_root", "root"))


class AuditName(Base):
    """A string the audit trail repeats in every record (a user, a protocol, an address, an
    action, a share name, a path's folder), stored once: `audit_log` holds its key (migration 0017, ~14 B a record
    at one version per record).  Names are only ever added, so a key once committed stays valid
    (archive/auditlog.py caches them)."""
    __tablename__ = "audit_names"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)


class AuditOrigin(Base):
    """Who wrote a record: (user, protocol, address) as keys of `audit_names`, 0 for none (so the
    unique constraint holds: NULLs are all distinct).  One key in the record instead of three:
    the triples are few (a user from a client), and each key costs a record ~2 B (0017)."""
    __tablename__ = "audit_origins"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_n: Mapped[int] = mapped_column(Integer)
    protocol_n: Mapped[int] = mapped_column(Integer)
    address_n: Mapped[int] = mapped_column(Integer)
    __table_args__ = (UniqueConstraint("user_n", "protocol_n", "address_n"),)


class AuditLog(Base):
    """The audit trail as stored: the repeated strings as keys of `audit_names`.  Written only
    through archive/auditlog.py (`insert_rows`); read through the view `audit` (AuditEvent)."""
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[int] = mapped_column(BigInteger)     # no index (0013): `--since` scans the trail
    origin_n: Mapped[int] = mapped_column(Integer)      # audit_origins.id: user, protocol, address
    action_n: Mapped[int] = mapped_column(Integer)
    share_n: Mapped[int | None] = mapped_column(Integer)
    # a path's folder ("/a/b/") is a name too: records of one folder repeat it; `path` holds the rest
    folder_n: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)


#: the audit trail with its strings, as the table `audit` was before 0017: every reader (the ORM's
#: AuditEvent, `archivectl audit`, ad-hoc SQL) sees the same columns and values
AUDIT_VIEW = ('CREATE VIEW audit (id, at, "user", protocol, address, action, share, path, version, detail) AS '
               "SELECT a.id, a.at, u.name, p.name, ad.name, ac.name, sh.name, coalesce(f.name || a.path, a.path), "
               "a.version, a.detail "
               "FROM audit_log a LEFT JOIN audit_origins o ON o.id = a.origin_n LEFT JOIN audit_names u ON u.id = o.user_n "
               "LEFT JOIN audit_names p ON p.id = o.protocol_n LEFT JOIN audit_names ad ON ad.id = o.address_n "
               "LEFT JOIN audit_names ac ON ac.id = a.action_n LEFT JOIN audit_names sh ON sh.id = a.share_n "
               "LEFT JOIN audit_names f ON f.id = a.folder_n")
event.listen(Base.metadata, "after_create", DDL(AUDIT_VIEW))
event.listen(Base.metadata, "before_drop", DDL("DROP VIEW IF EXISTS audit"))

#: views are not tables `create_all` makes: their Table objects live outside Base.metadata
_VIEWS = MetaData()


class AuditEvent(Base):
    """One audit record as read (the view `audit`, read only; write with auditlog.insert_rows)."""
    __table__ = Table(
        "audit", _VIEWS,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("at", BigInteger), Column("user", String(255)), Column("protocol", String(16)),
        Column("address", String(64)), Column("action", String(32)), Column("share", String(255)),
        Column("path", Text), Column("version", Integer), Column("detail", Text))


class ChainHead(Base):
    """The newest committed transaction of the commit chain (one row, id 1).

    Every catalog transaction writes one pack record naming this head as its parent, and moves
    the head to itself in the same write transaction, so the committed records form one chain
    that `recover` follows (see docs/architecture.md, "Events, the commit chain and recover")."""
    __tablename__ = "chain_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    txid: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[int] = mapped_column(BigInteger)

class AuthState(Base):
    """One row: a generation number every user, password, grant or anonymous-share change moves
    (in the same transaction, through the events, so `recover` rebuilds it).  Adapters read it
    once per request or command: when it has not moved, nothing about any login changed."""
    __tablename__ = "auth_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class ShareChange(Base):
    """Each second in which a share's namespace changed (a version, a folder, a name added or
    removed): what `.snapshots` lists, with one indexed range scan per share."""
    __tablename__ = "share_changes"
    share_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at_s: Mapped[int] = mapped_column(BigInteger, primary_key=True)

class AccessKey(Base):
    """An S3 access key of a user.  The secret is sealed with a key derived from the repository's
    master key (kept in keys.json, outside the catalog): a copied catalog does not hand it out."""
    __tablename__ = "access_keys"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(255), index=True)
    sealed_secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
