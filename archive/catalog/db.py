"""Engine setup and sessions for the catalog.

SQLite runs in WAL mode with a busy timeout so several processes (one systemd unit per
protocol) share it; write transactions start with BEGIN IMMEDIATE so two writers queue for the
lock up front instead of deadlocking on a read-to-write upgrade.

SQLAlchemy is imported when a Catalog is made, not with this module: the CLI's lean read path
(archive/cli/lean.py) needs only `SCHEMA_HEAD`, `missing_catalog` and `sqlite_connect`, and
`archivectl ls` must not pay ~0.25 s of CPU for an ORM it does not use (docs/benchmarks.md).
"""
from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import ArchiveError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

_tx = threading.local()


def make_engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event
    sqlite = url.startswith("sqlite")
    kwargs = {"future": True}
    if sqlite:
        kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        kwargs["pool_size"] = 16
        kwargs["max_overflow"] = 64
    engine = create_engine(url, **kwargs)
    if sqlite:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None        # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

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
    """Owns the engine; hands out read sessions and write sessions (one transaction each)."""

    def __init__(self, url: str):
        from sqlalchemy.orm import sessionmaker
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.is_sqlite = url.startswith("sqlite")

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A read (or lightweight) session; commits on success."""
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
        the one or two lookups a commit's early checks run).  Rolled back at the end."""
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
        self.engine.dispose()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class SchemaTooNew(ArchiveError):
    pass


SCHEMA_HEAD = "0007"      # the newest file in migrations/versions (a test keeps them in step)


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

    The common case (already at head) is one query: Alembic is imported only to upgrade."""
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


def sqlite_connect(db: Path) -> sqlite3.Connection:
    """A stdlib connection to an existing SQLite catalog, set up as `make_engine` sets up its own
    (autocommit: the caller emits BEGIN; busy timeout), for plain-SQL reads without SQLAlchemy.
    Never creates the file (sqlite3.OperationalError when it is missing)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=60, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=60000")
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
