"""The archive seen as an object store: keys in key order, versions by id, copy, purge.

Object stores (S3) name files by full key ("a/b/c.txt") and list them in key order, page after
page, with a start-after key; the namespace here is a tree of folders.  These functions walk the
tree so that keys come out in plain string order (a folder "a" sorts as "a/", after a file
"a-b" and "a.txt"), streaming a folder's children from the (parent, name) index in pages, so a
100,000-key bucket lists page by page without sorting it whole.

A version is addressed by (node id, version number): the node is the file's identity (it
survives renames), the number is what `archivectl versions` shows.  Per-version metadata
(`meta`, JSON text: S3 keeps the body's MD5, Content-Type and x-amz-meta-* there) is stored
with the version row and travels in its commit event, so `recover` brings it back.
"""
from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from typing import Iterator

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from .catalog import models as m
from .clock import now_us, seconds
from .errors import ArchiveError, InvalidPath, NotEmpty, NotFound, PermissionDenied, ReadOnly, WormLocked
from .paths import split
from .types import Origin, Version, etag_text

PAGE = 1000
DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True)
class ObjectVersion:
    """One version of one key (a delete marker when `deleted`)."""
    key: str
    node: int
    number: int
    size: int
    created_at: float
    mtime: float
    deleted: bool
    etag: str                 # the core's content hash
    meta: dict = field(default_factory=dict)
    origin: Origin | None = None
    latest: bool = True
    row_id: int = 0           # the version row (for readers)


def load_meta(raw: str | None) -> dict:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


_CHILDREN = {alive_only: text(f"""
    SELECT d.name, d.node_id, n.kind, v.id, v.number, v.size, coalesce(v.mtime, v.created_at) AS mtime, v.created_at,
           v.deleted, v.etag, v.meta,
           v.origin_protocol, v.origin_address, v.origin_user
    FROM dentries d JOIN nodes n ON n.id = d.node_id
    LEFT JOIN versions v ON v.node_id = d.node_id AND v.number =
         (SELECT max(v2.number) FROM versions v2 WHERE v2.node_id = d.node_id)
    WHERE d.parent_id = :p AND d.name >= :lo AND d.name > :last
      AND {"d.valid_to IS NULL ORDER BY d.name" if alive_only else
           "(d.valid_to IS NULL OR n.kind = 'file') GROUP BY d.name, d.node_id ORDER BY d.name, d.node_id"}
    LIMIT :lim""") for alive_only in (True, False)}

_HAS_FILE = {alive_only: text(f"""
    WITH RECURSIVE sub(id) AS (
        SELECT :n UNION ALL
        SELECT d.node_id FROM dentries d JOIN sub ON d.parent_id = sub.id
        {"WHERE d.valid_to IS NULL" if alive_only else ""})
    SELECT 1 FROM sub JOIN nodes n ON n.id = sub.id WHERE n.kind = 'file' LIMIT 1""")
    for alive_only in (True, False)}


def _row_version(key: str, r) -> ObjectVersion:
    origin = Origin(r.origin_protocol, r.origin_address, r.origin_user) if r.origin_protocol else None
    return ObjectVersion(key, r.node_id, r.number, r.size, seconds(r.created_at), seconds(r.mtime),
                         bool(r.deleted), etag_text(r.etag), load_meta(r.meta), origin, True, r.id)


def _lower_bound(component: str) -> str:
    """Smallest child name whose sort key ("name" or "name/") can exceed `component`: a folder
    "ab" sorts as "ab/" and so comes after "ab!c" although "ab" < "ab!c"."""
    for i, ch in enumerate(component):
        if ch < "/":
            return component[:i]
    return component


