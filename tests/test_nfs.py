"""NFSv3 adapter driven by real clients: libnfs-utils (nfs-cp, nfs-ls, nfs-cat) and the libnfs
C library (ctypes), plus hand-made RPC records for what no client would send."""
from __future__ import annotations

import contextlib
import errno
import gc
import os
import struct
import threading
import time

import pytest

from archive import Origin, Repository
from archive.clock import gmt_token

from protocols.nfs import listing
from protocols.nfs.state import RESOLVE_TTL

from nfs_helpers import LibNFS, NFSError, NFSServer, Pipeline, RawRPC, need, run

MOUNT, NFS = 100005, 100003


@pytest.fixture
def srv(tmp_path):
    s = NFSServer(tmp_path)
    yield s
    s.close()


def put(fs, path: str, data: bytes) -> None:
    with fs.open_write(path) as w:
        w.write(data)


# -- the libnfs-utils tools ----------------------------------------------------------------------
def test_nfs_cp_ls_cat_round_trip_makes_one_version(srv, tmp_path):
    src = tmp_path / "report.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    p = run([need("nfs-cp"), str(src), srv.url("/office/report.bin")])
    assert p.returncode == 0, p.stderr
    srv.fs().mkdir("/sub")
    p = run([need("nfs-cp"), str(src), srv.url("/office/sub/copy.bin")])     # mounts /office/sub
    assert p.returncode == 0, p.stderr
    ls = run([need("nfs-ls"), srv.url("/office")])
    assert ls.returncode == 0, ls.stderr
    assert "report.bin" in ls.stdout.decode() and "sub" in ls.stdout.decode()
    cat = run([need("nfs-cat"), srv.url("/office/report.bin")])
    assert cat.returncode == 0 and cat.stdout == src.read_bytes()
    out = tmp_path / "back.bin"
    assert run([need("nfs-cp"), srv.url("/office/sub/copy.bin"), str(out)]).returncode == 0
    assert out.read_bytes() == src.read_bytes()
    for path in ("/report.bin", "/sub/copy.bin"):
        vs = srv.wait_versions(path, 1)
        assert len(vs) == 1 and vs[0].size == src.stat().st_size
        assert vs[0].origin.protocol == "nfs" and vs[0].origin.user == "alice"
        assert srv.fs().open_read(path).read() == src.read_bytes()
    newer = tmp_path / "newer.bin"
    newer.write_bytes(b"shorter, newer content")
    # nfs-cp creates its target exclusively (NFS3ERR_EXIST, as with nfs-ganesha): nothing changes
    assert run([need("nfs-cp"), str(newer), srv.url("/office/report.bin")]).returncode != 0
    c = LibNFS(srv.url("/office"))                       # an O_TRUNC overwrite: one new version
    try:
        fh = c.open("/report.bin", os.O_WRONLY | os.O_TRUNC)
        c.pwrite(fh, newer.read_bytes(), 0)
        c.close_file(fh)
    finally:
        c.close()
    vs = srv.wait_versions("/report.bin", 2)
    assert [v.size for v in vs] == [src.stat().st_size, len(b"shorter, newer content")]
    assert run([need("nfs-cat"), srv.url("/office/report.bin")]).stdout == b"shorter, newer content"


def test_export_lists_shares_and_unknown_paths_fail(srv):
    p = run([need("nfs-ls"), srv.url("/nosuchshare")])
    assert p.returncode != 0
    p = run([need("nfs-ls"), srv.url("/office/not/there")])
    assert p.returncode != 0
    p = run([need("nfs-cat"), srv.url("/office/missing.txt")])
    assert p.returncode != 0


# -- libnfs (ctypes) ------------------------------------------------------------------------------
def test_large_write_and_read_back_identical(srv):
    data = os.urandom(24 * 1024 * 1024)
    c = LibNFS(srv.url("/office"))
    try:
        c.write_file("/big.bin", data)
        assert c.stat("/big.bin").size == len(data)
        assert c.read_file("/big.bin") == data                   # before the version is committed
        vs = srv.wait_versions("/big.bin", 1)
        assert [v.number for v in vs] == [1] and vs[0].size == len(data)
        assert c.read_file("/big.bin") == data                   # from the committed version
        # READs in flight (the kernel client's read-ahead): at most MAX_READS run, in file order
        assert Pipeline(c, 32).read_file("/big.bin", len(data), block=96 * 1024) == data
    finally:
        c.close()
    assert srv.fs().open_read("/big.bin").read() == data


def test_mkdir_rename_remove_truncate_keep_history(srv):
    c = LibNFS(srv.url("/office"))
    try:
        c.mkdir("/dir")
        c.write_file("/dir/a.txt", b"hello world")
        assert srv.wait_versions("/dir/a.txt", 1)
        node = srv.fs().stat("/dir/a.txt").node_id
        c.rename("/dir/a.txt", "/dir/b.txt")
        assert c.listdir("/dir") == ["b.txt"]
        assert srv.fs().stat("/dir/b.txt").node_id == node         # identity and history follow
        c.truncate("/dir/b.txt", 5)
        vs = srv.wait_versions("/dir/b.txt", 2)
        assert [v.size for v in vs] == [11, 5]
        assert c.read_file("/dir/b.txt") == b"hello"
        fh = c.open("/dir/b.txt", os.O_RDWR)
        c.ftruncate(fh, 0)
        c.pwrite(fh, b"xyz", 0)
        c.close_file(fh)
        vs = srv.wait_versions("/dir/b.txt", 3)
        assert [v.size for v in vs] == [11, 5, 3]
        with pytest.raises(NFSError) as e:
            c.rmdir("/dir")
        assert e.value.errno == errno.ENOTEMPTY
        c.unlink("/dir/b.txt")
        c.rmdir("/dir")
        assert c.listdir("/") == []
        vs = srv.fs().versions("/dir/b.txt") if srv.fs().exists("/dir") else None
        assert vs is None
        with pytest.raises(NFSError) as e:
            c.stat("/dir")
        assert e.value.errno == errno.ENOENT
        with pytest.raises(NFSError) as e:
            c.mkdir("/a/b")
        assert e.value.errno == errno.ENOENT
    finally:
        c.close()


def test_remove_is_a_restorable_tombstone(srv, tmp_path):
    c = LibNFS(srv.url("/office"))
    try:
        c.write_file("/gone.txt", b"precious")
        srv.wait_versions("/gone.txt", 1)
        c.unlink("/gone.txt")
    finally:
        c.close()
    vs = srv.fs().versions("/gone.txt")
    assert [(v.number, v.deleted) for v in vs] == [(1, False), (2, True)]
    srv.fs().restore("/gone.txt", version=1)
    cat = run([need("nfs-cat"), srv.url("/office/gone.txt")])
    assert cat.stdout == b"precious"


def test_thousands_of_entries_list_completely(srv, monkeypatch):
    """The issue's 10,000-entry folder, at 2,000 (bench/nfs.py lists 10,000 files): building
    10,000 folders costs the core ~60 s on the CI machine, 2,000 still take nfs-ls ~45
    READDIRPLUS pages, and the listing windows are made small so that they are refilled 20
    times and trimmed behind the reader while it pages."""
    monkeypatch.setattr(listing, "CHUNK", 100)
    monkeypatch.setattr(listing, "MAX_ITEMS", 250)
    fs = srv.fs()
    names = [f"d{i:04d}" for i in range(2_000)]
    fs.mkdir_many(["/many/" + n for n in names])           # one transaction: a fast setup
    put(fs, "/many/zfile.txt", b"a file among them")
    ls = run([need("nfs-ls"), srv.url("/office/many")], timeout=300)
    assert ls.returncode == 0, ls.stderr
    listed = [line.split()[-1] for line in ls.stdout.decode().splitlines() if line.strip()]
    listed = [n for n in listed if n not in (".", "..")]
    assert sorted(listed) == names + ["zfile.txt"] and len(listed) == len(names) + 1
    c = LibNFS(srv.url("/office"))
    try:
        got = c.listdir("/many")
        assert sorted(got) == names + ["zfile.txt"] and len(got) == len(names) + 1
    finally:
        c.close()


def test_snapshots_are_exported_read_only(srv):
    fs = srv.fs()
    put(fs, "/doc.txt", b"version one")
    time.sleep(1.1)
    token = gmt_token(int(time.time() * 1e6))
    time.sleep(1.1)
    put(fs, "/doc.txt", b"version two!")
    cat = run([need("nfs-cat"), srv.url(f"/office/.snapshots/{token}/doc.txt")])
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout == b"version one"
    c = LibNFS(srv.url("/office"))
    try:
        assert sorted(c.listdir("/.snapshots")) == sorted(fs.snapshot_tokens())   # any token works
        assert c.read_file(f"/.snapshots/{token}/doc.txt") == b"version one"
        assert c.read_file("/doc.txt") == b"version two!"
        with pytest.raises(NFSError) as e:
            c.write_file(f"/.snapshots/{token}/new.txt", b"x")
        assert e.value.errno == errno.EROFS
        with pytest.raises(NFSError):
            c.unlink(f"/.snapshots/{token}/doc.txt")
        assert ".snapshots" not in c.listdir("/")
    finally:
        c.close()
    assert [v.number for v in fs.versions("/doc.txt")] == [1, 2]


