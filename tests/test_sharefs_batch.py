"""The batched write paths (mkdir_many, commit_many, set_times_many, events.apply_many): what a
user sees, and what `recover` rebuilds from the packs, is what one change at a time gives."""
from __future__ import annotations

import time

import pytest
from hypothesis import given, settings, strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from archive import Repository, errors, events
from archive.catalog import models as m
from archive.streams import commit_many
from recover_helpers import drop_catalog, snapshot

T0 = 1_700_000_000.0


def _tree(fs, batched: bool) -> list:
    """Folders, files (one blocked by a folder of the same name), new times: batched or not."""
    dirs = [f"/t/d{i}/e{j}" for i in range(4) for j in range(3)] + ["/t/d0/e0/blocker"]
    files = [f"/t/d{i}/e{j}/f{k}" for i in range(4) for j in range(3) for k in range(2)] + ["/t/d0/e0/blocker"]
    outcome = []
    if batched:
        assert fs.mkdir_many(dirs) == 1 + 4 + 12 + 1
        ws = []
        for i, p in enumerate(files):
            w = fs.open_write(p, check=False)
            w.write(f"content of {p} #{i}".encode())
            w.prepare()
            ws.append(w)
        from archive.streams import _commit_batch
        outcome = _commit_batch(ws)
        fs.set_times_many([(p, T0 + i) for i, p in enumerate(files[:-1] + dirs[:3])])
    else:
        for d in dirs:
            fs.mkdir(d, parents=True)
        for i, p in enumerate(files):
            try:
                w = fs.open_write(p, check=False)
                w.write(f"content of {p} #{i}".encode())
                outcome.append(w.commit())
            except errors.ArchiveError as e:
                outcome.append(e)
        for i, p in enumerate(files[:-1] + dirs[:3]):
            fs.set_times(p, T0 + i)
    return outcome


def _seen(fs, path="/t") -> list:
    out = []
    for e in fs.listdir(path):
        out.append((e.path, e.kind, e.size, e.version))
        if e.is_dir:
            out += _seen(fs, e.path)
    return out


def _recovers_to_the_live_catalog(cli) -> None:
    """Rebuilt from the packs alone, the catalog equals the live one, and checks clean."""
    live = snapshot(cli.repo_path)
    drop_catalog(cli.repo_path)
    cli("recover")
    assert snapshot(cli.repo_path) == live
    cli("check", "--read-data")


def test_batched_tree_is_the_tree_one_at_a_time_and_recovers_equal(cli):
    r = Repository.init(cli.repo_path)
    r.add_share("batch")
    r.add_share("single")
    a, b = r.share("batch"), r.share("single")
    got_a, got_b = _tree(a, True), _tree(b, False)
    # the writer a folder was in the way of fails alone; the others of its batch committed
    assert isinstance(got_a[-1], errors.IsADirectory) and isinstance(got_b[-1], errors.IsADirectory)
    assert [v.number for v in got_a[:-1]] == [1] * (len(got_a) - 1)
    assert _seen(a) == _seen(b)
    for fs in (a, b):
        assert fs.stat("/t/d0/e0/f0").mtime == T0
        assert fs.stat("/t/d3/e2/f1").mtime == T0 + 23
        assert fs.stat("/t/d0/e1").mtime == T0 + 25            # a folder's own time
        with fs.open_read("/t/d2/e1/f1") as f:
            assert f.read() == b"content of /t/d2/e1/f1 #15"
    ids = [e.node_id for e in a.listdir("/t")]
    assert len(set(ids)) == 4                                  # one id per folder of the batch
    r.close()
    _recovers_to_the_live_catalog(cli)


# -- apply_many == apply, event by event (what makes a batched live commit and recover agree) ----

def _catalog():
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    m.Base.metadata.create_all(engine)
    return engine


def _dump(s: Session) -> dict:
    q = lambda sql: s.execute(text(sql)).all()   # noqa: E731
    return {"nodes": q("SELECT id, share_id, kind, created_at, mtime FROM nodes ORDER BY id"),
            "dentries": q("SELECT parent_id, name, name_fold, node_id, valid_from, valid_to FROM dentries "
                          "ORDER BY id"),
            "versions": q("SELECT node_id, number, mtime FROM versions ORDER BY id"),
            "changes": q("SELECT share_id, at_s FROM share_changes ORDER BY share_id, at_s")}


