"""The ShareFS API: versions, tombstones, renames, time travel, snapshots, random writes."""
from __future__ import annotations

import os
import threading
import time

import pytest

from archive import Origin, errors
from archive.clock import gmt_token, iso
from conftest import put_bytes


def read(fs, path, **kw) -> bytes:
    with fs.open_read(path, **kw) as r:
        return r.read()


def test_every_write_is_a_version_and_old_bytes_stay(fs):
    fs.mkdir("/docs")
    a, b = os.urandom(300_000), os.urandom(200_000)
    put_bytes(fs, "/docs/r.bin", a)
    put_bytes(fs, "/docs/r.bin", b)
    vs = fs.versions("/docs/r.bin")
    assert [(v.number, v.size, v.deleted) for v in vs] == [(1, 300_000, False), (2, 200_000, False)]
    assert vs[0].origin == Origin("test", "127.0.0.1", "alice")
    assert read(fs, "/docs/r.bin") == b
    assert read(fs, "/docs/r.bin", version=1) == a
    assert fs.stat("/docs/r.bin").version == 2


def test_random_access_reads(fs):
    data = os.urandom(3_000_000)
    put_bytes(fs, "/big", data)
    with fs.open_read("/big") as r:
        for off, n in [(0, 10), (1_234_567, 70_000), (2_999_990, 100), (65_530, 20)]:
            r.seek(off)
            assert r.read(n) == data[off:off + n]
        r.seek(0, os.SEEK_END)
        assert r.read(10) == b""


def test_delete_is_a_restorable_tombstone(fs):
    put_bytes(fs, "/a.txt", b"one")
    fs.remove("/a.txt")
    assert not fs.exists("/a.txt")
    with pytest.raises(errors.NotFound):
        fs.open_read("/a.txt")
    vs = fs.versions("/a.txt")
    assert [(v.number, v.deleted) for v in vs] == [(1, False), (2, True)]
    assert fs.restore("/a.txt", version=1) == 1
    assert read(fs, "/a.txt") == b"one"
    assert [v.number for v in fs.versions("/a.txt")] == [1, 2, 3]
    # re-creating a deleted name continues the same history
    fs.remove("/a.txt")
    put_bytes(fs, "/a.txt", b"two")
    assert [v.number for v in fs.versions("/a.txt")] == [1, 2, 3, 4, 5]


def test_rename_keeps_identity_and_history(fs):
    fs.mkdir("/x")
    e = put_bytes(fs, "/x/f", b"v1")
    put_bytes(fs, "/x/f", b"v2")
    fs.rename("/x/f", "/x/g")
    assert not fs.exists("/x/f")
    g = fs.stat("/x/g")
    assert g.node_id == e.node_id
    assert [v.number for v in fs.versions("/x/g")] == [1, 2]
    fs.rename("/x", "/y")
    assert read(fs, "/y/g") == b"v2"
    put_bytes(fs, "/y/h", b"other")
    with pytest.raises(errors.Exists):
        fs.rename("/y/g", "/y/h")
    fs.rename("/y/g", "/y/h", overwrite=True)
    assert read(fs, "/y/h") == b"v2"
    with pytest.raises(errors.InvalidPath):
        fs.rename("/y", "/y/inside")


