"""Core additions for NFS: lookups by node id, resumable listings, versionless creates,
crash-safe staged updates and derived keys."""
from __future__ import annotations

import os
import time

import pytest

from archive import Origin, Repository, errors
from archive.clock import gmt_token
from archive.staging import recover, staging_dir

from conftest import put_bytes


def test_node_path_follows_renames_and_goes_stale_on_remove(fs):
    fs.mkdir("/a")
    e = put_bytes(fs, "/a/x.txt", b"one")
    assert fs.node_path(e.node_id) == "/a/x.txt"
    assert fs.node_path(fs.stat("/").node_id) == "/"
    fs.rename("/a", "/b")
    assert fs.node_path(e.node_id) == "/b/x.txt"
    assert fs.stat_node(e.node_id).path == "/b/x.txt"
    before = time.time()
    time.sleep(0.01)
    fs.remove("/b/x.txt")
    with pytest.raises(errors.NotFound):
        fs.node_path(e.node_id)
    assert fs.node_path(e.node_id, at=before) == "/b/x.txt"


def test_node_of_another_share_is_not_found(repo, fs):
    repo.add_share("other")
    other = repo.share("other", user=None)
    e = put_bytes(other, "/y", b"y")
    with pytest.raises(errors.NotFound):
        fs.node_path(e.node_id)
    with pytest.raises(errors.NotFound):
        fs.node_path(10 ** 9)


def test_stat_node_in_the_past_is_a_read_only_snapshot_entry(fs):
    e = put_bytes(fs, "/r.txt", b"old")
    time.sleep(0.01)
    at = time.time()
    time.sleep(1.1)                 # snapshot tokens have one-second resolution
    put_bytes(fs, "/r.txt", b"newer")
    past = fs.stat_node(e.node_id, at=at)
    assert past.path == f"/.snapshots/{gmt_token(int(at * 1e6))}/r.txt"
    assert past.readonly and past.size == 3
    assert fs.open_read(past.path).read() == b"old"


def test_listdir_after_resumes_even_when_the_name_is_gone(fs):
    for n in ("a", "b", "c", "d"):
        put_bytes(fs, f"/{n}", n.encode())
    b = fs.stat("/b")
    fs.remove("/b")
    assert [e.name for e in fs.listdir("/", after="b")] == ["c", "d"]
    assert fs.child_name("/", b.node_id) == "b"
    assert fs.child_name("/", 10 ** 9) is None
    assert [e.name for e in fs.listdir("/", after="", page=2)] == ["a", "c", "d"]


def test_create_file_has_no_version_until_the_update_commits(fs):
    e = fs.create_file("/new.bin")
    assert e.size == 0 and e.version is None
    assert e == fs.stat("/new.bin")            # the entry it returns is what a stat reads
    assert fs.versions("/new.bin") == []
    with pytest.raises(errors.Exists):
        fs.create_file("/new.bin")
    u = fs.open_staged_update("/new.bin")
    u.pwrite(b"hello", 0)
    v = u.commit()
    assert v.number == 1
    assert [x.number for x in fs.versions("/new.bin")] == [1]
    assert fs.stat("/new.bin").node_id == e.node_id


def test_create_file_continues_a_deleted_files_history(fs):
    e = put_bytes(fs, "/f", b"1")
    fs.remove("/f")
    again = fs.create_file("/f")
    assert again.node_id == e.node_id and again == fs.stat("/f")
    with pytest.raises(errors.NotFound):
        fs.open_staged_update("/nope", create=False)
    fs.mkdir("/d")
    with pytest.raises(errors.IsADirectory):
        fs.open_staged_update("/d")
    u = fs.open_staged_update("/f")
    u.pwrite(b"22", 0)
    assert u.commit().number == 3


def test_staged_update_commits_at_the_renamed_path(fs):
    fs.create_file("/n")
    u = fs.open_staged_update("/n")
    u.pwrite(b"abc", 0)
    fs.rename("/n", "/m")
    u.commit()
    assert fs.open_read("/m").read() == b"abc"
    assert not fs.exists("/n")