@st.composite
def _event_runs(draw):
    """A share, then folders under random earlier folders (a parent precedes its children),
    interleaved with time changes of folders and of a file's version."""
    at = 1_000_000_000_000
    evs = [{"op": "share", "at": at, "share": 1, "name": "s", "root": 1},
           {"op": "commit", "at": at + 1, "share": 1, "parent": 1, "name": "file", "node": 2, "new_node": True,
            "link": True, "number": 1, "size": 0, "mtime": at, "etag": "e"}]
    folders = [1]
    for _ in range(draw(st.integers(1, 30))):
        at += draw(st.integers(1, 3_000_000))
        if draw(st.integers(0, 3)) == 0:
            node = draw(st.sampled_from(folders + [2]))
            ev = {"op": "times", "at": at, "node": node, "mtime": draw(st.integers(0, at))}
            if node == 2:
                ev["number"] = 1
            evs.append(ev)
        else:
            node = len(folders) + 2
            ev = {"op": "mkdir", "at": at, "share": 1, "parent": draw(st.sampled_from(folders)),
                  "name": draw(st.sampled_from(["a", "B", "c", "Ä"])) + str(node), "node": node}
            if draw(st.booleans()):
                ev["mtime"] = at - 5
            folders.append(node)
            evs.append(ev)
    return evs


@settings(max_examples=25, deadline=None)
@given(_event_runs())
def test_apply_many_equals_apply_one_by_one(evs):
    dumps = []
    for many in (False, True):
        with Session(_catalog()) as s:
            if many:
                events.apply_many(s, evs)
            else:
                for ev in evs:
                    events.apply(s, ev)
            dumps.append(_dump(s))
    assert dumps[0] == dumps[1]


def test_ids_allocated_before_apply_are_distinct(repo):
    """A builder that allocates several node ids before its events are applied gets distinct ones."""
    with repo.catalog.write() as s:
        a, b, c = (repo.next_id(s, m.Node) for _ in range(3))
        s.rollback()
    assert b == a + 1 and c == a + 2
    with repo.catalog.write() as s:
        assert repo.next_id(s, m.Node) == a                    # a new transaction asks the catalog again
        s.rollback()


@pytest.mark.parametrize("ci", [False, True])
def test_mkdir_many_sees_existing_folders_and_refuses_a_file_in_the_way(repo, ci):
    fs = repo.share("office", case_insensitive=ci)
    fs.mkdir("/x/y", parents=True)
    w = fs.open_write("/x/file")
    w.write(b"1")
    w.commit()
    node = fs.stat("/x/y").node_id
    assert fs.mkdir_many(["/X/y/z" if ci else "/x/y/z", "/x/w"]) == 2
    assert fs.stat("/x/y").node_id == node                     # the existing folder, not a twin
    assert sorted(e.name for e in fs.listdir("/x")) == ["file", "w", "y"]
    with pytest.raises(errors.NotADirectory):
        fs.mkdir_many(["/x/file/sub"])
    assert not fs.exists("/x/file/sub")


# -- namespace changes share the durable commit of whatever arrives with them --------------------

def _head_seq(repo) -> int:
    with repo.catalog.session() as s:
        return s.execute(text("SELECT seq FROM chain_head WHERE id = 1")).scalar()


def _in_one_batch(repo, calls) -> dict:
    """Run `calls` (name, fn) from threads that all queue behind a running group commit, in this
    order, then let them go: they commit as one batch.  Returns name -> result or exception."""
    import threading
    gc, got, threads = repo.group_commit, {}, []

    def run(name, fn):
        try:
            got[name] = fn()
        except Exception as e:                                  # noqa: BLE001
            got[name] = e
    with gc._cv:
        gc._leading = True                                      # a commit is running: changes queue
    try:
        for name, fn in calls:
            t = threading.Thread(target=run, args=(name, fn))
            t.start()
            threads.append(t)
            while True:                                         # queued, in this order
                with gc._cv:
                    if len(gc._pending) == len(threads):
                        break
                time.sleep(0.001)
    finally:
        with gc._cv:
            gc._hand_on()                                       # the oldest queued one leads
    for t in threads:
        t.join()
    return got


def _written(fs, path: str, data: bytes):
    w = fs.open_write(path, check=False)
    w.write(data)
    return w


def _prepared(fs, path: str, data: bytes):
    w = _written(fs, path, data)
    w.prepare()
    return w