def test_read_only_export_refuses_writes(srv):
    put(srv.fs("public"), "/readme.txt", b"read me")
    c = LibNFS(srv.url("/public"))
    try:
        assert c.read_file("/readme.txt") == b"read me"
        with pytest.raises(NFSError) as e:
            c.write_file("/new.txt", b"no")
        assert e.value.errno == errno.EROFS
        with pytest.raises(NFSError):
            c.unlink("/readme.txt")
        with pytest.raises(NFSError):
            c.mkdir("/d")
    finally:
        c.close()
    assert [e.name for e in srv.fs("public").listdir("/")] == ["readme.txt"]
    assert len(srv.fs("public").versions("/readme.txt")) == 1


def test_read_only_grant_of_the_squash_user_refuses_writes(tmp_path):
    s = NFSServer(tmp_path, exports=[{"share": "office", "user": "bob"}])       # bob: ro grant
    try:
        put(s.fs(), "/seen.txt", b"bob may read")
        c = LibNFS(s.url("/office"))
        try:
            assert c.read_file("/seen.txt") == b"bob may read"
            with pytest.raises(NFSError) as e:
                c.write_file("/bob.txt", b"no")
            assert e.value.errno == errno.EACCES
        finally:
            c.close()
        assert not s.fs().exists("/bob.txt")
    finally:
        s.close()


def test_client_outside_allowed_networks_is_refused(tmp_path):
    s = NFSServer(tmp_path, exports=[{"share": "office", "user": "alice", "clients": ["10.9.0.0/16"]}])
    try:
        p = run([need("nfs-ls"), s.url("/office")])
        assert p.returncode != 0
        r = RawRPC(s.port)
        _, rep = r.call(MOUNT, 3, 1, _string("/office"))
        assert _accepted(rep) == 0 and struct.unpack(">I", rep[24:28])[0] == 13      # MNT3ERR_ACCES
        r.close()
    finally:
        s.close()


def test_handles_of_a_network_no_longer_allowed_get_acces(tmp_path):
    s = NFSServer(tmp_path)
    fh = _mnt(s.port, "/office")
    s.stop()
    s2 = NFSServer(tmp_path, repo=s.repo, exports=[{"share": "office", "user": "alice", "clients": ["10.0.0.0/8"]}])
    try:
        assert _nfs_status(s2.port, 1, _opaque(fh)) == 13                            # NFS3ERR_ACCES
    finally:
        s2.close()


def test_default_exports_every_share_to_loopback_as_default_user(tmp_path):
    s = NFSServer(tmp_path, exports=[], default_user="alice")
    try:
        put(s.fs("public"), "/p.txt", b"public data")
        assert run([need("nfs-cat"), s.url("/public/p.txt")]).stdout == b"public data"
        assert run([need("nfs-ls"), s.url("/office")]).returncode == 0
    finally:
        s.close()
    s = NFSServer(tmp_path / "x", exports=[], default_user="nobody-here")
    try:
        assert run([need("nfs-ls"), s.url("/office")]).returncode != 0
    finally:
        s.close()


# -- handles ---------------------------------------------------------------------------------------
def test_forged_and_stale_handles(srv):
    put(srv.fs(), "/h.txt", b"handle me")
    root = _mnt(srv.port, "/office")
    fh = _lookup(srv.port, root, "h.txt")
    assert _nfs_status(srv.port, 1, _opaque(fh)) == 0
    forged = bytearray(fh)
    forged[10] ^= 1
    assert _nfs_status(srv.port, 1, _opaque(bytes(forged))) == 10001               # NFS3ERR_BADHANDLE
    assert _nfs_status(srv.port, 1, _opaque(b"\x01" * 12)) == 10001
    srv.fs().rename("/h.txt", "/renamed.txt")
    assert _nfs_status(srv.port, 1, _opaque(fh)) == 0                                # survives a rename
    srv.fs().remove("/renamed.txt")                  # by another protocol: seen within RESOLVE_TTL
    time.sleep(RESOLVE_TTL + 0.1)
    assert _nfs_status(srv.port, 1, _opaque(fh)) == 70                               # NFS3ERR_STALE
    put(srv.fs(), "/n.txt", b"n")
    fh = _lookup(srv.port, root, "n.txt")
    assert _nfs_status(srv.port, 12, _opaque(root) + _string("n.txt")) == 0          # REMOVE over NFS
    assert _nfs_status(srv.port, 1, _opaque(fh)) == 70                               # stale at once


def test_handles_survive_a_restart(tmp_path):
    s = NFSServer(tmp_path)
    put(s.fs(), "/keep.txt", b"k")
    fh = _lookup(s.port, _mnt(s.port, "/office"), "keep.txt")
    s.stop()
    s2 = NFSServer(tmp_path, repo=s.repo)
    try:
        assert _nfs_status(s2.port, 1, _opaque(fh)) == 0
    finally:
        s2.close()


# -- writes, commits, crashes ---------------------------------------------------------------------
def test_disconnect_mid_write_leaves_no_version(srv):
    root = _mnt(srv.port, "/office")
    r = RawRPC(srv.port)
    _, rep = r.call(NFS, 3, 8, _opaque(root) + _string("half.bin") + struct.pack(">I", 0) + _sattr_none())
    fh = _create_handle(rep)
    for i in range(4):
        r.call(NFS, 3, 7, _opaque(fh) + struct.pack(">QII", i * 65536, 65536, 0) + _opaque(b"x" * 65536))
    r.close()                                        # gone without COMMIT
    srv.stop()                                       # shutdown drops never-durable data
    fs = srv.fs()
    assert fs.versions("/half.bin") == []
    assert fs.stat("/half.bin").size == 0


def test_unstable_write_then_commit_survives_a_crash(tmp_path):
    s = NFSServer(tmp_path, commit_idle=3600)        # no idle commit: only the restart recovers it
    root = _mnt(s.port, "/office")
    r = RawRPC(s.port)
    _, rep = r.call(NFS, 3, 8, _opaque(root) + _string("safe.bin") + struct.pack(">I", 0) + _sattr_none())
    fh = _create_handle(rep)
    _, rep = r.call(NFS, 3, 7, _opaque(fh) + struct.pack(">QII", 0, 5, 0) + _opaque(b"safe!"))
    verf1 = rep[-8:]
    _, rep = r.call(NFS, 3, 21, _opaque(fh) + struct.pack(">QI", 0, 0))
    assert struct.unpack(">I", rep[24:28])[0] == 0 and rep[-8:] == verf1
    r.close()
    s.adapter.server.stop(0)                          # "crash": sessions are never closed
    s.adapter.sessions._stop.set()
    s2 = NFSServer(tmp_path, repo=s.repo)
    try:
        assert s2.fs().open_read("/safe.bin").read() == b"safe!"
        assert len(s2.fs().versions("/safe.bin")) == 1
        r = RawRPC(s2.port)
        _, rep = r.call(NFS, 3, 21, _opaque(fh) + struct.pack(">QI", 0, 0))
        assert rep[-8:] != verf1                      # new verifier: clients resend unstable data
        r.close()
    finally:
        s2.close()


def test_create_and_mkdir_answer_the_folder_attributes_a_fresh_stat_reads(srv):
    """CREATE/MKDIR take the folder's new mtime from the new node's creation event (no folder
    re-read): the wcc attributes they answer, and a GETATTR after, equal the catalog's."""
    from protocols.nfs.fattr import _split
    srv.fs().mkdir("/sub")
    sub = _lookup(srv.port, _mnt(srv.port, "/office"), "sub")
    r = RawRPC(srv.port)
    for proc, name, args in ((8, "a.txt", struct.pack(">I", 0) + _sattr_none()), (9, "d", _sattr_none()),
                             (8, "b.txt", struct.pack(">I", 0) + _sattr_none())):
        _, rep = r.call(NFS, 3, proc, _opaque(sub) + _string(name) + args)
        assert struct.unpack(">I", rep[24:28])[0] == 0
        assert struct.unpack(">I", rep[-88:-84])[0] == 1                   # folder attributes follow
        want = _split(srv.fs().stat("/sub").mtime)
        assert struct.unpack(">II", rep[-16:-8]) == want
        _, rep = r.call(NFS, 3, 1, _opaque(sub))
        assert struct.unpack(">II", rep[-16:-8]) == want
    r.close()
    assert [e.name for e in srv.fs().listdir("/sub")] == ["a.txt", "b.txt", "d"]


