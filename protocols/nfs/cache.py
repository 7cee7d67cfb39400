"""Short-lived metadata caches: what a handle resolves to, what a name in a folder is.

Every NFS call names its objects by file handle, and libnfs (like the kernel client) LOOKUPs a
path's folders before most calls; without a cache each of those is a catalog walk (`stat_node`
walks a node's dentries up, then the path down).  Entries live for `ttl` seconds (changes made
by other protocols show within that; NFS clients cache attributes for longer anyway), and this
server drops exactly what it changes, at once: `changed(share, node, ...)` forgets those nodes'
attributes and every name inside them (a folder whose names changed); a change that moves a
folder (its descendants' paths) calls `clear()`.

Races: a reader that looked something up in the catalog stores it only if none of the keys it
stores (the node, and the folder it is named in) changed since it started (`epoch`), and no
`clear()` happened since, so a concurrent change can never be overwritten by an older read.
Each change records the epoch at which it dropped its keys (`_changed_at`); changes of other
nodes do not refuse the read (with 16 CREATEs in flight the global epoch moves between every
LOOKUP's read and its store: every LOOKUP of the folder missed).  The record is bounded: when
it is full it is emptied and `_floor` moves to the current epoch, refusing every read begun
before (the old rule, for those reads only).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

Key = tuple[int, int, int]            # (share id, node id, snapshot instant or 0)
#: changed keys remembered for the reads under way (MetaCache._changed_at) before it is emptied
CHANGED_LIMIT = 16384


class MetaCache:
    def __init__(self, ttl: float, limit: int = 20_000) -> None:
        self.ttl = ttl
        self.limit = limit
        self._lock = threading.Lock()
        self._entries: dict[Key, tuple[float, Any]] = {}
        self._names: dict[Key, dict[str, Key]] = {}          # folder -> name -> child
        self.epoch = 0
        #: key -> the epoch of its last change (reads begun before it may not store it)
        self._changed_at: dict[Key, int] = {}
        #: reads begun before this epoch store nothing (a clear(), or _changed_at emptied)
        self._floor = 0
        #: called with (share, nodes) after `changed` (None: after `clear`): the listing cache
        self.listeners: list[Callable[[int, tuple[int, ...] | None], None]] = []

    # -- reads ---------------------------------------------------------------------------------
    def entry(self, key: Key, now: float | None = None) -> Any:
        """The cached Entry of a node, or None when absent or older than the ttl."""
        hit = self._entries.get(key)               # dict reads are atomic: no lock on the hot path
        if hit is None or (now if now is not None else time.monotonic()) - hit[0] >= self.ttl:
            return None
        return hit[1]

    def child(self, folder: Key, name: str) -> Any:
        """The cached Entry of `name` in `folder`, or None."""
        names = self._names.get(folder)
        key = names.get(name) if names is not None else None
        return self.entry(key) if key is not None else None

    def child_key(self, folder: Key, name: str) -> Key | None:
        """The key `name` in `folder` was last seen under, even when its attributes have been
        dropped since (a change of that node): LOOKUP re-reads just that node."""
        names = self._names.get(folder)
        return names.get(name) if names is not None else None

    # -- writes --------------------------------------------------------------------------------
    def _refused(self, key: Key, epoch: int, folder: Key | None, name: str | None) -> bool:
        """A read begun at `epoch` may not store `key` (under `name` in `folder`): the node, its
        attributes, the folder's names or that one name changed since (lock held)."""
        if epoch == self.epoch:
            return False
        if epoch < self._floor:
            return True
        changed = self._changed_at
        if changed.get(key, -1) > epoch or changed.get(("a", key), -1) > epoch:
            return True
        return folder is not None and (changed.get(folder, -1) > epoch or changed.get((folder, name), -1) > epoch)

    def _store(self, key: Key, entry: Any, born: float, folder: Key | None, name: str | None) -> None:
        if len(self._entries) >= self.limit:
            self._entries.clear()
            self._names.clear()
        self._entries[key] = (born, entry)
        if folder is not None and name is not None:
            self._names.setdefault(folder, {})[name] = key

    def _room(self, n: int, epoch: int) -> dict:
        """The change record, emptied first (refusing every read begun before `epoch`) when it
        would pass CHANGED_LIMIT."""
        changed = self._changed_at
        if len(changed) + n > CHANGED_LIMIT:
            changed.clear()
            self._floor = epoch
        return changed

    def put(self, key: Key, entry: Any, epoch: int, born: float, folder: Key | None = None,
            name: str | None = None) -> None:
        """Remember `entry` (read at `born`, when the epoch was `epoch`), and under `name` in
        `folder` if given; nothing is stored if what it depends on changed since."""
        with self._lock:
            if not self._refused(key, epoch, folder, name):
                self._store(key, entry, born, folder, name)

    def changed(self, share: int, *nodes: int) -> int:
        """This server changed these nodes (their attributes, or the names inside them); the
        new epoch (one more than before if nothing else changed meanwhile)."""
        with self._lock:
            self.epoch += 1
            epoch = self.epoch
            changed = self._room(len(nodes), epoch)
            for n in nodes:
                key = (share, n, 0)
                self._entries.pop(key, None)
                self._names.pop(key, None)
                changed[key] = epoch
        for f in self.listeners:
            f(share, nodes)
        return epoch

    def name_changed(self, share: int, folder: int, name: str, *nodes: int, since: int,
                     made: tuple | None = None) -> tuple[int, bool]:
        """This server made or removed `name` in `folder` (CREATE, REMOVE): the folder's
        attributes and that one name are forgotten, not the folder's other names (16 CREATEs in
        flight in one folder no longer drop each other's new names before their LOOKUPs), and
        `nodes` as in `changed`.  `made`: (node, entry, epoch, born) of the new name, stored if
        nothing it depends on changed since `epoch` (a read begun then).  The new epoch, and
        whether no other change of this server touched the folder since `since` (an epoch read
        before the caller's change): then the caller's change is the folder's last, and its
        instant the folder's new mtime (changes of other nodes meanwhile do not matter)."""
        fkey = (share, folder, 0)
        with self._lock:
            ok = made is not None and not self._refused((share, made[0], 0), made[2], fkey, name)
            changed = self._changed_at
            alone = since >= self._floor and changed.get(fkey, -1) <= since and changed.get(("a", fkey), -1) <= since
            self.epoch += 1
            epoch = self.epoch
            changed = self._room(len(nodes) + 3, epoch)
            self._entries.pop(fkey, None)
            names = self._names.get(fkey)
            if names is not None:
                names.pop(name, None)
            changed[("a", fkey)] = changed[(fkey, name)] = epoch
            for n in nodes:
                key = (share, n, 0)
                self._entries.pop(key, None)
                self._names.pop(key, None)
                changed[key] = epoch
            if ok:
                self._store((share, made[0], 0), made[1], made[3], fkey, name)
        for f in self.listeners:
            f(share, (folder, *nodes))
        return epoch, alone

    def clear(self) -> None:
        with self._lock:
            self.epoch += 1
            self._floor = self.epoch
            self._changed_at.clear()
            self._entries.clear()
            self._names.clear()
        for f in self.listeners:
            f(0, None)
