"""The file commands (CREATE ... SET_INFO) onto ShareFS.

Versions: every handle on a file shares one :class:`SharedFile` (server-wide, so several
connections agree); its ShareFS ``Updater`` is opened on the first write or truncate, reads
through any handle see the staged bytes, and the last CLOSE commits exactly one version.  A
connection that drops aborts its handles: nothing half-written becomes a version.
Previous Versions: a ``@GMT-...`` path element or a ``TWrp`` create context opens the
share's read-only ``/.snapshots/@GMT-...`` view, so the past is served by ShareFS itself.
"""
from __future__ import annotations

import re
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from archive import errors as ae
from archive.clock import gmt_token, parse_gmt_token
from archive.paths import fold, join, split

from . import errors as st, info, ipc, wire
from .errors import SMBError
from .info import Meta
from .upload import Upload

# dispositions, create actions, options, access bits
SUPERSEDE, OPEN, CREATE_NEW, OPEN_IF, OVERWRITE, OVERWRITE_IF = range(6)
SUPERSEDED, OPENED, CREATED, OVERWRITTEN = range(4)
OPT_DIRECTORY, OPT_NON_DIRECTORY, OPT_DELETE_ON_CLOSE = 0x1, 0x40, 0x1000
WRITE_BITS = 0x2 | 0x4 | 0x10 | 0x100 | 0x10000 | 0x40000 | 0x80000 | 0x40000000 | 0x10000000
DELETE = 0x10000
FSCTL_VALIDATE_NEGOTIATE_INFO = 0x00140204
FSCTL_SRV_ENUMERATE_SNAPSHOTS = 0x00144064
FSCTL_PIPE_TRANSCEIVE = 0x0011C017
FSCTL_DFS_GET_REFERRALS = 0x00060194
FSCTL_DFS_GET_REFERRALS_EX = 0x000601B0
LOCK_SHARED, LOCK_EXCLUSIVE, LOCK_UNLOCK, LOCK_FAIL_IMMEDIATELY = 1, 2, 4, 0x10
LOCK_WAIT = 2.0                       # seconds a blocking LOCK waits before failing
GMT_RE = re.compile(r"@GMT-\d{4}\.\d{2}\.\d{2}-\d{2}\.\d{2}\.\d{2}")
SNAPSHOTS = ".snapshots"


@dataclass
class SharedFile:
    """What every handle on one file shares, across connections."""
    key: tuple[str, str]
    path: str
    updater: Any = None
    fs: Any = None                  # the ShareFS of the handle that first wrote (its origin commits)
    opens: int = 0
    delete_pending: bool = False
    mtime: float | None = None
    generation: int = 0
    locks: list[tuple[int, int, int, bool]] = field(default_factory=list)   # (open id, off, len, excl)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def ensure_updater(self, fs: Any) -> Upload:
        """The Upload of a write to the file's current content (staged on its version)."""
        if self.updater is None:
            self.updater = Upload(fs, self.path, fresh=False, has_base=True)
            self.fs = fs
        return self.updater

    def start_fresh(self, fs: Any, has_base: bool) -> Upload:
        """A create or overwrite: the content starts empty, with no core call until CLOSE."""
        if self.updater is None:
            self.updater = Upload(fs, self.path, fresh=True, has_base=has_base)
            self.fs = fs
        else:
            self.updater.overwrite()
        return self.updater

    @property
    def dirty(self) -> bool:
        return self.updater is not None and self.updater.dirty


