"""The catalog's hot statements, run on the DBAPI cursor of the session's own connection.

Why: a small-file version runs a dozen statements, and building and compiling each through
SQLAlchemy (Core or ORM) cost 50-200 us of Python, while SQLite executes it in a few us
(docs/benchmarks.md, "corewrite").  These statements are plain SQL written once, in qmark
style (`?`), and translated once per dialect (psycopg: `%s`); the DBAPI caches the prepared
statement (sqlite3 by text, psycopg after a few executions).  They run on the same connection
and inside the same transaction (and savepoints) as the session, so atomicity, the write lock
and rollback are exactly those of the surrounding `Catalog.write()`.

Only SQL that means the same in SQLite and PostgreSQL goes here: quoted identifiers for the
reserved words ("offset", "user"), `ON CONFLICT ... DO NOTHING/UPDATE`, `RETURNING`.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

if TYPE_CHECKING:          # SQLAlchemy is imported only by a process that makes a Session
    from sqlalchemy.orm import Session

#: a chunk row by its 32-byte id (bound twice): the unique index is on the id's first 16 bytes
#: (migration 0012), the row holds the whole id
CHUNK_BY_ID = "substr(id, 1, 16) = substr(?, 1, 16) AND id = ?"
#: the conflict target of an upsert into chunks (the same unique index)
CHUNK_ID_KEY = "(substr(id, 1, 16))"

_PG: dict[str, str] = {}
CURSOR_KEY = _KEY = "rawsql.cursor"      # Catalog.raw_read puts its own cursor there
_hooked = False
_HOOK_LOCK = threading.Lock()


def hook_sessions() -> None:
    """Forget a session's cached cursor at the end of each of its transactions (the next one may
    run on another pooled connection).  Catalog calls this before it makes its first Session:
    this module itself must not import SQLAlchemy (the commit path runs without it)."""
    global _hooked
    if _hooked:
        return
    with _HOOK_LOCK:
        if _hooked:
            return
        from sqlalchemy import event
        from sqlalchemy.orm import Session
        event.listen(Session, "after_transaction_end", _forget)
        _hooked = True


def _forget(session: "Session", _transaction) -> None:
    session.info.pop(_KEY, None)


def _sql(s: Session, sql: str) -> tuple[Any, str]:
    got = s.info.get(_KEY)
    if got is None:
        conn = s.connection()
        got = s.info[_KEY] = (conn.connection.dbapi_connection.cursor(), conn.dialect.name == "postgresql")
    cur, pg = got
    if pg:
        q = _PG.get(sql)
        if q is None:
            q = _PG[sql] = sql.replace("?", "%s")
        return cur, q
    return cur, sql


def run(s: Session, sql: str, params: Sequence[Any] = ()) -> Any:
    """Execute one statement; returns the cursor (fetchone/fetchall for SELECT and RETURNING)."""
    cur, q = _sql(s, sql)
    cur.execute(q, params)
    return cur


def one(s: Session, sql: str, params: Sequence[Any] = ()) -> tuple | None:
    """The first row of a query, or None."""
    return run(s, sql, params).fetchone()


def scalar(s: Session, sql: str, params: Sequence[Any] = ()) -> Any:
    row = one(s, sql, params)
    return None if row is None else row[0]


def many(s: Session, sql: str, rows: Iterable[Sequence[Any]]) -> int:
    """One statement for many rows (executemany: prepared once); returns the number of rows
    it changed (sqlite3 and psycopg 3 both sum executemany's row counts)."""
    rows = list(rows)
    if not rows:
        return 0
    cur, q = _sql(s, sql)
    cur.executemany(q, rows)
    return cur.rowcount


def is_postgres(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


class RawWrite:
    """Stands in for the Session of a write transaction whose statements are all plain SQL of
    this module (`write`): it has the `info` a Session has (the cursor, the folder cache, the id
    counter) and a `flush` with nothing to flush; no ORM."""
    __slots__ = ("info",)

    def __init__(self, cursor, postgres: bool) -> None:
        self.info = {_KEY: (cursor, postgres)}

    def flush(self) -> None:
        pass


#: PostgreSQL: one writer at a time across nodes, as Catalog.write() takes it (same key)
_PG_WRITE_LOCK = "SELECT pg_advisory_xact_lock(7242)"


class _Idle:
    """Idle DBAPI connections of one catalog for the plain-SQL transactions of the commit path
    (`read`, `write`), made by `Catalog.dbapi_connect` (stdlib sqlite3 in its native mode, else
    taken out of the engine's pool once) and kept on a stack: a client committing file after
    file gets back the connection it just used.  The pool's checkout and checkin (events, weak
    references, the reset) cost ~8 us each, three times per small commit.  At most MAX stay
    idle; Catalog.close (and the engine's dispose, and the end of native mode) closes them, and
    a connection a transaction left in doubt (its rollback failed) is closed, not reused."""
    MAX = 8

    def __init__(self, catalog) -> None:
        self.catalog = weakref.ref(catalog)    # a strong one would keep the catalog (the key) alive
        self.gen = 0
        self.conns: list = []
        self.pg = catalog.is_postgres

    def get(self) -> tuple[int, Any]:
        try:
            return self.conns.pop()
        except IndexError:
            pass
        gen = self.gen
        return gen, self.catalog().dbapi_connect()

    def put(self, item: tuple[int, Any]) -> None:
        if item[0] == self.gen and len(self.conns) < self.MAX:
            self.conns.append(item)
        else:
            item[1].close()

    def clear(self, *_) -> None:
        self.gen += 1
        conns, self.conns = self.conns, []
        for _gen, conn in conns:
            conn.close()


_IDLE_LOCK = threading.Lock()


def _idle(catalog) -> _Idle:
    got = catalog._raw_idle
    if got is None:
        with _IDLE_LOCK:
            got = catalog._raw_idle
            if got is None:
                got = catalog._raw_idle = _Idle(catalog)
    return got


@contextlib.contextmanager
def _txn(catalog, begin: str | None, commit: bool) -> Iterator[RawWrite]:
    idle = _idle(catalog)
    item = idle.get()
    conn = item[1]
    try:
        cur = conn.cursor()
        if begin:
            cur.execute(begin)
        yield RawWrite(cur, idle.pg)
        if commit:
            conn.commit()
        else:
            conn.rollback()
    except BaseException:
        try:
            conn.rollback()
        except BaseException:
            conn.close()               # in doubt (a lost PostgreSQL connection): never reused
            raise
        idle.put(item)
        raise
    idle.put(item)


def read(catalog) -> "contextlib.AbstractContextManager[RawWrite]":
    """A read transaction (one snapshot, rolled back at the end) for plain SQL of this module:
    what `Catalog.raw_read` does, on the commit path's own idle connections."""
    return _txn(catalog, None if _idle(catalog).pg else "BEGIN", commit=False)


def write(catalog) -> "contextlib.AbstractContextManager[RawWrite]":
    """A write transaction on a DBAPI connection, without a Session: the same lock as
    `Catalog.write()` (SQLite `BEGIN IMMEDIATE`, PostgreSQL the advisory transaction lock), the
    same commit, and a rollback on any exception.  The durable commit of uploads and namespace
    changes (GroupCommit) runs only plain SQL, and setting up, flushing and committing a
    Session cost more Python than its statements (docs/architecture.md)."""
    return _txn(catalog, _PG_WRITE_LOCK if _idle(catalog).pg else "BEGIN IMMEDIATE", commit=True)


def select_all(catalog, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple]:
    """All rows of one SELECT on one of the catalog's idle connections, SQLite only (named
    `:name` parameters as sqlite3 takes them, so a statement kept for SQLAlchemy's `text()` runs
    as it is written).  No BEGIN: a single statement reads one snapshot on its own, and an idle
    connection is never inside a transaction (stdlib ones are autocommit; an engine's pysqlite
    connection begins only before a write).  What a Reader runs for its window of chunks
    (archive/streams.py): through `engine.connect()` that was a pool checkout, a compile and a
    Result per small file read.  A connection whose statement failed is closed, not reused."""
    idle = _idle(catalog)
    item = idle.get()
    try:
        rows = item[1].execute(sql, params).fetchall()
    except BaseException:
        item[1].close()
        raise
    idle.put(item)
    return rows


def list_page_sql(now: bool) -> str:
    """One page of a folder listing (ShareFS.listdir), keyset-paged by name: each live entry
    (at an instant) with its newest version (at that instant), or NULLs (a folder, a file
    without content yet).  Parameters: [at,] parent, [at, at,] after, limit.

    The newest version is found as its row id by one search of the (node_id, number) index,
    which holds the id, and then read by its primary key; `v.number = (SELECT max(number) ...)`
    searched that index twice per entry (docs/benchmarks.md, "walk9").  Same rows: the pair
    (node_id, number) is unique."""
    alive = "d.valid_to IS NULL" if now else "d.valid_from <= ? AND (d.valid_to IS NULL OR d.valid_to > ?)"
    vcond = "" if now else " AND v2.created_at <= ?"
    # (mtime columns: NULL when equal to created_at, migration 0016; no version: v.* all NULL)
    return ("SELECT d.name, d.node_id, n.kind, n.created_at, coalesce(n.mtime, n.created_at), v.number, v.size, "
            "coalesce(v.mtime, v.created_at), v.etag "
            "FROM dentries d JOIN nodes n ON n.id = d.node_id "
            "LEFT JOIN versions v ON v.id = "
            f"(SELECT v2.id FROM versions v2 WHERE v2.node_id = d.node_id{vcond} ORDER BY v2.number DESC LIMIT 1) "
            f"WHERE d.parent_id = ? AND {alive} AND d.name > ? ORDER BY d.name LIMIT ?")
