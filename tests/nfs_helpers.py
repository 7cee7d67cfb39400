"""Helpers for the NFS tests: a running NFS adapter on a fresh repository, libnfs (the C
library, through ctypes) as a programmable client, and the libnfs-utils command-line tools.

A missing client is a failure, never a skip: libnfs-utils and libnfs-dev are in
tests/apt-packages.txt.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from archive import Repository
from protocols.nfs import NFSAdapter

from ftp_helpers import RecordingContext


def need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is not installed (apt package libnfs-utils, see tests/apt-packages.txt)"
    return path


_TEMPLATE: Path | None = None


def template_repository() -> Path:
    """A closed repository with shares office (alice rw, bob ro) and public (alice rw), built
    once per test process: each NFSServer copies it (a copy is an ordinary repository with the
    same keys) instead of paying init and two scrypt password hashes again (~1 s a test)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        import atexit
        import tempfile
        where = Path(tempfile.mkdtemp(prefix="nfs-template-"))
        atexit.register(shutil.rmtree, where, True)
        repo = Repository.init(where / "repo")
        try:
            repo.add_share("office")
            repo.add_share("public")
            repo.add_user("alice", "alice-pw")
            repo.add_user("bob", "bob-pw")
            repo.grant("alice", "office", "rw")
            repo.grant("alice", "public", "rw")
            repo.grant("bob", "office", "ro")
        finally:
            repo.close()
        _TEMPLATE = where / "repo"
    return _TEMPLATE


class NFSServer:
    """Repository with shares office (alice rw, bob ro) and public, and a started adapter."""

    def __init__(self, tmp: Path, exports: list[dict] | None = None, repo: Repository | None = None,
                 **config: Any) -> None:
        self.tmp = tmp
        if repo is None:
            shutil.copytree(template_repository(), tmp / "repo")
            repo = Repository.open(tmp / "repo")
        self.repo = repo
        self.ctx = RecordingContext(logger=logging.getLogger("test.nfs"))
        if exports is None:
            exports = [{"share": "office", "user": "alice", "clients": ["127.0.0.0/8"]},
                       {"share": "public", "user": "alice", "clients": ["127.0.0.1/32"], "read_only": True}]
        cfg = {"listen": "127.0.0.1:0", "exports": exports, "commit_idle": 0.3}
        cfg.update(config)
        self.config = cfg
        self.adapter = NFSAdapter(repo, cfg, self.ctx)
        self.adapter.start()
        self.port = self.adapter.address[1]

    def url(self, path: str) -> str:
        return f"nfs://127.0.0.1{path}?version=3&nfsport={self.port}&mountport={self.port}"

    def fs(self, share: str = "office"):
        return self.repo.share(share)

    def wait_versions(self, path: str, n: int, share: str = "office", timeout: float = 30) -> list:
        """The versions of a file once it has `n` (commits happen after the idle time)."""
        deadline = time.monotonic() + timeout
        vs: list = []
        while time.monotonic() < deadline:
            try:
                vs = self.fs(share).versions(path)
            except Exception:
                vs = []
            if len(vs) >= n and self.adapter.sessions.get((self.fs(share).share_id,
                                                            self.fs(share).stat(path).node_id)) is None:
                return vs
            time.sleep(0.05)
        return vs

    def stop(self) -> None:
        self.adapter.stop(2.0)

    def close(self) -> None:
        self.stop()
        self.repo.close()


def run(cmd: list[str], timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)


# ------------------------------------------------------------------------------ libnfs (ctypes)

class _Url(ctypes.Structure):
    _fields_ = [("server", ctypes.c_char_p), ("path", ctypes.c_char_p), ("file", ctypes.c_char_p)]


class Stat64(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size", "blksize", "blocks", "atime", "mtime",
        "ctime", "atime_nsec", "mtime_nsec", "ctime_nsec", "used")]


class _Dirent(ctypes.Structure):
    pass


_Dirent._fields_ = [("next", ctypes.POINTER(_Dirent)), ("name", ctypes.c_char_p), ("inode", ctypes.c_uint64),
                    ("type", ctypes.c_uint32), ("mode", ctypes.c_uint32), ("size", ctypes.c_uint64)]