def _changes(fs, gc):
    """Uploads and namespace changes that depend on each other (a later one sees the earlier ones,
    uploads to paths a rename or remove of the same batch just freed or moved) plus changes that
    fail alone (missing path, name taken, folder not empty).  With `gc` the uploads are prepared
    first and go to the group commit; without it each commits when its turn comes."""
    up = (lambda p, d: (lambda w=_prepared(fs, p, d): lambda: gc.commit(w))()) if gc else \
        (lambda p, d: lambda: _written(fs, p, d).commit())
    return [("w1", up("/m/a/w1", b"one")),
            ("rename-dir", lambda: fs.rename("/m/a", "/m/b")),
            ("w2-old-dir", up("/m/a/w2", b"two")),              # its folder moved away: NotFound
            ("remove-f", lambda: fs.remove("/m/f")),
            ("w3-removed", up("/m/f", b"f again")),              # continues /m/f's history
            ("rename-g", lambda: fs.rename("/m/g", "/m/h")),
            ("w4-renamed", up("/m/g", b"new g")),               # a new file: the old node is /m/h
            ("rm-missing", lambda: fs.remove("/m/nothing")),
            ("rename-taken", lambda: fs.rename("/m/b/keep", "/m/h")),
            ("rename-over", lambda: fs.rename("/m/b/keep", "/m/h", overwrite=True)),
            ("rmdir-full", lambda: fs.rmdir("/m/b")),
            ("create", lambda: fs.create_file("/m/b/c")),
            ("mkdir", lambda: fs.mkdir("/m/b/d")),
            ("w5-new-dir", up("/m/b/d/w5", b"five")),           # into the folder made just before
            ("create-taken", lambda: fs.create_file("/m/f")),
            ("rmdir-a", lambda: fs.rmdir("/m/a"))]              # gone with the rename


def _outcome(r):
    if isinstance(r, BaseException):
        return type(r).__name__
    return getattr(r, "number", None), getattr(r, "path", None), getattr(r, "kind", None)


def _history(fs, path="/m") -> list:
    out = []
    for e in fs.listdir(path):
        if e.is_dir:
            out.append((e.path, "dir"))
            out += _history(fs, e.path)
        else:
            out.append((e.path, [(v.number, v.size, v.deleted) for v in fs.versions(e.path)],
                        fs.open_read(e.path).read() if e.version else None))
    return out


def test_namespace_changes_and_uploads_in_one_batch_equal_one_at_a_time_and_recover_equal(cli):
    """Everything that queues while a commit runs goes into the next one, ONE durable commit: each
    caller hears its own outcome (an ArchiveError fails that change alone and leaves no row), later
    changes see earlier ones (a folder renamed in the batch is not found at its old path by a later
    upload; a removed or renamed file's name takes a new upload), the result is what one change at a
    time gives, the audit trail too, and `recover` rebuilds exactly the live catalog."""
    r = Repository.init(cli.repo_path)
    shares = {}
    for name in ("batch", "single"):
        r.add_share(name)
        fs = shares[name] = r.share(name)
        fs.mkdir("/m/a", parents=True)
        for p in ("/m/f", "/m/g", "/m/a/keep", "/m/h0"):
            _written(fs, p, p.encode()).commit()
    a, b = shares["batch"], shares["single"]
    before = _head_seq(r)
    got = _in_one_batch(r, _changes(a, r.group_commit))
    assert _head_seq(r) == before + 1                           # ONE durable commit for all of them
    want = {}
    for name, fn in _changes(b, None):
        try:
            want[name] = fn()
        except Exception as e:                                  # noqa: BLE001
            want[name] = e
    assert {k: _outcome(v) for k, v in got.items()} == {k: _outcome(v) for k, v in want.items()}
    assert _outcome(got["w1"]) == (1, None, None)
    for name, err in [("w2-old-dir", errors.NotFound), ("rm-missing", errors.NotFound),
                      ("rename-taken", errors.Exists), ("rmdir-full", errors.NotEmpty),
                      ("create-taken", errors.Exists), ("rmdir-a", errors.NotFound)]:
        assert isinstance(got[name], err), name
    assert got["w3-removed"].number == 3                        # 1, the tombstone 2, then 3
    assert got["w4-renamed"].number == 1
    assert _history(a) == _history(b)
    assert _history(a) == [
        ("/m/b", "dir"), ("/m/b/c", [], None), ("/m/b/d", "dir"),
        ("/m/b/d/w5", [(1, 4, False)], b"five"), ("/m/b/w1", [(1, 3, False)], b"one"),
        ("/m/f", [(1, 4, False), (2, 0, True), (3, 7, False)], b"f again"),
        ("/m/g", [(1, 5, False)], b"new g"),
        ("/m/h", [(1, 9, False)], b"/m/a/keep"),                # the file renamed over it
        ("/m/h0", [(1, 5, False)], b"/m/h0")]
    assert a.versions("/m/h")[0].number == 1 and not a.exists("/m/a")
    audit = lambda share: [(e.action, e.path, e.detail, e.version)                 # noqa: E731
                           for e in r.audit_events() if e.share == share][7:]
    assert audit("batch") == audit("single")
    assert [x[0] for x in audit("batch")] == ["write", "rename", "delete", "write", "rename", "write",
                                              "rename", "create", "mkdir", "write"]
    r.close()
    _recovers_to_the_live_catalog(cli)