@pytest.mark.parametrize("inline", [True, False], ids=["staging-log", "own-files"])
def test_synced_staging_survives_a_crash_and_unsynced_does_not(tmp_path, monkeypatch, inline):
    """Small updates sync into the shared staging log (nothing else on disk), larger ones
    (INLINE_MAX 0 here) into a data file and a journal of their own: either way a synced one
    is recovered, an unsynced one is not."""
    from archive import staging
    if not inline:
        monkeypatch.setattr(staging, "INLINE_MAX", 0)
    r = Repository.init(tmp_path / "repo")
    r.add_share("office")
    fs = r.share("office", user=None, origin=Origin("nfs", "10.0.0.9", "alice"))
    put_bytes(fs, "/kept", b"A" * 100_000)
    u = fs.open_staged_update("/kept")
    u.pwrite(b"B" * 10, 50_000)
    u.sync()
    lost = fs.open_staged_update("/lost", create=True)
    lost.pwrite(b"never synced", 0)
    # "crash": nothing is committed or closed
    names = sorted(p.suffix for p in staging_dir(r).iterdir())
    assert names == ([".log"] if inline else [".data", ".data", ".json"])
    r.close()
    r = Repository.open(tmp_path / "repo")
    done = recover(r)
    assert [(s, p) for s, p, _ in done] == [("office", "/kept")]
    fs = r.share("office", user=None)
    data = fs.open_read("/kept").read()
    assert data == b"A" * 50_000 + b"B" * 10 + b"A" * 49_990
    assert fs.versions("/kept")[-1].origin.protocol == "nfs"
    assert not fs.exists("/lost")
    assert list(staging_dir(r).iterdir()) == []
    r.close()


def test_staging_log_segments_rotate_and_go_once_their_records_ended(tmp_path, monkeypatch):
    """With a tiny segment size every record starts a new log segment; a segment goes once
    every update whose latest record it holds has ended, and recovery after a "crash" commits
    exactly the updates still open: the one whose newer record superseded an older segment's
    at its newest state, the committed one not again."""
    from archive import staging
    monkeypatch.setattr(staging, "LOG_SEGMENT", 1)
    r = Repository.init(tmp_path / "repo")
    r.add_share("office")
    fs = r.share("office", user=None, origin=Origin("nfs", "10.0.0.9", "alice"))
    a = fs.open_staged_update("/a", create=True)
    a.pwrite(b"a1", 0)
    a.sync()
    b = fs.open_staged_update("/b", create=True)
    b.pwrite(b"b1", 0)
    b.sync()
    a.pwrite(b"a2", 2)
    a.sync()                                  # a's first segment holds nothing live: gone
    logs = lambda: sorted(staging_dir(r).glob("*.log"))    # noqa: E731
    assert len(logs()) == 3                   # b's record, a's newer one, the current (empty)
    b.commit()                                # `done` (unsynced): b's segment goes; the one
    assert len(logs()) == 3                   # with the `done` stays while an older one does
    a.pwrite(b"a3", 4)                        # never synced: lost in the "crash"
    r.close()
    r = Repository.open(tmp_path / "repo")
    assert [(s, p) for s, p, _ in recover(r)] == [("office", "/a")]
    fs = r.share("office", user=None)
    assert fs.open_read("/a").read() == b"a1a2" and fs.open_read("/b").read() == b"b1"
    assert len(fs.versions("/a")) == 1 and len(fs.versions("/b")) == 1
    assert list(staging_dir(r).iterdir()) == []
    r.close()


def test_a_record_kept_for_recovery_does_not_keep_every_later_segment(tmp_path, monkeypatch):
    """An update synced, then left for recovery (closed with unsynced writes after its sync),
    while fifty others come and go: its record is copied forward so the log stays a few
    segments long, and a "crash" recovers it once, at its synced state."""
    from archive import staging
    monkeypatch.setattr(staging, "LOG_SEGMENT", 1)
    monkeypatch.setattr(staging, "LOG_SEGMENTS", 3)
    r = Repository.init(tmp_path / "repo")
    r.add_share("office")
    fs = r.share("office", user=None, origin=Origin("nfs", "10.0.0.9", "alice"))
    kept = fs.open_staged_update("/kept", create=True)
    kept.pwrite(b"synced", 0)
    kept.sync()
    kept.pwrite(b"never", 6)
    kept.close()
    for i in range(50):
        u = fs.open_staged_update(f"/n{i}", create=True)
        u.pwrite(b"n", 0)
        u.sync()
        u.commit()
        assert len(list(staging_dir(r).glob("*.log"))) <= 4
    r.close()
    r = Repository.open(tmp_path / "repo")
    assert [p for _, p, _ in recover(r)] == ["/kept"]
    fs = r.share("office", user=None)
    assert fs.open_read("/kept").read() == b"synced" and len(fs.versions("/kept")) == 1
    assert len(fs.versions("/n7")) == 1
    r.close()