def libnfs() -> ctypes.CDLL:
    name = ctypes.util.find_library("nfs") or "libnfs.so.13"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise AssertionError(f"libnfs is not installed ({e}); apt package libnfs13/libnfs-dev") from None
    P, I, U64, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_char_p
    sigs = {
        "nfs_init_context": ([], P), "nfs_destroy_context": ([P], None), "nfs_get_error": ([P], S),
        "nfs_parse_url_dir": ([P, S], ctypes.POINTER(_Url)), "nfs_destroy_url": ([ctypes.POINTER(_Url)], None),
        "nfs_mount": ([P, S, S], I), "nfs_umount": ([P], I),
        "nfs_open": ([P, S, I, ctypes.POINTER(P)], I), "nfs_creat": ([P, S, I, ctypes.POINTER(P)], I),
        "nfs_close": ([P, P], I), "nfs_pwrite": ([P, P, U64, U64, ctypes.c_void_p], I),
        "nfs_pread": ([P, P, U64, U64, ctypes.c_void_p], I), "nfs_fsync": ([P, P], I),
        "nfs_ftruncate": ([P, P, U64], I), "nfs_truncate": ([P, S, U64], I),
        "nfs_rename": ([P, S, S], I), "nfs_mkdir": ([P, S], I), "nfs_rmdir": ([P, S], I), "nfs_unlink": ([P, S], I),
        "nfs_stat64": ([P, S, ctypes.POINTER(Stat64)], I),
        "nfs_opendir": ([P, S, ctypes.POINTER(P)], I), "nfs_readdir": ([P, P], ctypes.POINTER(_Dirent)),
        "nfs_closedir": ([P, P], None), "nfs_set_timeout": ([P, I], None),
    }
    for fn, (args, res) in sigs.items():
        f = getattr(lib, fn)
        f.argtypes, f.restype = args, res
    return lib


class NFSError(OSError):
    pass


class LibNFS:
    """A mounted libnfs context: the calls a program linking libnfs makes."""

    def __init__(self, url: str, timeout_ms: int = 30000) -> None:
        self.lib = libnfs()
        self.ctx = self.lib.nfs_init_context()
        self.lib.nfs_set_timeout(self.ctx, timeout_ms)
        u = self.lib.nfs_parse_url_dir(self.ctx, url.encode())
        if not u:
            raise NFSError(self.error())
        try:
            self._check(self.lib.nfs_mount(self.ctx, u.contents.server, u.contents.path))
        finally:
            self.lib.nfs_destroy_url(u)

    def error(self) -> str:
        e = self.lib.nfs_get_error(self.ctx)
        return e.decode() if e else ""

    def _check(self, rc: int) -> int:
        if rc < 0:
            raise NFSError(-rc, self.error())
        return rc

    def open(self, path: str, flags: int = os.O_RDONLY):
        fh = ctypes.c_void_p()
        self._check(self.lib.nfs_open(self.ctx, path.encode(), flags, ctypes.byref(fh)))
        return fh

    def creat(self, path: str, mode: int = 0o644):
        fh = ctypes.c_void_p()
        self._check(self.lib.nfs_creat(self.ctx, path.encode(), mode, ctypes.byref(fh)))
        return fh

    def pwrite(self, fh, data: bytes, offset: int) -> int:
        return self._check(self.lib.nfs_pwrite(self.ctx, fh, offset, len(data), data))

    def pread(self, fh, n: int, offset: int) -> bytes:
        buf = ctypes.create_string_buffer(n)
        got = self._check(self.lib.nfs_pread(self.ctx, fh, offset, n, buf))
        return buf.raw[:got]

    def fsync(self, fh) -> None:
        self._check(self.lib.nfs_fsync(self.ctx, fh))

    def ftruncate(self, fh, size: int) -> None:
        self._check(self.lib.nfs_ftruncate(self.ctx, fh, size))

    def close_file(self, fh) -> None:
        self._check(self.lib.nfs_close(self.ctx, fh))

    def write_file(self, path: str, data: bytes, block: int = 1 << 20) -> None:
        fh = self.creat(path)
        for off in range(0, len(data), block):
            self.pwrite(fh, data[off:off + block], off)
        self.close_file(fh)

    def read_file(self, path: str, block: int = 1 << 20) -> bytes:
        fh = self.open(path)
        out = bytearray()
        while True:
            piece = self.pread(fh, block, len(out))
            if not piece:
                break
            out += piece
        self.close_file(fh)
        return bytes(out)

    def stat(self, path: str) -> Stat64:
        st = Stat64()
        self._check(self.lib.nfs_stat64(self.ctx, path.encode(), ctypes.byref(st)))
        return st

    def listdir(self, path: str) -> list[str]:
        d = ctypes.c_void_p()
        self._check(self.lib.nfs_opendir(self.ctx, path.encode(), ctypes.byref(d)))
        names = []
        while True:
            ent = self.lib.nfs_readdir(self.ctx, d)
            if not ent:
                break
            names.append(ent.contents.name.decode())
        self.lib.nfs_closedir(self.ctx, d)
        return [n for n in names if n not in (".", "..")]

    def mkdir(self, path: str) -> None:
        self._check(self.lib.nfs_mkdir(self.ctx, path.encode()))

    def rmdir(self, path: str) -> None:
        self._check(self.lib.nfs_rmdir(self.ctx, path.encode()))

    def unlink(self, path: str) -> None:
        self._check(self.lib.nfs_unlink(self.ctx, path.encode()))

    def rename(self, a: str, b: str) -> None:
        self._check(self.lib.nfs_rename(self.ctx, a.encode(), b.encode()))

    def truncate(self, path: str, size: int) -> None:
        self._check(self.lib.nfs_truncate(self.ctx, path.encode(), size))

    def close(self) -> None:
        if self.ctx:
            self.lib.nfs_destroy_context(self.ctx)
            self.ctx = None


