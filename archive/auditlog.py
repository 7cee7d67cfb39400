"""Audit records that change nothing (failed logins, lockouts, downloads), written in batches.

A namespace change is audited inside its own transaction (``Repository.mutate``).  Reads and
failed logins have no transaction of their own, and one write transaction (an fsync) per GET
would make every download contend with uploads for the catalog's write lock.  So they go to
this queue, which one background thread writes every ``interval`` seconds in one transaction.
The price, documented: a crash loses at most the last ``interval`` seconds of such records.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from . import rawsql as raw

log = logging.getLogger("edge_archive.audit")

#: a record's user, protocol and client address are one key of `audit_origins` (a triple of
#: `audit_names` keys, 0 for none); its action, share and path's folder keys of `audit_names`
#: (migration 0017)
_INSERT = ("INSERT INTO audit_log (at, origin_n, action_n, share_n, folder_n, path, version, detail) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_KEY_OF = "SELECT id FROM audit_names WHERE name = ?"
_ADD_NAME = "INSERT INTO audit_names (name) VALUES (?) ON CONFLICT (name) DO NOTHING"
_ORIGIN_OF = "SELECT id FROM audit_origins WHERE user_n = ? AND protocol_n = ? AND address_n = ?"
_ADD_ORIGIN = ("INSERT INTO audit_origins (user_n, protocol_n, address_n) VALUES (?, ?, ?) "
               "ON CONFLICT (user_n, protocol_n, address_n) DO NOTHING")
_FRESH = "auditlog.fresh"       # s.info: keys this transaction added (not committed yet)
#: the longest folder kept as a name (audit_names.name is VARCHAR(255), which PostgreSQL enforces):
#: a record under a deeper folder keeps its whole path in `path`, as before 0017
MAX_NAME = 255


class AuditNames:
    """name (or origin triple) -> its key, for one catalog, shared by threads.

    Why a cache: a record names five strings, and a look-up each would cost more than the
    record's insert.  Only keys known to be committed are kept: a name this transaction added
    is not (its key would be reused by another name if the transaction rolled back); the next
    transaction finds it committed and keeps it.  Names are never deleted, so a kept key stays
    right for the catalog's life (a catalog rebuilt by `recover`, or migrated down and up again,
    makes new keys: it is opened by a new process, as migrations run on open)."""

    MAX_CACHED = 100_000     # (folders are names too: a huge tree's are looked up, not all kept)

    def __init__(self) -> None:
        self._keys: dict[Any, int] = {}

    def _key(self, s: Any, what: Any, find: str, add: str, params: tuple) -> int:
        k = self._keys.get(what)
        if k is not None:
            return k
        fresh = s.info.setdefault(_FRESH, {})
        k = fresh.get(what)
        if k is not None:
            return k
        row = raw.one(s, find, params)
        if row is not None:
            if len(self._keys) < self.MAX_CACHED:
                self._keys[what] = row[0]
            return row[0]
        # (ON CONFLICT: a PostgreSQL session writing batched records beside a writer)
        raw.run(s, add, params)
        k = fresh[what] = raw.scalar(s, find, params)
        return k

    def key(self, s: Any, name: str | None) -> int | None:
        return None if name is None else self._key(s, name, _KEY_OF, _ADD_NAME, (name,))

    def origin(self, s: Any, user: str | None, protocol: str | None, address: str | None) -> int:
        triple = (self.key(s, user) or 0, self.key(s, protocol) or 0, self.key(s, address) or 0)
        return self._key(s, triple, _ORIGIN_OF, _ADD_ORIGIN, triple)


def insert_rows(s: Any, rows: list[dict], names: AuditNames | None = None) -> None:
    """Write audit records (dicts of Repository.audit_row's fields) inside the transaction of
    `s` (a Session or rawsql.RawWrite): the one way records reach `audit_log`."""
    names = names or AuditNames()
    key, origin = names.key, names.origin
    out = []
    for r in rows:
        path = r["path"]
        cut = path.rfind("/") + 1 if path else 0       # the folder, up to its last "/", is a name
        if cut > MAX_NAME:
            cut = 0
        out.append((r["at"], origin(s, r["user"], r["protocol"], r["address"]), key(s, r["action"]),
                    key(s, r["share"]), key(s, path[:cut]) if cut else None, path[cut:] if cut else path,
                    r["version"], r["detail"]))
    raw.many(s, _INSERT, out)


class AuditQueue:
    """Thread-safe; the writer thread starts with the first record and ends at close()."""

    MAX_PENDING = 100_000      # beyond this, records are dropped (and counted) rather than grow memory

    def __init__(self, catalog: Any, interval: float = 0.2) -> None:
        self.catalog = catalog
        self.interval = interval
        self.dropped = 0
        self.names = AuditNames()
        self._rows: list[dict] = []
        self._cond = threading.Condition()
        self._writing = threading.Lock()   # a reader's flush waits for the writer's batch in flight
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, row: dict) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._rows) >= self.MAX_PENDING:
                self.dropped += 1
                return
            self._rows.append(row)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Write everything queued so far (callers that read the audit want their own records).

        Held under `_writing` from taking the rows to their commit: otherwise a reader's flush
        could find the queue just emptied by the writer thread, whose transaction has not
        committed yet, and read an audit without the records it is looking for."""
        with self._writing:
            with self._cond:
                rows, self._rows = self._rows, []
            if rows:
                try:
                    with self.catalog.session() as s:
                        insert_rows(s, rows, self.names)
                except Exception:        # a busy or broken catalog must not kill the writer
                    log.exception("event=audit_write_failed records=%d", len(rows))

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait(self.interval)
                closed = self._closed
            self.flush()
            if closed:
                return

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
        self.flush()
