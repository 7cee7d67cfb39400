"""Lock store: WebDAV-style write locks kept in the catalog, so every process agrees.

Several appliance processes (one systemd unit per protocol, or several nodes on one
PostgreSQL catalog) must see the same locks: a lock taken over WebDAV in one process must
make a PUT in another process fail with 423.  Locks therefore live in the catalog's
``locks`` table, not in memory.

A lock is addressed by its ``root``: the protocol's canonical name of the locked resource
(for WebDAV the quoted URL path ``/<share>/<path>``).  ``share`` and ``path`` are stored
too (unquoted, share-relative) so other tools can show who holds what.  Expired locks are
invisible and purged lazily.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from sqlalchemy import and_, delete, select

from .catalog.models import Lock

#: Upper bound for any lock lifetime (seconds); "Infinite" requests get this.
MAX_TIMEOUT = 7 * 24 * 3600.0


@dataclass(frozen=True)
class LockRecord:
    token: str
    share: str
    path: str
    root: str
    scope: str          # "exclusive" | "shared"
    depth: str          # "0" | "infinity"
    owner: str          # client-supplied owner XML (opaque text)
    principal: str      # user name that took the lock
    timeout: float      # requested lifetime in seconds (already capped)
    expires_at: float
    created_at: float


def _record(row: Lock) -> LockRecord:
    return LockRecord(
        token=row.token, share=row.share, path=row.path, root=row.root, scope=row.scope,
        depth=row.depth, owner=row.owner or "", principal=row.principal,
        timeout=float(row.timeout), expires_at=float(row.expires_at),
        created_at=float(row.created_at),
    )


def new_token() -> str:
    """An unguessable lock token in the RFC 4918 opaquelocktoken form."""
    return "opaquelocktoken:" + hex(secrets.randbits(256))


def _children_range(root: str) -> tuple[str, str]:
    """Bounds [lo, hi) of every string that starts with ``root + '/'`` ('/' + 1 == '0')."""
    base = root.rstrip("/")
    return base + "/", base + "0"


class LockStore:
    """Catalog-backed lock table.  Thread-safe: each call uses its own session."""

    def __init__(self, repo) -> None:
        self._catalog = repo.catalog

    def _write(self):
        """The catalog's write transaction when it has one (takes the write lock up front)."""
        write = getattr(self._catalog, "write", None)
        return write() if write is not None else self._catalog.session()

    # -- writes ---------------------------------------------------------------------
    def create(self, *, root: str, share: str, path: str, scope: str, depth: str,
               owner: str, principal: str, timeout: float) -> LockRecord:
        """Store a new lock (conflicts are checked by the caller) and return it."""
        if timeout is None or timeout < 0 or timeout > MAX_TIMEOUT:
            timeout = MAX_TIMEOUT
        now = time.time()
        row = Lock(token=new_token(), share=share, path=path, root=root, scope=scope,
                   depth=depth, owner=owner, principal=principal, timeout=float(timeout),
                   expires_at=now + float(timeout), created_at=now)
        with self._write() as s:
            s.add(row)
            rec = _record(row)
        return rec

    def refresh(self, token: str, timeout: float) -> LockRecord | None:
        """Extend a live lock's lifetime; None when it does not exist (or expired)."""
        if timeout is None or timeout < 0 or timeout > MAX_TIMEOUT:
            timeout = MAX_TIMEOUT
        now = time.time()
        with self._write() as s:
            row = s.get(Lock, token)
            if row is None or row.expires_at < now:
                return None
            row.timeout = float(timeout)
            row.expires_at = now + float(timeout)
            rec = _record(row)
        return rec

    def delete(self, token: str) -> bool:
        with self._write() as s:
            n = s.execute(delete(Lock).where(Lock.token == token)).rowcount
        return bool(n)

    def purge_expired(self) -> int:
        with self._write() as s:
            n = s.execute(delete(Lock).where(Lock.expires_at < time.time())).rowcount
        return n or 0

    # -- reads ----------------------------------------------------------------------
    def get(self, token: str) -> LockRecord | None:
        with self._catalog.session() as s:
            row = s.get(Lock, token)
            if row is None or row.expires_at < time.time():
                return None
            return _record(row)

    def at(self, root: str) -> list[LockRecord]:
        """Live locks rooted exactly at ``root``."""
        with self._catalog.session() as s:
            rows = s.scalars(select(Lock).where(
                and_(Lock.root == root, Lock.expires_at >= time.time()))).all()
            return [_record(r) for r in rows]

    def under(self, root: str, include_root: bool = True) -> list[LockRecord]:
        """Live locks rooted at ``root`` (optionally) or anywhere below it."""
        # Plain SQL on a raw read (archive/rawsql.py): WebDAV asks this once per PUT, and the ORM
        # query cost 1-2 ms of Python per request, more than the core's commit (webdav9).
        from . import rawsql
        lo, hi = _children_range(root)
        sql, params = _UNDER, [lo, hi]
        if include_root:
            sql, params = _UNDER_WITH_ROOT, [lo, hi, root.rstrip("/") or "/"]
        with self._catalog.raw_read() as s:
            rows = rawsql.run(s, sql, params + [time.time()]).fetchall()
        return [LockRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6] or "", r[7], float(r[8]),
                           float(r[9]), float(r[10])) for r in rows]


