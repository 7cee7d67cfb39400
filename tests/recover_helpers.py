"""What the recover tests compare: a catalog as a user sees it, keyed by stable identities."""
from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import text

FAULT = "EDGE_ARCHIVE_FAULT_EXIT"
DIED = 86                    # archive.faults.FAULT_STATUS


def snapshot(repo_path: Path, password: str | None = None) -> dict:
    """Shares, users, grants, properties, the temporal namespace and every version with the hash of
    its bytes: everything `recover` must bring back (internal row ids and the audit trail excluded)."""
    from archive import Repository
    from archive.streams import Reader
    with Repository.open(repo_path, password=password) as r:
        with r.catalog.session() as s:
            def q(sql: str) -> list[tuple]:
                return sorted(tuple(x) for x in s.execute(text(sql)).all())
            out = {
                "shares": q("SELECT id, name, root_node, created_at, retention, worm_days, anonymous, quota FROM shares"),
                "users": q("SELECT name, password_hash, created_at FROM users"),
                "grants": q("SELECT u.name, sh.name, g.mode FROM grants g JOIN users u ON u.id = g.user_id "
                            "JOIN shares sh ON sh.id = g.share_id"),
                "props": q("SELECT node_id, name, value FROM properties"),
                "nodes": q("SELECT id, share_id, kind, created_at, mtime FROM nodes"),
                "dentries": q("SELECT parent_id, name, node_id, valid_from, valid_to FROM dentries"),
                "versions": q("SELECT node_id, number, size, mtime, created_at, deleted, etag, origin_protocol, "
                              "origin_user FROM versions"),
            }
            rows = s.execute(text("SELECT id, node_id, number, size FROM versions WHERE deleted = 0")).all()
        out["content"] = {(node, number): _digest(Reader(r, vid, size)) for vid, node, number, size in rows}
    return out


def _digest(reader) -> str:
    from archive.errors import Corrupt
    try:
        return hashlib.sha256(reader.read()).hexdigest()
    except Corrupt:
        return "corrupt"


def drop_catalog(repo_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (repo_path / f"catalog.sqlite{suffix}").unlink(missing_ok=True)


def version_bytes(repo_path: Path, path: str, number: int, password: str | None = None) -> bytes:
    from archive import Repository
    share, _, rest = path.lstrip("/").partition("/")
    with Repository.open(repo_path, password=password) as r:
        with r.share(share).open_read("/" + rest, version=number) as f:
            return f.read()
