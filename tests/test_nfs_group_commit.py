"""The core's group commit as NFS calls in flight use it: REMOVEs / CREATEs of several request
threads and the commit loop's batch of versions (GroupCommit.commit_all) queued together.

Each waiting thread sleeps on a lock of its own and is woken once, when its items are
committed or when it is to lead the next batch (archive/streams.py): these tests check that
every caller hears its own outcome, that batches are cut at MAX_BATCH in arrival order with
leadership handed from thread to thread (a caller of commit_all whose items span batches
among them), and that nobody is left waiting."""
from __future__ import annotations

import threading
import time

from sqlalchemy import text

from archive import errors


def _head_seq(repo) -> int:
    with repo.catalog.session() as s:
        return s.execute(text("SELECT seq FROM chain_head WHERE id = 1")).scalar()


def _join(threads: list[threading.Thread], budget: float) -> None:
    """Join all, `budget` seconds in all: a hang guard (a caller never woken), not a timing."""
    end = time.monotonic() + budget
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))


def _prepared(fs, path: str, data: bytes):
    w = fs.open_write(path, check=False)
    w.write(data)
    w.prepare()
    return w


def test_queued_removes_creates_and_a_commit_all_batch_each_hear_their_own_outcome(repo):
    fs = repo.share("office")
    fs.mkdir("/g")
    for i in range(8):
        w = fs.open_write(f"/g/f{i}")
        w.write(b"old %d" % i)
        w.commit()
    gc = repo.group_commit
    gc.MAX_BATCH = 4                     # this instance only: 15 queued items, 4 transactions
    got: dict[str, object] = {}
    threads: list[threading.Thread] = []

    def run(name, fn):
        try:
            got[name] = fn()
        except Exception as e:                                  # noqa: BLE001
            got[name] = e

    # removes of existing and missing files, creates (one of a taken name), then a batch of
    # five versions from one thread (the NFS commit loop's), then more removes
    calls = [(f"rm{i}", (lambda i=i: fs.remove(f"/g/f{i}"))) for i in range(4)]
    calls += [("rm-missing", lambda: fs.remove("/g/nothing")),
              ("create-new", lambda: fs.create_file("/g/new")),
              ("create-taken", lambda: fs.create_file("/g/f7"))]
    batch = [_prepared(fs, f"/g/v{j}", b"version %d" % j) for j in range(5)]
    calls.append(("batch", lambda: gc.commit_all(batch)))
    calls += [(f"rm{i}", (lambda i=i: fs.remove(f"/g/f{i}"))) for i in range(4, 7)]
    queued = [1] * 7 + [5] + [1] * 3
    seq0 = _head_seq(repo)
    with gc._cv:
        gc._leading = True                                      # a commit is running: all queue
    try:
        for (name, fn), n in zip(calls, queued):
            t = threading.Thread(target=run, args=(name, fn), daemon=True)
            t.start()
            threads.append(t)
            want = sum(queued[:len(threads)])
            while True:                                         # queued, in this order
                with gc._cv:
                    if len(gc._pending) == want:
                        break
                threading.Event().wait(0.001)
    finally:
        with gc._cv:
            gc._hand_on()                                       # the oldest queued one leads
    _join(threads, 60)
    assert not [t.name for t in threads if t.is_alive()], "a caller was never woken"

    for i in range(7):
        assert isinstance(got[f"rm{i}"], int), got[f"rm{i}"]
    assert isinstance(got["rm-missing"], errors.NotFound)
    assert isinstance(got["create-taken"], errors.Exists)
    assert fs.stat("/g/new").size == 0
    versions = got["batch"]
    assert [v.number for v in versions] == [1] * 5
    for j in range(5):
        with fs.open_read(f"/g/v{j}") as r:
            assert r.read() == b"version %d" % j
    assert sorted(e.name for e in fs.listdir("/g")) == ["f7", "new"] + [f"v{j}" for j in range(5)]
    # 15 items, at most 4 per transaction, in arrival order: 4 durable commits
    assert _head_seq(repo) - seq0 == 4
    assert not gc._pending and not gc._leading


def test_many_threads_at_once_all_commit_and_nobody_leads_after(repo):
    """32 threads create and remove files at once, without any held leader: every call is
    answered (created files exist, removed ones are gone) and the queue ends empty."""
    fs = repo.share("office")
    fs.mkdir("/h")
    gc = repo.group_commit
    gc.MAX_BATCH = 3
    errs: list[BaseException] = []

    def one(i: int) -> None:
        try:
            fs.create_file(f"/h/c{i}")
            if i % 2:
                fs.remove(f"/h/c{i}")
        except BaseException as e:                              # noqa: BLE001
            errs.append(e)
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(32)]
    for t in threads:
        t.start()
    _join(threads, 120)
    assert not [t for t in threads if t.is_alive()], "a caller was never woken"
    assert errs == []
    assert sorted(e.name for e in fs.listdir("/h")) == sorted(f"c{i}" for i in range(0, 32, 2))
    assert not gc._pending and not gc._leading
