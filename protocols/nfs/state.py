"""What every NFS and MOUNT procedure shares: exports, handles, open files, caches."""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from archive import Entry, Origin, errors
from archive.clock import seconds
from archive.paths import SNAPSHOTS

from . import handles as H
from .cache import MetaCache
from .errors import NFS3ERR_ACCES, NFS3ERR_BADHANDLE, NFS3ERR_STALE, NFSError
from .exports import Export, all_shares_export
from .fattr import Attrs, attrs_of
from .listing import Listings
from .writes import WriteSessions

#: seconds a resolved handle, a looked-up name and an export check are reused (changes by
#: other protocols show within that; this server's own changes show at once)
RESOLVE_TTL = 1.0
#: seconds a folder listing window serves READDIR(PLUS) pages (names are re-validated against
#: the folder's mtime on every page; only other protocols' attribute changes wait this long)
LIST_TTL = 3.0
_SNAP_PREFIX = "/" + SNAPSHOTS


@dataclass
class Obj:
    """A resolved file handle."""
    export: Export
    fs: Any                 # ShareFS
    entry: Entry
    at_us: int              # 0: now; else the instant of a .snapshots view
    kind: int = H.NODE
    fresh: bool = False     # `entry` is known current (a folder this call just changed)

    @property
    def key(self) -> tuple[int, int]:
        return (self.fs.share_id, self.entry.node_id)

    @property
    def path(self) -> str:
        return self.entry.path


