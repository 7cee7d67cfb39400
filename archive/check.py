"""Integrity checks: catalog consistency, and (with read_data) every stored byte.

A corrupt or missing chunk is reported with every file version that uses it, so an
administrator knows exactly what to restore from elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text

from .errors import Corrupt


@dataclass
class Problem:
    kind: str
    message: str
    affected: list[str] = field(default_factory=list)


def node_paths(repo, node_ids: set[int]) -> dict[int, str]:
    """'/share/path' of each node (its latest name, even if deleted since)."""
    out = {}
    with repo.catalog.session() as s:
        roots = dict(s.execute(text("SELECT root_node, name FROM shares")).all())
        for nid in node_ids:
            parts, cur, guard = [], nid, 0
            while cur not in roots and guard < 256:
                row = s.execute(text("SELECT parent_id, name FROM dentries WHERE node_id = :n "
                                     "ORDER BY valid_from DESC LIMIT 1"), {"n": cur}).first()
                if row is None:
                    parts.append(f"<node {cur}>")
                    break
                parts.append(row[1])
                cur = row[0]
                guard += 1
            parts.append(roots.get(cur, "?"))
            out[nid] = "/" + "/".join(reversed(parts))
    return out


def users_of(repo, chunk_ids: list[bytes]) -> dict[bytes, list[str]]:
    """Every 'path@vN' using each chunk."""
    out: dict[bytes, list[tuple[int, int]]] = {}
    with repo.catalog.session() as s:
        for cid in chunk_ids:
            rows = s.execute(text("SELECT v.node_id, v.number FROM version_chunks vc JOIN versions v "
                                  "ON v.id = vc.version_id WHERE vc.chunk_id = :c ORDER BY v.node_id, v.number"),
                             {"c": cid}).all()
            out[cid] = sorted(set(rows))
    paths = node_paths(repo, {n for rows in out.values() for n, _ in rows})
    return {cid: [f"{paths[n]}@v{num}" for n, num in rows] for cid, rows in out.items()}


def check(repo, read_data: bool = False, progress=None) -> list[Problem]:
    problems: list[Problem] = []
    with repo.catalog.session() as s:
        missing = [r[0] for r in s.execute(text(
            "SELECT DISTINCT vc.chunk_id FROM version_chunks vc LEFT JOIN chunks c ON c.id = vc.chunk_id "
            "WHERE c.id IS NULL")).all()]
        bad_sizes = s.execute(text(
            "SELECT v.node_id, v.number, v.size, coalesce(sum(vc.length), 0) FROM versions v "
            "LEFT JOIN version_chunks vc ON vc.version_id = v.id WHERE NOT v.deleted "
            "GROUP BY v.id HAVING coalesce(sum(vc.length), 0) != v.size")).all()
        dangling = s.execute(text(
            "SELECT d.id, d.name FROM dentries d LEFT JOIN nodes n ON n.id = d.node_id WHERE n.id IS NULL")).all()
        packs = [r[0] for r in s.execute(text("SELECT DISTINCT pack_id FROM chunks")).all()]
    for cid, where in users_of(repo, missing).items():
        problems.append(Problem("missing-chunk", f"chunk {cid.hex()} is referenced but not stored", where))
    if bad_sizes:
        paths = node_paths(repo, {r[0] for r in bad_sizes})
        for node, number, size, total in bad_sizes:
            problems.append(Problem("size-mismatch", f"{paths[node]}@v{number}: size {size} but chunks hold {total}",
                                    [f"{paths[node]}@v{number}"]))
    for did, name in dangling:
        problems.append(Problem("dangling-entry", f"directory entry {name!r} points at no node"))
    packdir = repo.store.packdir
    for pack in packs:
        if not packdir.exists(pack):
            with repo.catalog.session() as s:
                ids = [r[0] for r in s.execute(text("SELECT id FROM chunks WHERE pack_id = :p"), {"p": pack}).all()]
            where = sorted({w for ws in users_of(repo, ids).values() for w in ws})
            problems.append(Problem("missing-pack", f"pack {pack} is missing ({len(ids)} chunks)", where))
    if read_data:
        problems.extend(_read_all(repo, progress))
    return problems


def _read_all(repo, progress) -> list[Problem]:
    bad: list[tuple[bytes, str]] = []
    last = b""
    while True:
        with repo.catalog.session() as s:
            rows = s.execute(text("SELECT c.id, c.pack_id, c.offset, c.length, c.raw_len FROM chunks c WHERE c.id > :l "
                                  "ORDER BY c.id LIMIT 1000"), {"l": last}).all()
        if not rows:
            break
        for cid, pack, off, ln, raw in rows:
            try:
                repo.store.load(cid, (pack, off, ln, raw), verify=True)
            except Corrupt as e:
                bad.append((cid, str(e)))
            if progress:
                progress(raw)
        last = rows[-1][0]
    where = users_of(repo, [c for c, _ in bad])
    return [Problem("corrupt-chunk", f"chunk {cid.hex()}: {msg}", where[cid]) for cid, msg in bad]
