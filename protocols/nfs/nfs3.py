"""NFS version 3 (program 100003, RFC 1813): the 22 procedures over ShareFS.

Every procedure decodes its arguments, resolves file handles through ServerState (BADHANDLE,
STALE, ACCES), calls ShareFS, and encodes the result; an archive error becomes its nfsstat3
through errors.py, followed by the procedure's failure body (RFC 1813's resfail arms).
SYMLINK, MKNOD and LINK answer NFS3ERR_NOTSUPP: the archive has regular files and folders.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from itertools import islice
from typing import Callable, Iterator

from archive import Entry, errors
from archive.clock import gmt_token, parse_gmt_token
from archive.paths import MAX_NAME_BYTES, SNAPSHOTS
from archive.sharefs import VIRTUAL_BASE

from . import handles as H
from .errors import (NFS3_OK, NFS3ERR_ACCES, NFS3ERR_BAD_COOKIE, NFS3ERR_EXIST, NFS3ERR_INVAL, NFS3ERR_ISDIR,
                     NFS3ERR_NAMETOOLONG, NFS3ERR_NOT_SYNC, NFS3ERR_NOTDIR, NFS3ERR_NOTSUPP, NFS3ERR_ROFS,
                     NFS3ERR_TOOSMALL, NFS3ERR_XDEV, NFSError, nfsstat)
from .fattr import (SET_TO_CLIENT_TIME, SET_TO_SERVER_TIME, fattr3, listed_post_op_bytes, post_op_attr,
                    post_op_attr_bytes, sattr3, wcc_data)
from .listing import Item
from .readorder import ReadOrder
from .state import Obj, ServerState
from .xdr import Packer, Unpacker

PROGRAM, VERSION = 100003, 3
FHSIZE = 64
MAX_IO = 1 << 20
UNSTABLE, DATA_SYNC, FILE_SYNC = 0, 1, 2
UNCHECKED, GUARDED, EXCLUSIVE = 0, 1, 2
ACCESS_READ, ACCESS_LOOKUP, ACCESS_MODIFY, ACCESS_EXTEND, ACCESS_DELETE, ACCESS_EXECUTE = 1, 2, 4, 8, 16, 32
#: procedures whose replay would not give the same answer (duplicate-request cache)
NON_IDEMPOTENT = frozenset({2, 8, 9, 10, 11, 12, 13, 14, 15})
#: how many XDR "false" words follow the status in each procedure's failure arm (post_op_attr
#: = 1, wcc_data = 2): what the dispatcher sends when a handle or name fails to resolve
FAIL_WORDS = (0, 0, 2, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 4, 3, 1, 1, 1, 1, 1, 2)
PROC_NAMES = ("NULL GETATTR SETATTR LOOKUP ACCESS READLINK READ WRITE CREATE MKDIR SYMLINK MKNOD REMOVE RMDIR "
              "RENAME LINK READDIR READDIRPLUS FSSTAT FSINFO PATHCONF COMMIT").split()


def _name(u: Unpacker) -> str:
    raw = bytes(u.opaque(4096))
    if len(raw) > MAX_NAME_BYTES:
        raise NFSError(NFS3ERR_NAMETOOLONG)
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NFSError(NFS3ERR_INVAL, "name is not UTF-8") from None
    if name in ("", "/") or "/" in name or "\0" in name:
        raise NFSError(NFS3ERR_INVAL, f"bad name {name!r}")
    return name


def _join(path: str, name: str) -> str:
    return path.rstrip("/") + "/" + name


class _Flight:
    """The re-reads of one object's attributes that concurrent calls share (_refresh_shared)."""
    __slots__ = ("lock", "started", "done", "entry", "error", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()     # one read at a time
        self.started = 0                 # reads begun
        self.done = 0                    # the number of the last read that ended (its result below)
        self.entry = None
        self.error: int | None = None
        self.users = 0                   # calls using this record (it goes when none is left)


class NFS3:
    def __init__(self, state: ServerState) -> None:
        self.st = state
        names = [n.lower() for n in PROC_NAMES]
        self.procs: dict[int, Callable] = {i: getattr(self, n) for i, n in enumerate(names)}
        self.order = ReadOrder()
        self._flights: dict[tuple, _Flight] = {}      # _refresh_shared: reads under way
        self._flights_lock = threading.Lock()

    # -- helpers -----------------------------------------------------------------------------
    def _fh(self, u: Unpacker, address: str) -> Obj:
        return self.st.resolve(u.opaque(FHSIZE), address)

    def _post(self, p: Packer, o: Obj | None, cred) -> None:
        post_op_attr(p, self.st.attrs(o) if o is not None else None, cred.uid, cred.gid)

    def _wcc(self, p: Packer, o: Obj | None, cred) -> None:
        """wcc_data with fresh attributes of `o` (re-read after a change)."""
        if o is not None and not o.fresh:
            try:
                o = self._refresh_shared(o)
            except NFSError:
                o = None
        wcc_data(p, self.st.attrs(o) if o is not None else None, cred.uid, cred.gid)

    def _refresh_shared(self, o: Obj) -> Obj:
        """`_refresh` after a change, sharing catalog reads among the calls that want the same
        object re-read at once (16 CREATEs or REMOVEs in flight in one folder each re-read the
        folder for their wcc_data: another change landed between theirs and the reply).  The
        reads of one object run one at a time; a call takes the result of a read that began
        after it asked (so it includes the call's own change, committed before it asked), and
        the calls that asked while a read ran share the next one."""
        if o.kind != H.NODE or o.at_us:
            return self._refresh(o)
        o.entry = self._stat_shared(o.fs, o.entry.node_id, o.entry.path)
        return o

    def _stat_shared(self, fs, node: int, path: str) -> Entry:
        """The entry at `path` (node `node` when last seen) read from the catalog, one read
        at a time per node, shared by the calls that asked while one ran (_refresh_shared;
        LOOKUPs of a folder whose attributes a change just dropped)."""
        key = (fs, node, path)
        with self._flights_lock:
            f = self._flights.get(key)
            if f is None:
                f = self._flights[key] = _Flight()
            f.users += 1
            asked = f.started              # reads begun before this call asked
        try:
            with f.lock:
                if f.done > asked:         # a read begun after this call asked has ended
                    if f.error is not None:
                        raise NFSError(f.error)
                    return f.entry
                f.started += 1
                n = f.started
                try:
                    entry = self._read_entry(fs, node, path)
                except NFSError as e:
                    f.entry, f.error, f.done = None, e.status, n
                    raise
                f.entry, f.error, f.done = entry, None, n
                return entry
        finally:
            with self._flights_lock:
                f.users -= 1
                if not f.users:
                    del self._flights[key]

    def _refresh(self, o: Obj) -> Obj:
        """Re-read `o`'s attributes from the catalog (after a change, and for every READDIR
        page), and keep them in the cache for the calls that follow."""
        if o.kind == H.SNAPSHOTS:
            return o
        if o.at_us:
            try:
                o.entry = o.fs.stat(o.entry.path)
            except errors.ArchiveError as e:
                raise NFSError(nfsstat(e)) from None
            return o
        o.entry = self._read_entry(o.fs, o.entry.node_id, o.entry.path)
        return o

    def _read_entry(self, fs, node: int, path: str) -> Entry:
        """stat of `path` (node `node` when last seen), kept in the cache if it still is that
        node and nothing changed it meanwhile."""
        cache = self.st.cache
        epoch, born = cache.epoch, time.monotonic()
        try:
            entry = fs.stat(path)
        except errors.ArchiveError as e:
            raise NFSError(nfsstat(e)) from None
        if entry.node_id == node:
            cache.put((fs.share_id, node, 0), entry, epoch, born)
        return entry

    def _writable(self, o: Obj) -> None:
        if o.at_us or o.kind == H.SNAPSHOTS or o.entry.path.startswith("/" + SNAPSHOTS):
            raise NFSError(NFS3ERR_ROFS, "snapshots are read-only")
        if o.export.read_only:
            raise NFSError(NFS3ERR_ROFS, "read-only export")
        if not o.fs.writable:
            raise NFSError(NFS3ERR_ACCES, "read-only grant")

    def _child(self, d: Obj, name: str) -> Obj:
        """LOOKUP of one name in a folder object (also `.snapshots` and its @GMT tokens)."""
        if not d.entry.is_dir:
            raise NFSError(NFS3ERR_NOTDIR)
        if name == ".":
            return d
        if d.kind == H.SNAPSHOTS:
            if name == "..":
                return Obj(d.export, d.fs, d.fs.stat("/"), 0)
            at = parse_gmt_token(name)
            if at is None:
                raise NFSError(nfsstat(errors.NotFound()))
            e = d.fs.stat(f"/{SNAPSHOTS}/{name}")
            return Obj(d.export, d.fs, e, at)
        path = d.entry.path
        if name == "..":
            parent = path.rsplit("/", 1)[0] or "/"
            if parent == "/" + SNAPSHOTS:
                return Obj(d.export, d.fs, d.fs.stat(parent), 0, H.SNAPSHOTS)
            return Obj(d.export, d.fs, d.fs.stat(parent), d.at_us if parent.count("/") >= 2 else 0)
        if path == "/" and name == SNAPSHOTS and not d.at_us:
            return Obj(d.export, d.fs, d.fs.stat("/" + SNAPSHOTS), 0, H.SNAPSHOTS)
        cache = self.st.cache
        folder = (d.fs.share_id, d.entry.node_id, d.at_us)
        e = cache.child(folder, name)
        if e is None and not d.at_us:
            # the name is known, its attributes were dropped by a change (a folder that
            # CREATEs in flight keep changing): one catalog read shared by the LOOKUPs and
            # wcc re-reads that want it at once
            key = cache.child_key(folder, name)
            if key is not None:
                e = self._stat_shared(d.fs, key[1], _join(path, name))
        if e is None:
            epoch, born = cache.epoch, time.monotonic()
            e = d.fs.stat(_join(path, name))
            cache.put((d.fs.share_id, e.node_id, d.at_us), e, epoch, born, folder, name)
        return Obj(d.export, d.fs, e, d.at_us)

    def _make(self, d: Obj, name: str, make: Callable[[], Entry]) -> Entry:
        """Make a name in folder `d`: forget the folder's cached names and attributes, and
        remember the new entry (the LOOKUP and WRITE that follow need it) unless anything else
        changed meanwhile.  A new node's creation time is the folder's new mtime (the catalog
        links it with the same event): then the folder's attributes need no re-read either."""
        cache, share, folder = self.st.cache, d.fs.share_id, d.entry.node_id
        before, born, wall = cache.epoch, time.monotonic(), time.time()
        try:
            e = make()
        except BaseException:
            cache.changed(share, folder)
            raise
        # only this name and the folder's attributes are forgotten (the folder's other names
        # stay known: CREATEs in flight do not drop each other's before their LOOKUPs); the
        # new entry is kept unless something it depends on changed since `before`
        after, alone = cache.name_changed(share, folder, name, e.node_id, since=before,
                                          made=(e.node_id, e, before, born))
        if alone and e.ctime >= wall - 1e-6 and e.version is None:
            self._touched(d, round(e.ctime * 1e6), after, born)
        return e

    def _touched(self, d: Obj, at: int, epoch: int, born: float) -> None:
        """Folder `d`'s name change of this call was committed at `at` (microseconds) and nothing
        else changed meanwhile (`epoch`): that instant is its new mtime (the catalog sets it from
        the same event), so its attributes need no re-read for the reply or the calls after."""
        if d.at_us or d.kind != H.NODE:
            return
        folder = d.entry.node_id
        d.entry = dataclasses.replace(d.entry, mtime=at / 1e6, etag=f"d{folder}-{at}")
        d.fresh = True
        self.st.cache.put((d.fs.share_id, folder, 0), d.entry, epoch, born)

    def _handle(self, o: Obj) -> bytes:
        return self.st.handle_for(o.fs, o.entry, o.at_us)

    def _status_wcc(self, p: Packer, cred, objs: tuple, work: Callable[[], None]) -> None:
        """Run a change; answer NFS3_OK or its error status, then wcc_data of each folder/file
        it touched (the shape of SETATTR, REMOVE, RMDIR and RENAME results)."""
        try:
            work()
            p.u32(NFS3_OK)
        except (NFSError, errors.ArchiveError) as e:
            self._fail(p, e)
        for o in objs:
            self._wcc(p, o, cred)

    def _fail(self, p: Packer, e: BaseException) -> int:
        status = nfsstat(e)
        p.u32(status)
        return status

    # -- procedures ----------------------------------------------------------------------------
    def null(self, u, p, cred, address):
        pass

    def getattr(self, u, p, cred, address):
        o = self._fh(u, address)
        p.u32(NFS3_OK)
        fattr3(p, self.st.attrs(o), cred.uid, cred.gid)

    def setattr(self, u, p, cred, address):
        o = self._fh(u, address)
        s = sattr3(u)
        guard = u.bool()
        guard_ctime = (u.u32(), u.u32()) if guard else None

        def work() -> None:
            if guard_ctime is not None and int(self.st.attrs(o).ctime) != guard_ctime[0]:
                raise NFSError(NFS3ERR_NOT_SYNC)
            if s.size is not None or s.mtime[0] != 0:
                self._writable(o)
            if s.size is not None:
                if o.entry.is_dir:
                    raise NFSError(NFS3ERR_ISDIR)
                self.st.sessions.truncate(o.key, o.fs, o.path, s.size)
            how, t = s.mtime
            if how in (SET_TO_CLIENT_TIME, SET_TO_SERVER_TIME):
                t = t if how == SET_TO_CLIENT_TIME else time.time()
                if not self.st.sessions.set_mtime(o.key, t) and (o.entry.is_dir or o.entry.version is not None):
                    try:
                        o.fs.set_times(o.path, t)
                    finally:
                        self.st.changed(o.fs.share_id, o.entry.node_id)
        self._status_wcc(p, cred, (o,), work)

    def lookup(self, u, p, cred, address):
        d = self._fh(u, address)
        name = _name(u)
        try:
            o = self._child(d, name)
        except (NFSError, errors.ArchiveError) as e:
            self._fail(p, e)
            self._post(p, d, cred)
            return
        p.u32(NFS3_OK).opaque(self._handle(o))
        self._post(p, o, cred)
        self._post(p, d, cred)

    def access(self, u, p, cred, address):
        o = self._fh(u, address)
        want = u.u32()
        allowed = ACCESS_READ | ACCESS_LOOKUP | ACCESS_EXECUTE
        ro = o.at_us or o.kind == H.SNAPSHOTS or o.export.read_only or not o.fs.writable or o.entry.readonly
        if not ro:
            allowed |= ACCESS_MODIFY | ACCESS_EXTEND | ACCESS_DELETE
        p.u32(NFS3_OK)
        self._post(p, o, cred)
        p.u32(want & allowed)

    def readlink(self, u, p, cred, address):
        o = self._fh(u, address)
        p.u32(NFS3ERR_INVAL)                          # no symbolic links in the archive
        self._post(p, o, cred)

    def read(self, u, p, cred, address):
        o = self._fh(u, address)
        offset, count = u.u64(), u.u32()
        if o.entry.is_dir:
            p.u32(NFS3ERR_ISDIR)
            self._post(p, o, cred)
            return
        try:
            with self.order.turn(o.key, offset):      # pipelined READs of a file in file order
                data = self.st.read(o, offset, min(count, MAX_IO))
        except errors.ArchiveError as e:
            self._fail(p, e)
            self._post(p, o, cred)
            return
        n = sum(map(len, data)) if isinstance(data, list) else len(data)
        a = self.st.attrs(o)
        p.u32(NFS3_OK)
        post_op_attr(p, a, cred.uid, cred.gid)
        p.u32(n).bool(offset + n >= a.size).opaque_tail(data, n)   # the chunks' views, sent as they are

    def write(self, u, p, cred, address):
        o = self._fh(u, address)
        offset, count = u.u64(), u.u32()
        stable = u.enum((UNSTABLE, DATA_SYNC, FILE_SYNC))
        data = u.opaque(MAX_IO)
        try:
            self._writable(o)
            if o.entry.is_dir:
                raise NFSError(NFS3ERR_ISDIR)
            if count > len(data):
                raise NFSError(NFS3ERR_INVAL, "count larger than the data")
            self.st.sessions.write(o.key, o.fs, o.path, data[:count], offset, stable != UNSTABLE)
        except (NFSError, errors.ArchiveError) as e:
            self._fail(p, e)
            self._wcc(p, o, cred)
            return
        p.u32(NFS3_OK)
        wcc_data(p, self.st.attrs(o), cred.uid, cred.gid)
        p.u32(count).u32(FILE_SYNC if stable != UNSTABLE else UNSTABLE).fixed(self.st.verifier)

    def _diropres(self, p: Packer, cred, d: Obj, make: Callable[[str], Obj], name: str) -> None:
        """CREATE/MKDIR: make the object `name` in folder `d`; answer its handle and attributes
        and the folder's wcc_data, or the error status and the folder's wcc_data."""
        try:
            self._writable(d)
            if not d.entry.is_dir:
                raise NFSError(NFS3ERR_NOTDIR)
            o = make(_join(d.path, name))
        except (NFSError, errors.ArchiveError) as e:
            self._fail(p, e)
            self._wcc(p, d, cred)
            return
        p.u32(NFS3_OK).bool(True).opaque(self._handle(o))
        self._post(p, o, cred)
        self._wcc(p, d, cred)

    def create(self, u, p, cred, address):
        d = self._fh(u, address)
        name = _name(u)
        how = u.enum((UNCHECKED, GUARDED, EXCLUSIVE))
        attrs = sattr3(u) if how != EXCLUSIVE else None
        verf = bytes(u.fixed(8)) if how == EXCLUSIVE else None

        def make(path: str) -> Obj:
            try:
                e = self._make(d, name, lambda: d.fs.create_file(path))
            except errors.Exists:
                e = d.fs.stat(path)
                if how == GUARDED or e.is_dir:
                    raise NFSError(NFS3ERR_EXIST) from None
                if how == EXCLUSIVE and self.st.exclusive.get((d.fs.share_id, e.node_id)) != verf:
                    raise NFSError(NFS3ERR_EXIST) from None
            o = Obj(d.export, d.fs, e, 0)
            if verf is not None:
                if len(self.st.exclusive) > 10_000:
                    self.st.exclusive.clear()
                self.st.exclusive[(d.fs.share_id, e.node_id)] = verf
            if attrs is not None and attrs.size is not None:
                self.st.sessions.truncate(o.key, o.fs, o.path, attrs.size)
            elif e.version is None:
                self.st.sessions.touch(o.key, o.fs, o.path)      # no staged update until a WRITE
            return o
        self._diropres(p, cred, d, make, name)

    def mkdir(self, u, p, cred, address):
        d = self._fh(u, address)
        name = _name(u)
        sattr3(u)
        def make(path: str) -> Obj:
            return Obj(d.export, d.fs, self._make(d, name, lambda: d.fs.mkdir(path)), 0)
        self._diropres(p, cred, d, make, name)

    def _notsupp_create(self, u, p, cred, address):
        d = self._fh(u, address)
        p.u32(NFS3ERR_NOTSUPP)
        self._wcc(p, d, cred)

    symlink = _notsupp_create
    mknod = _notsupp_create

    def remove(self, u, p, cred, address):
        self._unlink(u, p, cred, address, dir=False)

    def rmdir(self, u, p, cred, address):
        self._unlink(u, p, cred, address, dir=True)

    def _unlink(self, u, p, cred, address, dir: bool):
        d = self._fh(u, address)
        name = _name(u)
        path = _join(d.path, name)

        def work() -> None:
            self._writable(d)
            share, touched = d.fs.share_id, [d.entry.node_id]
            try:
                if dir:
                    touched.append(d.fs.stat(path).node_id)
                    d.fs.rmdir(path)
                    return
                sessions = self.st.sessions
                if sessions.busy():        # the file's pending writes go first (no version after
                    e = d.fs.stat(path)    # its tombstone); with none open, no lookup before
                    touched.append(e.node_id)
                    if e.is_dir:
                        raise NFSError(NFS3ERR_ISDIR)
                    sessions.discard((share, e.node_id))
                before, born = self.st.cache.epoch, time.monotonic()
                node, at = d.fs.remove_at(path)
                touched.append(node)
                after, alone = self.st.cache.name_changed(share, touched[0], name, *touched[1:], since=before)
                touched.clear()
                if alone:
                    self._touched(d, at, after, born)
            finally:
                if touched:
                    self.st.changed(share, *touched)
        self._status_wcc(p, cred, (d,), work)

    def rename(self, u, p, cred, address):
        src = self._fh(u, address)
        sname = _name(u)
        dst = self._fh(u, address)
        dname = _name(u)

        def work() -> None:
            self._writable(src)
            self._writable(dst)
            if src.fs.share_id != dst.fs.share_id:
                raise NFSError(NFS3ERR_XDEV)
            spath, dpath = _join(src.path, sname), _join(dst.path, dname)
            if spath == dpath:
                return
            try:
                old = src.fs.stat(dpath)
            except errors.NotFound:
                old = None
            moved = src.fs.stat(spath)
            try:
                src.fs.rename(spath, dpath, overwrite=True)
            finally:
                if moved.is_dir:
                    self.st.invalidate()          # every path below it changed
                else:
                    self.st.changed(src.fs.share_id, src.entry.node_id, dst.entry.node_id, moved.node_id,
                                    *(() if old is None else (old.node_id,)))
            if old is not None and not old.is_dir:
                self.st.sessions.discard((src.fs.share_id, old.node_id))
        self._status_wcc(p, cred, (src, dst), work)

    def link(self, u, p, cred, address):
        o = self._fh(u, address)
        d = self._fh(u, address)
        _name(u)
        p.u32(NFS3ERR_NOTSUPP)
        self._post(p, o, cred)
        self._wcc(p, d, cred)

    # -- listings --------------------------------------------------------------------------------
    def _snapshot_items(self, d: Obj, cookie: int) -> list[Item]:
        """The `.snapshots` folder's @GMT tokens after `cookie` (VIRTUAL_BASE + the token's
        second): computed, not cached (a handful, and they change with every second)."""
        after = "" if cookie == 0 else gmt_token((cookie - VIRTUAL_BASE) * 1_000_000)
        return [Item(e, self.st.handle_for(d.fs, e, parse_gmt_token(e.name) or 0))
                for e in d.fs.listdir(d.path, after=after)]

    def _batches(self, d: Obj, cookie: int) -> Iterator[list[Item]]:
        """Items after `cookie`; a cookie is the node id of the previous entry, so it stays
        valid while the folder changes (the listing resumes after that entry's name)."""
        if d.kind == H.SNAPSHOTS:
            yield self._snapshot_items(d, cookie)
            return
        fs, at_us, sealer = d.fs, d.at_us, self.st.sealer
        share = fs.share_id

        def resume() -> str:
            name = fs.child_name(d.path, cookie)
            if name is None:
                raise NFSError(NFS3ERR_BAD_COOKIE)
            return name

        def fetch(after: str, n: int) -> list[Item]:
            return [Item(e, sealer.encode_node(share, e.node_id, at_us, H.generation(e.ctime)))
                    for e in islice(fs.listdir(d.path, after=after, page=n), n)]
        yield from self.st.listings.pages((share, d.entry.node_id, at_us), d.entry.mtime, cookie, resume, fetch)

    def readdir(self, u, p, cred, address):
        self._readdir(u, p, cred, address, plus=False)

    def readdirplus(self, u, p, cred, address):
        self._readdir(u, p, cred, address, plus=True)

    def _readdir(self, u, p, cred, address, plus: bool):
        d = self._fh(u, address)
        cookie = u.u64()
        u.fixed(8)                                 # cookieverf: cookies never expire here
        if plus:
            u.u32()                                # dircount: maxcount is the binding limit
        maxcount = u.u32()
        try:
            if not d.entry.is_dir:
                raise NFSError(NFS3ERR_NOTDIR)
            self._refresh(d)                       # its current mtime says whether a window is current
            out: list[bytes] = []
            room = min(maxcount, MAX_IO) - 200     # status, dir attributes, verifier, eof
            eof, snap = True, d.kind == H.SNAPSHOTS
            attrs = self.st.child_attrs(d)
            uid, gid = cred.uid, cred.gid
            # an entry3plus depends on the entry, the caller's ids, the export's read-only flag
            # and pending writes: encoded once per window item while the ids and flag stay
            ro = d.export.read_only
            pkey, sid = (uid, gid, ro), d.fs.share_id
            # pending writes change an entry's size and mtime (none open: no lookup per entry)
            peek = self.st.sessions.peek if self.st.sessions.busy() and not d.at_us else None
            for batch in self._batches(d, cookie):
                for it in batch:
                    if plus:
                        e, cached = it.entry, it.plus
                        pending = peek((sid, e.node_id)) if peek is not None else None
                        if cached is not None and cached[0] == pkey and pending is None:
                            item = cached[1]
                        else:
                            if pending is None and not snap:       # attrs_of(e) in one pack
                                post = listed_post_op_bytes(e, sid, ro, uid, gid)
                            else:
                                post = post_op_attr_bytes(
                                    attrs(e, parse_gmt_token(e.name) or 0 if snap else d.at_us), uid, gid)
                            item = it.head + post + it.handle
                            if pending is None:
                                it.plus = (pkey, item)
                    else:
                        item = it.head
                    if len(item) > room:
                        eof = False
                        break
                    room -= len(item)
                    out.append(item)
                if not eof:
                    break
            if not out and not eof:
                raise NFSError(NFS3ERR_TOOSMALL)
        except (NFSError, errors.ArchiveError) as e:
            self._fail(p, e)
            self._post(p, d, cred)
            return
        p.u32(NFS3_OK)
        self._post(p, d, cred)
        p.fixed(b"\0" * 8)
        p.buf += b"".join(out)
        p.bool(False).bool(eof)

    # -- file system information ------------------------------------------------------------------
    def fsstat(self, u, p, cred, address):
        import shutil
        o = self._fh(u, address)
        used, quota = o.fs.usage()
        disk = shutil.disk_usage(o.fs.repo.path)
        total = quota if quota is not None else disk.total
        free = max(0, quota - used) if quota is not None else disk.free
        p.u32(NFS3_OK)
        self._post(p, o, cred)
        p.u64(total).u64(free).u64(free).u64(1 << 40).u64(1 << 40).u64(1 << 40).u32(0)

    def fsinfo(self, u, p, cred, address):
        o = self._fh(u, address)
        p.u32(NFS3_OK)
        self._post(p, o, cred)
        p.u32(MAX_IO).u32(MAX_IO).u32(4096).u32(MAX_IO).u32(MAX_IO).u32(4096).u32(65536)
        p.u64((1 << 63) - 1).u32(0).u32(1000).u32(0x8 | 0x10)    # time_delta 1 us; HOMOGENEOUS|CANSETTIME

    def pathconf(self, u, p, cred, address):
        o = self._fh(u, address)
        p.u32(NFS3_OK)
        self._post(p, o, cred)
        p.u32(1).u32(MAX_NAME_BYTES).bool(True).bool(True).bool(False).bool(True)

    def commit(self, u, p, cred, address):
        o = self._fh(u, address)
        u.u64()
        u.u32()
        try:
            if not o.entry.is_dir and not o.at_us:
                self.st.sessions.sync(o.key)
        except errors.ArchiveError as e:
            self._fail(p, e)
            self._wcc(p, o, cred)
            return
        p.u32(NFS3_OK)
        wcc_data(p, self.st.attrs(o), cred.uid, cred.gid)
        p.fixed(self.st.verifier)


__all__ = ["NFS3", "PROGRAM", "VERSION", "NON_IDEMPOTENT"]