class ServerState:
    def __init__(self, repo, exports: list[Export] | None, default_user: str | None, sessions: WriteSessions,
                 ctx: Any = None) -> None:
        self.repo = repo
        self.ctx = ctx
        self.exports = exports
        self.default_user = default_user
        self.sealer = H.Sealer(repo.derive_key("nfs-handles"))
        self.sessions = sessions
        self.verifier = os.urandom(8)         # per start: unstable data of an earlier run is gone
        self._lock = threading.Lock()
        self._fs: dict[tuple[str, str], Any] = {}
        self._share_ids: dict[int, str] = {}
        self._readers: OrderedDict[tuple, tuple[threading.Lock, Any]] = OrderedDict()
        self.mounts: set[tuple[str, str]] = set()
        self.exclusive: dict[tuple[int, int], bytes] = {}
        self.cache = MetaCache(RESOLVE_TTL)
        self.listings = Listings(LIST_TTL)
        self.cache.listeners.append(self.listings.drop)
        self._access: dict[tuple[int, str], tuple[float, Export, Any]] = {}

    # -- exports -----------------------------------------------------------------------------
    def export_list(self) -> list[Export]:
        if self.exports is not None:
            return list(self.exports)
        return [all_shares_export(s.name, self.default_user) for s in self.repo.list_shares()]

    def export_for(self, share: str) -> Export | None:
        return next((e for e in self.export_list() if e.share == share), None)

    def fs_for(self, export: Export, address: str):
        """The ShareFS of an export for one client address (cached): acts as the export's user."""
        key = (export.share, address)
        with self._lock:
            fs = self._fs.get(key)
        if fs is None:
            if not export.user:
                raise errors.PermissionDenied(f"export {export.share!r} has no user to act as")
            fs = self.repo.share(export.share, user=export.user, origin=Origin("nfs", address, export.user))
            if export.read_only:
                fs.writable = False
            with self._lock:
                self._fs[key] = fs
                self._share_ids[fs.share_id] = export.share
        return fs

    def _share_name(self, share_id: int) -> str | None:
        with self._lock:
            name = self._share_ids.get(share_id)
        if name is None:
            for e in self.export_list():
                try:
                    fs = self.repo.share(e.share)
                except errors.NotFound:
                    continue
                with self._lock:
                    self._share_ids[fs.share_id] = e.share
            with self._lock:
                name = self._share_ids.get(share_id)
        return name

    # -- handles -----------------------------------------------------------------------------
    def handle_for(self, fs, entry: Entry, at_us: int) -> bytes:
        if not entry.path.startswith(_SNAP_PREFIX):      # the common case: a node of the share
            return self.sealer.encode_node(fs.share_id, entry.node_id, at_us, H.generation(entry.ctime))
        parts = entry.path.strip("/").split("/") if entry.path != "/" else []
        if parts == [SNAPSHOTS]:
            return self.sealer.encode(H.Handle(H.SNAPSHOTS, fs.share_id, 0, 0, 0))
        node = fs.root if len(parts) == 2 and parts[0] == SNAPSHOTS else entry.node_id
        return self.sealer.encode_node(fs.share_id, node, at_us, H.generation(entry.ctime))

    def changed(self, share_id: int, *nodes: int) -> None:
        """This server changed these nodes (attributes, or the names in a folder): forget them."""
        self.cache.changed(share_id, *nodes)

    def invalidate(self) -> None:
        """Forget every resolved handle, name and listing: after a change that moves paths
        (a folder renamed) or whose reach is unknown."""
        self.cache.clear()
        with self._lock:
            self._access.clear()

    def access(self, share_id: int, address: str) -> tuple[Export, Any]:
        """The export of a share and its ShareFS for one client address (STALE: no longer
        exported; ACCES: not an allowed client), reused for RESOLVE_TTL seconds."""
        key = (share_id, address)
        now = time.monotonic()
        hit = self._access.get(key)
        if hit is not None and now - hit[0] < RESOLVE_TTL:
            return hit[1], hit[2]
        name = self._share_name(share_id)
        export = self.export_for(name) if name else None
        if export is None:
            raise NFSError(NFS3ERR_STALE, "share no longer exported")
        if not export.allows(address):
            raise NFSError(NFS3ERR_ACCES, f"{address} is not an allowed client of {export.share}")
        try:
            fs = self.fs_for(export, address)
        except errors.PermissionDenied:
            raise NFSError(NFS3ERR_ACCES) from None
        with self._lock:
            if len(self._access) > 4096:
                self._access.clear()
            self._access[key] = (now, export, fs)
        return export, fs

    def resolve(self, raw, address: str) -> Obj:
        """The object a handle names.  The MAC is checked on every call (cheap: one keyed
        BLAKE2b of 30 bytes); the node's attributes come from the MetaCache when fresh."""
        try:
            h = self.sealer.decode(raw)
        except H.BadHandle as e:
            raise NFSError(NFS3ERR_BADHANDLE, str(e)) from None
        export, fs = self.access(h.share, address)
        if h.kind == H.SNAPSHOTS:
            return Obj(export, fs, fs.stat("/" + SNAPSHOTS), 0, H.SNAPSHOTS)
        key = (h.share, h.node, h.at_us)
        entry = self.cache.entry(key)
        if entry is None:
            epoch, born = self.cache.epoch, time.monotonic()
            try:
                entry = fs.stat_node(h.node, seconds(h.at_us) if h.at_us else None)
            except (errors.NotFound, errors.NotADirectory):
                raise NFSError(NFS3ERR_STALE, f"node {h.node} is gone") from None
            self.cache.put(key, entry, epoch, born)
        if H.generation(entry.ctime) != h.gen:
            raise NFSError(NFS3ERR_STALE, f"node {h.node} is another object now")
        return Obj(export, fs, entry, h.at_us)

    # -- attributes (pending writes count) ---------------------------------------------------
    def attrs(self, o: Obj) -> Attrs:
        e = o.entry
        if not e.is_dir and not o.at_us:
            s = self.sessions.get(o.key)
            if s is not None:
                return attrs_of(e, o.fs.share_id, size=s.upd.size, mtime=s.mtime, readonly=o.export.read_only)
        return attrs_of(e, o.fs.share_id, readonly=o.export.read_only)

    def child_attrs(self, d: Obj):
        """attrs() for the entries of folder `d` as a function of (entry, at_us): what a
        READDIRPLUS page calls per entry, without building an Obj for each."""
        sid, ro, peek = d.fs.share_id, d.export.read_only, self.sessions.peek

        def attrs(e: Entry, at_us: int) -> Attrs:
            if not at_us and e.kind != "dir":
                s = peek((sid, e.node_id))
                if s is not None:
                    return attrs_of(e, sid, size=s.upd.size, mtime=s.mtime, readonly=ro)
            return attrs_of(e, sid, readonly=ro)
        return attrs

    # -- reading -----------------------------------------------------------------------------
    def read(self, o: Obj, offset: int, count: int) -> bytes | list:
        """Bytes of `o` at offset: a list of views of the core's verified chunks when the data
        comes from a committed version (sent as they are: no copy into a reply buffer), bytes
        from a file's pending writes."""
        e = o.entry
        if not o.at_us:
            s = self.sessions.get(o.key)
            if s is not None:
                with s.lock:
                    if not s.closed:
                        return s.upd.pread(count, offset)
                o.entry = e = o.fs.stat(e.path)      # committed meanwhile: read the new version
        if e.version is None or offset >= e.size:
            return b""
        key = (o.fs.share_id, e.node_id, e.version)
        with self._lock:
            hit = self._readers.get(key)
            if hit is not None:
                self._readers.move_to_end(key)
        if hit is None:
            hit = (threading.Lock(), o.fs.open_entry(e))
            with self._lock:
                self._readers[key] = hit
                while len(self._readers) > 64:
                    self._readers.popitem(last=False)     # a reader in use elsewhere stays valid
        lock, reader = hit
        with lock:
            reader.seek(offset)
            return reader.readviews(count)