_NFS_CB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


class Pipeline:
    """libnfs's asynchronous API on one mounted context: up to `depth` operations in flight on
    its one connection, as the kernel client sends them (several files being created, written
    and closed at once; libnfs' synchronous calls and nfs-cp wait for each reply)."""

    def __init__(self, client: LibNFS, depth: int = 16) -> None:
        import select
        self.c, self.lib, self.depth = client, client.lib, depth
        self._poll = select.poll
        self._POLLIN, self._POLLOUT = select.POLLIN, select.POLLOUT
        P, I, U64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64
        for fn, args in {"nfs_creat_async": [P, ctypes.c_char_p, I, _NFS_CB, P],
                         "nfs_pread_async": [P, P, U64, U64, _NFS_CB, P],
                         "nfs_pwrite_async": [P, P, U64, U64, P, _NFS_CB, P],
                         "nfs_close_async": [P, P, _NFS_CB, P],
                         "nfs_unlink_async": [P, ctypes.c_char_p, _NFS_CB, P],
                         "nfs_get_fd": [P], "nfs_which_events": [P], "nfs_service": [P, I]}.items():
            f = getattr(self.lib, fn)
            f.argtypes, f.restype = args, I
        self._cb = _NFS_CB(self._done)         # kept alive as long as the pipeline
        self._next: dict[int, Any] = {}        # token -> what to do with the result
        self._tokens = itertools.count(1)
        self.errors: list[str] = []

    def _done(self, err, nfs, data, private) -> None:
        step = self._next.pop(private)
        if err < 0:
            self.errors.append(f"{step[0]}: {ctypes.cast(data, ctypes.c_char_p).value!r}")
            return
        step[1](ctypes.string_at(data, err) if step[0].startswith("read ") else data)

    def _queue(self, fn: str, *args: Any, then: Callable[[Any], None], what: str) -> None:
        token = next(self._tokens)
        self._next[token] = (what, then, args)   # args (path, buffer) live until the reply
        rc = getattr(self.lib, fn)(self.c.ctx, *args, self._cb, ctypes.c_void_p(token))
        if rc < 0:
            del self._next[token]
            raise NFSError(-rc, self.c.error())

    def _run(self, starts: list[Callable[[], None]]) -> None:
        """Start the operations, at most `depth` in flight, and serve replies until all ended."""
        pending = list(reversed(starts))
        while pending or self._next:
            while pending and len(self._next) < self.depth:
                pending.pop()()
            p = self._poll()
            p.register(self.lib.nfs_get_fd(self.c.ctx), self.lib.nfs_which_events(self.c.ctx))
            for _fd, revents in p.poll(30_000) or [(0, 0)]:
                if revents == 0:
                    raise NFSError(110, "no reply from the server in 30 s")
                if self.lib.nfs_service(self.c.ctx, revents) < 0:
                    raise NFSError(5, self.c.error())
        if self.errors:
            raise NFSError(5, "; ".join(self.errors[:5]))

    def put_files(self, files: list[tuple[str, bytes]]) -> None:
        """creat + pwrite + close of every file (each file's calls in order, files overlapping)."""
        def start(path: str, data: bytes) -> Callable[[], None]:
            def creat() -> None:
                self._queue("nfs_creat_async", path.encode(), 0o644, then=written, what=f"creat {path}")

            def written(fh) -> None:
                self._queue("nfs_pwrite_async", fh, 0, len(data), data, what=f"write {path}",
                            then=lambda _d: self._queue("nfs_close_async", fh, then=lambda _e: None,
                                                        what=f"close {path}"))
            return creat
        self._run([start(p, d) for p, d in files])

    def write_pieces(self, fh, pieces: list[tuple[int, bytes]]) -> None:
        """pwrite of every (offset, data) into one open file, all in flight together."""
        self._run([(lambda off, d: lambda: self._queue("nfs_pwrite_async", fh, off, len(d), d,
                                                        then=lambda _r: None, what=f"write at {off}"))(o, d)
                   for o, d in pieces])

    def read_file(self, path: str, size: int, block: int = 128 * 1024) -> bytes:
        """The file's `size` bytes read with `block`-sized READs, `depth` in flight (the
        kernel client's read-ahead; nfs-cp waits for each reply)."""
        fh = self.c.open(path)
        out = bytearray(size)

        def into(off: int) -> Callable[[bytes], None]:
            def got(data: bytes) -> None:
                out[off:off + len(data)] = data
            return got
        try:
            self._run([(lambda off: lambda: self._queue("nfs_pread_async", fh, off, min(block, size - off),
                                                         then=into(off), what=f"read {off}"))(o)
                       for o in range(0, size, block)])
        finally:
            self.c.close_file(fh)
        return bytes(out)

    def unlink_files(self, paths: list[str]) -> None:
        self._run([(lambda p: lambda: self._queue("nfs_unlink_async", p.encode(), then=lambda _d: None,
                                                   what=f"unlink {p}"))(p) for p in paths])