_COLS = "token, share, path, root, scope, depth, owner, principal, timeout, expires_at, created_at"
_UNDER = f"SELECT {_COLS} FROM locks WHERE root >= ? AND root < ? AND expires_at >= ? ORDER BY root"
_UNDER_WITH_ROOT = (f"SELECT {_COLS} FROM locks WHERE ((root >= ? AND root < ?) OR root = ?) "
                    "AND expires_at >= ? ORDER BY root")


# -- leases ---------------------------------------------------------------------------
# A lease is a row of the same table whose token is ``lease:<name>``: a job that only one
# node of a cluster may run at a time (the scheduled gc) takes it inside the catalog's write
# transaction, so check-and-take is atomic across every process and node on the catalog.
# Its root ``lease:<name>`` never starts with "/", so no protocol's lock query sees it.

LEASE_PREFIX = "lease:"


def acquire_lease(repo, name: str, holder: str, ttl: float, now: float | None = None) -> bool:
    """Take lease `name` for `ttl` seconds unless another holder's lease is still live.

    A live lease is taken even for its own holder (after a run, the holder keeps it until the
    next due time; renewals go through `hold_lease_until`).  An expired lease (its holder
    crashed, or the next due time came) is free."""
    token = LEASE_PREFIX + name
    now = time.time() if now is None else now
    with LockStore(repo)._write() as s:
        row = s.get(Lock, token)
        if row is not None and row.expires_at > now:
            return False
        if row is None:
            s.add(Lock(token=token, share="", path=name, root=token, scope="exclusive", depth="0",
                       owner="", principal=holder, timeout=float(ttl), expires_at=now + ttl, created_at=now))
        else:
            row.principal, row.timeout, row.expires_at, row.created_at = holder, float(ttl), now + ttl, now
    return True


def hold_lease_until(repo, name: str, holder: str, until: float) -> bool:
    """Keep (renew) or hand back the lease: it stays taken until `until` (epoch seconds).

    After a run the holder sets `until` to the next due time, so no node (itself included)
    runs the job before then.  False when the lease is no longer this holder's."""
    with LockStore(repo)._write() as s:
        row = s.get(Lock, LEASE_PREFIX + name)
        if row is None or row.principal != holder:
            return False
        row.expires_at = until
    return True


def lease(repo, name: str) -> LockRecord | None:
    """The lease row (live or not), for status and tests."""
    with repo.catalog.session() as s:
        row = s.get(Lock, LEASE_PREFIX + name)
        return _record(row) if row is not None else None
