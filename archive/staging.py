"""Crash-safe staged updates: random writes that survive a crash once synced.

NFSv3 has no close: a client WRITEs (often UNSTABLE), then COMMITs, and from the COMMIT reply
on it may forget the data.  So the bytes must be on disk before that reply, and a crash after
it must not lose them even though no archive version exists yet.  A StagedUpdate is an
`Updater` whose staging file has a name (`<repo>/tmp/staged/<id>.data`) and a journal
(`<id>.json`: share, node, path, base version, extents, size) written atomically by `sync()`.
`recover(repo)` (run when a server starts) commits every synced update a crash left behind,
as one version each, and deletes staging files that were never synced (unacknowledged data).

Small updates (at most INLINE_MAX bytes: most files NFS clients create) stage in memory
(a memfd: no file is created) and `sync()` appends their journal record, data included, to the
repository's shared staging log (`<id>.log`, one per process, see StageLog): one append and
one fdatasync, shared by the syncs that arrive together, instead of a data file, a journal
file, a rename and three fsyncs each.  An update that grows past INLINE_MAX moves to its own
`.data`/`.json` files; its first sync there also ends its log record durably, and while both
exist the `.json` wins.  When an update ends, a `done` record tells recovery to skip it: synced
when the update was dropped (its file removed), not after its version was committed: a crash
before that record reaches the disk leaves a record whose identical version exists, which
recovery recognises and skips (`_committed_already`).
"""
from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from .durable import fsync_dir
from . import faults
from .errors import ArchiveError, NotFound
from .paths import split
from .streams import Reader, Updater, Writer, chunk_list
from .types import Origin, Version


class BaseRef(NamedTuple):
    """The version an update started from (what Updater needs of it)."""
    id: int
    size: int


_dirs: "weakref.WeakKeyDictionary[object, Path]" = weakref.WeakKeyDictionary()


def staging_dir(repo) -> Path:
    """`<repo>/tmp/staged`, made on first use in this process (not a mkdir per update)."""
    d = _dirs.get(repo)
    if d is None:
        d = Path(repo.tmp) / "staged"
        d.mkdir(parents=True, exist_ok=True)
        _dirs[repo] = d
    return d


_id_state: list = [None, None, 0]         # [pid, random prefix, counter]
_id_lock = threading.Lock()


def _new_id() -> str:
    """A staged update's id (32 hex digits, unique across processes and restarts): a random
    prefix per process and a counter, instead of a uuid4 (a getrandom call) per update."""
    with _id_lock:
        pid = os.getpid()
        if _id_state[0] != pid:               # first use, or a forked child: a prefix of its own
            _id_state[:] = [pid, uuid.uuid4().hex[:20], 0]
        _id_state[2] += 1
        return f"{_id_state[1]}{_id_state[2]:012x}"


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


_fsync_dir = fsync_dir


#: updates up to this size stage in memory and sync into the shared staging log
INLINE_MAX = 64 * 1024
#: a staging log segment this large is replaced by a new one (deleted once none of its
#: records belongs to a live update)
LOG_SEGMENT = 4 * 1024 * 1024
#: segments kept before the live records of the oldest are copied forward so it can go (an
#: update that stays open, or one kept for recovery, would otherwise keep every later one)
LOG_SEGMENTS = 4


class _Segment:
    """One staging log file: appended records, fdatasynced in groups."""

    def __init__(self, d: Path) -> None:
        self.path = d / f"{uuid.uuid4().hex}.log"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        _fsync_dir(d)                             # the log's name survives a crash
        self.size = 0
        self.written = self.synced = 0            # records appended / known to be on disk
        self.live: set[str] = set()               # ids whose latest record is here, not ended
        self.pins = 0                             # durable appends not yet through their fdatasync
        self.sync_lock = threading.Lock()
        self.failed = False


