"""The lean read path of `archivectl ls` and `archivectl get`: no SQLAlchemy, no Repository.

Why: a command that only reads was ~0.35 s, most of it importing SQLAlchemy's ORM and Core
(~0.25 s of CPU) to run the three or four plain-SQL statements a listing or a small download
needs (docs/benchmarks.md, "Start-up").  Here those statements run on a stdlib `sqlite3`
connection to the local catalog, and a small file's chunks are read and verified by the same
code the Reader uses (archive/readpath.py), so a read costs the interpreter, the key's scrypt
(on its own thread, archive/keys.py) and a few milliseconds.

It answers only the plain case, and says `Fallback` for everything else, *before* it prints
anything: a repository that is not a local folder with its own SQLite catalog, a catalog whose
schema is not this release's head (the full path migrates or refuses it), a past instant or
version, a snapshot path, a path, share or content that is not there (the full path words the
error), a chunk not where the catalog says.  A folder, and a file larger than `GET_MAX` going to
a local file, are not read here whole: archive/cli/files.py streams them through the tree
restore of archive/readpath.py on this module's connection and pack reader (`_lean_restore`);
a file larger than `GET_MAX` to stdout takes the full path.
The CLI then runs the full path (ShareFS), which is the reference: tests/test_cli_lean.py runs
both on the same repository and compares their output, and holds these statements equal to
ShareFS's own.  The passphrase is checked exactly as `Repository.open` checks it
(`parse_keyfile`: a wrong one is BadPassword, exit code 5).
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Iterator

from ..catalog.db import SCHEMA_HEAD, schema_revision, sqlite_connect
from ..paths import SNAPSHOTS, join
from ..types import Entry, entry_of, etag_text, listed_entry

FORMAT = 1                 # repository.FORMAT (a test keeps them equal)
GET_MAX = 8 * 1024 * 1024  # a larger file streams through the Reader (it is held whole here)
LIST_PAGE = 1000

# The statements of ShareFS (archive/sharefs.py) for the current state, case-sensitive; a test
# keeps them identical to ShareFS's.
CHILD_SQL = ("SELECT d.node_id, n.kind, d.name FROM dentries d JOIN nodes n ON n.id = d.node_id "
             "WHERE d.parent_id = ? AND d.name = ? AND d.valid_to IS NULL ORDER BY d.valid_from DESC LIMIT 1")
LIST_SQL = ("SELECT d.name, d.node_id, n.kind, n.created_at, coalesce(n.mtime, n.created_at), v.number, v.size, "
            "coalesce(v.mtime, v.created_at), v.etag "
            "FROM dentries d JOIN nodes n ON n.id = d.node_id "
            "LEFT JOIN versions v ON v.id = "
            "(SELECT v2.id FROM versions v2 WHERE v2.node_id = d.node_id ORDER BY v2.number DESC LIMIT 1) "
            "WHERE d.parent_id = ? AND d.valid_to IS NULL AND d.name > ? ORDER BY d.name LIMIT ?")
NODE_TIMES_SQL = "SELECT created_at, coalesce(mtime, created_at) FROM nodes WHERE id = ?"
_CURRENT_SQL = ("SELECT number, size, coalesce(mtime, created_at), etag, deleted, id FROM versions WHERE node_id = ? "
                "ORDER BY number DESC LIMIT 1")
_SHARE_SQL = "SELECT id, root_node FROM shares WHERE name = ?"
_SHARES_SQL = "SELECT name FROM shares ORDER BY name"
# every chunk of a version, as the Reader's window rows: (offset, length, id, pack, poff, plen, raw_len)
_CHUNKS_SQL = ("SELECT 0, v.size, c.id, p.name, c.offset, c.length, c.raw_len "
               "FROM versions v LEFT JOIN chunks c ON c.n = v.chunk LEFT JOIN packs p ON p.id = c.pack "
               "WHERE v.id = :v AND v.chunk IS NOT NULL "
               "UNION ALL SELECT * FROM ("
               "SELECT vc.offset, vc.length, c.id, p.name, c.offset, c.length, c.raw_len "
               "FROM chunk_lists vc LEFT JOIN chunks c ON c.n = vc.chunk LEFT JOIN packs p ON p.id = c.pack "
               "WHERE vc.version_id = :v ORDER BY vc.offset) w")


class Fallback(Exception):
    """Not a case the lean path answers: run the full path (which reports any error itself)."""


#: what the CLI hands to the full path: the lean path's own refusals and a catalog that does not
#: read as expected here (the full path reports it in its words)
FALLBACK = (Fallback, sqlite3.Error)


class LeanRepo:
    """A local repository opened for reading its catalog; close() it."""

    def __init__(self, path: "Path | str", catalog_url: str | None, password) -> None:
        """`password`: a callable giving the passphrase (asked only for an encrypted repository)."""
        if not isinstance(path, Path) or catalog_url:
            raise Fallback("not a local folder with its own catalog")
        try:
            config = json.loads((path / "config.json").read_bytes())
            keys = (path / "keys.json").read_bytes()
        except (OSError, ValueError):
            raise Fallback("no readable repository") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT or config.get("catalog"):
            raise Fallback("another format or catalog")
        db = path / "catalog.sqlite"
        if not db.is_file():
            raise Fallback("no catalog file")
        from ..keys import hand_over, parse_keyfile
        self.path = path
        pw = password() if config.get("encrypted") else None
        self.key = parse_keyfile(keys, pw)
        hand_over(keys, pw, self.key)        # a Fallback then opens the Repository without a second scrypt
        try:
            self.conn = sqlite_connect(db)
        except sqlite3.Error:
            raise Fallback("catalog does not open") from None
        try:
            self.cur = self.conn.cursor()
            self.cur.execute("BEGIN")            # one snapshot for every statement of the command
            head = schema_revision(self.cur) == SCHEMA_HEAD
        except sqlite3.Error:
            head = False
        if not head:
            self.close()
            raise Fallback("catalog schema is not this release's (or the catalog does not read)")

    def close(self) -> None:
        try:
            self.conn.rollback()
        except sqlite3.Error:
            pass
        finally:
            self.conn.close()

    def list_shares(self) -> list[str]:
        return [r[0] for r in self.cur.execute(_SHARES_SQL).fetchall()]

    def share(self, name: str) -> "LeanShare":
        row = self.cur.execute(_SHARE_SQL, (name,)).fetchone()
        if row is None:
            raise Fallback("no such share")
        return LeanShare(self, name, row[1])


class LeanShare:
    """The administrator's view of one share now (what `CLIContext.share` gives, read-only)."""

    def __init__(self, repo: LeanRepo, name: str, root: int) -> None:
        self.repo, self.share_name, self.root = repo, name, root

    def _walk(self, parts: tuple[str, ...]) -> tuple[int, str, str]:
        if parts and parts[0] == SNAPSHOTS:
            raise Fallback("snapshot path")
        cur = self.repo.cur
        node, kind, name = self.root, "dir", ""
        for p in parts:
            if kind != "dir":
                raise Fallback("not a folder")
            row = cur.execute(CHILD_SQL, (node, p)).fetchone()
            if row is None:
                raise Fallback("no such file or folder")
            node, kind, name = row
        return node, kind, name

    def _current(self, node: int):
        return self.repo.cur.execute(_CURRENT_SQL, (node,)).fetchone()

    def stat(self, parts: tuple[str, ...]) -> Entry:
        """ShareFS.stat(join(parts)) for the current state."""
        node, kind, name = self._walk(parts)
        ctime, mtime = self.repo.cur.execute(NODE_TIMES_SQL, (node,)).fetchone()
        path, name = join(parts), name or "/"
        if kind == "dir":
            return entry_of((name, path, "dir", 0, mtime / 1_000_000, ctime / 1_000_000, node, None,
                             f"d{node}-{mtime}", False))
        ver = self._current(node)
        if ver is None:
            return entry_of((name, path, "file", 0, mtime / 1_000_000, ctime / 1_000_000, node, None, "", False))
        number, size, vmtime, etag, _deleted, _vid = ver
        return entry_of((name, path, "file", size, vmtime / 1_000_000, ctime / 1_000_000, node, number,
                         etag_text(etag), False))

    def listdir(self, parts: tuple[str, ...], node: int) -> Iterator[Entry]:
        """ShareFS.listdir(join(parts)) of the folder `node` (its stat's node_id), now."""
        base = join(parts).rstrip("/")
        after = ""
        while True:
            rows = self.repo.cur.execute(LIST_SQL, (node, after, LIST_PAGE)).fetchall()
            for row in rows:
                yield listed_entry(base, row, False)
            if len(rows) < LIST_PAGE:
                return
            after = rows[-1][0]

    def read(self, parts: tuple[str, ...]) -> tuple[Entry, bytes]:
        """The entry and the whole current content of a file of at most GET_MAX bytes, every
        chunk verified (its AES-GCM tag, or its keyed BLAKE3 id) as the Reader verifies it."""
        entry = self.stat(parts)
        if entry.is_dir or entry.version is None or entry.size > GET_MAX:
            raise Fallback("not a small file with content")
        number, size, _m, _e, deleted, vid = self._current(entry.node_id)
        if deleted or number != entry.version:
            raise Fallback("a deletion")
        rows = self.repo.cur.execute(_CHUNKS_SQL, {"v": vid}).fetchall()
        pos = 0
        for r in rows:
            if r[0] != pos or r[3] is None:
                raise Fallback("chunk list with a gap or without a location")
            pos += r[1]
        if pos != size:
            raise Fallback("chunk list does not cover the file")
        from ..readpath import load_run, runs
        store = _Store(self.repo)
        pieces = []
        for run in runs(rows):
            got = load_run(store, run)
            for r, data in zip(run, got):
                if len(data) != r[1]:
                    raise Fallback("chunk of another length")
            pieces.extend(got)
        return entry, b"".join(pieces)


class _Store:
    """What readpath.load_run uses of a ChunkStore; a chunk not found where the catalog says
    (moved by gc, damaged) is left to the full path, whose ChunkStore.load looks it up again."""

    def __init__(self, repo: LeanRepo) -> None:
        from ..codec import Codec
        from ..packs import PackDir
        from ..packstore import LocalPackStore
        store = LocalPackStore(repo.path)
        self.codec = Codec(repo.key, store=store)       # chunks may name the repository's dictionary
        self.packdir = PackDir(store)

    def load(self, cid: bytes, loc=None, verify=None) -> bytes:
        raise Fallback(f"chunk {cid.hex()} is not where the catalog says")