def test_remove_answers_the_folder_attributes_a_fresh_stat_reads(srv):
    """REMOVE takes the folder's new mtime from the tombstone's event (ShareFS.remove_at; no
    folder re-read): the wcc attributes it answers, and a GETATTR and LOOKUP after, equal the
    catalog's, and the name is gone for the next call."""
    from protocols.nfs.fattr import _split
    fs = srv.fs()
    fs.mkdir("/sub")
    for name in ("a.txt", "b.txt"):
        put(fs, f"/sub/{name}", b"x")
    sub = _lookup(srv.port, _mnt(srv.port, "/office"), "sub")
    r = RawRPC(srv.port)
    for name, left in (("a.txt", ["b.txt"]), ("b.txt", [])):
        before = _split(fs.stat("/sub").mtime)
        _, rep = r.call(NFS, 3, 12, _opaque(sub) + _string(name))
        assert struct.unpack(">I", rep[24:28])[0] == 0
        assert struct.unpack(">I", rep[-88:-84])[0] == 1                   # folder attributes follow
        want = _split(fs.stat("/sub").mtime)
        assert want > before and struct.unpack(">II", rep[-16:-8]) == want
        _, rep = r.call(NFS, 3, 1, _opaque(sub))
        assert struct.unpack(">II", rep[-16:-8]) == want
        _, rep = r.call(NFS, 3, 3, _opaque(sub) + _string(name))           # LOOKUP: gone
        assert struct.unpack(">I", rep[24:28])[0] == 2                     # NFS3ERR_NOENT
        assert struct.unpack(">II", rep[-16:-8]) == want                   # the folder's post_op_attr
        assert [e.name for e in fs.listdir("/sub")] == left
    r.close()


def test_removes_in_flight_share_the_folder_re_read_and_each_answers_its_own_change(srv, monkeypatch):
    """REMOVEs in flight in one folder each answer the folder's attributes after their own
    change (another change landed in between, so the folder is re-read): the calls that ask
    while a re-read runs share the next one, never one that began before their change."""
    from archive.sharefs import ShareFS
    from protocols.nfs import nfs3
    from protocols.nfs.fattr import _split
    n, late = 12, 4                 # the last `late` REMOVEs change the folder after the first re-read
    fs = srv.fs()
    fs.mkdir("/sub")
    for i in range(n):
        put(fs, f"/sub/f{i:02d}", b"x")
    sub = _lookup(srv.port, _mnt(srv.port, "/office"), "sub")
    real_read, real_touched, real_remove = nfs3.NFS3._read_entry, nfs3.NFS3._touched, ShareFS.remove_at
    reads, fresh, first_read = [], [], threading.Event()

    def refresh(self, fs, node, path):             # the catalog read behind a shared re-read
        reads.append(node)
        got = real_read(self, fs, node, path)
        if len(reads) == 1:         # the first re-read ends only once every other REMOVE asked
            first_read.set()
            end = time.monotonic() + 20
            while time.monotonic() < end and sum(f.users for f in self._flights.values()) + len(fresh) < n:
                time.sleep(0.005)
        return got

    def touched(self, d, at, epoch, born):
        fresh.append(at)
        return real_touched(self, d, at, epoch, born)

    def remove_at(self, path):
        if int(path[-2:]) >= n - late:
            first_read.wait(20)
        return real_remove(self, path)
    monkeypatch.setattr(nfs3.NFS3, "_read_entry", refresh)
    monkeypatch.setattr(nfs3.NFS3, "_touched", touched)
    monkeypatch.setattr(ShareFS, "remove_at", remove_at)
    r = RawRPC(srv.port)
    try:
        xids = {r.send_call(NFS, 3, 12, _opaque(sub) + _string(f"f{i:02d}")): f"f{i:02d}" for i in range(n)}
        replies = {}
        for _ in range(n):
            rep = r.recv_record()
            replies[xids[_xid(rep)]] = rep
    finally:
        r.close()
    assert first_read.is_set()
    assert [e.name for e in fs.listdir("/sub")] == []
    for name, rep in replies.items():
        assert struct.unpack(">I", rep[24:28])[0] == 0
        assert struct.unpack(">I", rep[-88:-84])[0] == 1                   # folder attributes follow
        gone = fs.versions(f"/sub/{name}")[-1]
        assert gone.deleted
        assert struct.unpack(">II", rep[-16:-8]) >= _split(gone.created_at)   # after its own tombstone
    assert len(reads) + len(fresh) < n - 1      # re-reads were shared
    final = _split(fs.stat("/sub").mtime)
    assert max(struct.unpack(">II", rep[-16:-8]) for rep in replies.values()) == final

@contextlib.contextmanager
def _server_dying_at(tmp_path, point: str, script: str, idle: str):
    """A server process (`script`, on the repository in tmp_path) with the fault `point`
    armed; yields (RawRPC, the export's root handle).  The body's calls are expected to die
    with the server (their errors are swallowed); the process must end with FAULT_STATUS."""
    import subprocess
    import sys
    from pathlib import Path
    from archive.faults import FAULT_STATUS
    top = Path(__file__).resolve().parent.parent
    env = dict(os.environ, EDGE_ARCHIVE_FAULT_EXIT=point,
               PYTHONPATH=os.pathsep.join([str(top), str(top / "tests")]))
    p = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), idle], env=env,
                         stdout=subprocess.PIPE, text=True)
    try:
        port = int(p.stdout.readline())
        root = _mnt(port, "/office")
        try:
            yield RawRPC(port), root
        except Exception:
            pass                                      # the connection died with the server
        assert p.wait(30) == FAULT_STATUS
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()



