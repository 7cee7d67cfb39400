"""Scheduled garbage collection inside `archivectl serve`, one node of a cluster at a time.

Without it, space is reclaimed only when an operator remembers `archivectl gc`.  Every
serving process runs a `GcTimer`; each wakes up now and then (every `check` seconds, with
jitter so nodes do not line up) and tries to take the catalog lease ``lease:gc``
(archive/locks.py).  The lease doubles as the schedule: while a run goes on its holder renews
it every `ttl / 3` seconds; when the run ends the holder keeps it until the next due time
(`interval` later), so no node runs gc before then, whichever restarted meanwhile.  A node
that dies mid-run stops renewing; after `ttl` another node takes over.  gc itself is safe
while any node uploads (archive/gc.py: grace per pack and per orphan, re-checks under the
catalog's write lock), so the lease only keeps the cluster from doing the work twice.

Configuration (`[gc]` in the TOML file, read by protocols/serve.py):
    interval = "1d"     # how often; "0" turns the scheduled gc off
    grace = "1h"        # archive/gc.py's grace period
"""
from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from . import gc as gcmod
from .locks import acquire_lease, hold_lease_until

log = logging.getLogger("edge_archive.gc")

LEASE = "gc"
DEFAULT_INTERVAL = 24 * 3600.0
KEYS = {"interval", "grace", "check"}


class GcConfigError(ValueError):
    """A bad [gc] section (the caller reports it like any configuration error)."""


def parse_duration(value: Any, key: str) -> float:
    """Seconds from 90, 1.5, "90s", "30m", "6h", "1d"."""
    if isinstance(value, bool):
        raise GcConfigError(f"[gc] {key}: not a duration: {value!r} (e.g. 3600, \"30m\", \"6h\", \"1d\")")
    if isinstance(value, (int, float)):
        secs = float(value)
    else:
        s = str(value).strip().lower()
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(s[-1:], None)
        try:
            secs = float(s[:-1] if unit else s) * (unit or 1)
        except ValueError:
            raise GcConfigError(f"[gc] {key}: not a duration: {value!r} (e.g. 3600, \"30m\", \"6h\", \"1d\")") from None
    if secs < 0:
        raise GcConfigError(f"[gc] {key}: must not be negative ({value!r})")
    return secs


@dataclass(frozen=True)
class GcSchedule:
    interval: float = DEFAULT_INTERVAL      # 0: off
    grace: float = gcmod.DEFAULT_GRACE
    check: float | None = None              # how often a node looks at the lease; default min(interval, 10 min)

    @classmethod
    def from_config(cls, section: "dict | None") -> "GcSchedule":
        section = dict(section or {})
        unknown = sorted(set(section) - KEYS)
        if unknown:
            raise GcConfigError(f"[gc]: unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
        interval = parse_duration(section.get("interval", DEFAULT_INTERVAL), "interval")
        grace = parse_duration(section.get("grace", gcmod.DEFAULT_GRACE), "grace")
        check = parse_duration(section["check"], "check") if "check" in section else None
        return cls(interval, grace, check)

    @property
    def poll(self) -> float:
        return self.check if self.check else max(0.5, min(self.interval, 600.0))


class GcTimer:
    """A daemon thread that runs gc when this node holds the cluster's gc lease."""

    def __init__(self, repo, schedule: GcSchedule, *, ttl: float = 600.0,
                 on_report: "Callable[[gcmod.GCReport], None] | None" = None):
        self.repo, self.schedule, self.ttl = repo, schedule, ttl
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.on_report = on_report
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "GcTimer":
        if self.schedule.interval > 0:
            self._thread = threading.Thread(target=self._loop, name="gc-timer", daemon=True)
            self._thread.start()
            log.info("event=gc_scheduled interval=%s grace=%s", self.schedule.interval, self.schedule.grace)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop waiting; a run in progress ends at its next pack (gc is crash-safe anyway)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.schedule.poll * random.uniform(0.8, 1.0)):
            try:
                self.run_once()
            except _Stopped:
                return
            except Exception as e:              # the catalog or the store is down: try again later
                log.warning("event=gc_failed error=%r", str(e))

    def run_once(self) -> bool:
        """Run gc if this node gets the lease; True when it ran."""
        if not acquire_lease(self.repo, LEASE, self.holder, self.ttl):
            return False
        renew = threading.Event()

        def heartbeat() -> None:
            while not renew.wait(self.ttl / 3):
                hold_lease_until(self.repo, LEASE, self.holder, time.time() + self.ttl)
        beat = threading.Thread(target=heartbeat, name="gc-lease", daemon=True)
        beat.start()
        ok = False
        started = time.monotonic()
        try:
            rep = gcmod.collect(self.repo, grace=self.schedule.grace, progress=self._check_stop)
            ok = True
        finally:
            renew.set()
            beat.join()
            # done: nobody runs before the next due time; failed: another try after one poll
            wait = self.schedule.interval if ok else self.schedule.poll
            hold_lease_until(self.repo, LEASE, self.holder, time.time() + wait)
        self.runs += 1
        detail = {**rep.as_dict(), "duration": round(time.monotonic() - started, 3), "scheduled": True}
        log.info("event=gc_done %s", " ".join(f"{k}={v}" for k, v in detail.items()))
        audit = getattr(self.repo, "audit", None)
        if audit is not None:
            import json
            from .types import Origin
            audit("gc", Origin("gc", socket.gethostname(), self.holder), detail=json.dumps(detail))
        if self.on_report:
            self.on_report(rep)
        return True

    def _check_stop(self, _n: int) -> None:
        if self._stop.is_set():
            raise _Stopped()


class _Stopped(Exception):
    pass