class _Walker:
    def __init__(self, fs, deleted: bool, dirs: bool):
        self.fs, self.deleted, self.dirs = fs, deleted, dirs
        self.alive_only = not deleted

    def children(self, node: int, lo: str) -> Iterator[tuple]:
        last = ""
        while True:
            with self.fs.repo.catalog.session() as s:
                rows = s.execute(_CHILDREN[self.alive_only],
                                 {"p": node, "lo": lo, "last": last, "lim": PAGE}).all()
            yield from rows
            if len(rows) < PAGE:
                return
            last = rows[-1].name
            lo = ""

    def has_file(self, node: int) -> bool:
        with self.fs.repo.catalog.session() as s:
            return s.execute(_HAS_FILE[self.alive_only], {"n": node}).first() is not None

    def walk(self, node: int, base: str, frag: str, after: str | None, top: bool) -> Iterator[tuple[str, object]]:
        """Yield ("key", row) and (at the top level, in folder mode) ("dir", "a/b/") in key order.
        `base` is the folder's key prefix ("" or "a/b/"); only names starting with `frag`;
        only keys > base + `after` (relative) when given."""
        first = after.split("/", 1)[0] if after else ""
        lo = max(frag, _lower_bound(first)) if after else frag
        pending: list[tuple[str, str, int]] = []    # folders waiting for their turn: (sort key, name, node)
        for r in self.children(node, lo):
            name = r.name
            if not name.startswith(frag):
                if name > frag:
                    break
                continue
            sort_key = name + "/" if r.kind == "dir" else name
            while pending and pending[0][0] < sort_key:
                yield from self._dir(*heapq.heappop(pending), base, after, top)
            if r.kind == "dir":
                heapq.heappush(pending, (sort_key, name, r.node_id))
            elif r.number is not None and (after is None or name > after):
                if self.deleted or not r.deleted:
                    yield "key", (base + name, r)
        while pending:
            yield from self._dir(*heapq.heappop(pending), base, after, top)

    def _dir(self, sort_key: str, name: str, node: int, base: str, after: str | None, top: bool):
        sub_after = None
        if after is not None:
            if after.startswith(sort_key):
                sub_after = after[len(sort_key):]
            elif after >= sort_key:
                return                     # the whole folder sorts before `after`
        if top and self.dirs:
            if sub_after is None and self.has_file(node):
                yield "dir", base + sort_key
            return
        yield from self.walk(node, base + sort_key, "", sub_after, False)


def iter_keys(fs, prefix: str = "", after: str = "", folders: bool = False,
              deleted: bool = False) -> Iterator[tuple[str, object]]:
    """Keys under `prefix` greater than `after`, in key order.

    Yields ("key", (key, row)) with the current version row (`row.deleted` only when
    `deleted`: keys whose newest version is a delete marker), and when `folders` is set,
    ("dir", "prefix/of/folder/") for every non-empty folder directly at the prefix's level
    instead of its keys (S3's delimiter "/")."""
    if "\x00" in prefix or "\x00" in after:
        return
    base_parts = prefix.split("/")[:-1]
    frag = prefix.rsplit("/", 1)[-1]
    try:
        with fs.repo.catalog.session() as s:
            node, kind, _ = fs._walk(s, tuple(base_parts), None)
    except (NotFound, InvalidPath, PermissionDenied):
        return
    except Exception as e:                      # NotADirectory: a file where a folder would be
        if type(e).__name__ == "NotADirectory":
            return
        raise
    if kind != "dir":
        return
    base = "/".join(base_parts) + "/" if base_parts else ""
    rel_after: str | None = None
    if after:
        if after.startswith(base):
            rel_after = after[len(base):]
        elif after >= base:
            return
    w = _Walker(fs, deleted=deleted, dirs=folders)
    for kind_, item in w.walk(node, base, frag, rel_after, True):
        if kind_ == "key":
            key, r = item
            yield "key", _row_version(key, r)
        else:
            yield kind_, item


def versions_of(fs, node: int, key: str) -> list[ObjectVersion]:
    """Every version of a node, newest first (S3's order)."""
    with fs.repo.catalog.session() as s:
        rows = s.execute(select(m.Version).where(m.Version.node_id == node).order_by(m.Version.number.desc())).scalars()
        out = []
        for i, r in enumerate(rows):
            origin = Origin(r.origin_protocol, r.origin_address, r.origin_user) if r.origin_protocol else None
            out.append(ObjectVersion(key, node, r.number, r.size, seconds(r.created_at), seconds(r.mtime),
                                     bool(r.deleted), r.etag or "", load_meta(r.meta), origin, i == 0, r.id))
        return out


def current(fs, key: str) -> ObjectVersion:
    """The current version of a key (NotFound when absent or deleted)."""
    parts = fs._view(key).parts
    with fs.repo.catalog.session() as s:
        node, kind, _ = fs._walk(s, parts, None)
        if kind == "dir":
            raise NotFound(f"{key} is a folder")
        r = fs._current_version(s, node, None)
        if r is None or r.deleted:
            raise NotFound(f"{key}: no such object")
        return _row_version(key, r)


