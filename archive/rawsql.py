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
from typing import Any, Iterable, Iterator, Sequence

from sqlalchemy import event
from sqlalchemy.orm import Session

_PG: dict[str, str] = {}
CURSOR_KEY = _KEY = "rawsql.cursor"      # Catalog.raw_read puts its own cursor there


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, _transaction) -> None:
    """A cursor is cached for one transaction of a session: the next one may run on another
    pooled connection."""
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


def many(s: Session, sql: str, rows: Iterable[Sequence[Any]]) -> None:
    """One statement for many rows (executemany: prepared once)."""
    rows = list(rows)
    if not rows:
        return
    cur, q = _sql(s, sql)
    cur.executemany(q, rows)


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


@contextlib.contextmanager
def write(catalog) -> Iterator[RawWrite]:
    """A write transaction on a pooled DBAPI connection, without a Session: the same lock as
    `Catalog.write()` (SQLite `BEGIN IMMEDIATE`, PostgreSQL the advisory transaction lock), the
    same commit, and a rollback on any exception.  The durable commit of uploads and namespace
    changes (GroupCommit) runs only plain SQL, and setting up, flushing and committing a
    Session cost more Python than its statements (docs/architecture.md)."""
    conn = catalog.engine.raw_connection()
    try:
        cur = conn.cursor()
        if catalog.is_sqlite:
            cur.execute("BEGIN IMMEDIATE")
        else:
            cur.execute(_PG_WRITE_LOCK)
        yield RawWrite(cur, not catalog.is_sqlite)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()
