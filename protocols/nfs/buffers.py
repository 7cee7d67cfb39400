"""1 MiB buffers a connection reuses: WRITE records are received into them.  (READ data was
read into them too; it is now sent straight from the core's verified chunk views,
Reader.readviews, with no copy at all.)

`archivectl serve` fixes glibc's mmap threshold at 128 KiB (protocols/memory.py: large blocks go
back to the kernel when freed, so RSS falls when clients leave), so every fresh 1 MiB buffer is
a new mapping whose pages fault in one by one: measured here, a 1 MiB READ took 0.7 ms with
its data in a new buffer and 0.26 ms with a reused one.  A connection keeps at most `keep` free
buffers; a buffer that anything still holds a view of is never handed out again (bytearray
refuses to resize while it is exported, which `give` tries).

The worker threads of a connection `lend` it its pool once; a procedure `borrow`s a buffer for
its reply, and the worker `settle`s (returns what was borrowed) once the reply is sent.
"""
from __future__ import annotations

import threading


class Pool:
    def __init__(self, size: int, keep: int) -> None:
        self.size, self.keep = size, keep
        self.lock = threading.Lock()
        self.free: list[bytearray] = []

    def take(self) -> bytearray:
        with self.lock:
            if self.free:
                return self.free.pop()
        return bytearray(self.size)

    def give(self, buf: bytearray) -> None:
        """Back into the pool, unless something still views it (then it is left to the GC)."""
        try:
            del buf[-1:]
        except BufferError:
            return
        buf.append(0)
        with self.lock:
            if len(self.free) < self.keep:
                self.free.append(buf)


_local = threading.local()


def lend(pool: Pool) -> None:
    """This thread serves calls of the connection that owns `pool`."""
    _local.pool = pool
    _local.lent = []


def borrow() -> bytearray | None:
    """A buffer of the pool's size for this call's reply; None outside a connection's worker."""
    pool = getattr(_local, "pool", None)
    if pool is None:
        return None
    buf = pool.take()
    _local.lent.append(buf)
    return buf


def settle() -> None:
    """The reply is sent (and dropped): what this thread borrowed goes back to its pool."""
    lent = getattr(_local, "lent", None)
    if lent:
        for buf in lent:
            _local.pool.give(buf)
        lent.clear()
