"""Engine setup and sessions for the catalog.

SQLite runs in WAL mode with a busy timeout so several processes (one systemd unit per
protocol) share it; write transactions start with BEGIN IMMEDIATE so two writers queue for the
lock up front instead of deadlocking on a read-to-write upgrade.

SQLAlchemy is imported when a Catalog first needs its engine (a Session, an ORM query, Alembic),
not with this module nor with the Catalog: the CLI's lean read path (archive/cli/lean.py) needs
only `SCHEMA_HEAD`, `missing_catalog` and `sqlite_connect`, and `archive/rawsql.py`'s plain-SQL
transactions (the durable commit of uploads) run on DBAPI connections.  For a local SQLite
catalog already at this release's schema (`migrate` checks it with stdlib sqlite3), those
connections are stdlib `sqlite3` ones made here with the engine's own settings (`NATIVE_PRAGMAS`),
so `archivectl put` of a small file never imports SQLAlchemy (~0.25 s of CPU, docs/benchmarks.md).
The first use of `Catalog.engine` ends that mode for good: every connection then comes from the
engine as before (one path per process phase, and what tests hook on the engine sees them all).
PostgreSQL, a catalog URL with options, and a schema Alembic must upgrade always use the engine.
"""
from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import ArchiveError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

_tx = threading.local()

#: how much of a SQLite catalog each connection maps into memory (bytes; EDGE_ARCHIVE_SQLITE_MMAP,
#: 0 turns it off).  Why: SQLite's own page cache is ~2 MiB a connection, so a lookup in a catalog
#: of hundreds of MB (1,000,000 files) paid a pread per B-tree level; mapped, a page the kernel
#: holds costs a memory read.  The mapping is of the file, shared by every connection and process
#: (page cache, reclaimable): it adds no private memory, though touched pages count in RSS.
#: Writes still go through the WAL (SQLite maps the database file only for reads).
MMAP_DEFAULT = 256 * 1024 * 1024


def mmap_size() -> int:
    import os
    try:
        return max(0, int(os.environ.get("EDGE_ARCHIVE_SQLITE_MMAP", MMAP_DEFAULT)))
    except ValueError:
        return MMAP_DEFAULT


#: what every connection to a SQLite catalog runs first: the engine's (make_engine) and the
#: stdlib ones of the commit path (Catalog.dbapi_connect) alike
NATIVE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA busy_timeout=60000", "PRAGMA synchronous=FULL",
                  "PRAGMA foreign_keys=ON")
_SQLITE_TIMEOUT = 60


def _set_pragmas(dbapi_conn) -> None:
    cur = dbapi_conn.cursor()
    for pragma in NATIVE_PRAGMAS:
        cur.execute(pragma)
    cur.execute(f"PRAGMA mmap_size={mmap_size()}")
    cur.close()


def make_engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event
    sqlite = url.startswith("sqlite")
    kwargs = {"future": True}
    if sqlite:
        kwargs["connect_args"] = {"timeout": _SQLITE_TIMEOUT, "check_same_thread": False}
        kwargs["pool_size"] = 16
        kwargs["max_overflow"] = 64
    engine = create_engine(url, **kwargs)
    if sqlite:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None        # we emit BEGIN ourselves
            _set_pragmas(dbapi_conn)

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            # Straight on the DBAPI connection: through exec_driver_sql, building the statement's
            # execution context cost more Python than SQLite spends on the whole transaction.
            conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE" if getattr(_tx, "write", False) else "BEGIN")
    return engine


class RawRead:
    """Stands in for a Session where only `archive/rawsql.py` statements run (Catalog.raw_read)."""
    __slots__ = ("info",)

    def __init__(self, cursor, postgres: bool) -> None:
        from .. import rawsql
        self.info = {rawsql.CURSOR_KEY: (cursor, postgres)}


