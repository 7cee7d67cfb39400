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


def test_a_name_added_by_a_rolled_back_transaction_is_not_remembered(repo):
    """The names cache keeps only committed keys: a name first seen in a transaction that rolls
    back must not keep the key, which the next new name then takes (SQLite reuses it)."""
    import pytest
    from archive.auditlog import insert_rows

    class Boom(Exception):
        pass

    names = repo.audit_log.names
    with pytest.raises(Boom):
        with repo.catalog.write() as s:
            insert_rows(s, [repo.audit_row("first", Origin("ftp", "10.0.0.1", "mallory"))], names)
            raise Boom
    with repo.catalog.write() as s:      # a new name takes the key the rolled-back one had
        insert_rows(s, [repo.audit_row("second", Origin("ftp", "10.0.0.2", "trudy"))], names)
    with repo.catalog.write() as s:
        insert_rows(s, [repo.audit_row("third", Origin("ftp", "10.0.0.1", "mallory"))], names)
    got = [(r.action, r.user, r.address) for r in repo.audit_events() if r.action in ("first", "second", "third")]
    assert got == [("second", "trudy", "10.0.0.2"), ("third", "mallory", "10.0.0.1")]