_CRASHING_SERVER = """
import sys, time
from pathlib import Path
from nfs_helpers import NFSServer
s = NFSServer(Path(sys.argv[1]), commit_idle=float(sys.argv[2]))
print(s.port, flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("point", ["staged-synced", "staged-committed", "staged-moved"])
def test_kill_9_at_each_durable_step_of_a_staged_write_recovers_it_once(tmp_path, point):
    """The server process dies (os._exit, as kill -9) at each durable step a staged write
    takes: its record fdatasynced in the staging log before the COMMIT reply; its version
    committed before the record is ended; a file grown past INLINE_MAX with its own journal
    durable before its older log record is ended.  The restart commits the synced bytes
    exactly once: one version, origin nfs, nothing left staged."""
    from archive.staging import INLINE_MAX, synced_updates
    idle = "0.2" if point == "staged-committed" else "3600"
    small, big = b"first bytes", b"y" * (INLINE_MAX + 1000)
    want = small + big if point == "staged-moved" else small
    with _server_dying_at(tmp_path, point, _CRASHING_SERVER, idle) as (r, root):
        fh = _create_on(r, root, "k.bin")
        _write_commit(r, fh, small)                     # staged-synced: dies here
        if point == "staged-moved":
            _write_commit(r, fh, big, len(small))       # dies here
    s = NFSServer(tmp_path, repo=Repository.open(tmp_path / "repo"))
    try:
        assert [(v.size, v.origin.protocol) for v in s.fs().versions("/k.bin")] == [(len(want), "nfs")]
        assert s.fs().open_read("/k.bin").read() == want
        assert synced_updates(s.repo) == []
    finally:
        s.close()


def test_kill_9_after_files_due_together_were_committed_recovers_none_twice(tmp_path):
    """Files that fall due together are committed in one batch (ShareFS.commit_staged); the
    server dies (os._exit, as kill -9) right after that transaction, before any of their log
    records is ended: the restart recognises every version as made and commits none twice."""
    from archive.staging import synced_updates
    files = {f"b{i}.bin": b"batch %d;" % i * (i + 1) for i in range(4)}
    with _server_dying_at(tmp_path, "staged-committed", _CRASHING_SERVER, "0.5") as (r, root):
        for name, data in files.items():
            _write_commit(r, _create_on(r, root, name), data)
    s = NFSServer(tmp_path, repo=Repository.open(tmp_path / "repo"))
    try:
        for name, data in files.items():
            assert [(v.size, v.origin.protocol) for v in s.fs().versions("/" + name)] == [(len(data), "nfs")], name
            assert s.fs().open_read("/" + name).read() == data
        assert synced_updates(s.repo) == []
    finally:
        s.close()


def test_setattr_to_the_size_a_file_has_syncs_nothing_a_real_truncate_does(tmp_path):
    """nfs-cp's CREATE (size 0) and SETATTR (size 0) of a new file change nothing: no sync
    (no journal in the staging folder); a truncate that changes the size is synced at once and
    survives a crash; the empty file still gets its version."""
    from archive.staging import synced_updates
    s = NFSServer(tmp_path, commit_idle=3600)
    try:
        root = _mnt(s.port, "/office")
        r = RawRPC(s.port)
        size0 = struct.pack(">IIIIQII", 0, 0, 0, 1, 0, 0, 0)         # sattr3 with size = 0
        _, rep = r.call(NFS, 3, 8, _opaque(root) + _string("same.bin") + struct.pack(">I", 0) + size0)
        fh = _create_handle(rep)
        _, rep = r.call(NFS, 3, 2, _opaque(fh) + size0 + struct.pack(">I", 0))
        assert struct.unpack(">I", rep[24:28])[0] == 0
        journals = lambda: synced_updates(s.repo)     # noqa: E731
        assert journals() == []
        size7 = struct.pack(">IIIIQII", 0, 0, 0, 1, 7, 0, 0)
        _, rep = r.call(NFS, 3, 2, _opaque(fh) + size7 + struct.pack(">I", 0))
        assert struct.unpack(">I", rep[24:28])[0] == 0
        assert len(journals()) == 1                   # synced before the reply
        r.close()
        s.adapter.server.stop(0)                      # "crash": the session is never ended
        s.adapter.sessions._stop.set()
        s2 = NFSServer(tmp_path, repo=s.repo)
        try:
            assert s2.fs().open_read("/same.bin").read() == b"\0" * 7
        finally:
            s2.close()
    finally:
        s.adapter.sessions._stop.set()
    s3 = NFSServer(tmp_path / "b", commit_idle=0.1)
    try:                                              # created at size 0, never written: one empty version
        root = _mnt(s3.port, "/office")
        r = RawRPC(s3.port)
        _, rep = r.call(NFS, 3, 8, _opaque(root) + _string("empty.bin") + struct.pack(">I", 0) + size0)
        assert struct.unpack(">II", rep[24:32]) == (0, 1)
        r.close()
        s3.stop()                                     # shutdown commits what is owed
        assert [v.size for v in s3.fs().versions("/empty.bin")] == [0]
    finally:
        s3.close()


def test_retransmitted_remove_gets_the_first_answer(srv):
    put(srv.fs(), "/once.txt", b"1")
    root = _mnt(srv.port, "/office")
    r = RawRPC(srv.port)
    args = _opaque(root) + _string("once.txt")
    _, first = r.call(NFS, 3, 12, args, xid=777)
    _, again = r.call(NFS, 3, 12, args, xid=777)
    _, fresh = r.call(NFS, 3, 12, args, xid=778)
    r.close()
    assert struct.unpack(">I", first[24:28])[0] == 0 and again == first
    assert struct.unpack(">I", fresh[24:28])[0] == 2                               # NFS3ERR_NOENT
    assert [v.deleted for v in srv.fs().versions("/once.txt")] == [False, True]


def test_readdir_cookies_survive_folder_changes(srv):
    fs = srv.fs()
    for i in range(40):
        put(fs, f"/e{i:02d}", b"x")
    root = _mnt(srv.port, "/office")
    names, cookie, eof = _readdir(srv.port, root, 0, 600)
    assert not eof and names[0] == "e00"
    fs.remove(f"/{names[-1]}")                       # the cookie's own entry goes away
    fs.remove("/e00")
    put(fs, "/zz-new", b"y")
    rest = []
    while not eof:
        more, cookie, eof = _readdir(srv.port, root, cookie, 600)
        rest += more
    assert names + rest == [f"e{i:02d}" for i in range(40)] + ["zz-new"]


def test_readdirplus_pages_across_windows_of_two_listers_while_the_folder_changes(srv, monkeypatch):
    """Two clients page through one folder in turns (small pages, small listing windows that
    are refilled, trimmed behind one reader and so lost to the other) while this server
    removes and makes names in it: no BAD_COOKIE, nothing twice, nothing listed skipped, the
    change seen by both, attributes as GETATTR reports them."""
    monkeypatch.setattr(listing, "CHUNK", 8)
    monkeypatch.setattr(listing, "MAX_ITEMS", 12)
    fs = srv.fs()
    fs.mkdir_many([f"/w/n{i:02d}" for i in range(40)])
    put(fs, "/w/n40.txt", b"forty bytes of a file, not a folder....!")
    root = _mnt(srv.port, "/office")
    w = _lookup(srv.port, root, "w")
    readers = {"a": ([], 0, False), "b": ([], 0, False)}
    turn = 0
    while not all(eof for _, _, eof in readers.values()):
        for key, (got, cookie, eof) in list(readers.items()):
            for _ in range(2 if key == "a" else 1):   # a runs ahead: b's position leaves the window
                if eof:
                    break
                entries, cookie, eof = _readdirplus(srv.port, w, cookie, 900)
                got = got + entries
            readers[key] = (got, cookie, eof)
        turn += 1
        assert turn < 40, [len(got) for got, _, _ in readers.values()]   # a lister sent back fails, not loops
        if turn == 3:                                     # both have listed n00 by now
            assert _nfs_status(srv.port, 13, _opaque(w) + _string("n00")) == 0          # RMDIR
            assert _nfs_status(srv.port, 9, _opaque(w) + _string("zz") + _sattr_none()) == 0   # MKDIR
    want = [f"n{i:02d}" for i in range(40)] + ["n40.txt", "zz"]
    for got, _, _ in readers.values():
        assert [name for name, _, _ in got] == want
        size = {name: sz for name, sz, _ in got}["n40.txt"]
        fh = {name: h for name, _, h in got}["n40.txt"]
        assert size == 40 and _getattr_size(srv.port, fh) == 40


def _first_entry_owner(port: int, fh: bytes, uid: int) -> tuple[str, int, int]:
    """(name, size, owner uid) of the first entry of a READDIRPLUS page asked as `uid`."""
    body = struct.pack(">I", 0) + _string("test") + struct.pack(">III", uid, uid, 0)
    r = RawRPC(port)
    _, rep = r.call(NFS, 3, 17, _opaque(fh) + struct.pack(">Q", 0) + b"\0" * 8 + struct.pack(">II", 4000, 4000),
                    cred=struct.pack(">II", 1, len(body)) + body)
    r.close()
    assert struct.unpack(">I", rep[24:28])[0] == 0
    pos = 28 + 4 + (84 if struct.unpack(">I", rep[28:32])[0] else 0) + 8 + 4 + 8
    n = struct.unpack(">I", rep[pos:pos + 4])[0]
    name = rep[pos + 4:pos + 4 + n].decode()
    pos += 4 + n + (4 - n % 4) % 4 + 8 + 4                                        # cookie, attributes follow
    return name, struct.unpack(">Q", rep[pos + 20:pos + 28])[0], struct.unpack(">I", rep[pos + 12:pos + 16])[0]


def test_readdirplus_pages_follow_pending_writes_and_each_callers_ids(srv):
    """Entries of a listing window keep their encoded entry3plus between listers: the attributes
    still show a WRITE not yet committed, the committed version after it, and each caller's
    uid as the owner (all_squash reports the caller's ids)."""
    fs = srv.fs()
    fs.mkdir("/w")
    put(fs, "/w/a.txt", b"hello")
    root = _mnt(srv.port, "/office")
    w = _lookup(srv.port, root, "w")
    a = _lookup(srv.port, w, "a.txt")
    assert _readdirplus(srv.port, w, 0, 4000)[0] == [("a.txt", 5, a)]
    assert _first_entry_owner(srv.port, w, 1234) == ("a.txt", 5, 1234)
    assert _first_entry_owner(srv.port, w, 0) == ("a.txt", 5, 0)
    r = RawRPC(srv.port)                           # UNSTABLE: pending in the write session
    _, rep = r.call(NFS, 3, 7, _opaque(a) + struct.pack(">QII", 0, 12, 0) + _opaque(b"hello world!"))
    r.close()
    assert struct.unpack(">I", rep[24:28])[0] == 0
    assert _readdirplus(srv.port, w, 0, 4000)[0] == [("a.txt", 12, a)]
    assert _first_entry_owner(srv.port, w, 77) == ("a.txt", 12, 77)
    assert _nfs_status(srv.port, 21, _opaque(a) + struct.pack(">QI", 0, 0)) == 0     # COMMIT
    assert [v.size for v in srv.wait_versions("/w/a.txt", 2)] == [5, 12]
    assert _readdirplus(srv.port, w, 0, 4000)[0] == [("a.txt", 12, a)]
    assert _first_entry_owner(srv.port, w, 1234) == ("a.txt", 12, 1234)


def test_remove_of_a_file_with_committed_writes_pending_leaves_no_version_after_it(tmp_path):
    """REMOVE ends the file's write session first (its COMMITted data never becomes a version
    after the tombstone); a folder answers ISDIR and a missing name NOENT, with or without
    sessions open."""
    s = NFSServer(tmp_path, commit_idle=3600)
    try:
        root = _mnt(s.port, "/office")
        s.fs().mkdir("/d")
        for busy in (False, True):
            if busy:
                _create(s.port, root, "other.txt")                  # another file owes a version
            assert s.adapter.sessions.busy() is busy
            assert _nfs_status(s.port, 12, _opaque(root) + _string("d")) == 21           # ISDIR
            assert _nfs_status(s.port, 12, _opaque(root) + _string("nope")) == 2         # NOENT
            fh = _create(s.port, root, f"f{int(busy)}.txt")
            r = RawRPC(s.port)
            _, rep = r.call(NFS, 3, 7, _opaque(fh) + struct.pack(">QII", 0, 4, 0) + _opaque(b"data"))
            r.close()
            assert _nfs_status(s.port, 21, _opaque(fh) + struct.pack(">QI", 0, 0)) == 0   # COMMIT
            assert _nfs_status(s.port, 12, _opaque(root) + _string(f"f{int(busy)}.txt")) == 0
            assert _nfs_status(s.port, 1, _opaque(fh)) == 70                            # STALE
        s.stop()
        fs = s.fs()
        for name in ("/f0.txt", "/f1.txt"):
            assert [v.size for v in fs.versions(name) if not v.deleted] == [], name
            assert not fs.exists(name)
        assert [v.size for v in fs.versions("/other.txt")] == [0]
    finally:
        s.repo.close()


def test_this_servers_changes_show_at_once_through_its_caches(srv):
    """Handles, names and listings are cached; every change made over NFS drops what it
    touched at once: renamed and removed names, a renamed folder's descendants (their paths),
    a new version's size in GETATTR and READDIRPLUS."""
    fs = srv.fs()
    fs.mkdir_many(["/a/sub", "/b"])
    put(fs, "/a/x.txt", b"x" * 10)
    put(fs, "/a/sub/f.txt", b"old")
    root = _mnt(srv.port, "/office")
    a, b = _lookup(srv.port, root, "a"), _lookup(srv.port, root, "b")
    x = _lookup(srv.port, a, "x.txt")
    sub = _lookup(srv.port, a, "sub")
    f = _lookup(srv.port, sub, "f.txt")
    assert _getattr_size(srv.port, x) == 10 and _getattr_size(srv.port, f) == 3
    assert _nfs_status(srv.port, 14, _opaque(a) + _string("x.txt") + _opaque(b) + _string("y.txt")) == 0
    assert _nfs_status(srv.port, 3, _opaque(a) + _string("x.txt")) == 2            # NOENT at once
    assert _lookup(srv.port, b, "y.txt") == x                                       # same object
    assert _nfs_status(srv.port, 14, _opaque(root) + _string("a") + _opaque(root) + _string("a2")) == 0
    assert _nfs_status(srv.port, 3, _opaque(root) + _string("a")) == 2
    r = RawRPC(srv.port)                           # a FILE_SYNC write through the cached handle
    _, rep = r.call(NFS, 3, 7, _opaque(f) + struct.pack(">QII", 0, 9, 2) + _opaque(b"new bytes"))
    r.close()
    assert struct.unpack(">I", rep[24:28])[0] == 0
    vs = srv.wait_versions("/a2/sub/f.txt", 2)                 # landed at the folder's new path
    assert [v.size for v in vs] == [3, 9] and fs.open_read("/a2/sub/f.txt").read() == b"new bytes"
    assert _getattr_size(srv.port, f) == 9
    entries, _, eof = _readdirplus(srv.port, sub, 0, 4000)
    assert eof and [(n, s) for n, s, _ in entries] == [("f.txt", 9)]
    assert _nfs_status(srv.port, 12, _opaque(sub) + _string("f.txt")) == 0          # REMOVE
    assert _nfs_status(srv.port, 3, _opaque(sub) + _string("f.txt")) == 2
    assert _nfs_status(srv.port, 1, _opaque(f)) == 70                               # STALE at once
    assert _readdirplus(srv.port, sub, 0, 4000)[0] == []


def test_calls_in_flight_on_one_connection_run_at_once(srv):
    """A client may send calls without waiting for replies: a call stuck in the server does
    not hold up the ones behind it (answered first, matched by xid), more calls than run at
    once are all answered, and a retransmission of a REMOVE in flight gets the first answer."""
    put(srv.fs(), "/p.txt", b"p")
    root = _mnt(srv.port, "/office")
    nfs = srv.adapter.server.nfs
    gate, entered = threading.Event(), threading.Event()
    real_null = nfs.procs[0]

    def held(*args):
        entered.set()
        gate.wait(30)
    nfs.procs[0] = held
    r = RawRPC(srv.port)
    try:
        r.send_call(NFS, 3, 0, xid=1)                          # NULL: held until the gate opens
        assert entered.wait(10)
        r.send_call(NFS, 3, 3, _opaque(root) + _string("p.txt"), xid=2)
        rep = r.recv_record()
        assert _xid(rep) == 2 and struct.unpack(">I", rep[24:28])[0] == 0      # while 1 still runs
        gate.set()
        assert _xid(r.recv_record()) == 1
        for i in range(12):
            r.send_call(NFS, 3, 8, _opaque(root) + _string(f"f{i:02d}") + struct.pack(">I", 0) + _sattr_none(),
                        xid=100 + i)
        r.send_call(NFS, 3, 12, _opaque(root) + _string("p.txt"), xid=200)
        r.send_call(NFS, 3, 12, _opaque(root) + _string("p.txt"), xid=200)
        replies: dict[int, list[bytes]] = {}
        for _ in range(14):
            rep = r.recv_record()
            replies.setdefault(_xid(rep), []).append(rep)
    finally:
        nfs.procs[0] = real_null
        gate.set()
        r.close()
    assert sorted(replies) == [*range(100, 112), 200]
    assert all(struct.unpack(">I", replies[x][0][24:28])[0] == 0 for x in range(100, 112))
    first, again = replies[200]
    assert struct.unpack(">I", first[24:28])[0] == 0 and again == first
    assert [e.name for e in srv.fs().listdir("/")] == [f"f{i:02d}" for i in range(12)]
    assert [v.deleted for v in srv.fs().versions("/p.txt")] == [False, True]


@pytest.mark.parametrize("slow_worker", [False, True])
def test_pipelined_reads_run_at_most_max_reads_at_once(srv, monkeypatch, slow_worker):
    """READs in flight on one connection run server.MAX_READS at a time (they take turns per
    file anyway; more threads cost more than they overlap): no further call is read meanwhile,
    and every one is answered.  `slow_worker`: each worker is held back after it got its
    record: the READ is counted before the next reader checks (nfs13)."""
    from protocols.nfs import server
    if slow_worker:
        real_record = server._Connection._record

        def slow_record(self):
            record = real_record(self)
            if record is not None and server._is_read(record):
                time.sleep(0.05)       # the next reader gets the read lock meanwhile
            return record
        monkeypatch.setattr(server._Connection, "_record", slow_record)
    nfs = srv.adapter.server.nfs
    gate, lock = threading.Event(), threading.Lock()
    running = [0]
    real_read = nfs.procs[6]

    def held(*args):
        with lock:
            running[0] += 1
        gate.wait(30)                                          # (an empty reply body)
    nfs.procs[6] = held
    r = RawRPC(srv.port)
    try:
        if slow_worker:                # first 12 NULLs at once: 12 workers, then all of them idle
            warm, real_null, busy = threading.Event(), nfs.procs[0], [0]

            def held_null(*args):
                with lock:
                    busy[0] += 1
                warm.wait(30)
            nfs.procs[0] = held_null
            for i in range(12):
                r.send_call(NFS, 3, 0, xid=200 + i)
            end = time.monotonic() + 20
            while busy[0] < 12 and time.monotonic() < end:
                time.sleep(0.01)
            warm.set()
            assert sorted(_xid(r.recv_record()) for _ in range(12)) == list(range(200, 212))
            nfs.procs[0] = real_null
        n = 12
        for i in range(n):
            r.send_call(NFS, 3, 6, xid=300 + i)
        end = time.monotonic() + 20
        while running[0] < server.MAX_READS and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.5)                                        # no further READ is taken
        assert running[0] == server.MAX_READS < n
        gate.set()
        assert sorted(_xid(r.recv_record()) for _ in range(n)) == list(range(300, 300 + n))
        assert running[0] == n
    finally:
        nfs.procs[6] = real_read
        gate.set()
        r.close()


