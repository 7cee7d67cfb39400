"""ShareFS.ensure_folders: the folders a key's "/"s imply (S3 PUT), cheap when they exist, and
still right when a folder goes away between the check and the commit."""
from __future__ import annotations

import sqlite3

import pytest

from archive import errors
from conftest import put_bytes


def read(fs, path) -> bytes:
    with fs.open_read(path) as r:
        return r.read()


def folder_rows(repo) -> list[tuple]:
    db = sqlite3.connect(repo.path / "catalog.sqlite")
    try:
        return db.execute("SELECT d.id, d.parent_id, d.name, d.node_id, d.valid_to FROM dentries d "
                          "JOIN nodes n ON n.id = d.node_id WHERE n.kind = 'dir' ORDER BY d.id").fetchall()
    finally:
        db.close()


def test_creates_missing_folders_once_and_then_only_reads(repo, fs):
    assert fs.ensure_folders("/a/b/c/key.txt") == 3
    assert [e.name for e in fs.listdir("/a/b")] == ["c"]
    before = folder_rows(repo)
    for path in ("/a/b/c/other", "/a/b/c/key.txt", "a/b/c/x"):
        assert fs.ensure_folders(path) == 0
        assert fs.ensure_folders(path, target=True) == 0
    assert folder_rows(repo) == before          # no folder row was added or touched
    assert fs.ensure_folders("/a/x/y") == 1      # one missing level below an existing one
    put_bytes(fs, "/a/x/y", b"data")
    assert read(fs, "/a/x/y") == b"data"


def test_existing_folders_need_no_write_lock(repo, fs):
    """When the folders exist, ensure_folders only reads: it answers while another process holds
    the catalog's write lock (a write transaction would wait for it)."""
    import threading
    fs.ensure_folders("/w/x/k")
    db = sqlite3.connect(repo.path / "catalog.sqlite", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")                   # another writer holds the lock
    out = []
    t = threading.Thread(target=lambda: out.append((fs.ensure_folders("/w/x/k2", target=True),
                                                     fs.ensure_folders("top", target=True))), daemon=True)
    try:
        t.start()
        t.join(20)                                  # a bound for a broken build, not a measurement
        done = not t.is_alive()
    finally:
        db.execute("ROLLBACK")
        db.close()
        t.join(90)
    assert done and out == [(0, 0)]


def test_key_without_slash_needs_no_folder(repo, fs):
    before = folder_rows(repo)
    assert fs.ensure_folders("top.txt") == 0
    assert fs.ensure_folders("top.txt", target=True) == 0
    assert folder_rows(repo) == before


def test_target_check_and_things_in_the_way(fs):
    fs.mkdir("/dir")
    put_bytes(fs, "/file", b"x")
    with pytest.raises(errors.IsADirectory):
        fs.ensure_folders("/dir", target=True)           # a folder where the file should go
    assert fs.ensure_folders("/dir") == 0               # without target: only the folders matter
    fs.mkdir("/dir/sub")
    with pytest.raises(errors.IsADirectory):
        fs.ensure_folders("/dir/sub", target=True)
    with pytest.raises(errors.NotADirectory):
        fs.ensure_folders("/file/inner")                 # a file in the way of a folder
    with pytest.raises(errors.NotADirectory):
        fs.ensure_folders("/file/inner/deeper", target=True)
    assert read(fs, "/file") == b"x"


def test_checks_rights_and_snapshots(repo):
    from archive import Origin
    ro = repo.share("office", user=repo.authenticate("bob", "bob-pw"), origin=Origin("test", "127.0.0.1"))
    with pytest.raises(errors.PermissionDenied):
        ro.ensure_folders("/a/b")
    rw = repo.share("office", user=repo.authenticate("alice", "alice-pw"), origin=Origin("test", "127.0.0.1"))
    with pytest.raises(errors.ReadOnly):
        rw.ensure_folders("/.snapshots/@GMT-2026.01.01-00.00.00/a/b")


def test_folder_removed_between_check_and_commit(repo, fs):
    """The adapter's sequence: ensure_folders(target=True), open_write(check=False), write,
    commit.  Another client removes the folder after the check: the commit (which resolves the
    parent again in its write transaction) fails NotFound and leaves no version; the next PUT
    recreates the folder."""
    other = repo.share("office", user=repo.authenticate("alice", "alice-pw"))
    fs.ensure_folders("/in/box/k", target=True)
    fs.ensure_folders("/in/box/k", target=True)         # exists now: the read-only path
    w = fs.open_write("/in/box/k", check=False)
    w.write(b"payload")
    other.rmdir("/in/box")
    with pytest.raises(errors.NotFound):
        w.commit()
    assert not fs.exists("/in/box")
    assert [e.name for e in fs.listdir("/in")] == []
    assert fs.ensure_folders("/in/box/k", target=True) == 1
    w = fs.open_write("/in/box/k", check=False)
    w.write(b"payload 2")
    assert w.commit().number == 1
    assert read(fs, "/in/box/k") == b"payload 2"


def test_folder_replaced_by_a_file_between_check_and_commit(repo, fs):
    other = repo.share("office", user=repo.authenticate("alice", "alice-pw"))
    fs.ensure_folders("/q/k", target=True)
    w = fs.open_write("/q/k", check=False)
    w.write(b"payload")
    other.rmdir("/q")
    put_bytes(other, "/q", b"now a file")
    with pytest.raises(errors.NotADirectory):
        w.commit()
    assert read(fs, "/q") == b"now a file"
    with pytest.raises(errors.NotADirectory):
        fs.ensure_folders("/q/k", target=True)
