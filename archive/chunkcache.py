"""A node's bounded local cache of pack bytes (LRU), in front of a remote pack store.

Entries are files: a whole pack this node just uploaded (write-through: freshly written data
is hot) or one aligned block of a pack fetched with a ranged GET (thin provisioning: a node
holds only what was read).  Reads are `pread`s of the cached file, so a warm cache costs what
a local pack costs.  The index is in memory and rebuilt from the folder at start (oldest
first by mtime); another process evicting a file is just a miss.
"""
from __future__ import annotations

import os
import threading
import itertools
from collections import OrderedDict
from pathlib import Path


class BlockCache:
    def __init__(self, root: Path, limit: int):
        self.root = root
        self._root = str(root)
        self.limit = limit
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] = OrderedDict()
        self._total = 0
        self.hits = self.misses = 0
        self._seq = itertools.count()            # temporary names (next() is atomic under the GIL)
        self._dirs: set[str] = set()             # subfolders known to exist
        root.mkdir(parents=True, exist_ok=True)
        found = []
        for p in root.glob("*/*"):
            if p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            found.append((st.st_mtime, p.name, st.st_size))
        for _, name, size in sorted(found):
            self._index[name] = size
            self._total += size
        self._evict()

    def _path(self, name: str) -> Path:
        return self.root / name[:2] / name

    def _file(self, name: str) -> str:
        """`_path` as a string, built without pathlib: reads are per chunk, this is hot."""
        return f"{self._root}/{name[:2]}/{name}"

    def read(self, name: str, offset: int, length: int) -> bytes | None:
        """`length` bytes at `offset` of a cached entry (fewer at its end), or None on a miss."""
        with self._lock:
            if name not in self._index:
                self.misses += 1
                return None
            self._index.move_to_end(name)
        try:
            fd = os.open(self._file(name), os.O_RDONLY)
        except FileNotFoundError:
            with self._lock:
                self._drop(name)
                self.misses += 1
            return None
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        with self._lock:
            self.hits += 1
        return data

    def size(self, name: str) -> int | None:
        """The size of a cached entry (no hit or miss counted, no LRU move), or None."""
        return self._index.get(name)

    def has(self, name: str) -> bool:
        """Whether an entry is cached (no hit or miss counted, no LRU move)."""
        return name in self._index

    def put(self, name: str, data) -> None:
        """Cache `data` (bytes or a memoryview) under `name`: written aside, renamed into place."""
        if len(data) > self.limit:
            return
        path = self._file(name)
        if name[:2] not in self._dirs:
            os.makedirs(f"{self._root}/{name[:2]}", exist_ok=True)
            self._dirs.add(name[:2])
        tmp = f"{path}.{next(self._seq)}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:              # a full cache disk makes a miss, never an error
            self._dirs.discard(name[:2])        # (or its folder was removed: made again next time)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        self._admit(name, len(data))

    def adopt(self, name: str, file: Path) -> None:
        """Move a finished local file (a pack just uploaded) into the cache."""
        size = file.stat().st_size
        if size > self.limit:
            file.unlink(missing_ok=True)
            return
        path = self._path(name)
        path.parent.mkdir(exist_ok=True)
        os.replace(file, path)
        self._admit(name, size)

    def _admit(self, name: str, size: int) -> None:
        with self._lock:
            self._drop(name)
            self._index[name] = size
            self._total += size
            self._evict()

    def _drop(self, name: str) -> None:
        size = self._index.pop(name, None)
        if size is not None:
            self._total -= size

    def _evict(self) -> None:
        while self._total > self.limit and self._index:
            name, size = self._index.popitem(last=False)
            self._total -= size
            try:
                self._path(name).unlink()
            except FileNotFoundError:
                pass

    def forget(self, prefix: str) -> None:
        """Drop every entry of a pack (deleted by gc)."""
        with self._lock:
            for name in [n for n in self._index if n.startswith(prefix)]:
                self._drop(name)
                try:
                    self._path(name).unlink()
                except FileNotFoundError:
                    pass

    @property
    def total(self) -> int:
        return self._total

    def clear(self) -> None:
        self.forget("")