def test_a_done_record_outlives_no_older_segment(tmp_path, monkeypatch):
    """x and y share a segment; x is dropped (its `done` lands in a later segment): that later
    segment stays while the older one does, so a "crash" never recovers x."""
    from archive import staging
    r = Repository.init(tmp_path / "repo")
    r.add_share("office")
    fs = r.share("office", user=None, origin=Origin("nfs", "10.0.0.9", "alice"))
    ups = {}
    for name in ("x", "y", "z"):
        if name == "z":
            monkeypatch.setattr(staging, "LOG_SEGMENT", 1)     # from z's record on: a segment each
        ups[name] = u = fs.open_staged_update(f"/{name}", create=True)
        u.pwrite(name.encode() * 3, 0)
        u.sync()
    ups["x"].abort()                          # the file went: its `done` is in the next segment
    r.close()
    r = Repository.open(tmp_path / "repo")
    assert sorted(p for _, p, _ in recover(r)) == ["/y", "/z"]
    fs = r.share("office", user=None)
    assert not fs.exists("/x") and fs.open_read("/y").read() == b"yyy"
    r.close()


def test_an_update_grown_past_inline_max_without_a_sync_recovers_its_logged_state(tmp_path):
    """Synced small (a log record), then grown past INLINE_MAX (its own data file, no journal
    yet), then a "crash": recovery commits the logged state and deletes the data file; grown
    and synced, its journal wins over the older record."""
    from archive.staging import INLINE_MAX, synced_updates
    r = Repository.init(tmp_path / "repo")
    r.add_share("office")
    fs = r.share("office", user=None, origin=Origin("nfs", "10.0.0.9", "alice"))
    u = fs.open_staged_update("/g", create=True)
    u.pwrite(b"small", 0)
    u.sync()
    u.pwrite(b"z" * INLINE_MAX, 5)
    assert sorted(p.suffix for p in staging_dir(r).iterdir()) == [".data", ".log"]
    v = fs.open_staged_update("/h", create=True)
    v.pwrite(b"tiny", 0)
    v.sync()
    v.pwrite(b"q" * INLINE_MAX, 4)
    v.sync()
    assert len(synced_updates(r)) == 2
    r.close()
    r = Repository.open(tmp_path / "repo")
    assert sorted(p for _, p, _ in recover(r)) == ["/g", "/h"]
    fs = r.share("office", user=None)
    assert fs.open_read("/g").read() == b"small"
    assert fs.open_read("/h").read() == b"tiny" + b"q" * INLINE_MAX
    assert [len(fs.versions(p)) for p in ("/g", "/h")] == [1, 1]
    assert list(staging_dir(r).iterdir()) == []
    r.close()


def test_concurrent_syncs_share_the_log_and_all_recover(tmp_path):
    """Forty updates sync from eight threads at once (their records share fdatasyncs): after a
    "crash" every one is recovered with its own bytes."""
    from concurrent.futures import ThreadPoolExecutor
    r = Repository.init(tmp_path / "repo")
    r.add_share("office")
    fs = r.share("office", user=None, origin=Origin("nfs", "10.0.0.9", "alice"))

    def one(i: int) -> None:
        u = fs.open_staged_update(f"/c{i:02d}", create=True)
        u.pwrite(b"content %d" % i, 0)
        u.sync()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(40)))
    r.close()
    r = Repository.open(tmp_path / "repo")
    assert len(recover(r)) == 40
    fs = r.share("office", user=None)
    assert all(fs.open_read(f"/c{i:02d}").read() == b"content %d" % i for i in range(40))
    r.close()


def test_a_sync_whose_data_fsync_fails_keeps_the_previous_journal(tmp_path, monkeypatch):
    """sync() writes the new journal while it fsyncs the data; the journal replaces the old one
    only when both succeeded, so a failed data fsync leaves recovery the last good state."""
    import errno
    from archive import staging
    monkeypatch.setattr(staging, "INLINE_MAX", 0)     # its own data file and journal
    r = Repository.init(tmp_path / "repo")
    r.add_share("office")
    fs = r.share("office", user=None, origin=Origin("nfs", "10.0.0.9", "alice"))
    u = fs.open_staged_update("/j", create=True)
    u.pwrite(b"first", 0)
    u.sync()
    journal = staging_dir(r) / f"{u.id}.json"
    before = journal.read_bytes()
    u.pwrite(b", second", 5)                          # (beyond what the journal covers)
    real = os.fsync
    data_fd = u._stage.fileno()

    def fsync(fd: int) -> None:
        if fd == data_fd:
            raise OSError(errno.EIO, "injected data fsync failure")
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        u.sync()
    monkeypatch.setattr(os, "fsync", real)
    assert journal.read_bytes() == before
    r.close()                                         # "crash"
    r = Repository.open(tmp_path / "repo")
    assert [(s, p) for s, p, _ in recover(r)] == [("office", "/j")]
    assert r.share("office", user=None).open_read("/j").read() == b"first"
    r.close()


