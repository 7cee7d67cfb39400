"""Crash-safe staged updates: random writes that survive a crash once synced.

NFSv3 has no close: a client WRITEs (often UNSTABLE), then COMMITs, and from the COMMIT reply
on it may forget the data.  So the bytes must be on disk before that reply, and a crash after
it must not lose them even though no archive version exists yet.  A StagedUpdate is an
`Updater` whose staging file has a name (`<repo>/tmp/staged/<id>.data`) and a journal
(`<id>.json`: share, node, path, base version, extents, size) written atomically by `sync()`.
`recover(repo)` (run when a server starts) commits every synced update a crash left behind,
as one version each, and deletes staging files that were never synced (unacknowledged data).
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from .errors import ArchiveError, NotFound
from .paths import split
from .streams import Reader, Updater
from .types import Origin, Version


class BaseRef(NamedTuple):
    """The version an update started from (what Updater needs of it)."""
    id: int
    size: int


def staging_dir(repo) -> Path:
    d = Path(repo.tmp) / "staged"
    d.mkdir(parents=True, exist_ok=True)
    return d


#: staged data files at least this large are unlinked in the background once their journal is
#: gone (freeing a large file's blocks takes ~14 ms per 64 MiB here); a crash before that leaves
#: a data file without a journal, which recover() deletes
BACKGROUND_UNLINK = 8 * 1024 * 1024

_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(name: str, threads: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(name)
        if pool is None:
            pool = _pools[name] = ThreadPoolExecutor(threads, thread_name_prefix=f"staging-{name}")
        return pool


def _journals() -> ThreadPoolExecutor:
    """Threads that write new journals while the caller fsyncs the data they describe."""
    return _pool("journal", 8)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_journal(path: Path, journal: dict) -> None:
    with open(path, "w") as f:
        json.dump(journal, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedUpdate(Updater):
    """An Updater with a named staging file and a journal; `sync()` makes it durable."""

    def __init__(self, fs, parts: tuple[str, ...], base, truncate: bool, node_id: int | None):
        super().__init__(fs, parts, base, truncate)
        self._stage.close()                      # replaced by a named file
        self.node_id = node_id
        self.id = uuid.uuid4().hex
        self.dir = staging_dir(self.repo)
        self._stage = open(self.dir / f"{self.id}.data", "w+b")
        self.synced = False

    # -- durability ------------------------------------------------------------------------
    def sync(self) -> None:
        """Everything written so far is on disk and will be committed even after a crash."""
        if self._state != "open":
            raise ArchiveError(f"sync of a {self._state} update")
        base = self._base
        journal = {"share": self.fs.share_name, "node": self.node_id, "parts": list(self.parts),
                   "base": [base.id, base.size] if base is not None else None, "base_limit": self._base_limit,
                   "size": self.size, "extents": [list(e) for e in self._extents], "dirty": self._dirty,
                   "first_dirty": self._first_dirty, "mtime": self.mtime, "origin": self.fs.origin.as_dict()}
        tmp = self.dir / f"{self.id}.tmp"
        # The new journal is written and fsynced under its temporary name while this thread
        # fsyncs the data (two fsyncs at once instead of one after the other); only once both
        # are on disk does the rename make it the journal recovery reads.
        pending = _journals().submit(_write_journal, tmp, journal)
        try:
            os.fsync(self._stage.fileno())
        finally:
            pending.result()
        os.replace(tmp, self.dir / f"{self.id}.json")
        _fsync_dir(self.dir)
        self.synced = True

    @classmethod
    def resume(cls, repo, journal_path: Path) -> "StagedUpdate":
        """Rebuild a synced update from its journal (after a crash)."""
        j = json.loads(journal_path.read_text())
        origin = Origin(**j["origin"]) if j.get("origin") else Origin("recover")
        fs = repo.share(j["share"], user=None, origin=origin)
        self = cls.__new__(cls)
        self.fs, self.repo = fs, repo
        self.parts = tuple(j["parts"])
        self.node_id = j["node"]
        self._base = BaseRef(*j["base"]) if j["base"] else None
        self._reader = Reader(repo, self._base.id, self._base.size) if self._base else None
        self._base_limit, self.size = j["base_limit"], j["size"]
        self._extents = [list(e) for e in j["extents"]]
        self._dirty, self._first_dirty, self.mtime = j["dirty"], j["first_dirty"], j["mtime"]
        self.id = journal_path.stem
        self.dir = journal_path.parent
        self._stage = open(self.dir / f"{self.id}.data", "r+b")
        self._state = "open"
        self.synced = True
        return self

    # -- ending ----------------------------------------------------------------------------
    def commit(self) -> Version | None:
        """One new version at the node's current path (it may have been renamed meanwhile).
        The staging files are deleted only once the version is committed."""
        if self.node_id is not None:
            try:
                self.parts = split(self.fs.node_path(self.node_id))
            except NotFound:
                pass                              # unlinked: commit under the name it had
        version = super().commit()
        self._remove_files()
        return version

    def abort(self) -> None:
        """Drop the update and its staging: no version."""
        super().abort()
        self._remove_files()

    def _remove_files(self) -> None:
        """The journal first (from then on recovery ignores the data), then the data file: in
        the background when it is large."""
        for suffix in (".json", ".tmp"):
            _unlink(self.dir / f"{self.id}{suffix}")
        data = self.dir / f"{self.id}.data"
        if self.size >= BACKGROUND_UNLINK:
            _pool("unlink", 1).submit(_unlink, data)
        else:
            _unlink(data)


def recover(repo) -> list[tuple[str, str, Version | None]]:
    """Commit the synced updates a crash left in the staging directory, delete unsynced ones.
    Returns (share, path, version) per recovered update (version None and the reason in place
    of the path when it could not be committed; its files stay for the next try).  Run before
    serving."""
    d = staging_dir(repo)
    out = []
    journals = {p.stem for p in d.glob("*.json")}
    for p in d.glob("*.data"):
        if p.stem not in journals:
            p.unlink(missing_ok=True)            # never synced: its data was never acknowledged
    for p in d.glob("*.tmp"):
        p.unlink(missing_ok=True)
    for stem in sorted(journals):
        try:
            upd = StagedUpdate.resume(repo, d / f"{stem}.json")
            out.append((upd.fs.share_name, "/" + "/".join(upd.parts), upd.commit()))
        except (ArchiveError, OSError, ValueError, KeyError) as e:
            # e.g. over quota, share removed: kept for the next start, never silently lost
            out.append(("?", f"{stem} ({type(e).__name__}: {e})", None))
    return out


__all__ = ["StagedUpdate", "recover", "staging_dir", "BaseRef"]