def test_pipelined_reads_of_one_file_run_after_each_other_on_one_worker(srv):
    """READs of a file in flight on one connection while a READ of it runs wait in the
    connection's queue (server._Connection.queued), no thread each: the worker running that
    file's READ runs them next, lowest offset first, each answered with its bytes; a READ of
    another file meanwhile runs at once."""
    from protocols.nfs import server
    data = os.urandom(2 * 1024 * 1024)
    put(srv.fs(), "/a.bin", data)
    put(srv.fs(), "/b.bin", data[::-1])
    root = _mnt(srv.port, "/office")
    fa, fb = _lookup(srv.port, root, "a.bin"), _lookup(srv.port, root, "b.bin")
    nfs = srv.adapter.server.nfs
    gate, lock = threading.Event(), threading.Lock()
    ran: list[tuple[int, int]] = []
    real_read = nfs.procs[6]

    def read(u, p, cred, address):
        at = u.pos
        fh, offset = u.opaque(64), u.u64()
        u.pos = at
        with lock:
            ran.append((offset, threading.get_ident()))
        if bytes(fh) == fa and offset == 0:
            gate.wait(30)                                      # the first READ of a.bin is held
        return real_read(u, p, cred, address)
    nfs.procs[6] = read
    r = RawRPC(srv.port)
    block = 128 * 1024
    try:
        offsets = [0] + [i * block for i in range(15, 0, -1)]  # the rest sent backwards
        xids = {r.send_call(NFS, 3, 6, _opaque(fa) + struct.pack(">QI", off, block)): ("a", off)
                for off in offsets}
        conn = None
        end = time.monotonic() + 20
        while time.monotonic() < end:                         # all queued behind the held one
            conns = [c for c in gc.get_objects() if isinstance(c, server._Connection)]
            conn = next((c for c in conns if c.nqueued == len(offsets) - 1), None)
            if conn is not None:
                break
            time.sleep(0.01)
        assert conn is not None and len(ran) == 1
        xids[r.send_call(NFS, 3, 6, _opaque(fb) + struct.pack(">QI", 0, block))] = ("b", 0)
        rep = r.recv_record()                                  # b.bin's READ is not held up
        assert xids.pop(_xid(rep)) == ("b", 0) and rep[128:128 + block] == data[::-1][:block]
        gate.set()
        for _ in offsets:
            rep = r.recv_record()
            name, off = xids.pop(_xid(rep))
            assert struct.unpack(">I", rep[24:28])[0] == 0 and rep[128:128 + block] == data[off:off + block]
        assert xids == {}
        worker = ran[0][1]
        assert [o for o, t in ran if t == worker] == sorted(offsets)     # one worker, file order
        end = time.monotonic() + 10        # the worker lets go of the file just after its last reply
        while time.monotonic() < end and (conn.queued or conn.nqueued):
            time.sleep(0.01)
        assert conn.queued == {} and conn.nqueued == 0
    finally:
        nfs.procs[6] = real_read
        gate.set()
        r.close()


