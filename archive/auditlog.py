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

from .lazysql import models as m

log = logging.getLogger("edge_archive.audit")


class AuditQueue:
    """Thread-safe; the writer thread starts with the first record and ends at close()."""

    MAX_PENDING = 100_000      # beyond this, records are dropped (and counted) rather than grow memory

    def __init__(self, catalog: Any, interval: float = 0.2) -> None:
        self.catalog = catalog
        self.interval = interval
        self.dropped = 0
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
                        s.execute(m.AuditEvent.__table__.insert(), rows)
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