def node_of(fs, key: str) -> int:
    """The node at `key` now, or the last file node that was there (deleted keys)."""
    with fs.repo.catalog.session() as s:
        node, kind, _ = fs._find_node(s, fs._view(key))
    if kind == "dir":
        raise NotFound(f"{key} is a folder")
    return node


def version(fs, key: str, node: int, number: int) -> ObjectVersion:
    """One version by (node, number); NotFound unless that node is a file of this share that
    was at some time named like the key's last component."""
    parts = fs._view(key).parts
    with fs.repo.catalog.session() as s:
        n = s.get(m.Node, node)
        if n is None or n.share_id != fs.share_id or n.kind != "file":
            raise NotFound(f"{key}: no such version")
        if s.scalar(select(m.Dentry.id).where(m.Dentry.node_id == node, m.Dentry.name == parts[-1]).limit(1)) is None:
            raise NotFound(f"{key}: no such version")
        r = s.scalar(select(m.Version).where(m.Version.node_id == node, m.Version.number == number))
        if r is None:
            raise NotFound(f"{key}: no such version")
        newest = s.scalar(select(m.Version.number).where(m.Version.node_id == node)
                          .order_by(m.Version.number.desc()).limit(1))
        origin = Origin(r.origin_protocol, r.origin_address, r.origin_user) if r.origin_protocol else None
        return ObjectVersion(key, node, r.number, r.size, seconds(r.created_at), seconds(r.mtime), bool(r.deleted),
                             r.etag or "", load_meta(r.meta), origin, newest == number, r.id)


def open_version(fs, v: ObjectVersion):
    """A Reader of exactly this version (a delete marker has no content: NotFound)."""
    from .streams import Reader
    if v.deleted:
        raise NotFound(f"{v.key} version {v.number} is a delete marker")
    return Reader(fs.repo, v.row_id, v.size, v.etag)


def copy_version(src_fs, src: ObjectVersion, dst_fs, dst_key: str, meta: dict | None) -> Version:
    """A new version of `dst_key` (any share the caller may write) with the bytes of `src`,
    by reference (no data rewritten), carrying `meta` (None: the source's)."""
    if src.deleted:
        raise NotFound(f"{src.key} version {src.number} is a delete marker")
    v = dst_fs._writable_view(dst_key)
    raw = json.dumps(src.meta if meta is None else meta, sort_keys=True)

    def build(s: Session) -> list[dict]:
        ev = dst_fs.commit_event(s, v.parts, src.size, None, src.etag, copy_of=(src.node, src.number))
        ev["meta"] = raw
        return [ev]
    evs = dst_fs.repo.mutate(build, audit=dst_fs._audit("copy", "/" + "/".join(v.parts)))
    return dst_fs._version_of(evs[-1])


def share_policy(repo, share: str) -> dict:
    """{allow_purge, worm_days} of a share."""
    with repo.catalog.session() as s:
        row = s.scalar(select(m.Share).where(m.Share.name == share))
        if row is None:
            raise NotFound(f"no share {share!r}")
        return {"allow_purge": bool(row.allow_purge), "worm_days": int(row.worm_days or 0)}


def worm_until(repo, share: str, v: ObjectVersion) -> float | None:
    """Epoch seconds until which the share's WORM period holds this version (None: no WORM)."""
    days = share_policy(repo, share)["worm_days"]
    return v.created_at + days * 86400 if days else None