@pytest.mark.parametrize("slow_worker", [False, True])
def test_many_small_calls_run_at_once_large_ones_within_a_byte_budget(srv, monkeypatch, slow_worker):
    """Up to server.MAX_INFLIGHT calls of one connection run together (so pipelined CREATEs and
    REMOVEs reach the core's group commit together), but large records only while the running
    ones hold less than server.MAX_HELD bytes (memory per connection stays bounded).
    `slow_worker`: each worker is held back after it got its record (as a loaded machine does):
    the record is counted before the next reader checks the budget (nfs13: it was counted
    later, and one record too many ran now and then)."""
    from protocols.nfs import server
    if slow_worker:
        real_record = server._Connection._record

        def slow_record(self):
            record = real_record(self)
            if record is not None and len(record) > 4096:
                time.sleep(0.05)       # the next reader gets the read lock meanwhile
            return record
        monkeypatch.setattr(server._Connection, "_record", slow_record)
    nfs = srv.adapter.server.nfs
    gate, lock = threading.Event(), threading.Lock()
    running = [0]
    real_null = nfs.procs[0]

    def held(*args):
        with lock:
            running[0] += 1
        gate.wait(30)
    nfs.procs[0] = held

    def wait_running(n: int) -> int:
        end = time.monotonic() + 20
        while running[0] < n and time.monotonic() < end:
            time.sleep(0.01)
        return running[0]
    small, big = 24, 12
    pad = 1024 * 1024
    r = RawRPC(srv.port)
    try:
        for i in range(small):                                 # NULL ignores its arguments
            r.send_call(NFS, 3, 0, xid=10 + i)
        assert 8 < small <= server.MAX_INFLIGHT and wait_running(small) == small   # all at once
        gate.set()
        assert sorted(_xid(r.recv_record()) for _ in range(small)) == list(range(10, 10 + small))
        gate.clear()
        running[0] = 0
        sender = threading.Thread(target=lambda: [r.send_call(NFS, 3, 0, b"\0" * pad, xid=100 + i)
                                                  for i in range(big)])
        sender.start()
        at_once = server.MAX_HELD // pad
        assert wait_running(at_once) == at_once
        time.sleep(0.5)                                        # no further big record is taken
        assert running[0] == at_once < big
        gate.set()
        sender.join(30)
        assert sorted(_xid(r.recv_record()) for _ in range(big)) == list(range(100, 100 + big))
    finally:
        nfs.procs[0] = real_null
        gate.set()
        r.close()


# -- malformed input ---------------------------------------------------------------------------------
def test_rpc_errors_for_bad_program_version_procedure_and_arguments(srv):
    r = RawRPC(srv.port)
    _, rep = r.call(100099, 1, 0)
    assert _accepted(rep) == 1                                           # PROG_UNAVAIL
    _, rep = r.call(NFS, 4, 0)
    assert _accepted(rep) == 2 and struct.unpack(">II", rep[24:32]) == (3, 3)   # PROG_MISMATCH 3..3
    _, rep = r.call(MOUNT, 1, 0)
    assert _accepted(rep) == 2
    _, rep = r.call(NFS, 3, 22)
    assert _accepted(rep) == 3                                           # PROC_UNAVAIL
    _, rep = r.call(NFS, 3, 1, b"\x00\x00")                              # truncated handle
    assert _accepted(rep) == 4                                           # GARBAGE_ARGS
    _, rep = r.call(NFS, 3, 1, struct.pack(">I", 0xFFFFFFF0))            # huge opaque length
    assert _accepted(rep) == 4
    _, rep = r.call(MOUNT, 3, 1, struct.pack(">I", 1 << 30) + b"/office")
    assert _accepted(rep) == 4
    r.send_record(struct.pack(">IIIIII", 99, 0, 3, NFS, 3, 0))           # RPC version 3
    rep = r.recv_record()
    assert struct.unpack(">III", rep[4:16]) == (1, 1, 0)                 # MSG_DENIED RPC_MISMATCH
    _, rep = r.call(NFS, 3, 0)
    assert _accepted(rep) == 0                                           # still serving this client
    r.close()


def test_broken_records_close_only_that_connection(srv):
    bad = RawRPC(srv.port)
    bad.sock.sendall(struct.pack(">I", 0x80000000 | 0x7FFFFFF0))         # a 2 GiB record announced
    assert bad.sock.recv(10) == b""                                      # closed, nothing allocated
    bad.close()
    cut = RawRPC(srv.port)
    cut.sock.sendall(struct.pack(">I", 0x80000000 | 100) + b"\x00" * 10)  # truncated record
    cut.close()
    r = RawRPC(srv.port)
    _, rep = r.call(NFS, 3, 0)
    assert _accepted(rep) == 0
    r.close()
    assert run([need("nfs-ls"), srv.url("/office")]).returncode == 0


def test_symlink_mknod_link_are_not_supported(srv):
    put(srv.fs(), "/t.txt", b"t")
    root = _mnt(srv.port, "/office")
    fh = _lookup(srv.port, root, "t.txt")
    assert _nfs_status(srv.port, 10, _opaque(root) + _string("l") + _sattr_none() + _string("t.txt")) == 10004
    assert _nfs_status(srv.port, 11, _opaque(root) + _string("n") + struct.pack(">I", 1)) == 10004
    assert _nfs_status(srv.port, 15, _opaque(fh) + _opaque(root) + _string("hard")) == 10004
    assert [e.name for e in srv.fs().listdir("/")] == ["t.txt"]


# -- raw RPC helpers -------------------------------------------------------------------------------------
def _opaque(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)


def _string(s: str) -> bytes:
    return _opaque(s.encode())


def _sattr_none() -> bytes:
    return struct.pack(">IIIIII", 0, 0, 0, 0, 0, 0)


def _accepted(rep: bytes) -> int:
    """accept_stat of an accepted reply (xid, REPLY, MSG_ACCEPTED, verf flavor, verf len, stat)."""
    assert struct.unpack(">II", rep[4:12]) == (1, 0), rep[:16]
    return struct.unpack(">I", rep[20:24])[0]


def _mnt(port: int, path: str) -> bytes:
    r = RawRPC(port)
    _, rep = r.call(MOUNT, 3, 1, _string(path))
    r.close()
    assert struct.unpack(">I", rep[24:28])[0] == 0
    n = struct.unpack(">I", rep[28:32])[0]
    return rep[32:32 + n]


def _lookup(port: int, dirfh: bytes, name: str) -> bytes:
    r = RawRPC(port)
    _, rep = r.call(NFS, 3, 3, _opaque(dirfh) + _string(name))
    r.close()
    assert struct.unpack(">I", rep[24:28])[0] == 0
    n = struct.unpack(">I", rep[28:32])[0]
    return rep[32:32 + n]


def _create_handle(rep: bytes) -> bytes:
    assert struct.unpack(">II", rep[24:32]) == (0, 1)
    n = struct.unpack(">I", rep[32:36])[0]
    return rep[36:36 + n]