def test_time_travel_and_snapshots(fs):
    put_bytes(fs, "/t.txt", b"before")
    fs.mkdir("/gone")
    put_bytes(fs, "/gone/x", b"x")
    time.sleep(0.01)
    t_mid = time.time()
    # A token names the share at the END of its second: the later changes start in the next
    # second, so the token of t_mid shows the state before all of them.
    time.sleep(1.01 - time.time() % 1)
    put_bytes(fs, "/t.txt", b"after")
    fs.remove("/gone/x")
    fs.rmdir("/gone")
    assert read(fs, "/t.txt", at=t_mid) == b"before"
    assert {e.name for e in fs.listdir("/", at=t_mid)} == {"t.txt", "gone"}
    assert {e.name for e in fs.listdir("/")} == {"t.txt"}
    tokens = fs.snapshot_tokens()
    assert tokens and all(t.startswith("@GMT-") for t in tokens)
    assert [e.name for e in fs.listdir("/.snapshots")] == tokens
    latest = tokens[-1]
    assert read(fs, f"/.snapshots/{latest}/t.txt") == b"after"
    # any token resolves: one from before the last changes shows the old state
    from archive.clock import gmt_token
    old = gmt_token(int(t_mid * 1e6))
    if old != latest:
        assert read(fs, f"/.snapshots/{old}/gone/x") == b"x"
    with pytest.raises(errors.ReadOnly):
        fs.open_write(f"/.snapshots/{latest}/t.txt")
    with pytest.raises(errors.ReadOnly):
        fs.remove(f"/.snapshots/{latest}/t.txt")
    with pytest.raises(errors.NotFound):
        fs.stat("/.snapshots/@GMT-bogus")


def test_restore_tree_at_time(fs):
    fs.mkdir("/proj/src", parents=True)
    put_bytes(fs, "/proj/src/a.py", b"a1")
    put_bytes(fs, "/proj/b.txt", b"b1")
    time.sleep(0.01)
    t = time.time()
    time.sleep(0.01)
    put_bytes(fs, "/proj/src/a.py", b"a2")
    fs.remove("/proj/b.txt")
    fs.remove("/proj/src/a.py")
    fs.rmdir("/proj/src")
    put_bytes(fs, "/proj/new.txt", b"new")
    assert fs.restore("/proj", at=t) == 2
    assert read(fs, "/proj/src/a.py") == b"a1"
    assert read(fs, "/proj/b.txt") == b"b1"
    assert read(fs, "/proj/new.txt") == b"new"       # restore never deletes


def test_append_and_update_reuse_chunks(repo, fs):
    base = os.urandom(2_000_000)
    put_bytes(fs, "/log", base)
    stored0 = repo.stats()["stored_bytes"]
    w = fs.append("/log")
    w.write(b"appended")
    w.commit()
    assert read(fs, "/log") == base + b"appended"
    u = fs.open_update("/log")
    u.pwrite(b"ZZZZ", 1_500_000)
    assert u.pread(8, 1_499_998) == base[1_499_998:1_500_000] + b"ZZZZ" + base[1_500_004:1_500_006]
    u.truncate(1_600_000)
    u.commit()
    expect = bytearray(base[:1_600_000])
    expect[1_500_000:1_500_004] = b"ZZZZ"
    assert read(fs, "/log") == bytes(expect)
    assert [v.number for v in fs.versions("/log")] == [1, 2, 3]
    # two more versions of a 2 MB file cost far less than 2 MB more storage
    assert repo.stats()["stored_bytes"] - stored0 < 600_000
    # an update that changes nothing makes no version
    assert fs.open_update("/log").commit() is None
    # sparse growth reads as zeros
    u = fs.open_update("/sparse")
    u.pwrite(b"end", 100_000)
    u.commit()
    assert read(fs, "/sparse") == bytes(100_000) + b"end"


def test_copy_is_deduplicated(repo, fs):
    put_bytes(fs, "/orig", os.urandom(1_000_000))
    before = repo.stats()["stored_bytes"]
    v = fs.copy("/orig", "/copy")
    assert v.number == 1 and v.size == 1_000_000
    assert read(fs, "/copy") == read(fs, "/orig")
    assert fs.stat("/copy").etag == fs.stat("/orig").etag
    assert repo.stats()["stored_bytes"] == before


