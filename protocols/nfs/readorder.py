"""READs of one file in file order: what a client pipelines reaches the Reader sequentially.

A client reading a file sends several READs at once (the kernel client's read-ahead; libnfs'
async API), and up to MAX_INFLIGHT workers of a connection run them.  The file's Reader serves
one READ at a time anyway, but whichever worker took its lock first went first: READs reached
it out of order, so it saw random reads (each chunk decoded alone, no read-ahead, blocks
decoded twice) instead of one sequential stream.  Here the READs of one file wait their turn
and the waiting one with the lowest offset goes next, unless one has been passed over
MAX_PASSES times (another client streaming through lower offsets never starves it).
"""
from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from typing import Hashable, Iterator

#: a waiting READ that lost its turn this many times goes next, whatever its offset
MAX_PASSES = 16


class _File:
    __slots__ = ("busy", "users", "waiting")

    def __init__(self) -> None:
        self.busy = False
        self.users = 0
        self.waiting: list[list] = []          # [offset, arrival, wake-up event, times passed over]


class ReadOrder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[Hashable, _File] = {}
        self._arrival = itertools.count()

    @contextmanager
    def turn(self, key: Hashable, offset: int) -> Iterator[None]:
        """Run the body when no other READ of `key` runs, lowest waiting offset first."""
        wake = None
        with self._lock:
            f = self._files.get(key)
            if f is None:
                f = self._files[key] = _File()
            f.users += 1
            if f.busy:
                wake = threading.Event()
                f.waiting.append([offset, next(self._arrival), wake, 0])
            else:
                f.busy = True
        if wake is not None:
            wake.wait()                 # the turn is handed over: busy stays set for this READ
        try:
            yield
        finally:
            with self._lock:
                f.users -= 1
                if f.waiting:
                    _next_of(f.waiting)[2].set()
                else:
                    f.busy = False
                    if f.users == 0:
                        del self._files[key]

    def files(self) -> int:
        """Files with a READ running or waiting (for tests)."""
        with self._lock:
            return len(self._files)


def _next_of(waiting: list[list]) -> list:
    """Remove and return the waiter that goes next (the others have been passed over once more)."""
    starved = [w for w in waiting if w[3] >= MAX_PASSES]
    pick = min(starved, key=lambda w: w[1]) if starved else min(waiting, key=lambda w: (w[0], w[1]))
    waiting.remove(pick)
    for w in waiting:
        w[3] += 1
    return pick
