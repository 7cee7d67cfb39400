"""Write sessions: NFS has no close, so writes to a file gather in one staged update.

Every WRITE to a file lands in that file's `StagedUpdate` (archive.staging), kept per node:
    * UNSTABLE writes go to the staged update (in memory while it stages at most
      archive.staging.INLINE_MAX bytes, else its staging file); COMMIT makes them durable (one
      record in the shared staging log, fdatasynced with the COMMITs that arrive with it; or an
      fsync of the staging file and its journal), so from the COMMIT reply on they survive a
      crash (archive.staging.recover commits them at start).
    * FILE_SYNC / DATA_SYNC writes are synced before the reply.
    * A truncating SETATTR is synced at once (SETATTR is synchronous in NFSv3); one to the
      size the file already has changes nothing and needs no sync.
A new archive version is committed when the file has been idle for `commit_idle` seconds
after its data became durable (a COMMIT or a stable write) with no unsynced write since;
and at shutdown.  A file created and never written gets an empty version after EMPTY_IDLE: CREATE
only notes it (`created`), and the staged update (catalog reads) is opened by the
first WRITE, truncate or mtime change, or when the empty version falls due.  Unsynced data of a client that never COMMITs is dropped after
`abandon_timeout` seconds (and at shutdown): the client was never told it was safe, and the
write verifier changes with every server start, so a live client resends it.

Commits run in this module's own thread, never in a request: a slow commit only delays
a new WRITE to that same file (which then starts a fresh update on top of the new version).
Sessions that fall due together are committed in one call (ShareFS.commit_staged: prepared
on the loop's thread, then handed to the core's group commit all at once), so many small files
written at once share one or two transactions instead of paying one durable commit each; the
loop waits GATHER (or commit_idle / 4) past the first due session to collect the files a
sequential client wrote just after it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

log = logging.getLogger("edge_archive.nfs")
#: seconds a created file with no WRITE yet waits before its empty version is committed, so a
#: client that creates and then writes gets one version, not an empty one first
EMPTY_IDLE = 10.0
#: seconds (at most; commit_idle / 4 when shorter) the commit loop waits past the first due
#: session, so the files a client writes one after another fall due together and share the
#: core's transactions instead of one commit each (a version appears up to this much later)
GATHER = 0.1


class Session:
    __slots__ = ("key", "fs", "upd", "lock", "last", "owed", "durable", "unsynced", "mtime", "closed", "written")

    def __init__(self, key, fs, upd) -> None:
        self.key, self.fs, self.upd = key, fs, upd
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.owed = False              # a version is due (data synced, or a new empty file)
        self.durable = False           # something was synced: recovery would commit it
        self.unsynced = False          # writes since the last sync
        self.mtime = time.time()
        self.closed = False
        self.written = False           # any WRITE or truncate (else: a new empty file)


class WriteSessions:
    def __init__(self, commit_idle: float, abandon_timeout: float,
                 on_commit: Callable[[Session, Any], None] | None = None) -> None:
        self.commit_idle = commit_idle
        self.empty_idle = max(commit_idle, EMPTY_IDLE)
        self.abandon_timeout = abandon_timeout
        self.on_commit = on_commit
        self._lock = threading.Lock()
        self._sessions: dict[tuple, Session] = {}
        #: files created with no session yet: key -> (ShareFS, when), owed an empty version
        self._created: dict[tuple, tuple[Any, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nfs-commits", daemon=True)
        self._thread.start()

    def get(self, key: tuple) -> Session | None:
        with self._lock:
            return self._sessions.get(key)

    def busy(self) -> bool:
        """Any session open, or a created file owing a version (REMOVE must end its file's)."""
        return bool(self._sessions or self._created)

    def peek(self, key: tuple) -> Session | None:
        """get() without the lock (a dict read is atomic): once per READDIRPLUS entry."""
        return self._sessions.get(key)

    def _open(self, key: tuple, fs, path: str) -> Session:
        """The live session of `key`, locked by the caller; opened on first use.  The staged
        update is opened outside the table's lock (catalog reads): every
        GETATTR, READDIRPLUS entry and WRITE of other files looks the table up meanwhile."""
        while True:
            with self._lock:
                s = self._sessions.get(key)
            if s is None:
                # a file CREATE made (noted by touch) has no version to start from: no catalog
                # read to find one
                upd = (fs.open_created_update(path, key[1]) if key in self._created
                       else fs.open_staged_update(path, create=True))
                fresh = Session(key, fs, upd)
                with self._lock:
                    s = self._sessions.setdefault(key, fresh)
                    if self._created.pop(key, None) is not None:
                        s.owed = True     # created over NFS: a version even if nothing is written
                if s is not fresh:    # another call opened it meanwhile: use that one
                    fresh.upd.abort()
            s.lock.acquire()
            if not s.closed:
                return s
            s.lock.release()          # committed meanwhile: start again on the new version

    def write(self, key: tuple, fs, path: str, data, offset: int, stable: bool) -> Session:
        s = self._open(key, fs, path)
        try:
            s.upd.pwrite(data, offset)
            s.written = True
            s.mtime, s.last = time.time(), time.monotonic()
            if stable:
                s.upd.sync()
                s.owed = s.durable = True
                s.unsynced = False
            else:
                s.unsynced = True
            return s
        finally:
            s.lock.release()

    def truncate(self, key: tuple, fs, path: str, size: int) -> Session:
        s = self._open(key, fs, path)
        try:
            if size == s.upd.size and not s.unsynced:
                # Nothing changes (nfs-cp's CREATE and SETATTR to size 0 of a new file): what a
                # crash would leave (the last sync, or the state the session started from)
                # already has this size, so no sync (data, journal and folder fsyncs).
                s.owed = True
                s.last = time.monotonic()
                return s
            s.upd.truncate(size)
            s.written = True
            s.upd.sync()
            s.mtime, s.last = time.time(), time.monotonic()
            s.owed = s.durable = True
            s.unsynced = False
            return s
        finally:
            s.lock.release()

    def touch(self, key: tuple, fs, path: str) -> None:
        """A file was just created: it gets a version (empty if nothing follows).  No staged
        update yet: the first write opens it (an empty file needs none until its version)."""
        with self._lock:
            if key not in self._sessions:
                self._created[key] = (fs, time.monotonic())

    def _created_due(self, now: float, every: bool = False) -> list[Session]:
        """Sessions for created files still unwritten after empty_idle (all of them: `every`),
        so their empty versions are committed like any session's."""
        with self._lock:
            keys = [k for k, (_, t) in self._created.items() if every or now - t >= self.empty_idle]
        out = []
        for key in keys:
            s = self._open_created(key)
            if s is not None:
                s.last = 0.0                   # due at once
                s.lock.release()
                out.append(s)
        return out

    def _open_created(self, key: tuple) -> Session | None:
        """The session of a file noted by `touch`, opened at the file's current path (locked by
        the caller); None when nothing is owed any more (removed, or written by someone else)."""
        hit = self._created.get(key)
        if hit is None:
            return None
        try:
            e = hit[0].stat_node(key[1])
            if e.is_dir or e.version is not None:
                raise LookupError("not an unwritten file any more")
            return self._open(key, hit[0], e.path)
        except Exception:
            with self._lock:
                self._created.pop(key, None)
            return None

    def sync(self, key: tuple) -> None:
        """COMMIT: everything written so far becomes durable."""
        s = self.get(key)
        if s is None:
            return
        with s.lock:
            if s.closed:
                return
            if s.unsynced or not s.durable:
                s.upd.sync()
            s.owed = s.durable = True
            s.unsynced = False
            s.last = time.monotonic()

    def set_mtime(self, key: tuple, mtime: float) -> bool:
        s = self.get(key)
        if s is None:
            s = self._open_created(key)       # a created file keeps the time for its version
            if s is None:
                return False
            s.lock.release()
        with s.lock:
            if s.closed:
                return False
            s.upd.mtime = mtime
            s.mtime = mtime
            return True

    def discard(self, key: tuple) -> None:
        """The file was removed: its pending data goes with it (no version)."""
        with self._lock:
            s = self._sessions.pop(key, None)
            self._created.pop(key, None)
        if s is not None:
            with s.lock:
                s.closed = True
                s.upd.abort()

    # -- committing --------------------------------------------------------------------------
    def _finish(self, s: Session) -> None:
        """End a session: commit what is owed; writes never made durable are not committed.
        A session with synced data plus unsynced writes after it keeps its last synced state
        (its log record, or its staging files) for `archive.staging.recover` at the next start."""
        with s.lock:
            if s.closed:
                return
            s.closed = True
            try:
                version = self._end(s)
                if version is not None and self.on_commit is not None:
                    try:                  # before the session goes: attributes never look older
                        self.on_commit(s, version)
                    except Exception:
                        log.exception("nfs: after the commit of %s", s.upd.parts)
            finally:
                with self._lock:          # only now: readers meanwhile wait on s.lock, then re-stat
                    if self._sessions.get(s.key) is s:
                        del self._sessions[s.key]

    def _end(self, s: Session):
        if s.unsynced:
            if s.durable:
                s.upd.close()
                log.info("nfs: %s: writes after the last COMMIT were never committed; the "
                         "committed state is recovered at the next start", s.upd.parts)
            else:
                s.upd.abort()
            return None
        if not s.owed:
            s.upd.abort()
            return None
        try:
            return s.upd.commit()
        except Exception:
            log.exception("nfs: commit of %s failed; its synced staging is kept for recovery", s.upd.parts)
            return None

    def due(self, now: float | None = None) -> list[Session]:
        """Sessions to end now: idle after their data became durable, or abandoned."""
        now = time.monotonic() if now is None else now
        with self._lock:
            sessions = list(self._sessions.values())
        return [s for s in sessions if now - s.last >= self.abandon_timeout or (
            s.owed and not s.unsynced and now - s.last >= (self.commit_idle if s.written else self.empty_idle))]

    def _finish_all(self, sessions: list[Session]) -> None:
        """End sessions together: the versions owed are committed in one call
        (ShareFS.commit_staged: prepared on this thread, then the core's group commit takes them
        all at once, so N files that fall due together share a transaction or two, with no
        thread per file); the others end as in _finish.  Each session stays locked (a WRITE
        to it waits, then starts on the new version) until the batch is committed."""
        if len(sessions) <= 1:
            for s in sessions:
                self._finish(s)
            return
        locked: list[Session] = []
        try:
            for s in sessions:
                s.lock.acquire()
                if s.closed:
                    s.lock.release()
                    continue
                s.closed = True
                locked.append(s)
            batch: dict[Any, list[Session]] = {}
            for s in locked:
                if s.unsynced or not s.owed:
                    self._end(s)                  # nothing to commit: dropped or kept for recovery
                else:
                    batch.setdefault(s.fs.repo, []).append(s)
            for group in batch.values():
                try:
                    results = group[0].fs.commit_staged([s.upd for s in group])
                except Exception as e:       # not one of them was committed
                    results = [e] * len(group)
                for s, r in zip(group, results):
                    if isinstance(r, BaseException):
                        log.error("nfs: commit of %s failed; its synced staging is kept for recovery",
                                  s.upd.parts, exc_info=r)
                    elif r is not None and self.on_commit is not None:
                        try:
                            self.on_commit(s, r)
                        except Exception:
                            log.exception("nfs: after the commit of %s", s.upd.parts)
        finally:
            with self._lock:
                for s in locked:
                    if self._sessions.get(s.key) is s:
                        del self._sessions[s.key]
            for s in locked:
                s.lock.release()

    def _next_due(self, now: float) -> float:
        """Seconds until the first session falls due (the conditions of due()); inf if none."""
        with self._lock:
            sessions = list(self._sessions.values())
        first = float("inf")
        for s in sessions:
            at = s.last + self.abandon_timeout
            if s.owed and not s.unsynced:
                at = min(at, s.last + (self.commit_idle if s.written else self.empty_idle))
            first = min(first, at)
        return first - now

    def _loop(self) -> None:
        # Wake when the first session falls due (not up to a tick later: a version appears
        # commit_idle after the COMMIT), and at least every tick for sessions opened meanwhile
        # and for created files that owe their empty version.
        tick = min(0.2, self.commit_idle / 4 or 0.05)
        gather = min(GATHER, self.commit_idle / 4)
        while not self._stop.wait(min(tick, max(0.002, self._next_due(time.monotonic()) + gather))):
            if self._created:
                self._created_due(time.monotonic())
            self._finish_all(self.due())

    def close(self) -> None:
        """Shutdown: commit what is owed, drop writes that were never made durable."""
        self._stop.set()
        self._thread.join()
        self._created_due(0.0, every=True)
        with self._lock:
            sessions = list(self._sessions.values())
        self._finish_all(sessions)

