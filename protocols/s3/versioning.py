"""Bucket versioning status as S3 clients see it, over an archive that keeps every version.

The archive never forgets a write: every PUT, copy or DELETE is a new archive version whatever
a bucket's S3 versioning status says.  The status only changes the *S3 view* of those versions:

* ``Enabled`` (the default of shares the admin made, and of new buckets unless the config's
  ``[s3.new_buckets] versioning = "unset"``): every version shows with its archive number.
* never set (``None``, S3's "unversioned") or ``Suspended``: a version written in such a period
  is the key's **null version** (VersionId ``"null"``, no ``x-amz-version-id`` on PUT).  S3 keeps
  one null version per key, so a newer null version *replaces* an older one in the S3 view: the
  older one is hidden from ListObjectVersions and from ``versionId=null``, but it is still an
  archive version (``archivectl versions`` lists it, ``archivectl restore`` brings it back).
* ``DELETE ?versionId=null`` purges the key's null version together with the null versions it
  replaced (the S3 client asked to destroy "the null version", which to it is all of them); it is
  a purge like any other, so only on shares that allow purging and never under a WORM hold.

Which status was in force when a version was written is decided by its creation time against
the bucket's status history, kept in ``<repo>/s3/versioning/<share>.json`` (written atomically;
an absent file means Enabled).  Object Lock buckets (CreateBucket with
``x-amz-bucket-object-lock-enabled``, or a share with WORM days) cannot be suspended.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from archive.clock import now_us

ENABLED, SUSPENDED = "Enabled", "Suspended"
UNSET = None


class BucketState:
    """One bucket's status history: [(since µs, status or None)], oldest first."""

    def __init__(self, history: list[tuple[int, str | None]], lock: bool = False):
        self.history = history
        self.lock = lock

    @property
    def status(self) -> str | None:
        return self.history[-1][1] if self.history else ENABLED

    @property
    def always_enabled(self) -> bool:
        return all(s == ENABLED for _, s in self.history)

    def status_at(self, at_s: float) -> str | None:
        """The status in force at `at_s` (epoch seconds, a version's created_at)."""
        at = round(at_s * 1_000_000)
        cur: str | None = ENABLED
        for since, status in self.history:
            if since > at:
                break
            cur = status
        return cur

    def is_null(self, v) -> bool:
        return not self.always_enabled and self.status_at(v.created_at) != ENABLED


class Store:
    """The status files of one repository, cached by mtime (a status read per request is a stat)."""

    def __init__(self, repo):
        self.root = Path(repo.path) / "s3" / "versioning"
        self._cache: dict[str, tuple[float, BucketState]] = {}
        self._lock = threading.Lock()

    def _file(self, share: str) -> Path:
        return self.root / f"{share}.json"

    def get(self, share: str) -> BucketState:
        f = self._file(share)
        try:
            mtime = f.stat().st_mtime_ns
        except OSError:
            return BucketState([])
        hit = self._cache.get(share)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        try:
            doc = json.loads(f.read_text())
            state = BucketState([(int(a), s) for a, s in doc.get("history", [])], bool(doc.get("lock")))
        except (OSError, ValueError, TypeError):
            state = BucketState([])
        self._cache[share] = (mtime, state)
        return state

    def _write(self, share: str, state: BucketState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        f = self._file(share)
        tmp = f.with_name(f.name + ".tmp")
        with open(tmp, "w") as out:
            json.dump({"history": [list(h) for h in state.history], "lock": state.lock}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, f)
        self._cache.pop(share, None)

    def created(self, share: str, status: str | None, lock: bool) -> None:
        """A bucket made by CreateBucket starts with `status` (None: S3's unversioned)."""
        with self._lock:
            self._write(share, BucketState([(now_us(), ENABLED if lock else status)], lock))

    def set(self, share: str, status: str) -> None:
        with self._lock:
            cur = self.get(share)
            if cur.status == status and cur.history:
                return
            history = list(cur.history) or [(0, ENABLED)]
            self._write(share, BucketState(history + [(now_us(), status)], cur.lock))

    def dropped(self, share: str) -> None:
        with self._lock:
            try:
                self._file(share).unlink()
            except OSError:
                pass
            self._cache.pop(share, None)


def visible(versions: list, state: BucketState) -> list:
    """The S3 view of a key's archive versions (newest first): every version of an Enabled
    period, and only the newest null version (older null versions were replaced)."""
    if state.always_enabled:
        return versions
    out, seen_null = [], False
    for v in versions:
        if state.is_null(v):
            if seen_null:
                continue
            seen_null = True
        out.append(v)
    return out
