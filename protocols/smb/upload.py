"""The bytes written to one file between its first write and its last CLOSE.

Why not a bare ShareFS ``Updater``: its ``commit()`` only starts chunking, compressing and
sealing once the CLOSE arrives, so a large put waited for the whole core pipeline after the
last WRITE (about 5/6 of the put time in docs/benchmarks.md), and every small file paid for a
staging file plus two extra catalog lookups in ``open_update``.  An :class:`Upload` therefore

* keeps a small new or overwritten file in memory and commits it with one ``open_write``
  Writer at CLOSE (no staging file, no base lookup);
* past ``MEMORY_MAX`` stages into an ``Updater`` (random writes, reads by other handles, the
  fallback), and once ``STREAM_START`` contiguous bytes from offset 0 are staged, a feeder
  thread hands them to a core ``Writer`` while WRITEs still arrive, so CLOSE only feeds the
  tail and commits;
* falls back to the Updater's own commit whenever the streamed prefix no longer describes
  the file (a write below what was fed, a truncate, a hole): correctness never depends on
  the client writing sequentially.

Crash safety is the core's: the Writer's sealed chunks belong to no version until the one
commit at CLOSE; ``abort()`` (a dropped connection) leaves them to gc, and no partial version.
"""
from __future__ import annotations

import threading
from typing import Any

from archive.clock import to_us

MEMORY_MAX = 1 << 20            # a new file up to this size never touches a staging file
STREAM_START = 8 << 20          # contiguous staged bytes before the feeder thread starts
PIECE = 4 << 20                 # bytes handed to the Writer at a time (its batch size)
MEMORY_BUDGET = 64 << 20        # all in-memory uploads of the server together; beyond it they stage

_held_lock = threading.Lock()
_held_total = 0                 # bytes of in-memory uploads, server-wide