class StageLog:
    """The shared staging log of one repository in this process (a chain of segments).

    `append` writes one record under a lock; a durable append then fdatasyncs the segment
    unless another thread's fdatasync already covered it (group commit).  A write that fails
    part-way is cut off again, so a later record never follows a torn one; a segment whose
    fdatasync failed is replaced (its records stay for recovery)."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        self._lock = threading.Lock()
        self._segs: list[_Segment] = []          # oldest first; the last is the current one
        self._new_segment()
        self._where: dict[str, _Segment] = {}     # update id -> segment with its live record
        self._lines: dict[str, bytes] = {}        # update id -> its live record

    def _new_segment(self) -> None:
        self._cur = _Segment(self.dir)
        self._segs.append(self._cur)

    def append(self, record: dict, durable: bool) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        uid, done = record.get("id") or record["done"], "done" in record
        with self._lock:
            seg = self._cur
            try:
                n = os.write(seg.fd, line)
                if n != len(line):
                    raise OSError(f"short write to the staging log ({n} of {len(line)} bytes)")
            except BaseException:
                try:
                    os.ftruncate(seg.fd, seg.size)
                except OSError:
                    seg.failed = True
                    self._new_segment()
                raise
            seg.size += len(line)
            seg.written += 1
            mine = seg.written
            if not done:
                seg.live.add(uid)
            if durable:
                seg.pins += 1
            if seg.size >= LOG_SEGMENT:
                self._new_segment()
        if durable:
            with seg.sync_lock:
                if seg.synced < mine:
                    with self._lock:
                        upto = seg.written
                    try:
                        os.fdatasync(seg.fd)
                    except OSError:
                        with self._lock:
                            seg.pins -= 1
                            seg.failed = True
                            if self._cur is seg:
                                self._new_segment()
                        raise
                    seg.synced = upto
            faults.point("staged-synced")
        with self._lock:
            if durable:
                seg.pins -= 1
            # only now (the new record is on disk, or the update ended) is an older record dead
            old = self._where.pop(uid, None)
            if old is not None and old is not seg:
                old.live.discard(uid)
            if done:
                seg.live.discard(uid)
                self._lines.pop(uid, None)
            elif uid in seg.live:
                self._where[uid] = seg
                self._lines[uid] = line
            if len(self._segs) > LOG_SEGMENTS:
                try:
                    self._copy_forward()
                except OSError:
                    pass                          # the oldest segment stays; tried again later
            # Segments go oldest first: a `done` record is only ever dropped together with (or
            # after) the segment holding the record it ends.
            drop = []
            while self._segs[0] is not self._cur and not (self._segs[0].live or self._segs[0].pins
                                                          or self._segs[0].failed):
                drop.append(self._segs.pop(0))
        for x in drop:
            self._drop(x)

    def _copy_forward(self) -> None:
        """The oldest segment's live records, appended again to the current one and synced
        (with the lock held: rare), so the oldest can go.  Recovery takes an update's record
        with the highest sync number, so a copy never hides a newer one."""
        head = self._segs[0]
        if head is self._cur or head.pins or head.failed or not head.live:
            return
        seg = self._cur
        lines = [self._lines[uid] for uid in sorted(head.live) if uid in self._lines]
        if len(lines) != len(head.live):
            return
        data = b"".join(lines)
        if os.write(seg.fd, data) != len(data):
            os.ftruncate(seg.fd, seg.size)
            return
        os.fdatasync(seg.fd)
        seg.size += len(data)
        seg.written += len(lines)
        seg.synced = seg.written
        for uid in head.live:
            seg.live.add(uid)
            self._where[uid] = seg
        head.live.clear()

    def _drop(self, seg: _Segment) -> None:
        """A replaced segment whose records have all ended: gone (durably: were it to come
        back after a crash without its `done` records, recovery would commit it all again)."""
        with seg.sync_lock:
            if seg.fd < 0:
                return
            os.close(seg.fd)
            seg.fd = -1
        _unlink(seg.path)
        _fsync_dir(self.dir)

    def close(self) -> None:
        with self._lock:
            segs = list(self._segs)
        for seg in segs:
            with seg.sync_lock:
                if seg.fd >= 0:
                    os.close(seg.fd)
                    seg.fd = -1


_logs: "weakref.WeakKeyDictionary[object, StageLog]" = weakref.WeakKeyDictionary()
_logs_lock = threading.Lock()


def stage_log(repo) -> StageLog:
    """The repository's staging log in this process (made on first use)."""
    log = _logs.get(repo)
    if log is None:
        with _logs_lock:
            log = _logs.get(repo)
            if log is None:
                log = _logs[repo] = StageLog(staging_dir(repo))
                weakref.finalize(repo, log.close)
    return log


