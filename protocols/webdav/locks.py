"""wsgidav lock storage over the catalog's lock table (:mod:`archive.locks`).

wsgidav's ``LockManager`` keeps the RFC 4918 logic (conflicts, depth, tokens, If headers);
this class only stores and finds locks, in the catalog, so every appliance process sees
the same locks.  A PROPFIND of a large folder asks for the locks of every child: the
provider calls :meth:`prefetch` once per listing and the answers for that subtree come
from a per-thread cache that lives for one request (any lock change in the thread drops it).
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import unquote

from wsgidav.lock_man.lock_manager import normalize_lock_root, validate_lock

from archive.locks import MAX_TIMEOUT, LockRecord, LockStore


def _to_dict(rec: LockRecord) -> dict:
    return {
        "root": rec.root,
        "type": "write",
        "scope": rec.scope,
        "depth": rec.depth,
        "owner": rec.owner.encode("utf-8"),
        "timeout": rec.timeout,
        "principal": rec.principal,
        "token": rec.token,
        "expire": rec.expires_at,
    }


def _share_and_path(root: str) -> tuple[str, str]:
    parts = [p for p in unquote(root).split("/") if p]
    if not parts:
        return "", "/"
    return parts[0], "/" + "/".join(parts[1:])


def _is_below(root: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return root == (prefix or "/") or root.startswith(prefix + "/")


class CatalogLockStorage:
    """Implements the storage interface wsgidav's LockManager expects."""

    LOCK_TIME_OUT_DEFAULT = 604800
    LOCK_TIME_OUT_MAX = MAX_TIMEOUT

    def __init__(self, repo) -> None:
        self.store = LockStore(repo)
        self._local = threading.local()

    def __repr__(self) -> str:
        return "CatalogLockStorage"

    # -- per-request cache -----------------------------------------------------------
    @contextmanager
    def request_scope(self) -> Iterator[None]:
        self._local.cache = {}
        try:
            yield
        finally:
            self._local.cache = {}

    def _cache(self) -> dict:
        c = getattr(self._local, "cache", None)
        if c is None:
            c = self._local.cache = {}
        return c

    def _drop_cache(self) -> None:
        self._local.cache = {}

    def prefetch(self, url: str) -> list[dict]:
        """Load every live lock at or below ``url`` with one query; later lookups inside
        that subtree (in this thread, this request) are answered from memory."""
        prefix = normalize_lock_root(url)
        cache = self._cache()
        if prefix not in cache:
            cache[prefix] = [_to_dict(r) for r in self.store.under(prefix, include_root=True)]
        return cache[prefix]

    def _cached(self, path: str) -> list[dict] | None:
        for prefix, locks in self._cache().items():
            if _is_below(path, prefix):
                return locks
        return None

    # -- wsgidav storage interface ---------------------------------------------------
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def cleanup(self) -> None:
        self.store.purge_expired()

    def clear(self) -> None:
        self.store.purge_expired()

    def get(self, token: str) -> dict | None:
        rec = self.store.get(token)
        return _to_dict(rec) if rec else None

    def create(self, path: str, lock: dict) -> dict:
        assert lock.get("token") is None
        root = normalize_lock_root(path)
        timeout = lock.get("timeout")
        timeout = self.LOCK_TIME_OUT_DEFAULT if timeout is None else float(timeout)
        if timeout < 0 or timeout > self.LOCK_TIME_OUT_MAX:
            timeout = self.LOCK_TIME_OUT_MAX
        owner = lock.get("owner") or b""
        if isinstance(owner, bytes):
            owner = owner.decode("utf-8", "replace")
        share, rel = _share_and_path(root)
        self.store.purge_expired()      # expired locks are invisible; this keeps the table small
        rec = self.store.create(root=root, share=share, path=rel, scope=lock["scope"],
                                depth=lock["depth"], owner=owner,
                                principal=lock["principal"], timeout=timeout)
        self._drop_cache()
        lock.update(_to_dict(rec))
        validate_lock(lock)
        return lock

    def refresh(self, token: str, *, timeout) -> dict:
        rec = self.store.refresh(token, float(timeout) if timeout is not None else None)
        self._drop_cache()
        if rec is None:
            raise ValueError("lock does not exist")
        return _to_dict(rec)

    def delete(self, token: str) -> bool:
        self._drop_cache()
        return self.store.delete(token)

    def get_lock_list(self, path, *, include_root, include_children, token_only):
        root = normalize_lock_root(path)
        if root == "/" and not include_children:
            return []           # "/" (the share list) is never locked
        cached = self._cached(root)
        if cached is None:
            # One query per request and share: wsgidav asks for the locks of the resource,
            # its parent, every ancestor... (about ten lookups per PUT).
            cached = self.prefetch("/" + root.strip("/").split("/", 1)[0])
        now = time.time()
        locks = [lk for lk in cached if lk["expire"] >= now]
        out = []
        for lk in locks:
            if lk["root"] == root:
                if not include_root:
                    continue
            elif not (include_children and _is_below(lk["root"], root)):
                continue
            out.append(lk["token"] if token_only else lk)
        return out
