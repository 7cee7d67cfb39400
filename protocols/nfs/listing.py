"""READDIR/READDIRPLUS paging over ShareFS.listdir, with a window of each folder's listing kept
between a client's consecutive pages.

A client lists a folder in pages of a few dozen entries (libnfs asks for ~8 KiB, ~45
entries); each page resumes after a cookie, which is the node id of the page's last entry, so
it stays valid while the folder changes.  Without a cache every page is a catalog lookup of
the cookie's name plus a catalog page query.  A `Window` keeps a run of the folder's entries
(fetched `CHUNK` at a time, at most `MAX_ITEMS` held, the oldest dropped first) with each
entry's encoded name, cookie and sealed handle, indexed by cookie, so a following page is a
dictionary lookup and a slice.

A window is used only while it is current: the folder's mtime (which every link and unlink of
a name in it moves; the caller re-reads it for every page) must be the one it was filled at,
and it must be younger than `ttl` (attribute changes of the entries, e.g. a version committed
by another protocol, show within that).  Changes this server makes drop the windows holding
or being the changed nodes at once (`drop`).  An unknown cookie (window dropped, or another
client's position) falls back to the catalog: the name the cookie's node last had in the
folder (NFS3ERR_BAD_COOKIE if never) and a new window after it.
"""
from __future__ import annotations

import struct
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Iterator

CHUNK = 512
MAX_ITEMS = 4096
MAX_WINDOWS = 32
_U64 = struct.Struct(">Q")
_HEAD_NAME = struct.Struct(">IQI")      # entry follows, fileid, name length
_PADS = (b"", b"\0\0\0", b"\0\0", b"\0")


def name_xdr(name: str) -> bytes:
    raw = name.encode("utf-8", "surrogateescape")
    return struct.pack(">I", len(raw)) + raw + b"\0" * (-len(raw) % 4)


class Item:
    """One listed entry with its encodings (shared by READDIR and READDIRPLUS pages).  `plus`
    keeps the whole entry3plus of the last READDIRPLUS that listed it, with what its attributes
    depended on (the caller's uid/gid, the export's read-only flag), so the next lister of the
    window sends it again without encoding anything (not kept while its file has pending writes)."""
    __slots__ = ("entry", "head", "handle", "plus")

    def __init__(self, entry: Any, handle: bytes) -> None:
        self.entry = entry
        self.plus: tuple[Any, bytes] | None = None
        # entry3/entry3plus up to the cookie: TRUE, fileid, name, cookie (= node id)
        raw = entry.name.encode("utf-8", "surrogateescape")
        n, node = len(raw), entry.node_id
        self.head = b"".join((_HEAD_NAME.pack(1, node, n), raw, _PADS[n % 4], _U64.pack(node)))
        # post-op handle of entry3plus: TRUE, opaque handle
        self.handle = struct.pack(">II", 1, len(handle)) + handle + _PADS[len(handle) % 4]


class Window:
    """A run of one folder's entries, in name order, from the start or after some name."""

    def __init__(self, mtime: float, after: str, fetch: Callable[[str, int], list[Item]]) -> None:
        self.mtime = mtime
        self.born = time.monotonic()
        self.from_start = after == ""
        self.last = after                    # the name to fetch after
        self.fetch = fetch
        self.items: list[Item] = []
        self.base = 0                        # absolute position of items[0]
        self.index: dict[int, int] = {}      # cookie (node id) -> absolute position
        self.eof = False
        self.lock = threading.Lock()

    def position(self, cookie: int) -> int | None:
        """Where a page after `cookie` starts (0 at the start), or None if not in this window."""
        if cookie == 0:
            return 0 if self.from_start and self.base == 0 else None
        pos = self.index.get(cookie)
        return None if pos is None else pos + 1

    def take(self, start: int, n: int) -> list[Item] | None:
        """Up to `n` items from absolute position `start` (fewer only at the end of the folder);
        None when another reader made this window forget that position meanwhile."""
        with self.lock:
            if start < self.base:
                return None
            while start + n > self.base + len(self.items) and not self.eof:
                got = self.fetch(self.last, CHUNK)
                if len(got) < CHUNK:
                    self.eof = True
                if got:
                    self.last = got[-1].entry.name
                    at = self.base + len(self.items)
                    for i, it in enumerate(got):
                        self.index[it.entry.node_id] = at + i
                    self.items += got
                drop = min(len(self.items) - MAX_ITEMS, start - self.base)
                if drop > 0:                 # memory bound: forget what lies before the reader
                    for it in self.items[:drop]:
                        self.index.pop(it.entry.node_id, None)
                    del self.items[:drop]
                    self.base += drop
            lo = start - self.base
            return self.items[lo:lo + n]

    def holds(self, node: int) -> bool:
        return node in self.index


class Listings:
    """The windows of recently listed folders, least recently used dropped first."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._windows: OrderedDict[tuple, Window] = OrderedDict()

    def pages(self, key: tuple, mtime: float, cookie: int, resume: Callable[[], str],
              fetch: Callable[[str, int], list[Item]]) -> Iterator[list[Item]]:
        """Batches of items after `cookie` in the folder `key` (whose current mtime is `mtime`).
        `resume()` gives the name to list after for a cookie no window knows (it raises
        BAD_COOKIE itself); `fetch(after, n)` reads n entries after a name from the catalog."""
        now = time.monotonic()
        with self._lock:
            w = self._windows.get(key)
            if w is not None and (w.mtime != mtime or now - w.born >= self.ttl):
                del self._windows[key]
                w = None
            start = w.position(cookie) if w is not None else None
            if w is not None:
                self._windows.move_to_end(key)
        after: str | None = None              # the last name yielded
        n = 32
        while True:
            if start is None:                # no usable window: a new one from the catalog
                w = Window(mtime, after if after is not None else ("" if cookie == 0 else resume()), fetch)
                start = 0
                with self._lock:
                    self._windows[key] = w
                    while len(self._windows) > MAX_WINDOWS:
                        self._windows.popitem(last=False)
            got = w.take(start, n)
            if got is None:
                start = None
                continue
            if got:
                yield got
                after = got[-1].entry.name
            if len(got) < n:
                return
            start += len(got)
            n = min(n * 2, 256)

    def drop(self, share: int, nodes: tuple[int, ...] | None) -> None:
        """Forget windows of these folders and windows listing these nodes (None: all)."""
        with self._lock:
            if nodes is None:
                self._windows.clear()
                return
            for key in [k for k, w in self._windows.items()
                        if k[0] == share and (k[1] in nodes or any(w.holds(n) for n in nodes))]:
                del self._windows[key]