def _detach_log(repo) -> None:
    """Recovery reads every log segment: this process' own stops being appended to."""
    with _logs_lock:
        log = _logs.pop(repo, None)
    if log is not None:
        log.close()


def _memfd():
    """An anonymous in-memory file (no file system entry to create); a temporary file where
    the platform has no memfd."""
    if not hasattr(os, "memfd_create"):
        import tempfile
        return tempfile.TemporaryFile(prefix="stage-")
    return open(os.memfd_create("edge-stage", os.MFD_CLOEXEC), "w+b")


class StagedUpdate(Updater):
    """An Updater whose `sync()` makes it durable: a small one in memory plus a record in the
    staging log; a large one in a named staging file plus its own journal."""

    def __init__(self, fs, parts: tuple[str, ...], base, truncate: bool, node_id: int | None):
        self._mem = True                          # staged in memory (until past INLINE_MAX)
        super().__init__(fs, parts, base, truncate)
        self.node_id = node_id
        self.id = _new_id()
        self.dir = staging_dir(self.repo)
        self.synced = False
        self._logged = False                      # the staging log holds a live record of it
        self._syncs = 0

    def _new_stage(self):
        return _memfd()

    def _to_file(self) -> None:
        """Past INLINE_MAX: the staged bytes move to the update's own data file."""
        data = os.pread(self._stage.fileno(), INLINE_MAX + 1, 0)
        f = open(self.dir / f"{self.id}.data", "w+b")
        f.write(data)
        f.flush()
        self._stage.close()
        self._stage = f
        self._mem = False

    def pwrite(self, data, offset: int) -> int:
        if self._mem and offset + len(data) > INLINE_MAX and self._state == "open":
            self._to_file()
        return super().pwrite(data, offset)

    def truncate(self, size: int) -> None:
        if self._mem and size > INLINE_MAX and self._state == "open":
            self._to_file()
        super().truncate(size)

    # -- durability ------------------------------------------------------------------------
    def _journal(self) -> dict:
        base = self._base
        return {"share": self.fs.share_name, "node": self.node_id, "parts": list(self.parts),
                "base": [base.id, base.size] if base is not None else None, "base_limit": self._base_limit,
                "size": self.size, "extents": [list(e) for e in self._extents], "dirty": self._dirty,
                "first_dirty": self._first_dirty, "mtime": self.mtime, "origin": self.fs.origin.as_dict()}

    def sync(self) -> None:
        """Everything written so far is on disk and will be committed even after a crash."""
        if self._state != "open":
            raise ArchiveError(f"sync of a {self._state} update")
        journal = self._journal()
        self._syncs += 1
        if self._mem:
            fd = self._stage.fileno()
            journal.update(id=self.id, n=self._syncs, at=time.time(), data=base64.b64encode(
                b"".join(os.pread(fd, e - s, s) for s, e in self._extents)).decode())
            self._logged = True                   # even if the append fails part-way: end it
            stage_log(self.repo).append(journal, durable=True)
            self.synced = True
            return
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
        if self._logged:
            # its older record in the log must never be recovered once the journal is gone
            faults.point("staged-moved")
            stage_log(self.repo).append({"done": self.id}, durable=True)
            self._logged = False

    @classmethod
    def resume(cls, repo, journal_path: Path) -> "StagedUpdate":
        """Rebuild a synced update from its journal (after a crash)."""
        j = json.loads(journal_path.read_text())
        self = cls._rebuild(repo, j)
        self.id = journal_path.stem
        self.dir = journal_path.parent
        self._stage = open(self.dir / f"{self.id}.data", "r+b")
        self._mem = False
        return self

    @classmethod
    def _resume_logged(cls, repo, d: Path, j: dict) -> "StagedUpdate":
        """Rebuild a small synced update from its staging log record (after a crash); its
        log segments are recovery's to delete."""
        self = cls._rebuild(repo, j)
        self.id, self.dir = j["id"], d
        self._stage = _memfd()
        data, fd, at = base64.b64decode(j["data"]), self._stage.fileno(), 0
        for s, e in self._extents:
            os.pwrite(fd, data[at:at + e - s], s)
            at += e - s
        self._mem = True
        return self

    @classmethod
    def _rebuild(cls, repo, j: dict) -> "StagedUpdate":
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
        self._state = "open"
        self.synced = True
        self._logged = False
        self._syncs = 0
        return self

    # -- ending ----------------------------------------------------------------------------
    def commit(self) -> Version | None:
        """One new version at the node's current path (it may have been renamed meanwhile).
        The staging files are deleted only once the version is committed."""
        version = super().commit()                # _prepared_writer follows the node first
        self._committed()
        return version

    def _follow_node(self) -> None:
        if self.node_id is not None:
            try:
                self.parts = split(self.fs.node_path(self.node_id))
            except NotFound:
                pass                              # unlinked: commit under the name it had

    def _committed(self) -> None:
        faults.point("staged-committed")
        self._remove_files()

    def _prepared_writer(self) -> Writer | None:
        """Updater's prepared writer, at the node's current path (it may have been renamed)."""
        if self._state == "open":
            self._follow_node()
        return super()._prepared_writer()

    def abort(self) -> None:
        """Drop the update and its staging: no version."""
        super().abort()
        self._remove_files(durable=True)

    def _remove_files(self, durable: bool = False) -> None:
        """The journal first (from then on recovery ignores the data), then the data file: in
        the background when it is large.  A small update only ends its log record: after a
        commit unsynced (recovery recognises a version it already made), after an abort
        synced (the file was removed: recovering its data would bring it back)."""
        if self._logged:
            self._logged = False
            stage_log(self.repo).append({"done": self.id}, durable=durable)
        if self._mem:
            return
        for suffix in (".json", ".tmp"):
            _unlink(self.dir / f"{self.id}{suffix}")
        data = self.dir / f"{self.id}.data"
        if self.size >= BACKGROUND_UNLINK:
            _pool("unlink", 1).submit(_unlink, data)
        else:
            _unlink(data)


