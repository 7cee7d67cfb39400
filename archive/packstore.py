"""Where packs and the repository's identity live: a local folder or an object store.

A pack store knows nothing about records; it moves bytes.  Packs are write-once: a
`PackSink` receives a pack's bytes, `sync()` makes them durable, and once sealed a pack never
changes again (so an object store, where objects are immutable, fits the same interface).
The repository's identity (`config.json`, `keys.json`) lives in the store as small "meta"
objects, so every node and `archivectl recover` find it where the packs are.

    store = open_store("/srv/archive")                         # LocalPackStore
    store = open_store("s3://bucket/prefix?endpoint=http://127.0.0.1:9000", cache="/var/cache/edge-archive")
"""
from __future__ import annotations

import abc
import errno
import hashlib
import os
import re
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO, Protocol

from .durable import fsync_dir
from .errors import Corrupt, NoSpace

DEFAULT_CACHE_SIZE = 1 << 30
GC_FENCE = "gc-fence"           # meta object moved by every gc that deletes packs (PackStore.gc_fence)
DEFAULT_CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-archive"


class PackSink(Protocol):
    """The bytes of one pack being written."""

    #: False when the pack can take no more bytes once synced (object stores).
    appendable: bool

    def write(self, data: bytes) -> None: ...

    def seal(self) -> None:
        """No more bytes will come; the store may start making the pack durable now."""

    def sync(self) -> None:
        """Durable on return (idempotent, thread-safe); raises NoSpace or Unavailable."""

    def in_store(self) -> bool:
        """Whether the pack may be visible in the store already (an object store: its upload
        completed; it waits for an upload in progress).  False: no other node can see it."""

    def close(self) -> None: ...


class PackStore(abc.ABC):
    """Byte-level access to packs and meta objects.  `local_dir` holds node-local state
    (staging, temporary files, the SQLite catalog by default)."""

    location: str
    local_dir: Path

    @abc.abstractmethod
    def create(self, pack_id: str) -> PackSink: ...

    @abc.abstractmethod
    def read_range(self, pack_id: str, offset: int, length: int) -> bytes:
        """Exactly the bytes asked for, or fewer at the end of the pack; Corrupt if the pack is gone."""

    @abc.abstractmethod
    def open_stream(self, pack_id: str) -> BinaryIO:
        """The whole pack, read sequentially (recover, gc)."""

    @abc.abstractmethod
    def list(self) -> list[str]: ...

    @abc.abstractmethod
    def size(self, pack_id: str) -> int: ...

    @abc.abstractmethod
    def mtime(self, pack_id: str) -> float: ...

    @abc.abstractmethod
    def exists(self, pack_id: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, pack_id: str) -> None: ...

    @abc.abstractmethod
    def get_meta(self, name: str) -> bytes | None: ...

    @abc.abstractmethod
    def put_meta(self, name: str, data: bytes) -> None: ...

    #: Whether `prefetch_hint` does anything (a reader skips building the hint otherwise).
    wants_hints = False

    def prefetch_hint(self, wants) -> None:
        """(pack id, offset, length) of the records a reader will read next, in order: a remote
        store may start fetching them (S3PackStore); a local folder has nothing to do."""

    def reclaim_uploads(self, grace: float) -> int:
        """Drop unfinished uploads idle for `grace` seconds (gc); stores without them: 0."""
        return 0

    # -- the gc fence ------------------------------------------------------------------------
    #: Whether commits check their new packs against the gc fence (see `gc_fence`) rather than
    #: asking the store whether each pack is still there.
    fenced = True

    def gc_fence(self) -> bytes | None:
        """The gc fence: a token every gc moves (a fresh random value) after it lists the packs
        and before it deletes the first one, in the store itself so every node sees it.  A pack
        this node stored after reading token T, checked by a commit that reads T again inside
        the catalog's write lock, cannot have been deleted by any gc: that gc would have listed
        the pack (so after T was read) and moved the fence before its deletion (so before the
        commit's read).  None: no gc ever deleted a pack here."""
        return self.get_meta(GC_FENCE)

    def move_gc_fence(self) -> None:
        self.put_meta(GC_FENCE, uuid.uuid4().hex.encode())

    def is_empty(self) -> bool:
        return self.get_meta("config.json") is None and not self.list()

    def close(self) -> None:
        pass


