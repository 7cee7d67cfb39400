"""The batched write paths (mkdir_many, commit_many, set_times_many, events.apply_many): what a
user sees, and what `recover` rebuilds from the packs, is what one change at a time gives."""
from __future__ import annotations

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
    live = snapshot(cli.repo_path)
    drop_catalog(cli.repo_path)
    cli("recover")
    assert snapshot(cli.repo_path) == live
    cli("check", "--read-data")


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