def _create_on(r: "RawRPC", root: bytes, name: str) -> bytes:
    """CREATE (UNCHECKED, no attributes) of `name` in `root`; the new file's handle."""
    _, rep = r.call(NFS, 3, 8, _opaque(root) + _string(name) + struct.pack(">I", 0) + _sattr_none())
    return _create_handle(rep)


def _write_commit(r: "RawRPC", fh: bytes, data: bytes, offset: int = 0) -> None:
    """An UNSTABLE WRITE of `data` at `offset`, then COMMIT of the whole file."""
    r.call(NFS, 3, 7, _opaque(fh) + struct.pack(">QII", offset, len(data), 0) + _opaque(data))
    r.call(NFS, 3, 21, _opaque(fh) + struct.pack(">QI", 0, 0))


def _nfs_status(port: int, proc: int, args: bytes) -> int:
    r = RawRPC(port)
    _, rep = r.call(NFS, 3, proc, args)
    r.close()
    assert _accepted(rep) == 0
    return struct.unpack(">I", rep[24:28])[0]


def _xid(rep: bytes) -> int:
    return struct.unpack(">I", rep[:4])[0]


def _getattr_size(port: int, fh: bytes) -> int:
    r = RawRPC(port)
    _, rep = r.call(NFS, 3, 1, _opaque(fh))
    r.close()
    assert struct.unpack(">I", rep[24:28])[0] == 0
    return struct.unpack(">Q", rep[28 + 20:28 + 28])[0]               # fattr3.size


def _readdirplus(port: int, fh: bytes, cookie: int, maxcount: int) -> tuple[list[tuple[str, int, bytes]], int, bool]:
    """(name, size, handle) of one READDIRPLUS page, the last cookie, eof."""
    r = RawRPC(port)
    _, rep = r.call(NFS, 3, 17, _opaque(fh) + struct.pack(">Q", cookie) + b"\0" * 8 + struct.pack(">II", maxcount,
                                                                                                  maxcount))
    r.close()
    assert struct.unpack(">I", rep[24:28])[0] == 0
    pos = 28
    pos += 4 + (84 if struct.unpack(">I", rep[pos:pos + 4])[0] else 0) + 8          # dir attributes, verifier
    out = []
    while struct.unpack(">I", rep[pos:pos + 4])[0]:
        pos += 4 + 8
        n = struct.unpack(">I", rep[pos:pos + 4])[0]
        name = rep[pos + 4:pos + 4 + n].decode()
        pos += 4 + n + (4 - n % 4) % 4
        cookie = struct.unpack(">Q", rep[pos:pos + 8])[0]
        pos += 8
        assert struct.unpack(">I", rep[pos:pos + 4])[0] == 1                       # attributes follow
        size = struct.unpack(">Q", rep[pos + 4 + 20:pos + 4 + 28])[0]
        pos += 4 + 84
        assert struct.unpack(">I", rep[pos:pos + 4])[0] == 1                       # handle follows
        n = struct.unpack(">I", rep[pos + 4:pos + 8])[0]
        out.append((name, size, rep[pos + 8:pos + 8 + n]))
        pos += 8 + n + (4 - n % 4) % 4
    eof = bool(struct.unpack(">I", rep[pos + 4:pos + 8])[0])
    return out, cookie, eof


def _readdir(port: int, fh: bytes, cookie: int, count: int) -> tuple[list[str], int, bool]:
    r = RawRPC(port)
    _, rep = r.call(NFS, 3, 16, _opaque(fh) + struct.pack(">Q", cookie) + b"\0" * 8 + struct.pack(">I", count))
    r.close()
    assert struct.unpack(">I", rep[24:28])[0] == 0
    pos = 28
    if struct.unpack(">I", rep[pos:pos + 4])[0]:
        pos += 4 + 84
    else:
        pos += 4
    pos += 8                                                   # cookieverf
    names = []
    while struct.unpack(">I", rep[pos:pos + 4])[0]:
        pos += 4 + 8
        n = struct.unpack(">I", rep[pos:pos + 4])[0]
        names.append(rep[pos + 4:pos + 4 + n].decode())
        pos += 4 + n + (4 - n % 4) % 4
        cookie = struct.unpack(">Q", rep[pos:pos + 8])[0]
        pos += 8
    eof = bool(struct.unpack(">I", rep[pos + 4:pos + 8])[0])
    return names, cookie, eof


__all__ = ["Origin", "Repository"]


def test_archivectl_serve_exports_nfs_from_the_config(tmp_path):
    """The adapter as `archivectl serve` runs it: [nfs] and [[nfs.exports]] from the TOML file,
    URL printed, a file written with nfs-cp, its version committed by the stop at the latest."""
    import signal

    from serve_helpers import ServeProcess, archivectl, free_port, python_env
    repo = Repository.init(tmp_path / "repo")
    repo.add_share("office")
    repo.add_user("alice", "pw")
    repo.grant("alice", "office", "rw")
    repo.close()
    port = free_port()
    cfg = tmp_path / "archive.toml"
    cfg.write_text(f'[repository]\npath = "{tmp_path / "repo"}"\n[metrics]\nenabled = false\n'
                   f'[nfs]\nlisten = "127.0.0.1:{port}"\ncommit_idle = 30\n'
                   '[[nfs.exports]]\nshare = "office"\nclients = ["127.0.0.0/8"]\nuser = "alice"\n')
    p = ServeProcess(archivectl() + ["serve", "--config", str(cfg), "--only", "nfs"], cwd=str(tmp_path),
                     env=python_env([]), tmp=str(tmp_path)).ready()
    try:
        url = p.urls()["nfs"]
        assert url == f"nfs://127.0.0.1/office?version=3&nfsport={port}&mountport={port}"
        src = tmp_path / "in.txt"
        src.write_bytes(b"through archivectl serve\n")
        base = url.split("?")[0]
        res = run([need("nfs-cp"), str(src), base + "/in.txt?" + url.split("?")[1]])
        assert res.returncode == 0, res.stderr
    finally:
        p.proc.send_signal(signal.SIGTERM)
        assert p.finish() == 0, p.stderr()
    r = Repository.open(tmp_path / "repo")
    try:
        vs = r.share("office").versions("/in.txt")          # committed at shutdown (commit_idle = 30)
        assert [(v.number, v.origin.protocol) for v in vs] == [(1, "nfs")]
        assert r.share("office").open_read("/in.txt").read() == b"through archivectl serve\n"
    finally:
        r.close()


# -- several calls in flight on one connection (libnfs' async API, as the kernel client sends) ----
def _head_seq(repo) -> int:
    """Durable commits so far (the commit chain's length)."""
    from sqlalchemy import text
    with repo.catalog.session() as s:
        return s.execute(text("SELECT seq FROM chain_head WHERE id = 1")).scalar()


def test_pipelined_small_files_get_one_version_each_sharing_commits(tmp_path):
    s = NFSServer(tmp_path, commit_idle=3600)         # versions come at shutdown, all owed at once
    try:
        c = LibNFS(s.url("/office"))
        c.mkdir("/many")
        files = {f"/many/f{i:03d}.txt": b"file %d;" % i * (i + 1) for i in range(32)}
        Pipeline(c, 16).put_files(list(files.items()))
        c.close()
        fs = s.fs()
        assert sorted("/many/" + e.name for e in fs.listdir("/many")) == sorted(files)
        assert all(fs.stat(p).version is None for p in files)    # COMMITted, not yet a version
        before = _head_seq(s.repo)
        s.stop()
        commits = _head_seq(s.repo) - before
        for p, data in files.items():
            vs = fs.versions(p)
            assert [(v.number, v.size, v.origin.protocol) for v in vs] == [(1, len(data), "nfs")], p
            assert fs.open_read(p).read() == data
        # ended side by side, the 32 versions share durable commits (one each, in turn, before)
        assert commits < len(files) // 2, commits
    finally:
        s.repo.close()


def _create(port: int, dirfh: bytes, name: str) -> bytes:
    r = RawRPC(port)
    try:
        return _create_on(r, dirfh, name)
    finally:
        r.close()


