"""Test hooks that make a process die at a durable step, as a kill -9 or a power cut would.

EDGE_ARCHIVE_FAULT_EXIT=<point>[:<n>] makes the process `os._exit(FAULT_STATUS)` the n-th time
(default: the first) it reaches <point>.  Points, in the order a commit reaches them:
    chunks     the content's chunks are appended to the pack; no transaction record yet
    synced     the transaction record is written and fsynced; the catalog has not committed
    committed  the catalog transaction committed; the caller has not replied yet
    gc-moved   gc copied a pack's live records and moved the catalog rows; the old pack remains
    dictionary a writer stored its new compression dictionary (dict-<id>, dict-current); no
               chunk uses it yet (archive/dictionary.py)
Staged updates (archive/staging.py, NFS writes):
    staged-synced     a small update's record is fdatasynced in the staging log; no reply yet
    staged-moved      an update past INLINE_MAX has its own durable journal; its log record
                      is not yet ended
    staged-committed  the update's version is committed; its `done` record is not written
Unset (the normal case) this costs one comparison per point.
"""
from __future__ import annotations

import os
import threading

FAULT_STATUS = 86
_spec = os.environ.get("EDGE_ARCHIVE_FAULT_EXIT")
_point, _, _nth = (_spec or "").partition(":")
_left = int(_nth or 1)
_lock = threading.Lock()


def point(name: str) -> None:
    """Die here if the fault hook names this point (and this is its n-th arrival)."""
    global _left
    if _spec is None or name != _point:
        return
    with _lock:
        _left -= 1
        if _left == 0:
            os._exit(FAULT_STATUS)
