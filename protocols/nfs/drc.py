"""Duplicate-request cache: a retransmitted non-idempotent call gets the first answer.

A client that lost a reply (dropped connection, timeout) resends the same xid; replaying a
REMOVE or RENAME would fail with NOENT although the first one worked, and replaying a
CREATE with EXIST.  Keyed by client address (not port: retransmissions often come on a new
connection), program, procedure and xid; bounded, oldest evicted.  A duplicate that arrives
while the first is still running waits for its answer.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable


class DuplicateCache:
    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._done: OrderedDict[tuple, bytes] = OrderedDict()
        self._running: dict[tuple, threading.Event] = {}

    def run(self, key: tuple, work: Callable[[], bytes]) -> bytes:
        while True:
            with self._lock:
                hit = self._done.get(key)
                if hit is not None:
                    self._done.move_to_end(key)
                    return hit
                ev = self._running.get(key)
                if ev is None:
                    ev = self._running[key] = threading.Event()
                    break
            ev.wait(30)
        try:
            reply = work()
            with self._lock:
                self._done[key] = reply
                while len(self._done) > self.size:
                    self._done.popitem(last=False)
            return reply
        finally:
            with self._lock:
                self._running.pop(key, None)
            ev.set()
