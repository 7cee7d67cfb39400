"""File-like objects pyftpdlib's data channel reads from and writes into.

pyftpdlib closes the file object on every path out of a transfer, finished or not, so
``close()`` alone must never make a version.  An upload becomes a version only when the
data handler (see ``handler.py``) has seen the transfer complete and calls ``commit()``;
``close()`` without a prior ``commit()`` aborts.  Every object registers itself with a
:class:`TransferTracker` while open so ``FTPAdapter.stop(grace)`` can wait for transfers
in flight.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from archive import errors

from .errors import TransferError


class TransferTracker:
    """The set of open transfer files of one adapter (thread-safe)."""

    def __init__(self) -> None:
        self._open: set[int] = set()
        self._cond = threading.Condition()

    def add(self, obj: object) -> None:
        with self._cond:
            self._open.add(id(obj))

    def discard(self, obj: object) -> None:
        with self._cond:
            self._open.discard(id(obj))
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._open)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no transfer is open; True if that happened within ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._open, timeout=max(0.0, timeout))


class ReadFile:
    """RETR source over a ShareFS Reader (random access, so REST works through seek)."""

    # pyftpdlib's FileProducer asks for 64 KiB; reading bigger pieces from the archive
    # halves the per-call overhead on large downloads.
    min_read = 1024 * 1024
    KEEP = 3

    def __init__(self, reader: Any, name: str, tracker: TransferTracker) -> None:
        self._reader = reader
        self.name = name
        self.closed = False
        self._tracker = tracker
        self._bufs: list[bytearray] = []
        tracker.add(self)

    def read(self, n: int = -1) -> memoryview:
        # A memoryview: asynchat re-slices the unsent rest after every partial send(),
        # which copies bytes each time (quadratic in the buffer size) but not a view.  It views
        # a buffer of this transfer reused once asynchat has dropped every view of it, not a
        # new 1 MiB `bytes` per call: under `archivectl serve`'s allocator settings each of
        # those was a fresh mapping whose pages faulted in one by one.
        try:
            if n < 0:
                return memoryview(self._reader.read(-1))
            view = self._buffer(max(n, self.min_read))
            return view[:self._reader.readinto(view)]
        except errors.ArchiveError as exc:
            raise TransferError(exc) from exc

    def views(self, n: int) -> list[memoryview]:
        """Up to n bytes from the position on as views of the decoded chunks, not copied
        anywhere ([] at the end): what the data channel's sendmsg sends (handler.py)."""
        try:
            return self._reader.readviews(n)
        except errors.ArchiveError as exc:
            raise TransferError(exc) from exc

    def _buffer(self, n: int) -> memoryview:
        """n writable bytes in a buffer nothing views any more (a bytearray refuses to resize
        while it is exported), or a new one; at most KEEP are kept."""
        for buf in self._bufs:
            if len(buf) == n:
                try:
                    del buf[-1:]
                except BufferError:
                    continue
                buf.append(0)
                return memoryview(buf)
        buf = bytearray(n)
        if len(self._bufs) < self.KEEP:
            self._bufs.append(buf)
        return memoryview(buf)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._reader.seek(offset, whence)

    def tell(self) -> int:
        return self._reader.tell()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._reader.close()
            finally:
                self._tracker.discard(self)


DRAIN_LIMIT = 64 << 20       #: bytes read and dropped after a failed write (see WriteFile.write)


class WriteFile:
    """STOR/APPE/STOU target over a ShareFS Writer (or an Updater for REST+STOR).

    ``commit()`` is called by the data handler once the transfer is known to be complete;
    ``close()`` without it aborts, so a dropped or aborted upload never becomes a version.

    ``expected`` is the size the client announced with ``ALLO`` (None: not announced):
    a transfer of any other length is not committed (see :meth:`announced_mismatch`).

    When the archive refuses a write (disk full, quota), the upload is aborted at once but
    the rest of the stream is read and dropped (up to ``DRAIN_LIMIT`` bytes), so the
    client finishes sending and then reads our 452/552 on the control connection; closing
    the data connection under a sending client makes it report "connection reset".
    """

    def __init__(
        self,
        sink: Any,
        name: str,
        tracker: TransferTracker,
        *,
        offset: int | None = None,
        on_finish: Callable[["WriteFile", Any, BaseException | None], None] | None = None,
    ) -> None:
        self._sink = sink
        self.name = name
        self.closed = False
        self.failed: BaseException | None = None
        self.bytes_written = 0
        self._offset = offset              # not None: an Updater written with pwrite
        self._tracker = tracker
        self._on_finish = on_finish
        self.expected: int | None = None
        self.received = 0                  # bytes that arrived, stored or dropped
        self.start = 0                     # REST offset of a resumed upload
        tracker.add(self)

    def write(self, data: bytes) -> int:
        self.received += len(data)
        if self.failed is not None:
            if self.received - self.bytes_written > DRAIN_LIMIT:
                raise TransferError(self.failed)
            return len(data)               # draining: see the class docstring
        try:
            if self._offset is None:
                self._sink.write(data)
            else:
                self._sink.pwrite(data, self._offset)
                self._offset += len(data)
        except errors.ArchiveError as exc:
            self.failed = exc
            self._safe_abort()             # release what the upload holds now
            return len(data)
        self.bytes_written += len(data)
        return len(data)

    @property
    def node_id(self) -> int | None:
        """The node a committed upload went to (None for a REST+STOR rewrite)."""
        return getattr(self._sink, "node_id", None)

    def announced_mismatch(self) -> str | None:
        """Why the transfer's length contradicts the ALLO announcement (None: it does not).
        After REST the announcement may be the bytes sent or the file's final size."""
        if self.expected is None or self.failed is not None:
            return None
        if self.expected in (self.received, self.start + self.received):
            return None
        return (f"received {self.received} of the {self.expected} bytes announced by ALLO")

    def seek(self, offset: int, whence: int = 0) -> int:
        """Only for REST+STOR: keep the first ``offset`` bytes, write from there on."""
        if self._offset is None or whence != 0:
            raise OSError("seek not supported on this upload")
        try:
            self._sink.truncate(offset)
        except errors.ArchiveError as exc:
            raise TransferError(exc) from exc
        self._offset = self.start = offset
        return offset

    def commit(self) -> Any:
        """Make the upload a version; raises the archive error if that fails (then aborted)."""
        if self.closed:
            raise errors.Conflict("upload already closed")
        self.closed = True
        try:
            if self.failed is not None:
                raise self.failed
            version = self._sink.commit()
        except BaseException as exc:
            self._safe_abort()
            self._finish(None, exc)
            raise
        self._finish(version, None)
        return version

    def abort(self, why: BaseException | None = None) -> None:
        if not self.closed:
            self.closed = True
            self._safe_abort()
            self._finish(None, why or errors.Conflict("transfer incomplete"))

    def close(self) -> None:
        self.abort()

    def _safe_abort(self) -> None:
        try:
            self._sink.abort()
        except Exception:       # aborting must never mask the reason we abort
            pass

    def _finish(self, version: Any, exc: BaseException | None) -> None:
        self._tracker.discard(self)
        if self._on_finish is not None:
            self._on_finish(self, version, exc)
