"""The durable commit of one small upload or one namespace change (branch commit2): it runs as a
plain-SQL write transaction (archive/rawsql.py `write`, no Session) through GroupCommit.  What a
user sees must not change: a refused or failed commit leaves nothing, a grant changed meanwhile
is honoured inside the commit, and the statements a commit runs stay few."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest
from sqlalchemy import event, text

from archive import Origin, errors
from conftest import put_bytes

WEB = Origin("webdav", "10.0.0.7")
TABLES = ("nodes", "dentries", "versions", "version_chunks", "chunks", "audit", "share_changes")


@contextmanager
def _statements(repo) -> Iterator[list[str]]:
    """The SQL text of every statement the catalog's connections run inside the block (the
    engine is disposed on entry so that no connection made before escapes the trace)."""
    seen: list[str] = []

    def traced(dbapi_conn, _rec):
        dbapi_conn.set_trace_callback(seen.append)
    event.listen(repo.catalog.engine, "connect", traced)
    repo.catalog.engine.dispose()
    try:
        yield seen
    finally:
        event.remove(repo.catalog.engine, "connect", traced)
        repo.catalog.engine.dispose()


def _rows(repo) -> dict:
    with repo.catalog.session() as s:
        out = {t: s.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}
        out["head"] = tuple(s.execute(text("SELECT txid, seq FROM chain_head WHERE id = 1")).one())
    return out


def test_a_grant_changed_behind_a_stale_login_is_honoured_inside_the_commit(repo):
    """The adapter did not call validate() since the grant changed: the commit's own check (in
    its write transaction, which has no ORM session) re-reads the grants and refuses."""
    alice = repo.login("alice", "alice-pw", WEB)
    fs = alice.share("office", WEB)
    put_bytes(fs, "/kept.txt", b"before")
    pending = fs.open_write("/late.txt")
    pending.write(b"half")
    before = _rows(repo)
    repo.grant("alice", "office", "ro")          # another client, no validate() on this login
    after_grant = _rows(repo)
    with pytest.raises(errors.PermissionDenied):
        pending.commit()
    with pytest.raises(errors.PermissionDenied):
        fs.remove("/kept.txt")
    assert alice.grants == {"office": "ro"}
    # (the refused upload's chunk row may stay: an unreferenced chunk, gc's to reclaim, as before)
    assert {k: v for k, v in _rows(repo).items() if k != "chunks"} == \
        {k: v for k, v in after_grant.items() if k != "chunks"}
    assert after_grant["head"] != before["head"]
    admin = repo.share("office")
    assert not admin.exists("/late.txt")
    with admin.open_read("/kept.txt") as r:
        assert r.read() == b"before"


def test_a_commit_that_fails_at_its_durable_step_leaves_no_row_and_the_next_one_works(repo, monkeypatch):
    fs = repo.share("office")
    fs.mkdir("/d")
    put_bytes(fs, "/d/old.txt", b"old")
    before = _rows(repo)

    def full():
        raise errors.NoSpace("the chunk store is full: nothing was committed")
    monkeypatch.setattr(repo.store, "sync", full)
    w = fs.open_write("/d/new.txt")
    w.write(b"new bytes")
    with pytest.raises(errors.NoSpace):
        w.commit()
    for change in (lambda: fs.create_file("/d/empty"), lambda: fs.remove("/d/old.txt"),
                   lambda: fs.rename("/d/old.txt", "/d/moved.txt"), lambda: fs.mkdir("/d/sub")):
        with pytest.raises(errors.NoSpace):
            change()
    assert _rows(repo) == before
    monkeypatch.undo()

    put_bytes(fs, "/d/new.txt", b"new bytes")
    fs.rename("/d/old.txt", "/d/moved.txt")
    assert sorted(e.name for e in fs.listdir("/d")) == ["moved.txt", "new.txt"]
    with fs.open_read("/d/moved.txt") as r:
        assert r.read() == b"old"
    assert _rows(repo)["head"][1] == before["head"][1] + 2


def test_statements_of_one_small_commit_and_of_create_remove(repo):
    """Counted at the SQLite driver (BEGIN/COMMIT/ROLLBACK included): a guard against a change
    that silently adds round trips to every small file (23, 19 and 13 before branch commit2:
    create_file read its Entry back, a new name took two lookups)."""
    fs = repo.share("office")
    fs.mkdir("/d")
    put_bytes(fs, "/d/warm", b"w")
    # the audit's names ("write", "create", "delete", the folder "/d/"...): a name first seen costs
    # its insert and, in the next transaction, one look-up; then it is cached (schema 0017)
    put_bytes(fs, "/d/warm2", b"w")
    for _ in range(2):
        fs.create_file("/d/warm3")
        fs.remove("/d/warm3")
    with _statements(repo) as seen:
        w = fs.open_write("/d/f")
        w.write(b"small file " * 30)
        w.commit()
        upload = len(seen)
        seen.clear()
        fs.create_file("/d/g")
        create = len(seen)
        seen.clear()
        fs.remove("/d/g")
        remove = len(seen)
    # upload: the early check (BEGIN, 2 lookups, ROLLBACK), the dedupe lookup (BEGIN, 1, ROLLBACK),
    # the commit (BEGIN IMMEDIATE, the pack's name (packs), chunk, 2 lookups, max(id), 3 rows
    # (node, dentry, the version holding its one chunk) + parent mtime, the share's usage counter
    # (UPDATE ... RETURNING: the quota's check reads what it returns), share change, audit,
    # chain head read + move, COMMIT).  Fewer would mean statements went untraced (a connection
    # made before the engine was disposed), more a new round trip.
    assert (upload, create, remove) == (23, 12, 12), (upload, create, remove)


@pytest.mark.parametrize("ci", [False, True])
def test_the_entry_of_create_file_and_mkdir_is_what_stat_reads_back(repo, ci):
    """create_file and mkdir answer from the event they committed (no read-back): the same
    Entry as a stat right after, for a new name and for a name whose deleted file comes back."""
    fs = repo.share("office", case_insensitive=ci)
    made = fs.mkdir("/Dir")
    assert made == fs.stat("/Dir") and made.is_dir
    assert fs.mkdir("/Dir/Sub", parents=True) == fs.stat("/Dir/Sub")
    new = fs.create_file("/Dir/Émile.txt")
    assert new == fs.stat("/Dir/Émile.txt") and new.size == 0 and new.version is None
    put_bytes(fs, "/Dir/old.txt", b"content")
    fs.remove("/Dir/old.txt")
    back = fs.create_file("/Dir/old.txt")        # continues the deleted file's history
    assert back == fs.stat("/Dir/old.txt")
    assert [v.number for v in fs.versions("/Dir/old.txt")] == [1, 2]


def test_set_times_shares_the_commit_path_and_refuses_what_is_not_there(repo):
    """set_times (FTP MFMT, SMB CLOSE, NFS SETATTR) goes through GroupCommit's plain-SQL commit:
    a file's current version and a folder get the time, one transaction each; a missing path
    or a file without content is refused with nothing written."""
    fs = repo.share("office")
    fs.mkdir("/d")
    put_bytes(fs, "/d/f", b"one")
    put_bytes(fs, "/d/f", b"two")
    fs.create_file("/d/empty")
    seq = _rows(repo)["head"][1]
    fs.set_times("/d/f", 1_500_000_000.25)
    fs.set_times("/d", 1_400_000_000)
    assert fs.stat("/d/f").mtime == 1_500_000_000.25 and fs.stat("/d").mtime == 1_400_000_000
    assert [v.mtime for v in fs.versions("/d/f")][-1] == 1_500_000_000.25
    assert fs.versions("/d/f")[0].mtime != 1_500_000_000.25       # only the current version
    before = _rows(repo)
    assert before["head"][1] == seq + 2
    with pytest.raises(errors.NotFound):
        fs.set_times("/d/nothing", 1)
    with pytest.raises(errors.NotFound):
        fs.set_times("/d/empty", 1)
    assert _rows(repo) == before
    assert [(e.action, e.path) for e in repo.audit_events()][-2:] == [("set_times", "/d/f"), ("set_times", "/d")]



def test_a_logins_early_check_and_set_times_check_the_grant_in_their_own_transaction(repo):
    """open_write's early check and set_times read the login's grant inside the transaction
    they open anyway (FTP's STOR and MFMT: one read transaction less each, branch ftp15): a
    downgrade or a removal made by another client is refused there, with nothing written."""
    alice = repo.login("alice", "alice-pw", WEB)
    fs = alice.share("office", WEB)
    fs.mkdir("/d")
    put_bytes(fs, "/d/f", b"one")
    with _statements(repo) as seen:
        fs.open_write("/d/g").abort()
        early = list(seen)
        seen.clear()
        fs.set_times("/d/f", 1_500_000_000)
        times = list(seen)
    # one read transaction: BEGIN, the auth generation, the parent's and the name's lookups, ROLLBACK
    assert [q.split()[0].upper() for q in early] == ["BEGIN", "SELECT", "SELECT", "SELECT", "ROLLBACK"], early
    assert sum("auth_state" in q for q in early) == 1
    assert [q.split()[0].upper() for q in times][0] == "BEGIN" and "IMMEDIATE" in times[0].upper(), times
    assert "auth_state" in times[1] and times.count("BEGIN") == 0, times
    assert fs.stat("/d/f").mtime == 1_500_000_000

    repo.grant("alice", "office", "ro")          # another client; this login did not validate()
    before = _rows(repo)
    with pytest.raises(errors.PermissionDenied):
        fs.open_write("/d/h")
    with pytest.raises(errors.PermissionDenied):
        fs.set_times("/d/f", 1_600_000_000)
    assert _rows(repo) == before
    assert repo.share("office").stat("/d/f").mtime == 1_500_000_000
    repo.grant("alice", "office", "rw")
    fs.set_times("/d/f", 1_600_000_000)          # the grant is back: allowed again
    repo.remove_user("alice")
    before = _rows(repo)
    with pytest.raises(errors.AuthFailed):
        fs.open_write("/d/h")
    with pytest.raises(errors.AuthFailed):
        fs.set_times("/d/f", 1_700_000_000)
    assert _rows(repo) == before
    assert repo.share("office").stat("/d/f").mtime == 1_600_000_000


def test_a_repository_dropped_without_close_frees_its_catalog_engine(tmp_path):
    """The commit path's idle connections (rawsql._Idle) must not keep an engine, and with it
    SQLite file descriptors, alive after its repository is gone (close() closes them at once)."""
    import gc
    import weakref

    from archive import Repository
    r = Repository.init(tmp_path / "dropped")
    r.add_share("s")
    fs = r.share("s")
    put_bytes(fs, "/f", b"x")
    assert fs.stat("/f").size == 1
    engine = weakref.ref(r.catalog.engine)
    r.store.close()
    del r, fs
    gc.collect()
    gc.collect()
    assert engine() is None


@pytest.mark.parametrize("size", [100, 200_000])     # one chunk (in the version row); a chunk list
def test_a_chunk_whose_id_prefix_another_chunk_holds_is_refused_not_mixed_up(repo, size):
    """Chunks are unique by the first 16 bytes of their id (schema 0012).  Two ids alike there
    cannot be made on purpose (a keyed hash), so one is planted: the upload of the chunk it
    shadows fails and leaves nothing; the planted row keeps its own id and location."""
    import os
    fs = repo.share("office")
    data = os.urandom(size)
    cid = repo.codec.chunk_id(data[:100]) if size == 100 else None
    if cid is None:                                    # the first chunk of the big file
        w = fs.open_write("/probe")
        w.write(data)
        w.commit()
        with repo.catalog.session() as s:
            cid = s.execute(text("SELECT c.id FROM version_chunks vc JOIN chunks c ON c.n = vc.chunk "
                                 "WHERE vc.\"offset\" = 0 ORDER BY vc.version_id DESC LIMIT 1")).scalar()
            s.execute(text("DELETE FROM chunks WHERE id = :c"), {"c": cid})       # as if never stored
            s.commit()
        fs.remove("/probe")
    twin = cid[:16] + bytes(16)
    with repo.catalog.session() as s:
        s.execute(text('INSERT INTO chunks (id, pack, "offset", length, raw_len, orphaned_at) '
                       "VALUES (:t, NULL, 0, 0, 0, 1)"), {"t": twin})
        s.commit()
    before = _rows(repo)
    with pytest.raises(errors.Corrupt, match="first 16 bytes"):
        put_bytes(fs, "/shadowed.bin", data)
    assert _rows(repo) == before
    assert not fs.exists("/shadowed.bin")
    with repo.catalog.session() as s:
        assert s.execute(text("SELECT id, pack, orphaned_at FROM chunks WHERE substr(id, 1, 16) = :p"),
                         {"p": cid[:16]}).all() == [(twin, None, 1)]