class SharedTable:
    """(share, folded path) -> SharedFile for every file some handle has open."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: dict[tuple[str, str], SharedFile] = {}

    @staticmethod
    def key(share: str, path: str) -> tuple[str, str]:
        return share, fold(path)

    def acquire(self, share: str, path: str) -> SharedFile:
        k = self.key(share, path)
        with self.lock:
            sf = self.files.get(k)
            if sf is None:
                sf = self.files[k] = SharedFile(k, path)
            sf.opens += 1
            return sf

    def peek(self, share: str, path: str) -> SharedFile | None:
        with self.lock:
            return self.files.get(self.key(share, path))

    def release(self, sf: SharedFile) -> bool:
        """Drop one handle; True when it was the last one."""
        with self.lock:
            sf.opens -= 1
            if sf.opens <= 0:
                self.files.pop(sf.key, None)
                return True
            return False

    def rekey(self, sf: SharedFile, share: str, new_path: str) -> None:
        with self.lock:
            self.files.pop(sf.key, None)
            sf.key, sf.path = self.key(share, new_path), new_path
            self.files[sf.key] = sf

    def dirty(self) -> bool:
        with self.lock:
            return any(sf.dirty for sf in self.files.values())


_ids = iter(range(1, 1 << 62))
_ids_lock = threading.Lock()


def _next_id() -> int:
    with _ids_lock:
        return next(_ids)


@dataclass
class Open:
    fid: bytes
    session: Any
    tree: Any
    path: str                         # share-relative, may be under /.snapshots/@GMT-.../
    is_dir: bool
    readonly: bool
    access: int
    meta: Meta
    shared: SharedFile | None = None
    reader: Any = None
    reader_gen: int = -1
    delete_on_close: bool = False
    position: int = 0
    oid: int = 0
    pipe: Any = None
    dir_iter: Iterator[Meta] | None = None
    dir_pending: Meta | None = None
    dir_started: bool = False


# -- helpers ------------------------------------------------------------------------------
def smb_path(name: str, twrp: int | None) -> tuple[str, bool]:
    """SMB name -> (share-relative path, is it the past).  ``@GMT-`` elements and a TWrp
    time become the read-only ``/.snapshots/<token>`` view."""
    name = name.replace("\\", "/").strip("/")
    if name.endswith("::$DATA"):
        name = name[:-7]
    if ":" in name:
        raise SMBError(st.OBJECT_NAME_INVALID, "alternate data streams are not supported")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if len(parts) > 1 and parts[0].lower() == SNAPSHOTS and GMT_RE.fullmatch(parts[1]):
        parts = parts[1:]                        # ".snapshots/@GMT-..." is the same view
    token = None
    rest = []
    for p in parts:
        if GMT_RE.fullmatch(p) and token is None:
            token = p
        else:
            rest.append(p)
    if twrp is not None and token is None:
        token = gmt_token(int(wire.from_filetime(twrp) * 1_000_000))
    if token is not None:
        if parse_gmt_token(token) is None:
            raise SMBError(st.OBJECT_PATH_NOT_FOUND)
        return join(split("/".join([SNAPSHOTS, token] + rest))), True
    path = join(split("/".join(rest)))
    if path.split("/")[1:2] == [SNAPSHOTS]:
        return path, True
    return path, False


def meta_of(e: Any) -> Meta:
    return Meta(e.name, e.is_dir, e.size, e.ctime or e.mtime, e.mtime, e.node_id, e.readonly)


def current_meta(op: Open) -> Meta:
    m = op.meta
    sf = op.shared
    if sf is not None and sf.updater is not None:
        m.size = sf.updater.size
    return m


def get_open(conn: Any, h: wire.Header, fid: bytes) -> Open:
    if fid == wire_all_ff:
        fid = conn.last_fid
    op = conn.opens.get(fid)
    if op is None or op.session is not conn.sessions.get(h.session_id):
        raise SMBError(st.FILE_CLOSED)
    return op


wire_all_ff = b"\xff" * 16


GENERIC = ((0x80000000, 0x00120089), (0x40000000, 0x00120116), (0x20000000, 0x001200A0), (0x10000000, 0x001F01FF))


def map_generic(access: int, readonly: bool) -> int:
    """GENERIC_* and MAXIMUM_ALLOWED bits -> the specific file rights they stand for."""
    for bit, rights in GENERIC:
        if access & bit:
            access = (access & ~bit) | rights
    if access & 0x02000000:
        access = (access & ~0x02000000) | (0x001200A9 if readonly else 0x001F01FF)
    return access


def _refuse_write(op_or_tree_readonly: bool, past: bool) -> None:
    if past:
        raise ae.ReadOnly("snapshots are read-only")
    if op_or_tree_readonly:
        raise ae.PermissionDenied("read-only access")


def _exists(fs: Any, path: str) -> Meta | None:
    try:
        return meta_of(fs.stat(path))
    except ae.NotFound:
        return None


KNOWN_DIR_TTL = 2.0      # seconds a folder seen by this connection counts as existing


def _check_folder(conn: Any, tree: Any, folder: str) -> None:
    """A new file's folder must exist (OBJECT_PATH_NOT_FOUND otherwise).  Why a short
    per-connection memory: a copy of many files into one folder would otherwise pay one
    catalog lookup per file for the same answer.  A folder removed by someone else within
    the TTL only moves the error from CREATE to the CLOSE, whose commit checks again (as it
    must anyway: the folder can vanish between CREATE and CLOSE)."""
    if folder == "/":
        return
    key, now = (tree.share, fold(folder)), time.monotonic()
    if conn.known_dirs.get(key, 0.0) > now:
        return
    pm = _exists(tree.fs, folder)
    if pm is None or not pm.is_dir:
        raise SMBError(st.OBJECT_PATH_NOT_FOUND)
    if len(conn.known_dirs) > 256:
        conn.known_dirs.clear()
    conn.known_dirs[key] = now + KNOWN_DIR_TTL


# -- CREATE -------------------------------------------------------------------------------
def create(conn: Any, h: wire.Header, msg: memoryview) -> tuple[int, bytes]:
    tree = conn.tree_of(h)
    req = wire.parse_create(msg)
    sess = conn.sessions[h.session_id]
    if tree.fs is None:
        op = ipc.open_pipe(conn, sess, tree, req.name)
        return _register(conn, op, OPENED, [])
    twrp = req.contexts.get(b"TWrp")
    if twrp is not None and len(twrp) < 8:
        raise SMBError(st.INVALID_PARAMETER)
    path, past = smb_path(req.name, struct.unpack_from("<Q", twrp)[0] if twrp else None)
    fs = tree.fs
    readonly = past or not tree.writable
    wants_write = bool(req.desired_access & WRITE_BITS) or req.options & OPT_DELETE_ON_CLOSE \
        or req.disposition in (SUPERSEDE, OVERWRITE, OVERWRITE_IF, CREATE_NEW)
    sf = None if past else conn.server.shared.peek(tree.share, path)
    meta = None
    if sf is not None and sf.updater is not None:
        meta = Meta(path.rsplit("/", 1)[-1], False, sf.updater.size, time.time(), time.time(), 0, False)
        try:
            meta = meta_of(fs.stat(path))
        except ae.NotFound:
            pass
    else:
        meta = _exists(fs, path)
    disp, opts = req.disposition, req.options
    if disp > OVERWRITE_IF:
        raise SMBError(st.INVALID_PARAMETER)
    action = OPENED
    if meta is not None:
        if disp == CREATE_NEW:
            raise SMBError(st.OBJECT_NAME_COLLISION)
        if opts & OPT_DIRECTORY and not meta.is_dir:
            raise SMBError(st.NOT_A_DIRECTORY)
        if opts & OPT_NON_DIRECTORY and meta.is_dir:
            raise SMBError(st.FILE_IS_A_DIRECTORY)
        if wants_write and readonly and (req.desired_access & ~0x02000000) & WRITE_BITS:
            _refuse_write(not tree.writable, past)
        if disp in (SUPERSEDE, OVERWRITE, OVERWRITE_IF):
            if meta.is_dir:
                raise SMBError(st.FILE_IS_A_DIRECTORY)
            _refuse_write(readonly, past)
            action = SUPERSEDED if disp == SUPERSEDE else OVERWRITTEN
    else:
        if disp in (OPEN, OVERWRITE):
            parent = path.rsplit("/", 1)[0] or "/"
            if parent != "/" and _exists(fs, parent) is None:
                raise SMBError(st.OBJECT_PATH_NOT_FOUND)
            raise SMBError(st.OBJECT_NAME_NOT_FOUND)
        _refuse_write(readonly, past)
        if opts & OPT_DIRECTORY:
            meta = meta_of(fs.mkdir(path))
        else:
            _check_folder(conn, tree, path.rsplit("/", 1)[0] or "/")
            meta = Meta(path.rsplit("/", 1)[-1], False, 0, time.time(), time.time(), 0, False)
        action = CREATED
    access = map_generic(req.desired_access, readonly)
    if readonly:
        access &= ~WRITE_BITS & 0xFFFFFFFF
    op = Open(fid=b"", session=sess, tree=tree, path=path, is_dir=meta.is_dir, readonly=readonly,
              access=access, meta=meta, oid=_next_id())
    if not past:
        op.shared = conn.server.shared.acquire(tree.share, path)
        try:
            with op.shared.lock:
                if action == CREATED and not meta.is_dir:
                    op.shared.start_fresh(fs, has_base=False)   # a new file: one version at close
                elif action in (SUPERSEDED, OVERWRITTEN):
                    op.shared.start_fresh(fs, has_base=True)
        except BaseException:
            conn.server.shared.release(op.shared)
            raise
    if opts & OPT_DELETE_ON_CLOSE:
        if readonly:
            _refuse_write(not tree.writable, past)
        op.delete_on_close = True
    ctxs: list[tuple[bytes, bytes]] = []
    if b"MxAc" in req.contexts:
        ctxs.append((b"MxAc", struct.pack("<II", 0, 0x001200A9 if readonly else 0x001F01FF)))
    if b"QFid" in req.contexts:
        ctxs.append((b"QFid", struct.pack("<QQ16s", meta.node_id, 0x45444745, b"")))
    return _register(conn, op, action, ctxs)


def _register(conn: Any, op: Open, action: int, ctxs: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    import os
    op.fid = os.urandom(8) + struct.pack("<Q", op.oid or _next_id())
    conn.opens[op.fid] = op
    conn.last_fid = op.fid
    m = current_meta(op)
    cbuf = wire.create_contexts(ctxs) if ctxs else b""
    body = struct.pack("<HBBI", 89, 0, 0, action) + m.times() + struct.pack(
        "<QQII16sII", m.allocation, 0 if m.is_dir else m.size, m.attributes, 0, op.fid,
        (64 + 88) if cbuf else 0, len(cbuf)) + cbuf
    return st.SUCCESS, body


# -- CLOSE / FLUSH -------------------------------------------------------------------------
def close(conn: Any, h: wire.Header, msg: memoryview) -> tuple[int, bytes]:
    flags, fid = wire.parse_close(msg)
    op = get_open(conn, h, fid)
    del conn.opens[op.fid]
    m = finish_open(conn, op)
    if flags & 1 and m is not None:
        return st.SUCCESS, struct.pack("<HHI", 60, 1, 0) + m.times() + struct.pack(
            "<QQI", m.allocation, 0 if m.is_dir else m.size, m.attributes)
    return st.SUCCESS, struct.pack("<HHI", 60, 0, 0) + bytes(52)


def finish_open(conn: Any, op: Open) -> Meta | None:
    """Close one handle; the last handle of a file commits its one version (or deletes it)."""
    if op.reader is not None:
        op.reader.close()
    if op.pipe is not None:
        op.pipe.close()
        return None
    sf = op.shared
    m = current_meta(op)
    if sf is None:
        return m
    fs = op.tree.fs
    with sf.lock:
        sf.locks = [lk for lk in sf.locks if lk[0] != op.oid]
        if op.delete_on_close:
            sf.delete_pending = True
        last = conn.server.shared.release(sf)
        if not last:
            return m
        upd, sf.updater = sf.updater, None
        if sf.delete_pending:
            if upd is not None:
                upd.abort()
            if op.is_dir:
                conn.known_dirs.clear()
                fs.rmdir(sf.path)
            elif upd is None or upd.has_base or _exists(fs, sf.path):
                try:
                    fs.remove(sf.path)
                except ae.NotFound:
                    pass
            return m
        if upd is not None:
            if sf.mtime is not None:
                upd.mtime = sf.mtime
            try:
                v = upd.commit()
            except BaseException:
                upd.abort()
                raise
            if v is not None:
                conn.server.event("commit", path=f"/{op.tree.share}{sf.path}", version=v.number,
                                  size=v.size, address=conn.address)
                m.size = v.size
            sf.generation += 1
        elif sf.mtime is not None:
            sf.fs = sf.fs or fs
            fs.set_times(sf.path, sf.mtime)
    return m


def abort_open(conn: Any, op: Open) -> None:
    """Connection gone: release without committing; the last handle drops staged bytes."""
    try:
        if op.reader is not None:
            op.reader.close()
        if op.pipe is not None:
            op.pipe.close()
        sf = op.shared
        if sf is not None:
            with sf.lock:
                sf.locks = [lk for lk in sf.locks if lk[0] != op.oid]
                if conn.server.shared.release(sf) and sf.updater is not None:
                    sf.updater.abort()
                    sf.updater = None
    except Exception:
        pass


def flush(conn: Any, h: wire.Header, msg: memoryview) -> tuple[int, bytes]:
    get_open(conn, h, wire.parse_flush(msg))
    return st.SUCCESS, struct.pack("<HH", 4, 0)     # staged bytes are durable at CLOSE (one version)


# -- READ / WRITE -------------------------------------------------------------------------
def _conflict(sf: SharedFile | None, oid: int, off: int, length: int, write: bool) -> bool:
    if sf is None or not sf.locks:
        return False
    end = off + max(length, 1)
    for o, lo, ln, excl in sf.locks:
        if o != oid and lo < end and off < lo + max(ln, 1) and (excl or write):
            return True
    return False


def read(conn: Any, h: wire.Header, msg: memoryview) -> tuple[int, bytes]:
    length, offset, fid, minimum = wire.parse_read(msg)
    op = get_open(conn, h, fid)
    if op.pipe is not None:
        data = op.pipe.read(length)
        return st.SUCCESS, struct.pack("<HBBIII", 17, 80, 0, len(data), 0, 0) + data
    if op.is_dir:
        raise SMBError(st.INVALID_DEVICE_REQUEST)
    if length > 16 * 1024 * 1024:
        raise SMBError(st.INVALID_PARAMETER)
    sf = op.shared
    if _conflict(sf, op.oid, offset, length, False):
        raise SMBError(st.FILE_LOCK_CONFLICT)
    data = None
    if sf is not None:
        with sf.lock:
            if sf.updater is not None:
                data = sf.updater.pread(length, offset)
    if data is None:
        if op.reader is None or (sf is not None and op.reader_gen != sf.generation):
            if op.reader is not None:
                op.reader.close()
            op.reader = op.tree.fs.open_read(op.path)
            op.reader_gen = sf.generation if sf is not None else 0
        if offset >= op.reader.size:
            data = b""
        else:
            op.reader.seek(offset)
            data = op.reader.read(length)
    if not data and length:
        raise SMBError(st.END_OF_FILE)
    if len(data) < minimum:
        raise SMBError(st.END_OF_FILE)
    op.position = offset + len(data)
    return st.SUCCESS, b"".join((struct.pack("<HBBIII", 17, 80, 0, len(data), 0, 0), data))


def write(conn: Any, h: wire.Header, msg: memoryview) -> tuple[int, bytes]:
    data, offset, fid = wire.parse_write(msg)
    op = get_open(conn, h, fid)
    if op.pipe is not None:
        op.pipe.write(bytes(data))
        return st.SUCCESS, struct.pack("<HHIIHH", 17, 0, len(data), 0, 0, 0)
    if op.is_dir:
        raise SMBError(st.INVALID_DEVICE_REQUEST)
    if op.readonly or not op.access & 0x6:
        _refuse_write(not op.tree.writable or not op.access & 0x6, op.readonly and op.tree.writable)
    sf = op.shared
    if offset == 0xFFFFFFFFFFFFFFFF:              # append
        offset = sf.updater.size if sf.updater is not None else op.meta.size
    if offset + len(data) > (1 << 44):
        raise SMBError(st.DISK_FULL)
    with sf.lock:
        if _conflict(sf, op.oid, offset, len(data), True):
            raise SMBError(st.FILE_LOCK_CONFLICT)
        sf.ensure_updater(op.tree.fs).pwrite(data, offset)
    op.position = offset + len(data)
    return st.SUCCESS, struct.pack("<HHIIHH", 17, 0, len(data), 0, 0, 0)


# -- LOCK -----------------------------------------------------------------------------------
def lock(conn: Any, h: wire.Header, msg: memoryview) -> tuple[int, bytes]:
    fid, elems = wire.parse_lock(msg)
    op = get_open(conn, h, fid)
    sf = op.shared
    if sf is None or op.is_dir:
        raise SMBError(st.INVALID_PARAMETER)
    for off, length, flags in elems:
        if flags & LOCK_UNLOCK:
            with sf.lock:
                mine = (op.oid, off, length)
                hit = next((lk for lk in sf.locks if lk[:3] == mine), None)
                if hit is None:
                    raise SMBError(st.RANGE_NOT_LOCKED)
                sf.locks.remove(hit)
            continue
        excl = bool(flags & LOCK_EXCLUSIVE)
        deadline = time.monotonic() + (0 if flags & LOCK_FAIL_IMMEDIATELY else LOCK_WAIT)
        while True:
            with sf.lock:
                if not _conflict(sf, op.oid, off, length, excl):
                    sf.locks.append((op.oid, off, length, excl))
                    break
            if time.monotonic() >= deadline:
                raise SMBError(st.LOCK_NOT_GRANTED if flags & LOCK_FAIL_IMMEDIATELY else st.FILE_LOCK_CONFLICT)
            time.sleep(0.05)
    return st.SUCCESS, struct.pack("<HH", 4, 0)


# -- QUERY_DIRECTORY ------------------------------------------------------------------------
def _pattern(p: str) -> re.Pattern[str] | None:
    if p in ("", "*", "*.*"):
        return None
    p = p.replace("<", "*").replace(">", "?").replace('"', ".")
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in p)
    return re.compile(rx, re.IGNORECASE | re.DOTALL)


def _listing(op: Open, pattern: str) -> Iterator[Meta]:
    fs = op.tree.fs
    if pattern and not any(c in pattern for c in "*?<>\""):
        try:
            e = fs.stat(op.path.rstrip("/") + "/" + pattern)
        except (ae.NotFound, ae.NotADirectory, ae.InvalidPath):
            return
        yield meta_of(e)
        return
    rx = _pattern(pattern)
    me = current_meta(op)
    for dot in (".", ".."):
        if rx is None or rx.fullmatch(dot):
            yield Meta(dot, True, 0, me.ctime, me.mtime, me.node_id)
    for e in fs.listdir(op.path):
        if rx is None or rx.fullmatch(e.name):
            yield meta_of(e)


def query_directory(conn: Any, h: wire.Header, msg: memoryview) -> tuple[int, bytes]:
    cls, flags, fid, pattern, outlen = wire.parse_query_directory(msg)
    op = get_open(conn, h, fid)
    if not op.is_dir:
        raise SMBError(st.INVALID_PARAMETER)
    if cls not in info.DIR_CLASSES:
        raise SMBError(st.INVALID_INFO_CLASS)
    if flags & 0x11 or op.dir_iter is None:
        op.dir_iter, op.dir_pending, op.dir_started = _listing(op, pattern), None, False
    out = bytearray()
    last = -1
    while True:
        m = op.dir_pending if op.dir_pending is not None else next(op.dir_iter, None)
        op.dir_pending = None
        if m is None:
            break
        entry = info.dir_entry(cls, m)
        start = len(out) + (-len(out) % 8)
        if start + len(entry) > outlen:
            op.dir_pending = m
            break
        if last >= 0:
            out += bytes(start - len(out))
            struct.pack_into("<I", out, last, start - last)
        last = start
        out += entry
        if flags & 0x2:
            break
    if not out:
        if op.dir_pending is not None:
            raise SMBError(st.INFO_LENGTH_MISMATCH)
        status = st.NO_MORE_FILES if op.dir_started else st.NO_SUCH_FILE
        op.dir_started = True
        raise SMBError(status)
    op.dir_started = True
    return st.SUCCESS, struct.pack("<HHI", 9, 72, len(out)) + out


# -- QUERY_INFO / SET_INFO --------------------------------------------------------------
VARIABLE = {info.FILE_ALL, info.FILE_NAME, info.FILE_NORMALIZED_NAME, info.FILE_ALTERNATE_NAME, info.FILE_STREAM}


def query_info(conn: Any, h: wire.Header, msg: memoryview) -> tuple[int, bytes]:
    itype, cls, outlen, _addl, fid, _inbuf = wire.parse_query_info(msg)
    op = get_open(conn, h, fid)
    status = st.SUCCESS
    if op.pipe is not None:
        if itype == 1 and cls == info.FILE_STANDARD:
            data = struct.pack("<QQIBBH", 4096, 0, 1, 0, 0, 0)
        else:
            raise SMBError(st.INVALID_INFO_CLASS)
    elif itype == 1:
        m = current_meta(op)
        shown = "\\" + op.path.strip("/").replace("/", "\\")
        data = info.file_info(cls, m, shown, op.position, op.access,
                              bool(op.shared and op.shared.delete_pending) or op.delete_on_close)
        if data is None:
            raise SMBError(st.INVALID_INFO_CLASS)
    elif itype == 2:
        fs = op.tree.fs
        used, quota = fs.usage() if cls in (info.FS_SIZE, info.FS_FULL_SIZE) else (0, None)
        data = info.fs_info(cls, op.tree.share, 0.0, used, quota)
        if data is None:
            raise SMBError(st.INVALID_INFO_CLASS)
        cls = -1 if cls in (info.FS_VOLUME, info.FS_ATTRIBUTE) else cls
    elif itype == 3:
        data = info.security_descriptor()
        if len(data) > outlen:
            return 0xC0000023, struct.pack("<HBBI", 9, 0, 0, 4) + struct.pack("<I", len(data))
    else:
        raise SMBError(st.NOT_SUPPORTED)
    if len(data) > outlen:
        if cls in VARIABLE or cls == -1:
            data, status = data[:outlen], st.BUFFER_OVERFLOW
        else:
            raise SMBError(st.INFO_LENGTH_MISMATCH)
    return status, struct.pack("<HHI", 9, 72, len(data)) + data


def set_info(conn: Any, h: wire.Header, msg: memoryview) -> tuple[int, bytes]:
    itype, cls, fid, buf = wire.parse_set_info(msg)
    op = get_open(conn, h, fid)
    ok = st.SUCCESS, struct.pack("<H", 2)
    if itype == 3:
        return ok                                 # ACLs are not stored: grants decide access
    if itype != 1 or op.pipe is not None:
        raise SMBError(st.NOT_SUPPORTED)
    fs, sf = op.tree.fs, op.shared
    past = op.path.split("/")[1:2] == [SNAPSHOTS]
    if cls == info.FILE_POSITION:
        if len(buf) < 8:
            raise SMBError(st.INFO_LENGTH_MISMATCH)
        op.position = struct.unpack_from("<Q", buf)[0]
        return ok
    if cls == info.FILE_MODE:
        return ok
    if op.readonly:
        _refuse_write(not op.tree.writable, past)
    if cls == info.FILE_BASIC:
        if len(buf) < 36:
            raise SMBError(st.INFO_LENGTH_MISMATCH)
        _c, _a, mtime, _ch, _attrs = struct.unpack_from("<qqqqI", buf)
        if mtime > 0:
            t = wire.from_filetime(mtime)
            op.meta.mtime = t
            with sf.lock:
                if sf.updater is not None or op.is_dir:
                    sf.mtime = t
                else:
                    fs.set_times(sf.path, t)
        return ok
    if cls == info.FILE_END_OF_FILE:
        if len(buf) < 8:
            raise SMBError(st.INFO_LENGTH_MISMATCH)
        size = struct.unpack_from("<Q", buf)[0]
        if op.is_dir:
            raise SMBError(st.INVALID_PARAMETER)
        if size > (1 << 44):
            raise SMBError(st.DISK_FULL)
        with sf.lock:
            sf.ensure_updater(fs).truncate(size)
        return ok
    if cls == info.FILE_ALLOCATION:
        return ok
    if cls in (info.FILE_DISPOSITION, info.FILE_DISPOSITION_EX):
        if len(buf) < 1:
            raise SMBError(st.INFO_LENGTH_MISMATCH)
        flag = bool(buf[0] & 1)
        if flag and op.is_dir and next(iter(fs.listdir(op.path)), None) is not None:
            raise SMBError(st.DIRECTORY_NOT_EMPTY)
        if flag and not op.path.strip("/"):
            raise SMBError(st.ACCESS_DENIED)
        with sf.lock:
            sf.delete_pending = flag
        op.delete_on_close = flag
        return ok
    if cls == info.FILE_RENAME:
        if len(buf) < 20:
            raise SMBError(st.INFO_LENGTH_MISMATCH)
        replace, _root, nlen = struct.unpack_from("<B7xQI", buf)
        if 20 + nlen > len(buf):
            raise SMBError(st.INVALID_PARAMETER)
        new, new_past = smb_path(wire.utf16(buf[20:20 + nlen]), None)
        if new_past:
            raise ae.ReadOnly("snapshots are read-only")
        with sf.lock:
            if sf.updater is not None and sf.dirty:
                upd, sf.updater = sf.updater, None
                if sf.mtime is not None:
                    upd.mtime = sf.mtime
                try:
                    upd.commit()
                except BaseException:
                    upd.abort()
                    raise
                sf.generation += 1
            elif sf.updater is not None:
                sf.updater.abort()
                sf.updater = None
            conn.known_dirs.clear()
            fs.rename(sf.path, new, overwrite=bool(replace))
            conn.server.shared.rekey(sf, op.tree.share, new)
        op.path = new
        op.meta.name = new.rsplit("/", 1)[-1]
        return ok
    if cls == info.FILE_FULL_EA:
        raise SMBError(st.NOT_SUPPORTED)
    raise SMBError(st.INVALID_INFO_CLASS)


# -- IOCTL, CHANGE_NOTIFY, OPLOCK_BREAK ----------------------------------------------------
def ioctl(conn: Any, h: wire.Header, msg: memoryview) -> tuple[int, bytes]:
    req = wire.parse_ioctl(msg)
    code = req.ctl_code
    if code == FSCTL_VALIDATE_NEGOTIATE_INFO:
        out = struct.pack("<I16sHH", conn.neg_caps, conn.server.guid, conn.neg_secmode, conn.dialect)
    elif code == FSCTL_SRV_ENUMERATE_SNAPSHOTS:
        op = get_open(conn, h, req.file_id)
        if op.tree.fs is None:
            raise SMBError(st.INVALID_DEVICE_REQUEST)
        if req.max_output < 16:
            raise SMBError(st.INVALID_PARAMETER)
        tokens = op.tree.fs.snapshot_tokens()
        multi = b"".join(t.encode("utf-16-le") + b"\x00\x00" for t in tokens) + (b"\x00\x00" if tokens else b"")
        if 12 + len(multi) > req.max_output:          # too small: say how much is needed
            out = struct.pack("<IIII", len(tokens), 0, len(multi), 0)
        else:
            out = struct.pack("<III", len(tokens), len(tokens), len(multi)) + multi
            out += bytes(max(0, 16 - len(out)))
    elif code == FSCTL_PIPE_TRANSCEIVE:
        op = get_open(conn, h, req.file_id)
        if op.pipe is None:
            raise SMBError(st.INVALID_DEVICE_REQUEST)
        op.pipe.write(req.input)
        out = op.pipe.read(req.max_output)
    elif code in (FSCTL_DFS_GET_REFERRALS, FSCTL_DFS_GET_REFERRALS_EX):
        raise SMBError(st.FS_DRIVER_REQUIRED)
    elif code == 0x001401FC:                            # QUERY_NETWORK_INTERFACE_INFO
        raise SMBError(st.NOT_SUPPORTED)
    else:
        raise SMBError(st.INVALID_DEVICE_REQUEST)
    if len(out) > req.max_output:
        raise SMBError(st.INVALID_PARAMETER)
    return st.SUCCESS, struct.pack("<HHI16sIIIIII", 49, 0, code, req.file_id, 112, 0, 112, len(out), 0, 0) + out


def change_notify(conn: Any, h: wire.Header, msg: memoryview) -> tuple[int, bytes]:
    raise SMBError(st.NOT_SUPPORTED)


def oplock_break(conn: Any, h: wire.Header, msg: memoryview) -> tuple[int, bytes]:
    raise SMBError(st.INVALID_PARAMETER)             # no oplock or lease is ever granted
