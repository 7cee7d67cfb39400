"""ShareFS: the one API every protocol adapter uses to see and change a share.

A ShareFS is bound to one share, one user's rights and one origin (protocol + client address),
so every change it makes is checked and audited the same way whichever protocol asked.
Paths are share-relative; `/.snapshots/@GMT-…/` is a virtual read-only view of the past.
"""
from __future__ import annotations

from collections import namedtuple
from typing import TYPE_CHECKING, Iterator

from . import rawsql as raw
from . import usage
from .lazysql import and_, case, func, lazy_text, or_, select
from .lazysql import models as m
from .clock import gmt_token, now_us, parse_gmt_token, seconds, to_us
from .errors import (Conflict, Exists, InvalidPath, IsADirectory, NotADirectory, NotEmpty, NotFound,
                     PermissionDenied, ReadOnly)
from .paths import SNAPSHOTS, fold, join, split
from .types import Entry, Origin, Version, etag_text

_new_object, _set_attr = object.__new__, object.__setattr__

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

VIRTUAL_BASE = 1 << 62        # node ids of virtual folders (.snapshots, its tokens)


#: a child of a folder by its name's case fold k: name_fold is NULL where the name is its own
#: fold (migration 0011), so k is either the stored fold (partial index ix_dentries_parent_fold)
#: or the name itself (ix_dentries_parent_name); the arms name the parent each, so that SQLite
#: searches both indexes (MULTI-INDEX OR) instead of scanning the folder
_FOLD_MATCH = "((d.parent_id = ? AND d.name_fold = ?) OR (d.parent_id = ? AND d.name = ? AND d.name_fold IS NULL))"


def _name_key(ci: bool, parent: int, name: str) -> tuple:
    """The parameters (parent, name) of a lookup of `name` (case-insensitive: by its fold)."""
    if not ci:
        return (parent, name)
    k = fold(name)
    return (parent, k, parent, k)


def _child_sql(ci: bool, now: bool) -> str:
    col = _FOLD_MATCH if ci else "d.parent_id = ? AND d.name = ?"
    alive = "d.valid_to IS NULL" if now else "d.valid_from <= ? AND (d.valid_to IS NULL OR d.valid_to > ?)"
    return (f"SELECT d.node_id, n.kind, d.name FROM dentries d JOIN nodes n ON n.id = d.node_id "
            f"WHERE {col} AND {alive} ORDER BY d.valid_from DESC LIMIT 1")


# The hottest lookups run as plain SQL on the DBAPI cursor (archive/rawsql.py): one path component
# costs a few microseconds instead of a SQLAlchemy statement's ~100.
_CHILD_SQL = {(ci, now): _child_sql(ci, now) for ci in (False, True) for now in (False, True)}
#: the columns of m.Version, in the table's order (spelled out: the models import SQLAlchemy;
#: tests/test_commit_path.py keeps the two in step)
VersionRow = namedtuple("VersionRow", ["id", "node_id", "number", "size", "mtime", "created_at", "deleted", "etag",
                                       "origin_protocol", "origin_user", "origin_address", "meta", "chunk"])
# (mtime: stored NULL when equal to created_at, migration 0016)
_VCOLS = ", ".join('coalesce("mtime", "created_at")' if c == "mtime" else f'"{c}"' for c in VersionRow._fields)
_CURRENT_SQL = f"SELECT {_VCOLS} FROM versions WHERE node_id = ? ORDER BY number DESC LIMIT 1"
_CURRENT_AT_SQL = (f"SELECT {_VCOLS} FROM versions WHERE node_id = ? AND created_at <= ? "
                   "ORDER BY number DESC LIMIT 1")
_NODE_TIMES_SQL = "SELECT created_at, coalesce(mtime, created_at) FROM nodes WHERE id = ?"
_LAST_NUMBER_SQL = "SELECT number, created_at FROM versions WHERE node_id = ? ORDER BY number DESC LIMIT 1"

# The live entry of a name, else the newest file it had (a deleted file whose history a new
# file of that name continues): what a live-entry lookup and then a newest-file lookup found.
_NAME_SQL = {ci: (
    "SELECT d.node_id, n.kind, d.name, d.valid_to FROM dentries d JOIN nodes n ON n.id = d.node_id "
    f"WHERE {_FOLD_MATCH if ci else 'd.parent_id = ? AND d.name = ?'} "
    "AND (d.valid_to IS NULL OR n.kind = 'file') ORDER BY (d.valid_to IS NULL) DESC, d.valid_from DESC LIMIT 1")
    for ci in (False, True)}
_VERSION_TEXT = "SELECT id, size, etag, deleted FROM versions WHERE node_id = :n AND number = :v"
_VERSION_SQL = lazy_text(_VERSION_TEXT)
_LINKED_SQL = "SELECT 1 FROM dentries WHERE node_id = ? AND valid_to IS NULL LIMIT 1"
_ANY_CHILD_SQL = "SELECT 1 FROM dentries WHERE parent_id = ? AND valid_to IS NULL LIMIT 1"
_NODE_SHARE_SQL = "SELECT share_id FROM nodes WHERE id = ?"
#: where a node is linked (now / at an instant): node_path walks these upward
_UP_SQL = {True: "SELECT parent_id, name FROM dentries WHERE node_id = ? AND valid_to IS NULL "
                 "ORDER BY valid_from DESC LIMIT 1",
           False: "SELECT parent_id, name FROM dentries WHERE node_id = ? AND valid_from <= ? AND "
                  "(valid_to IS NULL OR valid_to > ?) ORDER BY valid_from DESC LIMIT 1"}


#: one page of a folder listing (now / at an instant): rawsql.list_page_sql
_LIST_SQL = {now: raw.list_page_sql(now) for now in (False, True)}


class _View:
    """A parsed path: components inside the share, the instant to look at, read-only or not."""
    __slots__ = ("parts", "at", "readonly", "virtual", "prefix")

    def __init__(self, parts, at, readonly, virtual=None, prefix=()):
        self.parts, self.at, self.readonly, self.virtual, self.prefix = parts, at, readonly, virtual, prefix


