"""State one FTP adapter shares with all its session threads."""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import threading
import time
from collections import Counter
from typing import Any

from archive import errors

from .files import TransferTracker


class LoginCache:
    """Verified passwords, so a client opening a connection per transfer (curl, lftp's
    parallel mirror) pays the catalog's slow hash (scrypt: 50-150 ms of CPU) once per
    ``seconds``, not per connection, as WebDAV's Basic auth does (protocols/webdav/auth.py).

    Kept under an HMAC of (name, password) keyed by a per-process random key, never the
    password itself.  What is kept is the ``archive.access.Login`` (thread-safe, shared by the
    sessions of that credential); a hit is re-validated first (one catalog read while nothing
    changed), so a removed or disabled user or a changed password is refused on the very next
    login, also when another process made the change; a wrong password never hits and goes
    to ``repo.login`` (throttled, audited) as before, and so does every login while the user
    or the address is locked out (access.login), so a lockout stays a lockout."""

    MAX = 10_000

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self._key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _key_of(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, f"{name}\0{password}".encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    def get(self, name: str, password: str) -> Any | None:
        """The cached Login of these credentials, validated now; None: not cached (any more)."""
        if self.seconds <= 0:
            return None
        key = self._key_of(name, password)
        with self._lock:
            hit = self._cache.get(key)
        if hit is None or hit[0] <= time.monotonic():
            return None
        try:
            return hit[1].validate()
        except errors.ArchiveError:        # removed, disabled, password changed, catalog down
            with self._lock:
                self._cache.pop(key, None)
            return None

    def put(self, name: str, password: str, login: Any) -> None:
        if self.seconds <= 0:
            return
        key = self._key_of(name, password)
        with self._lock:
            if len(self._cache) >= self.MAX:
                self._cache.clear()
            self._cache[key] = (time.monotonic() + self.seconds, login)


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
                 fair_commits: bool = True, auth_cache_seconds: float = 300.0) -> None:
        self.repo = repo
        self.ctx = ctx
        self.require_tls = require_tls
        self.max_per_user = max_connections_per_user
        self.tracker = TransferTracker()
        self.stopping = False
        self.commit_lock: Any = FairLock() if fair_commits else contextlib.nullcontext()
        self.logins = LoginCache(auth_cache_seconds)
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
