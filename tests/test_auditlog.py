"""archive/auditlog.py: batched audit records are visible to whoever reads the audit."""
from __future__ import annotations

import contextlib
import threading

from archive.repository import Origin


class _SlowCommit:
    """The real catalog, whose writer-thread sessions pause before committing (a slow disk)."""

    def __init__(self, catalog, writer_inside: threading.Event, release: threading.Event) -> None:
        self._catalog = catalog
        self._inside = writer_inside
        self._release = release

    @contextlib.contextmanager
    def session(self):
        with self._catalog.session() as s:
            yield s
            if threading.current_thread().name == "audit-writer":
                self._inside.set()
                self._release.wait(10)


def test_a_flush_waits_for_the_batch_the_writer_thread_is_committing(repo):
    """The writer thread has taken the queued rows and not committed them yet: a reader's flush
    must not return before they are in the catalog (this once lost a failed login from
    `audit_events` under load)."""
    inside, release = threading.Event(), threading.Event()
    q = repo.audit_log
    q.catalog = _SlowCommit(repo.catalog, inside, release)
    repo.audit_later("login_failed", Origin("ftp", "127.0.0.1", "alice"))
    assert inside.wait(10), "the writer thread never took the row"
    threading.Timer(0.3, release.set).start()     # the slow commit finishes a little later
    failed = [(r.protocol, r.user) for r in repo.audit_events() if r.action == "login_failed"]
    assert failed == [("ftp", "alice")]


def test_records_queued_by_many_threads_are_all_written_once(repo):
    def burst(k: int) -> None:
        for i in range(50):
            repo.audit_later("download", Origin("webdav", "127.0.0.1", f"u{k}"), "office", f"/f{i}")

    threads = [threading.Thread(target=burst, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = [(r.user, r.path) for r in repo.audit_events() if r.action == "download"]
    assert sorted(rows) == sorted((f"u{k}", f"/f{i}") for k in range(4) for i in range(50))