def purge_version(fs, key: str, node: int, number: int) -> None:
    """Delete one version for good (S3 DeleteObject with a VersionId).

    Refused (PermissionDenied) unless the share allows purging, and (WormLocked) for a version
    younger than the share's WORM period.  The key then shows its newest remaining version: the
    name is unlinked when that is a delete marker or nothing, re-linked when purging a delete
    marker brings an older version back."""
    if not fs.writable:
        raise PermissionDenied(f"read-only access to share {fs.share_name!r}")
    target = version(fs, key, node, number)
    repo = fs.repo

    def build(s: Session) -> list[dict]:
        share = s.get(m.Share, fs.share_id)
        if not share.allow_purge:
            raise PermissionDenied(f"share {share.name!r} does not allow purging versions "
                                   f"(archivectl share set {share.name} --allow-purge)")
        r = s.scalar(select(m.Version).where(m.Version.node_id == node, m.Version.number == number))
        if r is None:
            raise NotFound(f"{key}: no such version")
        at = now_us()
        if share.worm_days and r.created_at > at - share.worm_days * DAY_US:
            raise WormLocked(f"{key} version {number} is under the share's {share.worm_days}-day WORM hold")
        evs: list[dict] = [{"op": "purge", "at": at, "versions": [[node, number]]}]
        rest = s.scalar(select(m.Version).where(m.Version.node_id == node, m.Version.number != number)
                        .order_by(m.Version.number.desc()).limit(1))
        d = s.scalar(select(m.Dentry).where(m.Dentry.node_id == node).order_by(m.Dentry.valid_from.desc()).limit(1))
        if d is None:
            return evs
        alive = d.valid_to is None
        want = rest is not None and not rest.deleted
        if alive and not want:
            evs.append({"op": "unlink", "at": at, "parent": d.parent_id, "name": d.name})
        elif want and not alive:
            taken = s.scalar(select(m.Dentry.id).where(m.Dentry.parent_id == d.parent_id, m.Dentry.name == d.name,
                                                       m.Dentry.valid_to.is_(None)).limit(1))
            parent_alive = d.parent_id == fs.root or s.scalar(
                select(m.Dentry.id).where(m.Dentry.node_id == d.parent_id, m.Dentry.valid_to.is_(None)).limit(1))
            if taken is None and parent_alive:
                evs.append({"op": "link", "at": at, "parent": d.parent_id, "name": d.name, "node": node})
        return evs
    repo.mutate(build, audit=lambda evs: [repo.audit_row("purge", fs.origin, fs.share_name, "/" + key.lstrip("/"),
                                                         target.number)])


def remove_share(repo, name: str) -> None:
    """Remove a share that has no versions left (S3 DeleteBucket): its empty folders and grants
    go with it.  NotEmpty while any version (current, old or delete marker) remains."""
    def build(s: Session) -> list[dict]:
        share = s.scalar(select(m.Share).where(m.Share.name == name))
        if share is None:
            raise NotFound(f"no share {name!r}")
        left = s.execute(text("SELECT 1 FROM versions v JOIN nodes n ON n.id = v.node_id "
                              "WHERE n.share_id = :s LIMIT 1"), {"s": share.id}).first()
        if left is not None:
            raise NotEmpty(f"share {name!r} still has versions")
        return [{"op": "share_del", "at": now_us(), "share": share.id, "name": name}]
    repo.mutate(build, audit=lambda evs: [repo.audit_row("share_del", None, name)])


def ensure_folders(fs, key: str) -> None:
    """Create the folders a key's "/"s imply (S3 PUT of "a/b/c" makes folders a and a/b)."""
    parts = fs._writable_view(key).parts
    if len(parts) <= 1:
        return
    try:                        # the common case, the folder is there: a read, not a write transaction
        with fs.repo.catalog.session() as s:
            _node, kind, _ = fs._walk(s, parts[:-1], None)
        if kind == "dir":
            return
    except ArchiveError:
        pass                    # missing (or a file in the way: mkdir_many says so)
    fs.mkdir_many(["/".join(parts[:-1])])


__all__ = ["ObjectVersion", "iter_keys", "versions_of", "current", "node_of", "version", "open_version",
           "copy_version", "purge_version", "remove_share", "share_policy", "worm_until", "ensure_folders",
           "load_meta", "split", "ReadOnly"]


def delete_marker(fs, key: str) -> int | None:
    """A tombstone version for `key` whether or not it exists now (S3 stacks delete markers, and
    DELETE of an absent key in a versioned bucket still writes one).  Returns its version number,
    or None when the key's folder does not exist (nothing to mark)."""
    from .errors import IsADirectory, NotADirectory
    v = fs._writable_view(key)

    def build(s: Session) -> list[dict]:
        try:
            parent = fs._parent(s, v.parts)
        except (NotFound, NotADirectory):
            return []
        row = fs._child(s, parent, v.parts[-1], None)
        if row is not None and row[1] == "dir":
            raise IsADirectory(f"{key} is a folder")
        ev = fs.commit_event(s, v.parts, 0, None, "", deleted=True)
        ev["unlink"] = True
        return [ev]
    evs = fs.repo.mutate(build, audit=fs._audit("delete", "/" + "/".join(v.parts)))
    return evs[-1]["number"] if evs else None
