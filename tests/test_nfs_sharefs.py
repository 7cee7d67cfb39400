"""What the NFS adapter reads and removes through since nfs11: Reader.readviews (NFS READ sends
the views as they are) and ShareFS.remove_at."""
from __future__ import annotations

import os

import pytest

from archive import errors

from conftest import put_bytes


def test_readviews_give_the_bytes_read_would_without_copying(fs):
    data = os.urandom(3 * 1024 * 1024 + 12345)           # many chunks, a short last one
    e = put_bytes(fs, "/big.bin", data)
    reader = fs.open_entry(fs.stat("/big.bin"))
    for offset, n in ((0, 1 << 20), (77_777, 1 << 20), (len(data) - 5000, 1 << 20), (12, 1), (len(data), 10)):
        reader.seek(offset)
        views = reader.readviews(n)
        assert all(isinstance(v, memoryview) for v in views)
        assert b"".join(views) == data[offset:offset + n]
        assert reader.tell() == min(offset + n, len(data))
    reader.seek(5)
    kept = reader.readviews(1 << 20)
    for off in range(0, len(data), 1 << 20):             # later reads do not overwrite held views
        reader.seek(off)
        reader.readviews(1 << 20)
    assert b"".join(kept) == data[5:5 + (1 << 20)]
    assert e.size == len(data)


def test_remove_at_returns_the_node_and_the_folders_new_mtime(fs):
    fs.mkdir("/d")
    e = put_bytes(fs, "/d/x.txt", b"x")
    before = fs.stat("/d").mtime
    node, at = fs.remove_at("/d/x.txt")
    assert node == e.node_id and isinstance(at, int)
    d = fs.stat("/d")
    assert d.mtime == at / 1_000_000 > before and d.etag == f"d{d.node_id}-{at}"
    assert fs.versions("/d/x.txt")[-1].deleted
    with pytest.raises(errors.NotFound):
        fs.remove_at("/d/x.txt")
    fs.mkdir("/d/sub")
    with pytest.raises(errors.IsADirectory):
        fs.remove_at("/d/sub")


def test_open_created_update_writes_the_new_files_first_version(fs):
    """NFS's first WRITE after a CREATE: the staged update starts empty on the created node
    (no catalog read), survives through the staging log like any, and commits version 1."""
    from archive import staging
    fs.mkdir("/d")
    e = fs.create_file("/d/new.txt")
    upd = fs.open_created_update("/d/new.txt", e.node_id)
    upd.pwrite(b"created over nfs", 0)
    upd.sync()
    assert staging.synced_updates(fs.repo)           # durable before any version exists
    v = upd.commit()
    assert v.number == 1 and v.size == 16
    got = fs.stat("/d/new.txt")
    assert got.node_id == e.node_id and got.version == 1
    assert fs.open_read("/d/new.txt").read() == b"created over nfs"
    assert not staging.synced_updates(fs.repo)


def test_open_created_update_of_a_recreated_name_continues_its_history(fs):
    """A name whose file was deleted: create_file links the old node again; its update starts
    empty (the tombstone is no base) and the history goes on."""
    put_bytes(fs, "/a.txt", b"old content")
    fs.remove("/a.txt")
    e = fs.create_file("/a.txt")
    upd = fs.open_created_update("/a.txt", e.node_id)
    upd.pwrite(b"new", 0)
    upd.sync()
    v = upd.commit()
    assert v.number == 3                               # 1 old, 2 tombstone, 3 new
    assert fs.open_read("/a.txt").read() == b"new"


def test_open_created_update_is_refused_where_writes_are(fs, repo):
    e = fs.create_file("/x.txt")
    bob = repo.share("office", user=repo.authenticate("bob", "bob-pw"))       # read-only grant
    with pytest.raises(errors.PermissionDenied):
        bob.open_created_update("/x.txt", e.node_id)
    with pytest.raises(errors.ReadOnly):
        fs.open_created_update("/.snapshots/@GMT-2026.01.01-00.00.00/x.txt", e.node_id)


def test_staged_update_ids_are_distinct_and_of_the_old_length(fs):
    from archive import staging
    ids = {staging._new_id() for _ in range(1000)}
    assert len(ids) == 1000 and {len(i) for i in ids} == {32}
    assert all(int(i, 16) >= 0 for i in ids)