class _LocalSink:
    appendable = True

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # A new pack's name (and its fan-out folder's, which another writer may have created an
        # instant ago) becomes durable with the first sync, before any commit refers to it.
        self._folders = [] if path.exists() else [path.parent, path.parent.parent]
        self._f = open(path, "ab", buffering=0)
        self._lock = threading.Lock()       # two syncs of one sealed pack may race its close

    def write(self, data: bytes) -> None:
        self._f.write(data)

    def seal(self) -> None:
        pass

    def sync(self) -> None:
        with self._lock:
            if not self._f.closed:
                os.fsync(self._f.fileno())
            while self._folders:
                fsync_dir(self._folders[0])
                self._folders.pop(0)

    def in_store(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._f.close()


class LocalPackStore(PackStore):
    """A repository folder: config.json, keys.json, packs/xx/<id>.pack."""

    def __init__(self, root: "str | Path"):
        self.local_dir = Path(root)
        self.location = str(root)
        self.packs = self.local_dir / "packs"
        self._fds: OrderedDict[str, int] = OrderedDict()      # open packs, for cheap preads
        self._lock = threading.Lock()

    def path(self, pack_id: str) -> Path:
        return self.packs / pack_id[:2] / f"{pack_id}.pack"

    def create(self, pack_id: str) -> PackSink:
        return _LocalSink(self.path(pack_id))

    def _fd(self, pack_id: str) -> int:
        with self._lock:
            fd = self._fds.get(pack_id)
            if fd is not None:
                self._fds.move_to_end(pack_id)
                return fd
            try:
                fd = os.open(self.path(pack_id), os.O_RDONLY)
            except FileNotFoundError:
                raise Corrupt(f"pack {pack_id} is missing") from None
            self._fds[pack_id] = fd
            while len(self._fds) > 64:
                os.close(self._fds.popitem(last=False)[1])
            return fd

    def read_range(self, pack_id: str, offset: int, length: int) -> bytes:
        return os.pread(self._fd(pack_id), length, offset)

    def read_into(self, pack_id: str, offset: int, view: memoryview) -> int:
        """read_range into the caller's buffer (the Reader reuses its buffers: a fresh one per
        read faults in page by page under serve's allocator); the bytes read."""
        return os.preadv(self._fd(pack_id), [view], offset)

    def open_stream(self, pack_id: str) -> BinaryIO:
        try:
            return open(self.path(pack_id), "rb")
        except FileNotFoundError:
            raise Corrupt(f"pack {pack_id} is missing") from None

    def list(self) -> list[str]:
        return sorted(p.stem for p in self.packs.glob("*/*.pack"))

    def size(self, pack_id: str) -> int:
        return self.path(pack_id).stat().st_size

    def mtime(self, pack_id: str) -> float:
        return self.path(pack_id).stat().st_mtime

    def exists(self, pack_id: str) -> bool:
        return self.path(pack_id).exists()

    def delete(self, pack_id: str) -> None:
        with self._lock:
            fd = self._fds.pop(pack_id, None)
            if fd is not None:
                os.close(fd)
        try:
            self.path(pack_id).unlink()
        except FileNotFoundError:
            pass

    def get_meta(self, name: str) -> bytes | None:
        try:
            return (self.local_dir / name).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def put_meta(self, name: str, data: bytes) -> None:
        """Atomic and durable: written aside, fsynced, renamed into place."""
        self.local_dir.mkdir(parents=True, exist_ok=True)
        target = self.local_dir / name
        tmp = target.with_name(target.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
            fsync_dir(self.local_dir)            # the new name, not only the bytes
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"cannot write {name}: the disk is full") from None
            raise

    def reclaim_uploads(self, grace: float) -> int:
        """Drop unfinished uploads idle for `grace` seconds (gc); stores without them: 0."""
        return 0

    # A local pack file exists from its first byte and a commit stats it (cheaper than any
    # fence): no fence to move or read.
    fenced = False

    def gc_fence(self) -> bytes | None:
        return None

    def move_gc_fence(self) -> None:
        pass

    def is_empty(self) -> bool:
        return not (self.local_dir.exists() and any(self.local_dir.iterdir()))


def is_url(location: "str | Path") -> bool:
    return isinstance(location, str) and re.match(r"^[a-z][a-z0-9+]*://", location) is not None


def parse_size(value: "str | int | None", default: int = DEFAULT_CACHE_SIZE) -> int:
    """'512M', '10G', '1.5 GiB' or a number of bytes."""
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?\s*", value.lower())
    if not m:
        raise ValueError(f"not a size: {value!r} (e.g. 512M, 10G)")
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)])


def default_cache_dir(location: str) -> Path:
    return DEFAULT_CACHE_ROOT / hashlib.sha256(location.encode()).hexdigest()[:16]


def open_store(location: "str | Path", cache: "str | Path | None" = None, cache_size: "str | int | None" = None,
               credentials: dict | None = None) -> PackStore:
    """The store at `location`: a folder, or s3://BUCKET/PREFIX?endpoint=URL&region=R."""
    if not is_url(location):
        return LocalPackStore(location)
    if str(location).startswith("s3://"):
        from .s3store import S3PackStore
        cache_dir = Path(cache) if cache else default_cache_dir(str(location))
        return S3PackStore.from_url(str(location), cache_dir, parse_size(cache_size), credentials or {})
    raise ValueError(f"unsupported repository URL {location!r} (a folder or s3://BUCKET/PREFIX)")