def test_permissions_and_bad_paths(repo, fs):
    put_bytes(fs, "/f", b"data")
    bob = repo.share("office", user=repo.authenticate("bob", "bob-pw"))
    assert read(bob, "/f") == b"data"
    assert not bob.writable
    for call in (lambda: bob.open_write("/g"), lambda: bob.remove("/f"), lambda: bob.mkdir("/d"),
                 lambda: bob.rename("/f", "/h")):
        with pytest.raises(errors.PermissionDenied):
            call()
    assert [v.number for v in fs.versions("/f")] == [1]
    with pytest.raises(errors.AuthFailed):
        repo.authenticate("alice", "wrong")
    with pytest.raises(errors.AuthFailed):
        repo.authenticate("mallory", "x")
    repo.add_share("private")
    with pytest.raises(errors.PermissionDenied):
        repo.share("private", user=repo.authenticate("bob", "bob-pw"))
    with pytest.raises(errors.NotFound):
        repo.share("nope")
    for bad in ["/../etc/passwd", "/a/../b", "/nul\x00byte", "/ctl\x01", "/" + "x" * 256, "/a/./b"]:
        with pytest.raises(errors.InvalidPath):
            fs.open_write(bad)
    with pytest.raises(errors.NotFound):
        fs.open_write("/missing/dir/file")
    fs.mkdir("/adir")
    with pytest.raises(errors.IsADirectory):
        fs.open_write("/adir")
    put_bytes(fs, "/adir/x", b"x")
    with pytest.raises(errors.NotEmpty):
        fs.rmdir("/adir")


def test_nfc_and_case_insensitive_lookup(repo, fs):
    put_bytes(fs, "/Caf\u0065\u0301.txt", b"nfd name")            # NFD from a Mac
    assert [e.name for e in fs.listdir("/")] == ["Caf\u00e9.txt"]
    assert read(fs, "/Caf\u00e9.txt") == b"nfd name"
    ci = repo.share("office", case_insensitive=True)
    assert read(ci, "/CAFÉ.TXT") == b"nfd name"
    with pytest.raises(errors.NotFound):
        fs.stat("/CAFÉ.TXT")


def test_concurrent_writers_lose_no_version(fs):
    put_bytes(fs, "/shared", b"0")
    errs = []

    def worker(i):
        try:
            for j in range(10):
                put_bytes(fs, "/shared", f"{i}-{j}".encode())
                put_bytes(fs, f"/own-{i}-{j}", os.urandom(5000))
        except Exception as e:     # pragma: no cover - reported below
            errs.append(e)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errs == []
    assert [v.number for v in fs.versions("/shared")] == list(range(1, 82))
    assert len([e for e in fs.listdir("/") if e.name.startswith("own-")]) == 80


def test_quota(repo):
    repo.add_share("small", quota=100_000)
    fs = repo.share("small")
    put_bytes(fs, "/a", os.urandom(60_000))
    with pytest.raises(errors.QuotaExceeded):
        put_bytes(fs, "/b", os.urandom(60_000))
    assert not fs.exists("/b")
    assert fs.usage() == (60_000, 100_000)


def test_audit_records_changes(repo, fs):
    put_bytes(fs, "/audited", b"x")
    fs.remove("/audited")
    recs = [r for r in repo.audit_events() if r.path == "/audited"]
    assert [(r.action, r.user, r.protocol, r.address, r.version) for r in recs] == [
        ("write", "alice", "test", "127.0.0.1", 1), ("delete", "alice", "test", "127.0.0.1", 2)]


def test_encrypted_repository_hides_content(tmp_path):
    from archive import Repository
    r = Repository.init(tmp_path / "enc", password="s3cret", encrypt=True)
    r.add_share("s")
    secret = b"TOP-SECRET-PAYLOAD " * 1000
    fs = r.share("s")
    fs.mkdir("/very-secret-folder-name")
    put_bytes(fs, "/very-secret-folder-name/f", secret)
    r.close()
    blob = b"".join(p.read_bytes() for p in (tmp_path / "enc" / "packs").rglob("*.pack"))
    assert b"TOP-SECRET" not in blob and b"very-secret-folder-name" not in blob
    with pytest.raises(errors.BadPassword):
        Repository.open(tmp_path / "enc", password="wrong")
    r = Repository.open(tmp_path / "enc", password="s3cret")
    assert read(r.share("s"), "/very-secret-folder-name/f") == secret
    r.change_password("n3w")
    r.close()
    with pytest.raises(errors.BadPassword):
        Repository.open(tmp_path / "enc", password="s3cret")
    Repository.open(tmp_path / "enc", password="n3w").close()