class ShareFS:
    #: the access.Login this ShareFS was opened for (Login.share sets it): writes re-check its grant
    login = None

    def __init__(self, repo, share: m.Share, writable: bool, origin: Origin, case_insensitive: bool = False):
        self.repo = repo
        self.share_name = share.name
        self.share_id = share.id
        self.root = share.root_node
        self.quota = share.quota
        self.writable = writable
        self.origin = origin
        self.ci = case_insensitive

    def _show(self, where: "str | tuple[str, ...]") -> str:
        """A path as users address it, ``/<share>/<path>``: what every error message names,
        so a user who typed /office/a/b never reads a bare /a/b."""
        parts = split(where) if isinstance(where, str) else where
        return f"/{self.share_name}{join(parts) if parts else ''}"

    # -- path resolution ---------------------------------------------------------------------
    def _view(self, path: str, at=None) -> _View:
        parts = split(path)
        at_us = to_us(at)
        if parts and parts[0] == SNAPSHOTS:
            if len(parts) == 1:
                return _View((), at_us, True, virtual="snapshots")
            token_at = parse_gmt_token(parts[1])
            if token_at is None:
                raise NotFound(f"no snapshot {parts[1]!r} (tokens look like @GMT-2026.11.24-10.00.00)")
            return _View(parts[2:], token_at, True, prefix=parts[:2])
        return _View(parts, at_us, at_us is not None)

    def _writable_view(self, path: str, authorize: bool = True) -> _View:
        """The view of a path a change may be made at.  `authorize=False`: the caller checks the
        login's grant itself, inside the transaction it opens next (``_authorize(s)``), rather
        than in a read transaction of its own here (one less per FTP STOR and MFMT)."""
        v = self._view(path)
        if v.readonly or v.virtual:
            raise ReadOnly(f"{self._show(path)}: snapshots are read-only")
        if not self.writable:
            raise PermissionDenied(f"read-only access to share {self.share_name!r}")
        if not v.parts:
            raise InvalidPath(f"{self._show(())} is the root of share {self.share_name!r}: it cannot be changed")
        if authorize:
            self._authorize()
        return v

    def _authorize(self, s: Session | None = None) -> None:
        """A login's grant as of now (inside `s`, the commit's own transaction, when given): a
        revoke or a change to read-only stops the next write, uploads in flight included."""
        if self.login is not None and self.login.mode(self.share_name, s) != "rw":
            raise PermissionDenied(f"no write access to share {self.share_name!r} any more")

    def _alive(self, q, at):
        if at is None:
            return q.where(m.Dentry.valid_to.is_(None))
        return q.where(m.Dentry.valid_from <= at, or_(m.Dentry.valid_to.is_(None), m.Dentry.valid_to > at))

    def _child(self, s: Session, parent: int, name: str, at: int | None):
        """(node_id, kind, stored name) of a live entry, or None (the hottest query: plain SQL)."""
        key = _name_key(self.ci, parent, name)
        if at is None:
            return raw.one(s, _CHILD_SQL[(self.ci, True)], key)
        return raw.one(s, _CHILD_SQL[(self.ci, False)], key + (at, at))

    def _walk(self, s: Session, parts: tuple[str, ...], at: int | None) -> tuple[int, str, str]:
        """(node_id, kind, name) of the path; NotFound / NotADirectory on the way."""
        node, kind, name = self.root, "dir", ""
        for i, p in enumerate(parts):
            if kind != "dir":
                raise NotADirectory(f"{self._show(parts[:i])} is not a folder")
            row = self._child(s, node, p, at)
            if row is None:
                raise NotFound(f"{self._show(parts[:i + 1])}: no such file or folder")
            node, kind, name = row
        return node, kind, name

    def _parent(self, s: Session, parts: tuple[str, ...]) -> int:
        """The folder node that holds `parts`.  Batches of commits (which change no folders)
        put a dict in `s.info["parents"]` so each folder is resolved once per transaction."""
        cache = s.info.get("parents")
        key = (self.share_id, self.ci, parts[:-1])
        if cache is not None and key in cache:
            return cache[key]
        node, kind, _ = self._walk(s, parts[:-1], None)
        if kind != "dir":
            raise NotADirectory(f"{self._show(parts[:-1])} is not a folder")
        if cache is not None:
            cache[key] = node
        return node

    def _current_version(self, s: Session, node: int, at: int | None):
        """The newest version row of a node (at an instant), or None."""
        row = raw.one(s, _CURRENT_SQL, (node,)) if at is None else raw.one(s, _CURRENT_AT_SQL, (node, at))
        return None if row is None else VersionRow(*row[:7], etag_text(row[7]), *row[8:])

    def _entry(self, v: _View, name: str, node: int, kind: str, ctime: int, mtime: int,
               ver: m.Version | None) -> Entry:
        path = join(v.prefix + v.parts)
        if kind == "dir":
            return Entry(name, path, "dir", 0, seconds(mtime), seconds(ctime), node, None,
                         f"d{node}-{mtime}", v.readonly or not self.writable)
        size = ver.size if ver else 0
        return Entry(name, path, "file", size, seconds(ver.mtime if ver else mtime), seconds(ctime), node,
                     ver.number if ver else None, ver.etag if ver else "", v.readonly or not self.writable)

    # -- reading -----------------------------------------------------------------------------
    def stat(self, path: str, at=None) -> Entry:
        v = self._view(path, at)
        if v.virtual == "snapshots":
            return Entry(SNAPSHOTS, "/" + SNAPSHOTS, "dir", 0, seconds(now_us()), 0.0, VIRTUAL_BASE, None,
                         "snapshots", True)
        with raw.read(self.repo.catalog) as s:     # plain SQL only: no Session (rawsql.read)
            node, kind, name = self._walk(s, v.parts, v.at)
            ctime, mtime = raw.one(s, _NODE_TIMES_SQL, (node,))
            ver = self._current_version(s, node, v.at) if kind == "file" else None
        if not v.parts and v.prefix:
            name = v.prefix[-1]
            return Entry(name, join(v.prefix), "dir", 0, seconds(v.at), seconds(v.at),
                         VIRTUAL_BASE + v.at // 1_000_000, None, name, True)
        return self._entry(v, name or "/", node, kind, ctime, mtime, ver)

    def exists(self, path: str, at=None) -> bool:
        try:
            self.stat(path, at)
            return True
        except (NotFound, NotADirectory):
            return False

    def listdir(self, path: str, at=None, page: int = 1000, after: str = "") -> Iterator[Entry]:
        """Entries sorted by name, fetched in pages so huge folders stream (the first page holds
        `page` entries, later ones more); `after` resumes the listing after that name (NFS
        READDIR cookies), whether or not the name still exists."""
        v = self._view(path, at)
        if v.virtual == "snapshots":
            for tok in self.snapshot_tokens():
                if tok <= after:
                    continue
                t = parse_gmt_token(tok)
                yield Entry(tok, f"/{SNAPSHOTS}/{tok}", "dir", 0, seconds(t), seconds(t),
                            VIRTUAL_BASE + t // 1_000_000, None, tok, True)
            return
        # Plain SQL on the DBAPI cursor and Entries built from tuples: per entry, SQLAlchemy's
        # result rows and a dataclass __init__ cost more than SQLite's own work (docs/benchmarks.md).
        # The path walk and the first page share one read transaction, and each page asks for one
        # row more than it yields, so a folder that fits in one page costs one session in all.
        sql = _LIST_SQL[v.at is None]
        base = join(v.prefix + v.parts).rstrip("/")
        ro = v.readonly or not self.writable
        lim = page

        def params() -> tuple:
            if v.at is None:
                return node, after, lim + 1
            return v.at, node, v.at, v.at, after, lim + 1

        # Plain-SQL read transactions (rawsql.read, as stat has): a Session's set-up and commit
        # are SQLAlchemy Python paid once per folder of a tree walk (docs/benchmarks.md, walk9).  Each
        # Entry is built here as types.listed_entry builds it (the CLI's lean listing uses that;
        # tests/test_sharefs.py keeps the two equal), without its two calls per entry.
        with raw.read(self.repo.catalog) as s:
            node, kind, _ = self._walk(s, v.parts, v.at)
            if kind != "dir":
                raise NotADirectory(f"{self._show(path)} is not a folder")
            rows = raw.run(s, sql, params()).fetchall()
        pre = base + "/"
        new, put = _new_object, _set_attr
        while True:
            more = len(rows) > lim
            if more:
                del rows[lim:]
            for name, nid, kind, ctime, nmtime, number, size, vmtime, etag in rows:
                e = new(Entry)        # the frozen dataclass's fields as one dict literal (types.entry_of)
                if kind == "dir":
                    put(e, "__dict__", {"name": name, "path": pre + name, "kind": "dir", "size": 0,
                                        "mtime": nmtime / 1_000_000, "ctime": ctime / 1_000_000, "node_id": nid,
                                        "version": None, "etag": f"d{nid}-{nmtime}", "readonly": ro})
                else:
                    put(e, "__dict__", {"name": name, "path": pre + name, "kind": "file", "size": size or 0,
                                        "mtime": (vmtime if vmtime is not None else nmtime) / 1_000_000,
                                        "ctime": ctime / 1_000_000, "node_id": nid, "version": number,
                                        "etag": etag.hex() if etag.__class__ is bytes and len(etag) == 16
                                        else etag_text(etag), "readonly": ro})
                yield e
            if not more:
                return
            after = rows[-1][0]
            lim = min(lim * 4, max(page, 16_384))     # the first entries soon, then fewer round trips
            with raw.read(self.repo.catalog) as s:
                rows = raw.run(s, sql, params()).fetchall()

    def current_files(self, folders: list[tuple[str, ...]]) -> dict[tuple[str, ...], dict[str, tuple]]:
        """What a tree upload compares against: per folder (validated parts), its live entries
        as name -> (kind, size, mtime in us, etag) of the newest version, all in one read
        transaction (one listing query per folder; each folder resolved from its parent's node).
        A folder that does not exist (or is a file) is left out."""
        sql = _LIST_SQL[True]
        nodes: dict[tuple[str, ...], int | None] = {(): self.root}
        out: dict[tuple[str, ...], dict[str, tuple]] = {}
        with raw.read(self.repo.catalog) as s:
            for parts in sorted(set(folders), key=len):
                node = nodes.get(parts, 0)
                if node == 0:             # not resolved yet: walk from the nearest resolved parent
                    node = self.root
                    for i in range(1, len(parts) + 1):
                        got = nodes.get(parts[:i], 0)
                        if got == 0:
                            row = None if node is None else self._child(s, node, parts[i - 1], None)
                            got = nodes[parts[:i]] = row[0] if row is not None and row[1] == "dir" else None
                        node = got
                if node is None:
                    continue
                out[parts] = {r[0]: (r[2], r[6] or 0, r[7] if r[7] is not None else r[4], etag_text(r[8]))
                              for r in raw.run(s, sql, (node, "", 1 << 62)).fetchall()}
        return out

    def _file_version(self, s: Session, v: _View, version: int | None) -> m.Version:
        node, kind, _ = self._walk(s, v.parts, v.at) if version is None else self._find_node(s, v)
        if kind == "dir":
            raise IsADirectory(f"{self._show(v.parts)} is a folder")
        if version is not None:
            row = s.scalar(select(m.Version).where(m.Version.node_id == node, m.Version.number == version))
            if row is None:
                raise NotFound(f"{self._show(v.parts)} has no version {version}")
        else:
            row = self._current_version(s, node, v.at)
            if row is None:
                raise NotFound(f"{self._show(v.parts)} has no content yet")
        if row.deleted:
            raise NotFound(f"{self._show(v.parts)} version {row.number} is a deletion")
        return row

    def open_read(self, path: str, version: int | None = None, at=None):
        """A random-access Reader of the current (or given, or past) content."""
        from .streams import Reader
        v = self._view(path, at)
        if v.virtual:
            raise IsADirectory(f"{self._show(path)} is a folder")
        # The current or a past content is found by plain SQL alone (no Session); a numbered
        # version may need the ORM (a deleted file's last node).
        with (raw.read(self.repo.catalog) if version is None else self.repo.catalog.session()) as s:
            row = self._file_version(s, v, version)
        return Reader(self.repo, row.id, row.size, row.etag)

    def open_entry(self, entry: Entry):
        """A Reader of exactly the version a listing returned, without walking its path again
        (what a tree download does for every file)."""
        from .streams import Reader
        if entry.is_dir or entry.version is None:
            shown = self._show(entry.path)
            raise IsADirectory(f"{shown} is a folder") if entry.is_dir else NotFound(f"{shown}: no such file")
        params = {"n": entry.node_id, "v": entry.version}
        catalog = self.repo.catalog
        if catalog.is_sqlite:          # as the Reader's window: no Connection, compile or Result
            rows = raw.select_all(catalog, _VERSION_TEXT, params)
            row = rows[0] if rows else None
        else:
            with catalog.engine.connect() as c:
                row = c.execute(_VERSION_SQL, params).first()
                c.rollback()
        if row is None or row[3]:
            raise NotFound(f"{self._show(entry.path)} version {entry.version} is gone")
        return Reader(self.repo, row[0], row[1], etag_text(row[2]))

    def _find_node(self, s: Session, v: _View) -> tuple[int, str, str]:
        """The node at a path, or, if nothing is there now, the last one that was (deleted files)."""
        try:
            return self._walk(s, v.parts, v.at)
        except NotFound:
            if not v.parts:
                raise
        parent, _, _ = self._walk(s, v.parts[:-1], v.at)
        name = v.parts[-1]
        q = select(m.Dentry.node_id, m.Node.kind, m.Dentry.name).join(m.Node, m.Node.id == m.Dentry.node_id)
        if self.ci:                      # as _FOLD_MATCH: each arm names the parent (both indexes)
            k, d = fold(name), m.Dentry
            q = q.where(or_(and_(d.parent_id == parent, d.name_fold == k),
                            and_(d.parent_id == parent, d.name == k, d.name_fold.is_(None))))
        else:
            q = q.where(m.Dentry.parent_id == parent, m.Dentry.name == name)
        row = s.execute(q.order_by(m.Dentry.valid_from.desc()).limit(1)).first()
        if row is None:
            raise NotFound(f"{self._show(v.parts)}: no such file or folder, now or before")
        return tuple(row)

    def versions(self, path: str) -> list[Version]:
        """Every version of the file at `path` (also after it was deleted), oldest first."""
        v = self._view(path)
        with self.repo.catalog.session() as s:
            node, kind, _ = self._find_node(s, v)
            if kind == "dir":
                raise IsADirectory(f"{self._show(path)} is a folder")
            rows = list(s.scalars(select(m.Version).where(m.Version.node_id == node).order_by(m.Version.number)))
        return [_version(r) for r in rows]

    #: `.snapshots` coarsening policy (seconds): every changed second younger than RECENT, the
    #: last change of each hour younger than HOURLY, then the last change of each (UTC) day.
    SNAPSHOTS_RECENT = 7 * 86400
    SNAPSHOTS_HOURLY = 30 * 86400

    def snapshot_tokens(self, *, now: float | None = None) -> list[str]:
        """One @GMT token per second in which the share changed, oldest first; history older than
        SNAPSHOTS_RECENT keeps one per hour, older than SNAPSHOTS_HOURLY one per day (each named
        after the last change in it).  One indexed query on share_changes.  `now`: for tests."""
        now_s = int(now if now is not None else now_us() / 1_000_000)
        recent = (now_s - self.SNAPSHOTS_RECENT) // 3600 * 3600          # hour-aligned
        hourly = (now_s - self.SNAPSHOTS_HOURLY) // 86400 * 86400        # day-aligned: buckets disjoint
        t = m.ShareChange.at_s
        bucket = case((t >= recent, t), (t >= hourly, t - t % 3600), else_=t - t % 86400)
        q = select(func.max(t)).where(m.ShareChange.share_id == self.share_id).group_by(bucket)
        with self.repo.catalog.session() as s:
            rows = s.execute(q).scalars().all()
        return [gmt_token(x * 1_000_000) for x in sorted(rows)]

    def get_props(self, path: str) -> dict[str, str]:
        v = self._view(path)
        with self.repo.catalog.session() as s:
            node, _, _ = self._walk(s, v.parts, v.at)
            return {p.name: p.value for p in s.scalars(select(m.Property).where(m.Property.node_id == node))}

    def child_props(self, path: str) -> dict[str, dict[str, str]]:
        """Dead properties of every child of a folder in one query (PROPFIND allprop, Win32 times)."""
        v = self._view(path)
        with self.repo.catalog.session() as s:
            node, _, _ = self._walk(s, v.parts, v.at)
            q = select(m.Dentry.name, m.Property.name, m.Property.value) \
                .join(m.Property, m.Property.node_id == m.Dentry.node_id) \
                .where(m.Dentry.parent_id == node)
            rows = s.execute(self._alive(q, v.at)).all()
        out: dict[str, dict[str, str]] = {}
        for child, name, value in rows:
            out.setdefault(child, {})[name] = value
        return out

    def usage(self) -> tuple[int, int | None]:
        """Logical bytes of the share's current files, and its quota: the share's counter
        (archive/usage.py), one row, whatever the number of files.  The quota is read with it,
        so a quota set since this ShareFS was opened applies."""
        with raw.read(self.repo.catalog) as s:      # plain SQL: a put to a share with a quota needs no Session
            row = raw.one(s, usage.USED_SQL, (self.share_id,))
        if row is None:
            raise NotFound(f"no share {self.share_name!r}")
        self.quota = row[1]
        return int(row[0]), row[1]

    # -- writing -----------------------------------------------------------------------------
    def open_write(self, path: str, mtime: float | None = None, check: bool = True):
        """A sequential Writer; commit() makes exactly one new version, abort() none.

        check=False skips the early lookup (missing folder, folder in the way) for callers that
        just listed the folder; the commit validates the same things anyway."""
        from .streams import Writer
        v = self._writable_view(path, authorize=not check)
        if check:
            self._precheck_file_target(v.parts, authorize=True)
        return Writer(self, v.parts, mtime=mtime)

    def append(self, path: str):
        """A Writer that starts with the current content (FTP APPE): unchanged chunks are reused."""
        from .streams import Writer
        v = self._writable_view(path)
        base = self._write_base(v.parts, create=True)
        w = Writer(self, v.parts)
        if base is not None:
            w.seed_from(base.id, base.size)
        return w

    def open_update(self, path: str, truncate: bool = False, create: bool = True):
        """Random writes staged in a sparse local file; commit() makes one version if anything changed."""
        from .streams import Updater
        v = self._writable_view(path)
        return Updater(self, v.parts, self._write_base(v.parts, create), truncate)

    def _write_base(self, parts: tuple[str, ...], create: bool):
        """The current (non-deleted) version a modifying writer starts from, or None."""
        self._precheck_file_target(parts)
        with raw.read(self.repo.catalog) as s:
            try:
                node, _, _ = self._walk(s, parts, None)
            except NotFound:
                if not create:
                    raise
                return None
            cur = self._current_version(s, node, None)
        return cur if cur is not None and not cur.deleted else None

    def _precheck_file_target(self, parts: tuple[str, ...], authorize: bool = False) -> None:
        """Fail before any byte is sent: missing parent, or a folder where the file should go;
        `authorize`: and no write grant any more, in the same read transaction.
        (Plain SQL lookups only: a read transaction without a Session, on the commit path's
        own connections; see rawsql.read.)"""
        with raw.read(self.repo.catalog) as s:
            if authorize:
                self._authorize(s)
            parent = self._parent(s, parts)
            row = self._child(s, parent, parts[-1], None)
            if row is not None and row[1] == "dir":
                raise IsADirectory(f"{self._show(parts)} is a folder")

    def commit_event(self, s: Session, parts: tuple[str, ...], size: int, mtime: int | None, etag: str,
                     chunks: list | None = None, copy_of: tuple[int, int] | None = None, deleted: bool = False,
                     at: int | None = None, known: tuple | None = None) -> dict:
        """Build the event for a new version at `parts` (inside a write transaction).
        `known`: what `_name` just gave for it in this transaction (not looked up again)."""
        self._authorize(s)
        parent = self._parent(s, parts)
        name = parts[-1]
        row, old = known if known is not None else self._name(s, parent, name)
        at = at or now_us()
        ev = {"op": "commit", "share": self.share_id, "parent": parent, "size": size, "etag": etag,
              "origin": self.origin.as_dict(), "deleted": deleted}
        if row is not None:
            node, kind, stored = row
            if kind == "dir":
                raise IsADirectory(f"{self._show(parts)} is a folder")
            ev.update(node=node, name=stored)
        else:
            ev.update(name=name, link=True)
            if old is not None:
                ev["node"] = old
            else:
                ev.update(node=self.repo.next_id(s, "nodes"), new_node=True)
        last = None if ev.get("new_node") else raw.one(s, _LAST_NUMBER_SQL, (ev["node"],))
        ev["number"] = (last[0] + 1) if last else 1
        ev["at"] = max(at, (last[1] + 1) if last else 0)
        ev["mtime"] = mtime if mtime is not None else ev["at"]
        if copy_of:
            ev["copy_of"] = list(copy_of)
        elif chunks:
            # Compact: one hex string of ids and a list of lengths (a 4 GiB file has ~50,000 chunks).
            ev["ids"] = bytes(chunks.ids).hex()
            ev["lens"] = chunks.lens.tolist()
        return ev

    def _name(self, s: Session, parent: int, name: str) -> tuple[tuple | None, int | None]:
        """(the live entry of `name` as _child gives it, or None; else the node of the newest
        deleted file of that name, which a new file continues unless that node is linked
        elsewhere now (moved away), or None).  One statement where two ran before."""
        row = raw.one(s, _NAME_SQL[self.ci], _name_key(self.ci, parent, name))
        if row is None:
            return None, None
        if row[3] is None:
            return row[:3], None
        return None, (None if raw.scalar(s, _LINKED_SQL, (row[0],)) else row[0])

    def _audit(self, action: str, path: str):
        def rows(evs: list[dict]) -> list[dict]:
            version = next((e.get("number") for e in evs if e["op"] == "commit"), None)
            return [self.repo.audit_row(action, self.origin, self.share_name, path, version)]
        return rows

    def mkdir(self, path: str, parents: bool = False) -> Entry:
        v = self._writable_view(path)
        if parents:
            for i in range(1, len(v.parts)):
                sub = join(v.parts[:i])
                if not self.exists(sub):
                    try:
                        self.mkdir(sub)
                    except Exists:
                        pass

        def build(s: Session) -> list[dict]:
            parent = self._parent(s, v.parts)
            if self._child(s, parent, v.parts[-1], None) is not None:
                raise Exists(f"{self._show(v.parts)} exists")
            return [{"op": "mkdir", "at": now_us(), "share": self.share_id, "parent": parent,
                     "name": v.parts[-1], "node": self.repo.next_id(s, "nodes")}]
        ev = self.repo.mutate_grouped(build, audit=self._audit("mkdir", join(v.parts)))[0]
        return self._made(v, ev, "dir")

    def _made(self, v: _View, ev: dict, kind: str) -> Entry:
        """The Entry of a node this ShareFS just created (mkdir, create_file), from its event:
        what `stat` would read back right after the commit, without the read transaction."""
        return self._entry(v, ev["name"], ev["node"], kind, ev["at"], ev["at"], None)

    def mkdir_many(self, paths: list[str]) -> int:
        """Create every missing folder of `paths` (and their parents) in one transaction; returns
        how many were created (a tree upload with thousands of folders)."""
        wanted: set[tuple[str, ...]] = set()
        for p in paths:
            parts = self._writable_view(p).parts
            wanted.update(parts[:i] for i in range(1, len(parts) + 1))

        def build(s: Session) -> list[dict]:
            evs = []
            cache = s.info["parents"] = {}       # every folder resolved or created once
            for parts in sorted(wanted, key=lambda p: (len(p), p)):
                parent = self._parent(s, parts)
                row = self._child(s, parent, parts[-1], None)
                if row is not None:
                    if row[1] != "dir":
                        raise NotADirectory(f"{self._show(parts)} is a file")
                    cache[(self.share_id, self.ci, parts)] = row[0]
                    continue
                ev = {"op": "mkdir", "at": now_us(), "share": self.share_id, "parent": parent,
                      "name": parts[-1], "node": self.repo.next_id(s, "nodes")}
                cache[(self.share_id, self.ci, parts)] = ev["node"]
                evs.append(ev)
            del s.info["parents"]
            return evs
        evs = self.repo.mutate(build, audit=lambda evs: [
            self.repo.audit_row("mkdir", self.origin, self.share_name, "(batch)", detail=f"{len(evs)} folders")]
            if evs else [], plain=True)
        return len(evs)

    def ensure_folders(self, path: str, target: bool = False) -> int:
        """Create the folders a file path's "/"s imply that are missing (S3 PUT of "a/b/c" makes
        folders a and a/b); returns how many were created.  `target=True` also fails, as
        ``open_write``'s early check does, when a folder is where the file should go, so the
        caller may then ``open_write(path, check=False)``.

        When the folders exist (the common case) this is one plain-SQL read (Catalog.raw_read),
        no write transaction; a path without "/" needs no folder at all.  A folder removed after
        this check is not a race the caller loses silently: the commit resolves the parent again
        inside its own write transaction (``commit_event`` -> ``_parent``) and fails with
        NotFound, as a write into a missing folder always does."""
        parts = self._writable_view(path).parts
        if len(parts) <= 1 and not target:
            return 0
        missing = False
        with self.repo.catalog.raw_read() as s:
            try:
                parent, kind, _ = self._walk(s, parts[:-1], None)
            except (NotFound, NotADirectory):
                missing = True        # missing, or a file in the way (mkdir_many says which)
            else:
                if kind != "dir":
                    missing = True
                elif target:
                    row = self._child(s, parent, parts[-1], None)
                    if row is not None and row[1] == "dir":
                        raise IsADirectory(f"{self._show(parts)} is a folder")
        if not missing:
            return 0
        made = self.mkdir_many([join(parts[:-1])])
        if target:
            self._precheck_file_target(parts)
        return made

    def rmdir(self, path: str) -> None:
        v = self._writable_view(path)

        def build(s: Session) -> list[dict]:
            parent = self._parent(s, v.parts)
            row = self._child(s, parent, v.parts[-1], None)
            if row is None:
                raise NotFound(f"{self._show(path)}: no such folder")
            if row[1] != "dir":
                raise NotADirectory(f"{self._show(path)} is not a folder")
            if raw.one(s, _ANY_CHILD_SQL, (row[0],)) is not None:
                raise NotEmpty(f"{self._show(path)} is not empty")
            return [{"op": "unlink", "at": now_us(), "parent": parent, "name": row[2]}]
        self.repo.mutate_grouped(build, audit=self._audit("rmdir", join(v.parts)))

    def remove(self, path: str) -> int:
        """Delete a file: a tombstone version; the history stays and `restore` brings it back.
        Returns the file's node id (NFS forgets what it cached of it)."""
        return self.remove_at(path)[0]

    def remove_at(self, path: str) -> tuple[int, int]:
        """`remove`, returning the file's node id and the time of its tombstone (microseconds,
        archive.clock), which is the folder's new mtime (the same event unlinks the name): NFS answers the folder's
        attributes after a REMOVE without reading the folder again."""
        v = self._writable_view(path)

        def build(s: Session) -> list[dict]:
            parent = self._parent(s, v.parts)
            known = self._name(s, parent, v.parts[-1])
            row = known[0]
            if row is None:
                raise NotFound(f"{self._show(path)}: no such file")
            if row[1] == "dir":
                raise IsADirectory(f"{self._show(path)} is a folder")
            ev = self.commit_event(s, v.parts, 0, None, "", deleted=True, known=known)
            ev["unlink"] = True
            return [ev]
        ev = self.repo.mutate_grouped(build, audit=self._audit("delete", join(v.parts)))[0]
        return ev["node"], ev["at"]

    def rename(self, src: str, dst: str, overwrite: bool = False) -> None:
        """Move a file or folder; the node (identity, history, inode) moves with it."""
        vs, vd = self._writable_view(src), self._writable_view(dst)
        if vs.parts == vd.parts:
            self.stat(src)        # NotFound when there is nothing there
            return                # a name renamed to itself: nothing changes, no event, no audit
        if vd.parts[:len(vs.parts)] == vs.parts and len(vd.parts) > len(vs.parts):
            raise InvalidPath(f"cannot move {self._show(src)} into itself")

        def build(s: Session) -> list[dict]:
            sp = self._parent(s, vs.parts)
            srow = self._child(s, sp, vs.parts[-1], None)
            if srow is None:
                raise NotFound(f"{self._show(src)}: no such file or folder")
            dp = self._parent(s, vd.parts)
            drow = self._child(s, dp, vd.parts[-1], None)
            evs = []
            at = now_us()
            if drow is not None and drow[0] != srow[0]:
                if drow[1] == "dir":
                    raise Exists(f"{self._show(dst)} is an existing folder")
                if not overwrite:
                    raise Exists(f"{self._show(dst)} exists")
                if srow[1] == "dir":
                    raise NotADirectory(f"{self._show(dst)} is a file")
                ev = self.commit_event(s, vd.parts, 0, None, "", deleted=True, at=at)
                ev["unlink"] = True
                evs.append(ev)
                at = ev["at"] + 1
            evs.append({"op": "rename", "at": at, "node": srow[0], "parent": sp, "name": srow[2],
                        "new_parent": dp, "new_name": vd.parts[-1]})
            return evs
        self.repo.mutate_grouped(build, audit=lambda evs: [self.repo.audit_row(
            "rename", self.origin, self.share_name, join(vs.parts), detail=join(vd.parts))])

    def copy(self, src: str, dst: str, overwrite: bool = False) -> Version:
        """Copy a file by reference: the new version shares the source's chunks, nothing is rewritten."""
        vs, vd = self._view(src), self._writable_view(dst)

        def build(s: Session) -> list[dict]:
            row = self._file_version(s, vs, None)
            dp = self._parent(s, vd.parts)
            drow = self._child(s, dp, vd.parts[-1], None)
            if drow is not None and not overwrite:
                raise Exists(f"{self._show(dst)} exists")
            return [self.commit_event(s, vd.parts, row.size, row.mtime, row.etag, copy_of=(row.node_id, row.number))]
        evs = self.repo.mutate(build, audit=self._audit("copy", join(vd.parts)))
        return self._version_of(evs[-1])

    def set_times(self, path: str, mtime: float, version: tuple[int, int] | None = None) -> None:
        """Change a modification time; metadata only, no new version.  It shares durable commits
        with uploads and namespace changes arriving meanwhile (an FTP client's MFMT after each
        STOR, SMB's CLOSE, NFS SETATTR), as they do.

        `version`: (node, number) of the version the caller itself just made at `path` (FTP's
        MFMT right after its STOR): the time goes to that version, also when another client's
        upload made a newer one meanwhile, which keeps its own time.  If `path` names another
        file by now, the time goes to its current version as without `version`."""
        views = [(self._writable_view(path, authorize=False), mtime)]

        def build(s: Session) -> list[dict]:
            self._authorize(s)             # the grant, checked in the commit's own transaction
            evs = self._times_events(s, views)
            if version is not None and evs[0]["node"] == version[0] and evs[0].get("number"):
                evs[0]["number"] = min(evs[0]["number"], version[1])
            return evs
        self.repo.mutate_grouped(build, audit=self._times_audit(views))

    def set_times_many(self, items: list[tuple[str, float]]) -> None:
        """Several set_times in one transaction (a tree put whose files only got new mtimes).
        A path may also be a tuple of components already validated by check_name (a tree put's
        own): the checks of a writable path (share writable, the login's grant, not a snapshot)
        then run once, for the first item, rather than parsing every path again."""
        views = []
        for path, mtime in items:
            if isinstance(path, tuple) and views and path and path[0] != SNAPSHOTS:
                views.append((_View(path, None, False), mtime))
            else:
                views.append((self._writable_view(join(path) if isinstance(path, tuple) else path), mtime))

        def build(s: Session) -> list[dict]:
            s.info["parents"] = {}               # times change no folders: resolve each once
            evs = self._times_events(s, views)
            del s.info["parents"]
            return evs
        self.repo.mutate(build, audit=self._times_audit(views), plain=True)

    def _times_events(self, s: Session, views: list) -> list[dict]:
        evs = []
        for v, mtime in views:
            parent = self._parent(s, v.parts)
            row = self._child(s, parent, v.parts[-1], None)
            if row is None:
                raise NotFound(f"{self._show(v.parts)}: no such file or folder")
            node, kind = row[0], row[1]
            ev = {"op": "times", "at": now_us(), "node": node, "mtime": to_us(mtime)}
            if kind == "file":
                cur = raw.one(s, _LAST_NUMBER_SQL, (node,))
                if cur is None:
                    raise NotFound(f"{self._show(v.parts)} has no content yet")
                ev["number"] = cur[0]
            evs.append(ev)
        return evs

    def _times_audit(self, views: list):
        return lambda evs: [self.repo.audit_row("set_times", self.origin, self.share_name, join(v.parts))
                            for v, _ in views]

    def set_props(self, path: str, props: dict[str, str | None]) -> None:
        v = self._writable_view(path) if split(path) else self._view(path)

        def build(s: Session) -> list[dict]:
            node, _, _ = self._walk(s, v.parts, None)
            return [{"op": "props", "at": now_us(), "node": node, "props": props}]
        self.repo.mutate(build, audit=self._audit("proppatch", join(v.parts)))

    # -- restore -----------------------------------------------------------------------------
    def restore(self, path: str, version: int | None = None, at=None, progress=None) -> int:
        """Make old content the newest version (file), or bring a folder back as it was at `at`.

        Nothing is overwritten: each restored file gets a new version, and files that exist now
        but did not then are left alone.  Returns how many files got a new version.
        """
        v = self._writable_view(path) if split(path) else self._view(path)
        if not self.writable:
            raise PermissionDenied(f"read-only access to share {self.share_name!r}")
        at_us = to_us(at)
        if version is None and at_us is None:
            raise InvalidPath("restore needs a version or a time")
        with self.repo.catalog.session() as s:
            node, kind, _ = self._find_node(s, _View(v.parts, at_us, True)) if at_us is not None \
                else self._find_node(s, v)
        if kind == "file":
            return int(self._restore_file(v.parts, node, version, at_us))
        if version is not None:
            raise IsADirectory(f"{self._show(path)} is a folder: restore it with a time")
        if v.parts:
            self._bring_back_dir(v.parts, node)
        count = 0
        for rel_parts, fnode in self._tree_at(v.parts, at_us):
            if self._restore_file(rel_parts, fnode, None, at_us):
                count += 1
            if progress:
                progress(1)
        return count

    def _tree_at(self, parts: tuple[str, ...], at: int) -> Iterator[tuple[tuple[str, ...], int]]:
        for e in self.listdir(join(parts), at=seconds(at)):
            child = parts + (e.name,)
            if e.is_dir:
                self._bring_back_dir(child, e.node_id)
                yield from self._tree_at(child, at)
            else:
                yield child, e.node_id

    def _bring_back_dir(self, parts: tuple[str, ...], node: int) -> None:
        """Make sure a folder exists at `parts`: its old node re-linked if it is nowhere now (so the
        files inside continue their histories), else a new folder."""
        if self.exists(join(parts)):
            return
        if len(parts) > 1 and not self.exists(join(parts[:-1])):
            self.mkdir(join(parts[:-1]), parents=True)

        def build(s: Session) -> list[dict]:
            parent = self._parent(s, parts)
            if self._child(s, parent, parts[-1], None) is not None:
                return []
            linked = s.scalar(select(m.Dentry.id).where(m.Dentry.node_id == node, m.Dentry.valid_to.is_(None)))
            if linked is None:
                return [{"op": "link", "at": now_us(), "parent": parent, "name": parts[-1], "node": node}]
            return [{"op": "mkdir", "at": now_us(), "share": self.share_id, "parent": parent,
                     "name": parts[-1], "node": self.repo.next_id(s, "nodes")}]
        self.repo.mutate(build, audit=self._audit("restore", join(parts)))

    def _restore_file(self, parts: tuple[str, ...], node: int, version: int | None, at: int | None) -> bool:
        def build(s: Session) -> list[dict]:
            q = select(m.Version).where(m.Version.node_id == node)
            if version is not None:
                q = q.where(m.Version.number == version)
            else:
                q = q.where(m.Version.created_at <= at).order_by(m.Version.number.desc()).limit(1)
            old = s.scalar(q)
            if old is None:
                raise NotFound(f"{self._show(parts)}: no such version")
            if old.deleted:
                raise NotFound(f"{self._show(parts)} version {old.number} is a deletion; pick an earlier one")
            parent = self._parent(s, parts)
            cur_row = self._child(s, parent, parts[-1], None)
            if cur_row is not None:
                if cur_row[1] == "dir":
                    raise IsADirectory(f"{self._show(parts)} is a folder now")
                cur = self._current_version(s, cur_row[0], None)
                if cur is not None and not cur.deleted and cur.etag == old.etag:
                    return []
            return [self.commit_event(s, parts, old.size, old.mtime, old.etag, copy_of=(old.node_id, old.number))]
        evs = self.repo.mutate(build, audit=self._audit("restore", join(parts)))
        return bool(evs)

    def _version_of(self, ev: dict) -> Version:
        return Version(ev["number"], ev["size"], seconds(ev["at"]), seconds(ev["mtime"]), ev.get("deleted", False),
                       ev["etag"], self.origin)

    # -- lookups by node id and staged updates (NFS: file handles carry node ids) ----------------
    def node_path(self, node_id: int, at=None) -> str:
        """The share-relative path where node `node_id` is linked now (or at instant `at`).

        NFS file handles hold node ids, not paths, so they survive renames; this walks the
        dentries upward.  NotFound when the node is not in this share or not linked then
        (removed, or not yet created): the handle is stale."""
        at_us = to_us(at)
        up = _UP_SQL[at_us is None]
        names: list[str] = []
        with raw.read(self.repo.catalog) as s:         # plain SQL (an NFS handle's every miss)
            share = raw.scalar(s, _NODE_SHARE_SQL, (node_id,))
            node = node_id
            while node != self.root and share == self.share_id and len(names) <= 1024:
                row = raw.one(s, up, (node,) if at_us is None else (node, at_us, at_us))
                if row is None:
                    break
                names.append(row[1])
                node = row[0]
        if share != self.share_id or node != self.root:
            raise NotFound(f"node {node_id} is not in share {self.share_name!r}" + (" then" if at_us else " now"))
        return join(tuple(reversed(names)))

    def stat_node(self, node_id: int, at=None) -> Entry:
        """stat() of whatever node `node_id` is now, or in the snapshot of instant `at` (its
        Entry.path then starts with /.snapshots/@GMT-…, so reads and listings stay read-only)."""
        at_us = to_us(at)
        path = self.node_path(node_id, at)
        if at_us is None:
            return self.stat(path)
        return self.stat(f"/{SNAPSHOTS}/{gmt_token(at_us)}{'' if path == '/' else path}")

    def child_name(self, path: str, node_id: int) -> str | None:
        """The last name node `node_id` had inside folder `path` (even if it is gone since):
        what an NFS READDIR cookie (a node id) resumes after.  None if it never was there."""
        v = self._view(path)
        with self.repo.catalog.session() as s:
            parent, _, _ = self._walk(s, v.parts, v.at)
            return s.scalar(select(m.Dentry.name).where(m.Dentry.parent_id == parent, m.Dentry.node_id == node_id)
                            .order_by(m.Dentry.valid_from.desc()).limit(1))

    def create_file(self, path: str) -> Entry:
        """A new, empty file name with no version yet (NFS CREATE): its node id exists at once
        for the file handle, and the first commit of its content is version 1.  A name that
        had a deleted file continues that file's history.  errors.Exists when taken."""
        v = self._writable_view(path)

        def build(s: Session) -> list[dict]:
            parent = self._parent(s, v.parts)
            row, old = self._name(s, parent, v.parts[-1])
            if row is not None:
                raise Exists(f"{join(v.parts)} exists")
            ev = {"at": now_us(), "share": self.share_id, "parent": parent, "name": v.parts[-1]}
            if old is not None:
                return [{**ev, "op": "link", "node": old}]
            return [{**ev, "op": "create", "node": self.repo.next_id(s, "nodes")}]
        ev = self.repo.mutate_grouped(build, audit=self._audit("create", join(v.parts)))[0]
        if ev["op"] == "create":            # a new node, no version yet
            return self._made(v, ev, "file")
        return self.stat(join(v.parts))     # an old file's node linked again: its history shows

    def open_staged_update(self, path: str, truncate: bool = False, create: bool = True):
        """Like open_update, but the staging survives a crash: `sync()` makes every byte written
        so far durable (fsync), and `archive.staging.recover(repo)` commits synced updates a
        crash left behind.  NFS uses it for UNSTABLE writes + COMMIT and FILE_SYNC writes."""
        from .staging import StagedUpdate
        v = self._writable_view(path)
        with raw.read(self.repo.catalog) as s:      # one read: what _write_base and stat would read
            parent = self._parent(s, v.parts)
            row = self._child(s, parent, v.parts[-1], None)
            if row is None:
                if not create:
                    raise NotFound(f"{self._show(v.parts)}: no such file or folder")
                node, base = None, None
            elif row[1] == "dir":
                raise IsADirectory(f"{self._show(v.parts)} is a folder")
            else:
                node = row[0]
                cur = self._current_version(s, node, None)
                base = cur if cur is not None and not cur.deleted else None
        return StagedUpdate(self, v.parts, base, truncate, node)

    def commit_staged(self, updates: list) -> list:
        """Commit several staged updates of this repository together (archive.staging.commit_staged:
        shared transactions, no thread per update); per update its Version, None (nothing
        changed) or the exception it alone hit (its synced staging is kept for recovery)."""
        from .staging import commit_staged
        return commit_staged(updates)

    def open_created_update(self, path: str, node_id: int):
        """open_staged_update for a file this server has just made with `create_file` (no
        version yet, or a deleted file's node linked again): nothing to read from the catalog,
        the update starts empty on that node (NFS: the first WRITE after a CREATE, ~0.1 ms of
        catalog reads per created file).  If another writer gave the node a version meanwhile,
        this update does not start from it: the same as when that version lands after an
        update was opened (the later commit wins, as a whole file)."""
        from .staging import StagedUpdate
        v = self._writable_view(path)
        return StagedUpdate(self, v.parts, None, False, node_id)


def _version(r: m.Version) -> Version:
    origin = Origin(r.origin_protocol, r.origin_address, r.origin_user) if r.origin_protocol else None
    return Version(r.number, r.size, seconds(r.created_at), seconds(r.mtime), bool(r.deleted), r.etag, origin)