class Catalog:
    """Owns the engine (made on first use); hands out read sessions and write sessions (one
    transaction each), and DBAPI connections for archive/rawsql.py (`dbapi_connect`)."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgres = url.startswith("postgresql")
        self._engine: "Engine | None" = None
        self._sessions = None
        self._lock = threading.Lock()
        #: the SQLite file the commit path opens with stdlib sqlite3 while no engine exists (set
        #: by `migrate` once it has seen the schema at head; None: connections come from the engine)
        self.native: Path | None = None
        self._raw_idle = None        # archive/rawsql.py's idle connections of this catalog

    def native_file(self) -> Path | None:
        """The catalog's file when the URL is a plain local SQLite file (no options, not in memory)."""
        prefix = "sqlite:///"
        if not self.url.startswith(prefix) or "?" in self.url or self._engine is not None:
            return None
        rest = self.url[len(prefix):]
        return Path(rest) if rest and rest != ":memory:" else None

    @property
    def engine(self) -> "Engine":
        engine = self._engine
        if engine is None:
            with self._lock:
                engine = self._engine
                if engine is None:
                    engine = self._make_engine()
        return engine

    def _make_engine(self) -> "Engine":
        from sqlalchemy import event
        from sqlalchemy.orm import sessionmaker

        from .. import rawsql
        rawsql.hook_sessions()
        engine = make_engine(self.url)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        ref = weakref.ref(self)

        def _disposed(*_):
            cat = ref()
            if cat is not None:
                cat._clear_idle()
        event.listen(engine, "engine_disposed", _disposed)
        self._engine = engine
        # From now on the commit path takes its connections from the engine too; the stdlib ones
        # still idle are closed (one in use is closed when its transaction ends).
        self.native = None
        self._clear_idle()
        return engine

    def dbapi_connect(self):
        """A new DBAPI connection of this catalog for plain-SQL transactions (the caller owns
        and closes it): stdlib sqlite3 in native mode, else one detached from the engine's pool."""
        native = self.native
        if native is not None:
            return sqlite_connect(native, write=True)
        fairy = self.engine.raw_connection()
        conn = fairy.dbapi_connection
        fairy.detach()                   # the caller's from now on
        return conn

    def _clear_idle(self) -> None:
        idle = self._raw_idle
        if idle is not None:
            idle.clear()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A read (or lightweight) session; commits on success."""
        self.engine                   # made (with the sessionmaker) on first use
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    @contextlib.contextmanager
    def raw_read(self) -> Iterator["RawRead"]:
        """A read-only transaction for the plain-SQL statements of `archive/rawsql.py` alone, on a
        pooled DBAPI connection without a Session (whose set-up and commit cost more Python than
        the one or two lookups a commit's early checks run).  Rolled back at the end.
        In native mode, on the commit path's own idle connections (rawsql.read)."""
        if self.native is not None:
            from .. import rawsql
            with rawsql.read(self) as s:
                yield s
            return
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            if self.is_sqlite:
                cur.execute("BEGIN")         # one snapshot for all its statements, as a session has
            yield RawRead(cur, not self.is_sqlite)
        finally:
            try:
                conn.rollback()
            finally:
                conn.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction that takes the database's write lock at its start."""
        self.engine                   # made (with the sessionmaker) on first use
        prev = getattr(_tx, "write", False)
        _tx.write = True
        try:
            with self._sessions() as s:
                s.connection()        # BEGIN IMMEDIATE happens here (SQLite)
                _tx.write = prev
                if not self.is_sqlite:
                    # One writer at a time, as SQLite's write lock gives: ids are allocated as max+1.
                    from sqlalchemy import text
                    s.execute(text("SELECT pg_advisory_xact_lock(7242)"))
                try:
                    yield s
                    s.commit()
                except BaseException:
                    s.rollback()
                    raise
        finally:
            _tx.write = prev

    def close(self) -> None:
        self.native = None
        self._clear_idle()
        if self._engine is not None:
            self._engine.dispose()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class SchemaTooNew(ArchiveError):
    pass


SCHEMA_HEAD = "0018"      # the newest file in migrations/versions (a test keeps them in step)


def _current_revision(catalog: Catalog) -> str | None:
    from sqlalchemy import text
    try:
        with catalog.engine.connect() as conn:
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
            conn.rollback()
    except Exception:           # no table yet: a new catalog
        return None
    return row[0] if row else None


def migrate(catalog: Catalog) -> None:
    """Bring the catalog schema to this release's head with Alembic; refuse a newer schema.

    The common case (already at head) is one query: Alembic is imported only to upgrade.  For
    a local SQLite file that query runs on stdlib sqlite3, and a catalog at head is then put in
    native mode (Catalog.native) without making the engine; anything else goes through it."""
    native = catalog.native_file()
    if native is not None:
        try:
            conn = sqlite_connect(native)
        except sqlite3.Error:           # no file yet (a new repository), unreadable: the engine says
            conn = None
        if conn is not None:
            try:
                head = schema_revision(conn.cursor()) == SCHEMA_HEAD
            finally:
                conn.close()
            if head:
                catalog.native = native
                return
    if _current_revision(catalog) == SCHEMA_HEAD:
        return
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    here = Path(__file__).parent
    cfg = Config()
    cfg.set_main_option("script_location", str(here / "migrations"))
    script = ScriptDirectory.from_config(cfg)
    heads = set(script.get_heads())
    with catalog.engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    if current == heads:
        return
    known = {r.revision for r in script.walk_revisions()}
    unknown = current - known
    if unknown:
        raise SchemaTooNew(f"the catalog schema ({', '.join(sorted(unknown))}) is newer than this "
                           "edge-archive; upgrade the software")
    with catalog.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def missing_catalog(repo_dir: Path) -> Path | None:
    """The SQLite catalog file an existing local repository at `repo_dir` should have but does
    not (None when it is there, when the repository uses another catalog URL, or when there is
    no repository).  Opening such a repository would create an empty catalog in its place: the
    caller should say so and point to `archivectl recover`, which rebuilds it from the packs."""
    import json
    try:
        config = json.loads((repo_dir / "config.json").read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("catalog"):
        return None
    db = repo_dir / "catalog.sqlite"
    return None if db.exists() else db


def sqlite_connect(db: Path, write: bool = False) -> sqlite3.Connection:
    """A stdlib connection to an existing SQLite catalog, set up as `make_engine` sets up its own
    (autocommit: the caller emits BEGIN; busy timeout), for plain SQL without SQLAlchemy; with
    `write`, every pragma of the engine's connections (WAL, synchronous=FULL, foreign keys).
    Never creates the file (sqlite3.OperationalError when it is missing)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=_SQLITE_TIMEOUT,
                           isolation_level=None, check_same_thread=False)
    try:
        if write:
            _set_pragmas(conn)
        else:
            conn.execute("PRAGMA busy_timeout=60000")
    except BaseException:
        conn.close()
        raise
    return conn


def schema_revision(cursor) -> str | None:
    """The catalog's schema revision (Alembic's version table) on a DBAPI cursor; None if none."""
    try:
        cursor.execute("SELECT version_num FROM alembic_version")
        row = cursor.fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def sql_now_check(catalog: Catalog) -> None:
    from sqlalchemy import text
    with catalog.engine.connect() as c:
        c.execute(text("SELECT 1"))