def test_a_failed_log_fdatasync_fails_the_sync_and_the_next_one_uses_a_new_segment(tmp_path, monkeypatch):
    """A staging log fdatasync that fails (EIO) fails that sync (the COMMIT gets an error, the
    client resends); the segment is never appended to again, the next sync goes to a new one
    and recovery commits that newest state once."""
    import errno
    r = Repository.init(tmp_path / "repo")
    r.add_share("office")
    fs = r.share("office", user=None, origin=Origin("nfs", "10.0.0.9", "alice"))
    u = fs.open_staged_update("/e", create=True)
    u.pwrite(b"first", 0)
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, "injected log fdatasync failure")
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with pytest.raises(OSError):
        u.sync()
    monkeypatch.setattr(os, "fdatasync", real)
    u.pwrite(b", second", 5)
    u.sync()
    assert len(list(staging_dir(r).glob("*.log"))) == 2
    r.close()                                         # "crash"
    r = Repository.open(tmp_path / "repo")
    assert [(s, p) for s, p, _ in recover(r)] == [("office", "/e")]
    fs = r.share("office", user=None)
    assert fs.open_read("/e").read() == b"first, second" and len(fs.versions("/e")) == 1
    # a failed sync, then the update is dropped (its file removed): its record is ended too
    fs = r.share("office", user=None, origin=Origin("nfs", "10.0.0.9", "alice"))
    g = fs.open_staged_update("/gone", create=True)
    g.pwrite(b"never acknowledged", 0)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with pytest.raises(OSError):
        g.sync()
    monkeypatch.setattr(os, "fdatasync", real)
    g.abort()
    r.close()
    r = Repository.open(tmp_path / "repo")
    assert recover(r) == [] and not r.share("office", user=None).exists("/gone")
    r.close()


def test_a_large_staged_update_drops_its_journal_at_commit_and_its_data_after(tmp_path, monkeypatch):
    from archive import staging
    monkeypatch.setattr(staging, "BACKGROUND_UNLINK", 4096)
    monkeypatch.setattr(staging, "INLINE_MAX", 4096)           # past it: its own files
    r = Repository.init(tmp_path / "repo")
    r.add_share("office")
    fs = r.share("office", user=None)
    u = fs.open_staged_update("/big", create=True)
    u.pwrite(b"x" * 5000, 0)
    u.sync()
    assert u.commit().size == 5000
    assert not (staging_dir(r) / f"{u.id}.json").exists()      # recovery will not commit it again
    staging._pool("unlink", 1).submit(lambda: None).result()    # the unlinks queued before it ran
    assert list(staging_dir(r).iterdir()) == []
    assert fs.open_read("/big").read() == b"x" * 5000
    r.close()


def test_abort_removes_the_staging_files(fs):
    u = fs.open_staged_update("/x", create=True)
    u.pwrite(b"x", 0)
    u.sync()
    u.abort()
    assert [p.suffix for p in staging_dir(fs.repo).iterdir()] == [".log"]   # its record, then `done`
    assert not fs.exists("/x")
    assert recover(fs.repo) == [] and os.listdir(staging_dir(fs.repo)) == []


def test_derived_keys_are_stable_and_per_purpose(tmp_path):
    r = Repository.init(tmp_path / "repo")
    a, b = r.derive_key("nfs-handles"), r.derive_key("other")
    r.close()
    r = Repository.open(tmp_path / "repo")
    assert r.derive_key("nfs-handles") == a and len(a) == 32 and a != b
    r.close()


def test_recover_replays_versionless_creates(tmp_path):
    """`create` is an event like the others: a catalog rebuilt from the packs has the file."""
    from conftest import CLI
    cli = CLI(tmp_path / "r")
    cli("init")
    cli("share", "add", "s")
    with Repository.open(cli.repo_path) as r:
        fs = r.share("s", user=None)
        e = fs.create_file("/empty.bin")
        u = fs.open_staged_update("/later.bin", create=True)
        u.pwrite(b"data", 0)
        u.commit()
    for suffix in ("", "-wal", "-shm"):
        (cli.repo_path / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    cli("recover")
    with Repository.open(cli.repo_path) as r:
        fs = r.share("s", user=None)
        again = fs.stat("/empty.bin")
        assert (again.node_id, again.version, again.size) == (e.node_id, None, 0)
        assert fs.open_read("/later.bin").read() == b"data"
    cli("check")