def test_created_files_never_written_get_an_empty_version_and_no_staging_before_a_write(tmp_path):
    """CREATE makes the name (durably) and only notes that the file owes a version: no staged
    update (a staging file) is opened until a WRITE, a truncate or an mtime change.  A file
    never written gets one empty version after the empty-file idle time or at shutdown, one
    whose mtime a client set keeps that time, and a removed one gets none."""
    s = NFSServer(tmp_path)
    try:
        s.adapter.sessions.empty_idle = 0.5
        staged = s.repo.tmp / "staged"
        root = _mnt(s.port, "/office")
        a = _create(s.port, root, "a.txt")
        b = _create(s.port, root, "b.txt")
        _create(s.port, root, "gone.txt")
        assert not staged.exists() or list(staged.iterdir()) == []         # no staged update yet
        assert _getattr_size(s.port, a) == 0 and [e.name for e in s.fs().listdir("/")] == ["a.txt", "b.txt",
                                                                                            "gone.txt"]
        setattr_mtime = _opaque(b) + struct.pack(">IIIIII", 0, 0, 0, 0, 0, 2) + struct.pack(">III", 1_700_000_000,
                                                                                               0, 0)
        assert _nfs_status(s.port, 2, setattr_mtime) == 0
        assert _nfs_status(s.port, 12, _opaque(root) + _string("gone.txt")) == 0
        fs = s.fs()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (fs.versions("/a.txt") and fs.versions("/b.txt")):
            time.sleep(0.05)
        assert [(v.number, v.size, v.origin.protocol) for v in fs.versions("/a.txt")] == [(1, 0, "nfs")]
        assert [(v.number, v.size, v.mtime) for v in fs.versions("/b.txt")] == [(1, 0, 1_700_000_000)]
        assert fs.stat("/b.txt").mtime == 1_700_000_000
        s.adapter.sessions.empty_idle = 3600
        _create(s.port, root, "late.txt")
        s.stop()
        assert [(v.number, v.size) for v in fs.versions("/late.txt")] == [(1, 0)]     # at shutdown
        assert [v.size for v in fs.versions("/gone.txt") if not v.deleted] == []
        assert fs.versions("/a.txt")[-1].number == 1                                 # nothing twice
    finally:
        s.repo.close()


def test_writes_in_flight_to_one_file_make_one_version(srv):
    names = [f"/doc{n}.bin" for n in range(8)]
    for name in names:
        put(srv.fs(), name, b"\0" * 80_000)
    pieces = [(i * 4096, bytes([65 + i]) * 4096) for i in range(16)]
    c = LibNFS(srv.url("/office"))
    try:
        for name in names:                          # no write session yet: the WRITEs race to open one
            fh = c.open(name, os.O_WRONLY)
            Pipeline(c, 16).write_pieces(fh, pieces)
            c.close_file(fh)
    finally:
        c.close()
    for name in names:
        vs = srv.wait_versions(name, 2)
        assert [v.number for v in vs] == [1, 2], name
        assert srv.fs().open_read(name).read() == b"".join(d for _, d in pieces) + b"\0" * (80_000 - 16 * 4096)


def _flip_chunk_byte(srv, path: str, which: int) -> int:
    """Damage one byte inside chunk `which` of `path`'s current version; that chunk's offset."""
    from archive.packs import REC
    from archive.streams import chunk_list
    repo, entry = srv.repo, srv.fs().stat(path)
    with repo.catalog.engine.connect() as c:
        vid = c.exec_driver_sql("SELECT id FROM versions WHERE node_id = ? AND number = ?",
                                (entry.node_id, entry.version)).scalar()
    offset, cid, _ = chunk_list(repo, vid)[which]
    pack, off, ln, _ = repo.store.location(cid)
    with open(repo.store.packdir.path(pack), "r+b") as f:
        f.seek(off + REC.size + (ln - REC.size) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    return offset


def test_reads_of_any_size_give_the_bytes_and_a_corrupt_chunk_is_eio(srv):
    """READs of a committed version answer exactly the file's bytes at any offset and size,
    and the READ over a damaged chunk answers NFS3ERR_IO (never other bytes, also when asked
    again) while the server goes on serving."""
    data = os.urandom(6 * 1024 * 1024)
    put(srv.fs(), "/seq.bin", data)
    put(srv.fs(), "/bad.bin", data[::-1])           # other chunks (equal ones are stored once)
    bad = _flip_chunk_byte(srv, "/bad.bin", -2)
    mib = 1024 * 1024
    c = LibNFS(srv.url("/office"))
    try:
        fh = c.open("/seq.bin")
        for off, n in ((0, mib), (mib, mib), (2 * mib, 300_000), (2 * mib + 300_000, mib),
                       (3 * mib + 300_000, 5000), (5 * mib, mib), (4 * mib, 2 * mib)):
            assert c.pread(fh, n, off) == data[off:off + n], (off, n)
        assert c.pread(fh, mib, len(data) - 10) == data[-10:]
        c.close_file(fh)
    finally:
        c.close()
    want = data[::-1]
    fh = _lookup(srv.port, _mnt(srv.port, "/office"), "bad.bin")
    r = RawRPC(srv.port)

    def read(off: int) -> tuple[int, bytes]:
        _, rep = r.call(NFS, 3, 6, _opaque(fh) + struct.pack(">QI", off, mib))
        status = struct.unpack(">I", rep[24:28])[0]
        return status, rep[128:128 + struct.unpack(">I", rep[124:128])[0]] if status == 0 else b""

    off = 0
    while off < len(data):                          # each READ is exact until one meets the damage
        status, got = read(off)
        if status:
            break
        assert got == want[off:off + mib]
        off += mib
    assert status == 5                              # NFS3ERR_IO
    assert bad - 2 * mib < off <= bad               # (the core decodes by blocks of 1 MiB)
    assert read(off)[0] == 5                        # asked again: never the damaged bytes
    c = LibNFS(srv.url("/office"))
    try:
        assert c.read_file("/seq.bin") == data      # the server goes on
    finally:
        c.close()


def _lookup_reply(port: int, dirfh: bytes, name: str) -> bytes:
    r = RawRPC(port)
    _, rep = r.call(NFS, 3, 3, _opaque(dirfh) + _string(name))
    r.close()
    return rep


def _write_sync(port: int, fh: bytes, data: bytes) -> None:
    args = _opaque(fh) + struct.pack(">QII", 0, len(data), 2) + _opaque(data)        # FILE_SYNC
    assert _nfs_status(port, 7, args) == 0


def test_lookup_of_a_name_whose_attributes_a_change_dropped_reads_them_again(srv):
    """nfs13: a LOOKUP whose name is known but whose attributes a change dropped (here: the
    file's new version) re-reads that node (shared with the calls re-reading it at once): the
    new attributes; and NOENT once another protocol removed the name."""
    fs = srv.fs()
    put(fs, "/x.txt", b"x")
    root = _mnt(srv.port, "/office")
    x = _lookup(srv.port, root, "x.txt")                 # "x.txt" now cached in root
    _write_sync(srv.port, x, b"hello world")
    assert len(srv.wait_versions("/x.txt", 2)) == 2      # its commit dropped x's attributes
    rep = _lookup_reply(srv.port, root, "x.txt")
    assert struct.unpack(">I", rep[24:28])[0] == 0
    n = struct.unpack(">I", rep[28:32])[0]
    assert rep[32:32 + n] == x
    attrs = 32 + n + (-n % 4)
    assert struct.unpack(">I", rep[attrs:attrs + 4])[0] == 1
    assert struct.unpack(">Q", rep[attrs + 4 + 20:attrs + 4 + 28])[0] == 11             # the new size
    _write_sync(srv.port, x, b"abc")
    assert len(srv.wait_versions("/x.txt", 3)) == 3
    fs.remove("/x.txt")                                  # another protocol removes it
    rep = _lookup_reply(srv.port, root, "x.txt")
    assert struct.unpack(">I", rep[24:28])[0] == 2       # NFS3ERR_NOENT


def test_kill_9_after_the_commit_of_a_recreated_name_recovers_it_on_its_old_node(tmp_path):
    """nfs13: the first WRITE after a CREATE starts its update on the created node with no
    catalog read.  For a name whose file was deleted, CREATE links that old node again; the
    server dies (os._exit, as kill -9) right after the COMMIT's log record is synced (the
    client may have been told OK): the restart commits the bytes once, on the same node, after
    the tombstone, from no base (not the deleted content)."""
    from archive.staging import synced_updates
    repo = NFSServer(tmp_path)                          # the template repository, then the old file
    fs = repo.fs()
    put(fs, "/again.txt", b"the old, longer content")
    old = fs.stat("/again.txt").node_id
    fs.remove("/again.txt")
    repo.close()
    new = b"new"
    with _server_dying_at(tmp_path, "staged-synced", _CRASHING_SERVER_ON, "3600") as (r, root):
        _write_commit(r, _create_on(r, root, "again.txt"), new)      # dies here
    s = NFSServer(tmp_path, repo=Repository.open(tmp_path / "repo"))
    try:
        e = s.fs().stat("/again.txt")
        assert e.node_id == old
        vs = s.fs().versions("/again.txt")
        assert [(v.deleted, v.size) for v in vs] == [(False, 23), (True, 0), (False, 3)]
        assert vs[-1].origin.protocol == "nfs"
        assert s.fs().open_read("/again.txt").read() == new
        assert synced_updates(s.repo) == []
    finally:
        s.close()


_CRASHING_SERVER_ON = """
import sys, time
from pathlib import Path
from archive import Repository
from nfs_helpers import NFSServer
s = NFSServer(Path(sys.argv[1]), repo=Repository.open(Path(sys.argv[1]) / "repo"), commit_idle=float(sys.argv[2]))
print(s.port, flush=True)
time.sleep(300)
"""