def test_listing_streams_in_pages(fs):
    fs.mkdir("/many")
    from archive.streams import commit_many
    ws = []
    for i in range(2500):
        w = fs.open_write(f"/many/f{i:05d}")
        w.write(b"x")
        w.prepare()
        ws.append(w)
    commit_many(ws)
    names = [e.name for e in fs.listdir("/many", page=1000)]
    assert names == [f"f{i:05d}" for i in range(2500)]


def test_gc_while_an_upload_runs(repo, fs, tmp_path):
    """GC in another process-like repository handle never breaks an upload in flight."""
    from archive import Repository, gc
    shared = os.urandom(400_000)
    put_bytes(fs, "/old", shared)
    w = fs.open_write("/new")
    w.write(shared)                      # dedupe hits on /old's chunks
    w.write(os.urandom(2_000_000))       # fresh chunks in this process's open pack
    fs.remove("/old")
    repo.add_share("tmp")
    other = Repository.open(repo.path)
    try:
        # the versions of /old are purged, so its chunks lose their last reference
        from archive.retention import prune
        other.set_share("office", retention="keep-last=1")
        prune(other)
        rep = gc.collect(other)          # default grace: young packs and fresh orphans stay
        assert rep.chunks_deleted == 0
        w.write(b"end")
        v = w.commit()
        assert v.number == 1
        with fs.open_read("/new") as r:
            assert r.read(400_000) == shared
        from archive.check import check
        assert check(other, read_data=True) == []
        # with no grace at all, a racing upload fails cleanly instead of committing holes
        w2 = fs.open_write("/racy")
        w2.write(os.urandom(6_000_000))
        w2.prepare()                     # all its chunks are in the pack, not yet committed
        gc.collect(other, grace=0)
        from archive.streams import commit_many
        with pytest.raises(errors.Conflict):
            commit_many([w2])
        assert not fs.exists("/racy")
        assert check(other, read_data=True) == []
    finally:
        other.close()


def test_restore_a_deleted_folder_continues_histories(fs):
    fs.mkdir("/gone/deep", parents=True)
    put_bytes(fs, "/gone/deep/f", b"v1")
    put_bytes(fs, "/gone/g", b"g1")
    node = fs.stat("/gone/deep/f").node_id
    time.sleep(0.01)
    t = time.time()
    time.sleep(0.01)
    fs.remove("/gone/deep/f")
    fs.rmdir("/gone/deep")
    fs.remove("/gone/g")
    fs.rmdir("/gone")
    assert not fs.exists("/gone")
    assert fs.restore("/gone", at=t) == 2
    assert read(fs, "/gone/deep/f") == b"v1" and read(fs, "/gone/g") == b"g1"
    assert fs.stat("/gone/deep/f").node_id == node
    assert [(v.number, v.deleted) for v in fs.versions("/gone/deep/f")] == [(1, False), (2, True), (3, False)]


def test_schema_head_constant_matches_the_migrations():
    """The fast 'already at head' check must name the newest Alembic revision."""
    from pathlib import Path
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    import archive.catalog.db as db
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    assert ScriptDirectory.from_config(cfg).get_heads() == [db.SCHEMA_HEAD]