def commit_staged(updates: list[StagedUpdate]) -> list:
    """Commit the versions of several staged updates (of one repository) together: each is
    prepared on this thread, and all go into the repository's group commit at once (shared
    transactions, at most GroupCommit.MAX_BATCH each, with whatever else is waiting there), so
    N files that fall due together cost a few durable commits and no thread per file.  Per
    update, in order: its Version, None (nothing changed), or the exception it alone hit
    (its synced staging is then kept for recovery, as after a failed `commit`)."""
    out: list = [None] * len(updates)
    prepared: list[tuple[int, StagedUpdate, Writer]] = []
    for i, u in enumerate(updates):
        # Give up the GIL between files: a batch is a run of pure Python (chunking, the log's
        # records), and every request thread waiting for the GIL meanwhile would otherwise wait
        # a whole switch interval (5 ms) -- measured: sequential creates' CREATE and COMMIT
        # means rose ~30 % without this, and fell below the base's with it.
        time.sleep(0)
        try:
            w = u._prepared_writer()
        except Exception as e:
            out[i] = e
            continue
        if w is None:
            u._committed()
        else:
            prepared.append((i, u, w))
    if not prepared:
        return out
    try:
        results = prepared[0][1].repo.group_commit.commit_all([w for _, _, w in prepared])
    except BaseException as e:
        results = [e] * len(prepared)
    for (i, u, w), r in zip(prepared, results):
        time.sleep(0)
        w.abort()                                 # nothing left to drop once committed
        u.close()
        if isinstance(r, BaseException):
            out[i] = r
            continue
        u._state = "committed"
        try:
            u._committed()
        except Exception as e:
            out[i] = e
            continue
        out[i] = r
    return out



