"""Logins that notice revocation on their next use, in this and in every other process.

Every change of users, passwords, grants or anonymous shares moves the catalog's *auth
generation* in the same transaction (``events.bump_auth_generation``, applied through the
events so ``recover`` rebuilds it).  A :class:`Login` remembers the generation it was checked
at; ``login.validate()`` (one primary-key read) is all an adapter calls per request or
command.  Only when the generation moved does it re-read the user row and the grants: a
removed or disabled user, or a changed password, ends the login (``AuthFailed``); a revoked
or downgraded grant shows in ``login.grants`` and in every ShareFS the login opened, whose
writes (and commits, inside their transaction) re-check the grant.

``login()`` is also where throttling (archive/throttle.py) and the audit of failed logins and
lockouts happen, so every protocol gets them by calling it.
"""
from __future__ import annotations

import hashlib
import sys
import threading
from typing import TYPE_CHECKING, Any

from . import rawsql as raw
from .lazysql import models as m
from .lazysql import select
from .errors import AuthFailed, PermissionDenied
from .types import ANONYMOUS, Origin, User

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class LoginThrottled(AuthFailed):
    """Refused without checking the password: too many recent failures (``retry_after`` s)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_GENERATION_SQL = "SELECT generation FROM auth_state WHERE id = 1"


def _is_session(s: Any) -> bool:
    """An ORM Session (not a plain-SQL transaction of rawsql, not None); never imports SQLAlchemy:
    without it loaded, nothing can be a Session."""
    orm = sys.modules.get("sqlalchemy.orm")
    return orm is not None and isinstance(s, orm.Session)


def auth_generation(repo: Any, s: Session | None = None) -> int:
    """Read on every request of a login and inside every commit it makes: plain SQL
    (archive/rawsql.py), on a raw read transaction when no session is given (building the
    statement and a connection through SQLAlchemy cost ~0.1 ms of Python each time)."""
    if s is not None:
        return raw.scalar(s, _GENERATION_SQL) or 0
    with raw.read(repo.catalog) as r:          # the commit path's idle connections
        return raw.scalar(r, _GENERATION_SQL) or 0


def _fingerprint(password_hash: str | None) -> str | None:
    """What a Login keeps of the password hash: enough to see it changed, nothing to attack."""
    return None if password_hash is None else hashlib.sha256(password_hash.encode()).hexdigest()[:16]


class Login:
    """One authenticated user (or ANONYMOUS) and its grants, re-validated when auth changes.

    Thread-safe; adapters keep one per session (FTP) or per credential (WebDAV's cache)."""

    def __init__(self, repo: Any, user: User, fingerprint: str | None, grants: dict[str, str],
                 generation: int) -> None:
        self.repo = repo
        self.user = user
        self.grants = grants
        self.generation = generation
        self._fingerprint = fingerprint
        self._lock = threading.Lock()
        self._shares: dict[tuple, Any] = {}
        self._ended: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.user == ANONYMOUS

    def validate(self, s: Session | None = None) -> "Login":
        """Raise AuthFailed if the login is no longer valid; refresh the grants if they may have
        changed.  `s`: run inside that (write) transaction, for a check atomic with a commit."""
        gen = auth_generation(self.repo, s)
        with self._lock:
            if self._ended:
                raise AuthFailed(self._ended)
            if gen == self.generation:
                return self
            if _is_session(s):
                self._reload(s)
            else:
                # No ORM session (none, or a plain-SQL write transaction, rawsql.write): read the
                # users and grants in a session of their own.  Inside a write transaction that
                # holds the catalog's write lock, it sees what that transaction sees.
                with self.repo.catalog.session() as s2:
                    self._reload(s2)
            self.generation = gen
            self._shares.clear()
        return self

    def _reload(self, s: Session) -> None:
        if not self.anonymous:
            row = s.execute(select(m.User.id, m.User.password_hash, m.User.disabled)
                            .where(m.User.name == self.user.name)).first()
            if row is None or row.disabled or row.id != self.user.id:
                self._ended = f"user {self.user.name!r} was removed or disabled"
            elif _fingerprint(row.password_hash) != self._fingerprint:
                self._ended = f"the password of {self.user.name!r} was changed"
            if self._ended:
                self.grants = {}
                raise AuthFailed(self._ended)
        self.grants = dict(self.repo.shares_for(self.user, session=s))

    def mode(self, share: str, s: Session | None = None) -> str | None:
        """"rw", "ro" or None for `share`, as of now."""
        self.validate(s)
        return self.grants.get(share)

    def share(self, name: str, origin: Origin | None = None, case_insensitive: bool = False) -> Any:
        """A ShareFS of this login, by the grants as of the last ``validate()`` (which adapters
        call once per request or command; cached until the generation moves).  Its writes
        re-check the grant themselves.  Raises PermissionDenied / NotFound like ``repo.share``."""
        key = (name, origin, case_insensitive)
        with self._lock:
            fs = self._shares.get(key)
        if fs is not None:
            return fs
        if name not in self.grants:
            raise PermissionDenied(f"user {self.user.name!r} has no access to share {name!r}")
        fs = self.repo.share(name, user=self.user, origin=origin, case_insensitive=case_insensitive)
        fs.login = self
        with self._lock:
            if len(self._shares) > 256:
                self._shares.clear()
            self._shares[key] = fs
        return fs


def login(repo: Any, name: str, password: str, origin: Origin) -> Login:
    """Check a password, throttled and audited; see Repository.login."""
    throttle = repo.throttle
    address = origin.address
    wait = throttle.retry_after(address, name)
    if wait > 0:
        raise LoginThrottled(f"too many failed logins; try again in {wait:.0f} s", wait)
    with repo.catalog.session() as s:
        gen = auth_generation(repo, s)
    try:
        user, password_hash = repo.check_password(name, password)
    except AuthFailed:
        audit_origin = Origin(origin.protocol, address, name)
        repo.audit_later("login_failed", audit_origin)
        for kind, key, seconds in throttle.failure(address, name):
            repo.audit_later("login_locked", audit_origin, detail=f"{kind} {key} locked for {seconds:g} s")
        raise
    throttle.success(address, name)
    return Login(repo, user, _fingerprint(password_hash), dict(repo.shares_for(user)), gen)


def login_anonymous(repo: Any) -> Login:
    """The anonymous login; AuthFailed when no share allows anonymous access."""
    gen = auth_generation(repo)
    grants = dict(repo.shares_for(ANONYMOUS))
    if not grants:
        raise AuthFailed("anonymous access is not enabled")
    return Login(repo, ANONYMOUS, None, grants, gen)


def login_for(repo: Any, user: "User | str") -> Login:
    """A Login for a user authenticated some other way (NTLM, an NFS squash user, ANONYMOUS):
    no password check, but the same re-validation.  NotFound-like AuthFailed if unknown."""
    gen = auth_generation(repo)
    if user == ANONYMOUS:
        return Login(repo, ANONYMOUS, None, dict(repo.shares_for(ANONYMOUS)), gen)
    name = user if isinstance(user, str) else user.name
    with repo.catalog.session() as s:
        row = s.execute(select(m.User.id, m.User.password_hash, m.User.disabled)
                        .where(m.User.name == name)).first()
        if row is None or row.disabled:
            raise AuthFailed(f"no user {name!r}")
        grants = dict(repo.shares_for(name, session=s))
    return Login(repo, User(row.id, name), _fingerprint(row.password_hash), grants, gen)