def test_paged_listing_equals_stat_of_each_entry(fs):
    """Every listed Entry is exactly what stat() says of its path, now, in the past and under a
    snapshot token, across page boundaries (later pages grow) and when resumed with `after`."""
    fs.mkdir("/p")
    fs.mkdir("/p/sub")
    for i in range(23):
        put_bytes(fs, f"/p/f{i:02d}", b"v1 %d" % i)
    time.sleep(0.01)
    t_mid = time.time()
    time.sleep(1.01 - time.time() % 1)      # the token of t_mid shows the state before what follows
    for i in range(0, 23, 3):
        put_bytes(fs, f"/p/f{i:02d}", b"second version %d" % i)
    fs.remove("/p/f22")
    put_bytes(fs, "/p/new", b"n")
    token = gmt_token(int(t_mid * 1_000_000))     # any token resolves, listed or not
    now_names = ["new"] + [f"f{i:02d}" for i in range(22)] + ["sub"]
    past_names = [f"f{i:02d}" for i in range(23)] + ["sub"]
    for base, at, names in (("/p", None, sorted(now_names)), ("/p", t_mid, sorted(past_names)),
                            (f"/.snapshots/{token}/p", None, sorted(past_names))):
        for page in (1, 3, 23, 24, 25, 1000):
            got = list(fs.listdir(base, at=at, page=page))
            assert [e.name for e in got] == names
            assert got == [fs.stat(f"{base}/{n}", at=at) for n in names]
        assert [e.name for e in fs.listdir(base, at=at, page=2, after="f05")] == [n for n in names if n > "f05"]
    listed = {e.name: e for e in fs.listdir("/p", page=2)}
    assert (listed["f03"].version, listed["f03"].size, listed["f04"].version) == (2, 16, 1)
    assert listed["sub"].kind == "dir" and listed["sub"].path == "/p/sub"
    assert {e.path for e in fs.listdir("/", page=1)} == {"/p"}


def test_listing_equals_the_max_number_reference_query(repo, fs):
    """listdir finds each entry's newest version by one index search (rawsql.list_page_sql); the
    plain statement of it, max(number) per node, lists the same Entries (built by
    types.listed_entry, as the CLI's lean listing builds them): files with several versions, a
    file without content yet, a folder, a deleted and re-created name, now and at an instant."""
    from archive import rawsql as raw
    from archive.types import listed_entry
    fs.mkdir("/r")
    fs.mkdir("/r/sub")
    for i in range(5):
        for k in range(i % 3 + 1):
            put_bytes(fs, f"/r/f{i}", b"version %d of %d" % (k, i) * (k + 1))
    fs.create_file("/r/empty")
    put_bytes(fs, "/r/gone", b"old")
    time.sleep(0.01)
    t_mid = time.time()
    time.sleep(0.01)
    put_bytes(fs, "/r/f0", b"after t_mid")
    fs.remove("/r/gone")
    put_bytes(fs, "/r/gone", b"back again, longer")
    ref = ("SELECT d.name, d.node_id, n.kind, n.created_at, coalesce(n.mtime, n.created_at), v.number, v.size, "
           "coalesce(v.mtime, v.created_at), v.etag "   # (mtime: NULL when equal to created_at, 0016)
           "FROM dentries d JOIN nodes n ON n.id = d.node_id "
           "LEFT JOIN versions v ON v.node_id = d.node_id AND v.number = "
           "(SELECT max(v2.number) FROM versions v2 WHERE v2.node_id = d.node_id {vc}) "
           "WHERE d.parent_id = ? AND {alive} ORDER BY d.name")
    folder = fs.stat("/r").node_id
    at = int(t_mid * 1_000_000)
    with raw.read(repo.catalog) as s:           # SQLite or PostgreSQL (tests/test_postgres.py)
        now_rows = raw.run(s, ref.format(vc="", alive="d.valid_to IS NULL"), (folder,)).fetchall()
        past_rows = raw.run(s, ref.format(vc="AND v2.created_at <= ?", alive="d.valid_from <= ? AND "
                                          "(d.valid_to IS NULL OR d.valid_to > ?)"), (at, folder, at, at)).fetchall()
    assert [r[0] for r in now_rows] == ["empty", "f0", "f1", "f2", "f3", "f4", "gone", "sub"]
    assert [r[5] for r in now_rows] == [None, 2, 2, 3, 1, 2, 3, None]     # "gone": 1, tombstone 2, 3
    for at_, rows in ((None, now_rows), (t_mid, past_rows)):
        for page in (1, 2, 1000):
            assert list(fs.listdir("/r", at=at_, page=page)) == [listed_entry("/r", r, at_ is not None) for r in rows]
    assert [e.version for e in fs.listdir("/r", at=t_mid)][:2] == [None, 1]