# ------------------------------------------------------------------------------ raw RPC client

_XIDS = itertools.count(1)


class RawRPC:
    """Hand-made RPC calls over TCP for the bad-input tests (what no real client would send)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        # xids unique across connections, as a real client's are: the duplicate-request cache
        # is keyed by client address and xid, so a second connection starting at the same xid
        # would get the first one's cached answer to the same procedure
        self.xid = next(_XIDS) << 16

    def send_record(self, payload: bytes) -> None:
        self.sock.sendall(struct.pack(">I", 0x80000000 | len(payload)) + payload)

    def call(self, prog: int, vers: int, proc: int, args: bytes = b"", xid: int | None = None,
             cred: bytes | None = None) -> tuple[int, bytes]:
        """(xid, reply record)."""
        xid = self.send_call(prog, vers, proc, args, xid, cred)
        return xid, self.recv_record()

    def send_call(self, prog: int, vers: int, proc: int, args: bytes = b"", xid: int | None = None,
                  cred: bytes | None = None) -> int:
        """Send a call without waiting for its reply (several in flight); its xid."""
        if xid is None:
            self.xid += 1
            xid = self.xid
        if cred is None:
            body = struct.pack(">I", 0) + struct.pack(">I", 4) + b"test" + struct.pack(">IIII", 0, 0, 0, 0)[:12]
            cred = struct.pack(">II", 1, len(body)) + body
        head = struct.pack(">IIIIII", xid, 0, 2, prog, vers, proc) + cred + struct.pack(">II", 0, 0)
        self.send_record(head + args)
        return xid

    def recv_record(self) -> bytes:
        out = b""
        while True:
            mark = self._exact(4)
            (word,) = struct.unpack(">I", mark)
            out += self._exact(word & 0x7FFFFFFF)
            if word & 0x80000000:
                return out

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            got = self.sock.recv(n - len(buf))
            if not got:
                raise ConnectionError("closed")
            buf += got
        return buf

    def close(self) -> None:
        self.sock.close()