class Upload:
    """Staged content of one file, committed as exactly one version (or none on abort)."""

    def __init__(self, fs: Any, path: str, *, fresh: bool, has_base: bool) -> None:
        """fresh: the content starts empty (a new file, or an overwrite/supersede);
        otherwise it starts as the file's current version (staged through an Updater)."""
        self.fs = fs
        self.path = path
        self.has_base = has_base        # a version existed when the first handle opened it
        self.mtime: float | None = None
        self._buf: bytearray | None = bytearray() if fresh else None
        self._upd: Any = None if fresh else fs.open_update(path, create=True)
        self._dirty = fresh
        self._held = 0                  # bytes of MEMORY_BUDGET this upload holds
        # streaming state (only while the content is a dense prefix from 0)
        self._streamable = fresh
        self._cond = threading.Condition()
        self._avail = 0                 # contiguous staged bytes from offset 0
        self._ahead: dict[int, int] = {}    # out-of-order staged ranges beyond _avail: start -> end
        self._fed = 0                   # bytes claimed by (read for) the Writer
        self._writer: Any = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._broken = False            # the streamed prefix no longer matches the file
        self._error: BaseException | None = None

    # -- what the SMB handlers see ------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._buf) if self._buf is not None else self._upd.size

    @property
    def dirty(self) -> bool:
        return self._dirty

    @property
    def streaming(self) -> bool:
        """A feeder thread is chunking the staged prefix (for tests and the bench)."""
        return self._thread is not None and not self._broken

    def pread(self, n: int, offset: int) -> bytes:
        if self._buf is not None:
            return bytes(self._buf[offset:offset + n])
        return self._upd.pread(n, offset)

    def pwrite(self, data: Any, offset: int) -> int:
        n = len(data)
        if n == 0:
            return 0
        self._dirty = True
        if self._buf is not None:
            end = offset + n
            if end <= MEMORY_MAX and self._reserve(max(end, len(self._buf))):
                if offset > len(self._buf):
                    self._buf.extend(bytes(offset - len(self._buf)))
                self._buf[offset:end] = data
                return n
            self._to_staging()
        self._upd.pwrite(data, offset)
        if self._streamable:
            self._advance(offset, offset + n)
        return n

    def truncate(self, size: int) -> None:
        if size == self.size:
            return
        self._dirty = True
        if self._buf is not None and size <= MEMORY_MAX and self._reserve(size):
            if size < len(self._buf):
                del self._buf[size:]
            else:
                self._buf.extend(bytes(size - len(self._buf)))
            return
        if self._buf is not None:
            self._to_staging()
        shrink = size < self._upd.size
        self._upd.truncate(size)
        if self._streamable and shrink:
            self._break()                 # the fallback commit handles a shrink; growing (a
                                          # client preallocating the final size) is a hole the
                                          # WRITEs then fill in order

    def overwrite(self) -> None:
        """An overwrite/supersede open: the content becomes empty (and is a change)."""
        self._stop_stream()
        if self._upd is not None:
            self._upd.abort()
            self._upd = None
        self._release()
        self._buf = bytearray()
        self._dirty = True
        self._streamable = True
        self._avail, self._fed, self._ahead = 0, 0, {}
        self._broken = self._closing = False
        self._error = None

    def commit(self) -> Any:
        """One new version (archive Version), or None when nothing changed."""
        if not self._dirty:
            self.abort()
            return None
        if self._buf is not None:
            w = self.fs.open_write(self.path, mtime=self.mtime, check=False)
            try:
                w.write(bytes(self._buf))
                return w.commit()
            finally:
                w.abort()
                self._buf = None
                self._release()
        writer = self._finish_stream()
        if writer is not None:
            try:
                writer.mtime = to_us(self.mtime) if self.mtime is not None else None
                return writer.commit()
            finally:
                writer.abort()
                self._upd.abort()
        if self.mtime is not None:
            self._upd.mtime = self.mtime
        try:
            return self._upd.commit()
        except BaseException:
            self._upd.abort()
            raise

    def abort(self) -> None:
        """No version: staged bytes are dropped, chunks already sealed are gc's."""
        self._stop_stream()
        self._buf = None
        self._release()
        if self._upd is not None:
            self._upd.abort()

    # -- memory, staging and streaming --------------------------------------------------
    def _reserve(self, size: int) -> bool:
        """Account this buffer growing to `size`; False when the server-wide budget is spent
        (many clients each holding open new files must not grow memory without bound)."""
        global _held_total
        extra = size - self._held
        if extra <= 0:
            return True
        with _held_lock:
            if _held_total + extra > MEMORY_BUDGET:
                return False
            _held_total += extra
        self._held = size
        return True

    def _release(self) -> None:
        global _held_total
        if self._held:
            with _held_lock:
                _held_total -= self._held
            self._held = 0

    def _to_staging(self) -> None:
        """Leave memory mode: the buffer becomes the start of a fresh Updater."""
        buf, self._buf = self._buf, None
        self._release()
        self._upd = self.fs.open_update(self.path, truncate=True, create=True)
        if buf:
            self._upd.pwrite(buf, 0)
            self._advance(0, len(buf))
        else:
            self._upd.truncate(0)

    def _advance(self, start: int, end: int) -> None:
        """Account staged bytes [start, end) for the feeder (called with the file's lock held)."""
        with self._cond:
            if start < self._fed:
                self._break()
                return
            if start > self._avail:
                self._ahead[start] = max(end, self._ahead.get(start, end))
                if len(self._ahead) > 4096:           # not a stream: stop tracking it
                    self._break()
                return
            self._avail = max(self._avail, end)
            while self._ahead:
                nxt = [s for s in self._ahead if s <= self._avail]
                if not nxt:
                    break
                for s in nxt:
                    self._avail = max(self._avail, self._ahead.pop(s))
            if self._thread is None and self._avail >= STREAM_START and not self._broken:
                self._writer = self.fs.open_write(self.path, check=False)
                self._thread = threading.Thread(target=self._feed, name="smb-upload-feed", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _break(self) -> None:
        with self._cond:
            self._streamable = False
            self._broken = True
            self._cond.notify()

    def _feed(self) -> None:
        """Feeder thread: hand staged bytes [fed, avail) to the Writer in PIECE steps."""
        try:
            while True:
                with self._cond:
                    while not self._broken and not self._closing and self._avail - self._fed < PIECE:
                        self._cond.wait()
                    if self._broken:
                        return
                    take = min(self._avail - self._fed, PIECE)
                    if take <= 0:
                        return                        # closing and everything is fed
                    at = self._fed
                    self._fed = at + take             # claimed first: a WRITE below it breaks the stream
                data = self._upd.pread(take, at)
                if len(data) != take:
                    raise RuntimeError("staged bytes ended early")
                self._writer.write(data)
        except BaseException as e:                    # quota, I/O: the fallback commit reports it
            with self._cond:
                self._error = e
                self._broken = True
                self._streamable = False

    def _stop_stream(self) -> None:
        t = self._thread
        if t is not None:
            self._break()
            t.join()
            self._thread = None
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def _finish_stream(self) -> Any:
        """At commit: feed the tail, and return the Writer if it now holds the whole file."""
        t = self._thread
        if t is None:
            return None
        with self._cond:
            self._closing = True
            self._cond.notify()
        t.join()
        self._thread = None
        w, self._writer = self._writer, None
        if self._broken or self._fed != self._upd.size or self._avail != self._fed:
            w.abort()
            return None
        return w
