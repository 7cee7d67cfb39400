"""State one FTP adapter shares with all its session threads."""
from __future__ import annotations

import contextlib
import threading
from collections import Counter
from typing import Any

from .files import TransferTracker


class FairLock:
    """A FIFO (ticket) lock for FTP commits.  In the core's group commit the thread that
    becomes leader keeps committing batches until nobody is queued, so under sustained load
    that session's own 226 can wait a minute (measured 52-70 s with 64 clients).  FTP commits
    queue here first, in arrival order, so every upload waits its turn and no longer; the
    price is that FTP commits are not batched together (see ``fair_commits``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0
        self._serving = 0

    def __enter__(self) -> "FairLock":
        with self._cond:
            ticket = self._next
            self._next += 1
            while ticket != self._serving:
                self._cond.wait()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


class ServerState:
    """Repository, events, open transfers and per-user connection counts (thread-safe)."""

    def __init__(self, repo: Any, ctx: Any, *, require_tls: bool, max_connections_per_user: int,
                 fair_commits: bool = True) -> None:
        self.repo = repo
        self.ctx = ctx
        self.require_tls = require_tls
        self.max_per_user = max_connections_per_user
        self.tracker = TransferTracker()
        self.stopping = False
        self.commit_lock: Any = FairLock() if fair_commits else contextlib.nullcontext()
        self._slots: Counter[str] = Counter()
        self._lock = threading.Lock()

    def event(self, event: str, **fields: Any) -> None:
        try:
            self.ctx.event("ftp", event, **fields)
        except Exception:             # an event sink must never break a session
            pass

    def acquire_slot(self, user: str) -> bool:
        with self._lock:
            if self.max_per_user and self._slots[user] >= self.max_per_user:
                return False
            self._slots[user] += 1
            return True

    def release_slot(self, user: str) -> None:
        with self._lock:
            self._slots[user] -= 1
            if self._slots[user] <= 0:
                del self._slots[user]

    def sessions_of(self, user: str) -> int:
        with self._lock:
            return self._slots[user]

    def upload_finished(self, session: Any, wf: Any, version: Any, exc: BaseException | None) -> None:
        user = session.user.name
        if version is not None:
            self.event("commit", user=user, address=session.address, path=wf.name,
                       version=getattr(version, "number", None), size=getattr(version, "size", None))
        else:
            self.event("error", user=user, address=session.address, path=wf.name,
                       action="upload aborted", error=type(exc).__name__ if exc else "incomplete",
                       bytes=wf.bytes_written)