def recover(repo) -> list[tuple[str, str, Version | None]]:
    """Commit the synced updates a crash left in the staging directory, delete unsynced ones.
    Returns (share, path, version) per recovered update (version None and the reason in place
    of the path when it could not be committed; its files stay for the next try).  Run before
    serving."""
    d = staging_dir(repo)
    _detach_log(repo)
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
    out.extend(_recover_log(repo, d, journals))
    return out


def synced_updates(repo) -> list[str]:
    """Ids of the synced updates on disk that have not ended: what recovery would commit now."""
    d = staging_dir(repo)
    return sorted({p.stem for p in d.glob("*.json")} | set(_read_log(d)[1]))


def _read_log(d: Path) -> tuple[list[Path], dict[str, dict]]:
    """The staging log segments and the latest record of every update they hold that has not
    ended (no `done`).  A torn last line (a crash mid-append: never acknowledged) is skipped."""
    segments = sorted(d.glob("*.log"))
    latest: dict[str, dict] = {}
    done: set[str] = set()
    for seg in segments:
        with open(seg, "rb") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if "done" in r:
                    done.add(r["done"])
                elif r["id"] not in latest or r["n"] > latest[r["id"]]["n"]:
                    latest[r["id"]] = r
    return segments, {k: v for k, v in latest.items() if k not in done}


def _committed_already(upd: StagedUpdate, synced_at: float) -> bool:
    """The file's newest version, made after the record's sync, holds exactly the update's
    bytes: the crash came between the version's commit and the `done` record (recovering it
    again would add a second, identical version)."""
    if upd.node_id is None:
        return False
    try:
        path = upd.fs.node_path(upd.node_id)
        vs = upd.fs.versions(path)
        if not vs or vs[-1].deleted or vs[-1].size != upd.size or vs[-1].created_at < synced_at:
            return False
        return upd.fs.open_read(path).read() == upd.pread(upd.size, 0)
    except (ArchiveError, OSError):
        return False


def _recover_log(repo, d: Path, journals: set[str]) -> list[tuple[str, str, Version | None]]:
    """Commit the small updates the staging log holds (an update that has a journal file was
    recovered from that, newer, state).  Records that could not be committed move to a new
    segment for the next start; then the old segments go."""
    segments, live = _read_log(d)
    out, kept = [], []
    for uid in sorted(live):
        if uid in journals:
            continue
        try:
            upd = StagedUpdate._resume_logged(repo, d, live[uid])
            if _committed_already(upd, live[uid].get("at", float("inf"))):
                upd.abort()                       # its `done` record was lost, not its version
                continue
            out.append((upd.fs.share_name, "/" + "/".join(upd.parts), upd.commit()))
        except (ArchiveError, OSError, ValueError, KeyError) as e:
            out.append(("?", f"{uid} ({type(e).__name__}: {e})", None))
            kept.append(live[uid])
    if kept:
        log = StageLog(d)
        for r in kept:
            log.append(r, durable=True)
        log.close()
    for seg in segments:
        seg.unlink(missing_ok=True)
    if segments:
        _fsync_dir(d)
    return out


__all__ = ["StagedUpdate", "StageLog", "recover", "staging_dir", "stage_log", "synced_updates", "BaseRef", "INLINE_MAX"]
