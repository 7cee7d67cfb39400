"""Allocator settings for the long-running serving process (glibc only; no-ops elsewhere).

Under load the server's threads allocate and free many large buffers (1 MiB transfer
blocks, 4 MiB upload batches, zstd frames).  glibc's default raises its mmap threshold
each time such a block is freed, after which large blocks come from the heap arenas (one
per thread, up to 8 per core) and are kept when freed: measured, RSS stayed at the peak
when the clients left.  A fixed mmap threshold hands every block of ``MMAP_THRESHOLD`` or
more straight back to the kernel, a bounded number of arenas limits fragmentation, and a
periodic ``malloc_trim`` returns the free top of the heaps while idle.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MMAP_THRESHOLD = 128 * 1024
ARENA_MAX = 4
TRIM_INTERVAL = 30.0


def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - glibc has it, musl and others do not
        libc.malloc_trim  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


def tune_allocator() -> bool:
    """Apply the settings above; True when the C library took them."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    ok = bool(libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)) and ok
    return bool(libc.mallopt(M_ARENA_MAX, ARENA_MAX)) and ok


def start_trimmer(interval: float = TRIM_INTERVAL) -> threading.Event | None:
    """Call ``malloc_trim(0)`` every ``interval`` seconds in a daemon thread; set the
    returned event to stop it."""
    libc = _libc()
    if libc is None:
        return None
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            libc.malloc_trim(0)

    threading.Thread(target=run, name="malloc-trim", daemon=True).start()
    return stop
