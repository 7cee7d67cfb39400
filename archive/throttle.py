"""Login throttling: per-address and per-user backoff after failed logins.

One :class:`LoginThrottle` lives on each open Repository (``repo.throttle``), so every protocol
served by a process shares it: guesses spread over FTP, WebDAV, SMB... count together.  After
``free_failures`` failures of a user (``free_failures_address`` from one client address) within
``window`` seconds, that user (address) is locked for ``backoff`` seconds, doubling with each
further failure up to ``max_backoff``.  While locked, a login is refused *without* checking the
password (the right password too), so guessing costs the attacker the full backoff every time.
A success clears the user's count; an address's count only decays (a valid account of the
attacker's must not reset its budget for guessing other users').

Why both: per-user stops a distributed guesser on one account, per-address stops one client
spraying many accounts.  The per-user lock is also a way for anyone to lock a user out, which
is why ``max_backoff`` stays short (60 s by default): guessing drops from tens per second to
about one a minute, a legitimate user waits at most a minute.

The state is in memory, per process (several processes serving one repository each throttle
on their own; with doubling backoffs that costs an attacker little extra).  Callers:
``repo.login()`` (archive/access.py) checks, records and audits; adapters only call that.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

DEFAULTS = {"free_failures": 5, "free_failures_address": 10, "backoff": 1.0, "max_backoff": 60.0,
            "window": 900.0}


@dataclass
class _Count:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Thread-safe failure counters keyed by user name and by client address."""

    MAX_KEYS = 100_000          # bounded memory under a spray of random names/addresses

    def __init__(self, clock: Callable[[], float] = time.monotonic, **settings: float) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._users: dict[str, _Count] = {}
        self._addresses: dict[str, _Count] = {}
        self.free_failures = int(DEFAULTS["free_failures"])
        self.free_failures_address = int(DEFAULTS["free_failures_address"])
        self.backoff = float(DEFAULTS["backoff"])
        self.max_backoff = float(DEFAULTS["max_backoff"])
        self.window = float(DEFAULTS["window"])
        self.configure(**settings)

    def configure(self, **settings: float) -> None:
        """Change the policy (keys as in DEFAULTS; None values are ignored)."""
        for key, value in settings.items():
            if key not in DEFAULTS:
                raise ValueError(f"unknown login throttle setting {key!r}")
            if value is None:
                continue
            if float(value) < 0:
                raise ValueError(f"login throttle {key} must not be negative")
            setattr(self, key, type(DEFAULTS[key])(value))

    def retry_after(self, address: str | None, user: str | None) -> float:
        """Seconds until a password may be tried for this user from this address (0: now)."""
        now = self._clock()
        with self._lock:
            waits = [c.locked_until - now for c in self._counts(address, user) if c.locked_until > now]
        return max(waits, default=0.0)

    def failure(self, address: str | None, user: str | None) -> list[tuple[str, str, float]]:
        """Record a failed login; returns the locks it started: (kind, key, seconds)."""
        now = self._clock()
        started = []
        with self._lock:
            for kind, key, table, free in (("user", user, self._users, self.free_failures),
                                           ("address", address, self._addresses, self.free_failures_address)):
                if not key:
                    continue
                c = table.get(key)
                if c is None:
                    if len(table) >= self.MAX_KEYS:
                        self._prune(table, now)
                    c = table[key] = _Count()
                if now - c.last > self.window and c.locked_until <= now:
                    c.failures = 0
                c.failures += 1
                c.last = now
                over = c.failures - free
                if over > 0:
                    lock = min(self.max_backoff, self.backoff * 2 ** (over - 1))
                    c.locked_until = now + lock
                    started.append((kind, key, lock))
        return started

    def success(self, address: str | None, user: str | None) -> None:
        with self._lock:
            if user:
                self._users.pop(user, None)

    def _counts(self, address: str | None, user: str | None) -> list[_Count]:
        out = []
        if user and user in self._users:
            out.append(self._users[user])
        if address and address in self._addresses:
            out.append(self._addresses[address])
        return out

    def _prune(self, table: dict[str, _Count], now: float) -> None:
        stale = [k for k, c in table.items() if now - c.last > self.window and c.locked_until <= now]
        for k in stale:
            del table[k]
        if len(table) >= self.MAX_KEYS:       # everything is fresh: forget the oldest half
            for k in sorted(table, key=lambda k: table[k].last)[: len(table) // 2]:
                del table[k]
