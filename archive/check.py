"""Integrity checks: catalog consistency, and (with read_data) every stored byte.

A corrupt or missing chunk is reported with every file version that uses it, so an
administrator knows exactly what to restore from elsewhere.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import text

from . import usage
from .errors import Corrupt
from .packs import PACK_HEADER, T_CHUNK


@dataclass
class Problem:
    kind: str
    message: str
    affected: list[str] = field(default_factory=list)


def node_paths(repo, node_ids: set[int]) -> dict[int, str]:
    """'/share/path' of each node (its latest name, even if deleted since)."""
    with repo.catalog.session() as s:
        return paths_in(s, node_ids)


def paths_in(s, node_ids: set[int]) -> dict[int, str]:
    """node_paths inside an open session (recover names what it could not bring back)."""
    out = {}
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
    found: dict[bytes, set[tuple[int, int]]] = {cid: set() for cid in chunk_ids}
    ids = list(found)
    with repo.catalog.session() as s:
        # a few hundred ids a query: version_chunks has no index on chunk, each query scans it
        for i in range(0, len(ids), 500):
            part = {f"c{j}": cid for j, cid in enumerate(ids[i:i + 500])}
            for cid, node, number in s.execute(text(
                    "SELECT c.id, v.node_id, v.number FROM chunks c JOIN version_chunks vc ON vc.chunk = c.n "
                    f"JOIN versions v ON v.id = vc.version_id WHERE c.id IN ({', '.join(':' + k for k in part)})"),
                    part).all():
                found[cid].add((node, number))
    for cid, rows in found.items():
        out[cid] = sorted(rows)
    paths = node_paths(repo, {n for rows in out.values() for n, _ in rows})
    return {cid: [f"{paths[n]}@v{num}" for n, num in rows] for cid, rows in out.items()}


def check(repo, read_data: bool = False, progress=None) -> list[Problem]:
    problems: list[Problem] = []
    lost = _catalog_lost(repo)
    if lost:
        return [lost]
    with repo.catalog.session() as s:
        missing = [r[0] for r in s.execute(text(
            "SELECT DISTINCT c.id FROM version_chunks vc JOIN chunks c ON c.n = vc.chunk "
            "WHERE c.pack IS NULL")).all()]
        dangling_refs = s.execute(text(
            "SELECT v.node_id, v.number, count(*) FROM version_chunks vc JOIN versions v ON v.id = vc.version_id "
            "LEFT JOIN chunks c ON c.n = vc.chunk WHERE c.n IS NULL GROUP BY v.node_id, v.number")).all()
        bad_sizes = s.execute(text(
            "SELECT v.node_id, v.number, v.size, coalesce(sum(vc.length), 0) FROM versions v "
            "LEFT JOIN version_chunks vc ON vc.version_id = v.id WHERE NOT v.deleted "
            "GROUP BY v.id HAVING coalesce(sum(vc.length), 0) != v.size")).all()
        dangling = s.execute(text(
            "SELECT d.id, d.name FROM dentries d LEFT JOIN nodes n ON n.id = d.node_id WHERE n.id IS NULL")).all()
        packs = [r[0] for r in s.execute(text(
            # (one pass over the chunk rows: no index on chunks.pack, migration 0018)
            "SELECT p.name FROM packs p WHERE p.id IN (SELECT pack FROM chunks)")).all()]
        twice = s.execute(text(
            "SELECT parent_id, name, count(*) FROM dentries WHERE valid_to IS NULL "
            "GROUP BY parent_id, name HAVING count(*) > 1")).all()
        usage_off = usage.mismatches(s)
    for cid, where in users_of(repo, missing).items():
        problems.append(Problem("missing-chunk", f"chunk {cid.hex()} is referenced but not stored", where))
    if dangling_refs:
        paths = node_paths(repo, {r[0] for r in dangling_refs})
        for node, number, n in dangling_refs:
            where = f"{paths[node]}@v{number}"
            problems.append(Problem("missing-chunk", f"{where}: {n} chunk references have no chunk row", [where]))
    if bad_sizes:
        paths = node_paths(repo, {r[0] for r in bad_sizes})
        for node, number, size, total in bad_sizes:
            problems.append(Problem("size-mismatch", f"{paths[node]}@v{number}: size {size} but chunks hold {total}",
                                    [f"{paths[node]}@v{number}"]))
    for did, name in dangling:
        problems.append(Problem("dangling-entry", f"directory entry {name!r} points at no node"))
    if twice:
        paths = node_paths(repo, {r[0] for r in twice})
        for parent, name, n in twice:
            where = f"{paths[parent].rstrip('/')}/{name}"
            problems.append(Problem("duplicate-entry", f"{where} is listed {n} times", [where]))
    for name, used, total in usage_off:
        problems.append(Problem("usage-mismatch", f"share {name!r}: usage counter {used} but its current files "
                                f"hold {total} bytes (`recover` rebuilds the counter)", [f"/{name}"]))
    packdir = repo.store.packdir
    for pack in packs:
        if not packdir.exists(pack):
            with repo.catalog.session() as s:
                ids = [r[0] for r in s.execute(text("SELECT c.id FROM chunks c JOIN packs p ON p.id = c.pack "
                                                    "WHERE p.name = :p"), {"p": pack}).all()]
            where = sorted({w for ws in users_of(repo, ids).values() for w in ws})
            problems.append(Problem("missing-pack", f"pack {pack} is missing ({len(ids)} chunks)", where))
    if read_data:
        problems.extend(_read_all(repo, progress))
    return problems


def _catalog_lost(repo) -> Problem | None:
    """An empty catalog beside packs that hold records: the catalog was lost (or replaced)."""
    with repo.catalog.session() as s:
        if s.execute(text("SELECT count(*) FROM shares")).scalar() or \
                s.execute(text("SELECT count(*) FROM chunks")).scalar():
            return None
    packdir = repo.store.packdir
    holding = next((p for p in packdir.list() if packdir.size(p) > PACK_HEADER and
                    any(r.rtype != T_CHUNK for r in packdir.scan(p, with_payload=False))), None)
    if holding is None:
        return None          # a new repository, or only chunks of uploads that never committed
    return Problem("catalog-lost", f"the catalog is empty but the packs hold catalog records (pack {holding}): "
                   "it was lost or replaced; rebuild it with `archivectl recover` (a damaged one is moved aside)")


def _read_all(repo, progress) -> list[Problem]:
    """Read every pack whole: every record's framing and CRC, the pack headers, every catalog
    record (decrypted and parsed: recover depends on them), and every chunk the catalog uses
    (decrypted and re-hashed)."""
    store, packdir = repo.store, repo.store.packdir
    codec = store.codec
    with repo.catalog.session() as s:
        by_pack: dict[str, dict[int, tuple[bytes, int]]] = {}
        for cid, pack, off, ln in s.execute(text(
                'SELECT c.id, p.name, c."offset", c.length FROM chunks c JOIN packs p ON p.id = c.pack')).all():
            by_pack.setdefault(pack, {})[off] = (cid, ln)
    bad: dict[bytes, str] = {}
    problems: list[Problem] = []
    for pack in packdir.list():
        wanted = by_pack.pop(pack, {})
        damage: list = []
        try:
            for r in packdir.scan(pack, damage=damage):
                if progress:
                    progress(r.total_len)
                if r.rtype == T_CHUNK:
                    cid, _ = wanted.pop(r.offset, (None, 0))
                    if cid is None:
                        continue                      # garbage for gc, or a copy gc left behind
                    try:
                        if r.rid != cid:
                            raise Corrupt("pack record has another id")
                        data = codec.decode(T_CHUNK, cid, r.flags, r.payload, r.raw_len)
                        if codec.chunk_id(data) != cid:
                            raise Corrupt(f"chunk {cid.hex()} does not match its id")
                    except Corrupt as e:
                        bad[cid] = str(e)
                else:
                    try:
                        data = codec.decode(r.rtype, r.rid, r.flags, r.payload, r.raw_len)
                        json.loads(data)
                    except (Corrupt, ValueError) as e:
                        problems.append(Problem("corrupt-record", f"catalog record at pack {pack} offset "
                                                f"{r.offset}: {e}; `recover` could not use it"))
        except OSError as e:
            problems.append(Problem("unreadable-pack", f"pack {pack}: {e}"))
        for d in damage:
            one_chunk = d.start in wanted and wanted[d.start][1] == d.end - d.start   # named below
            if not d.torn and not one_chunk:
                problems.append(Problem("damaged-pack", f"{d}; `recover` skips it"))
        for off, (cid, _) in wanted.items():
            bad.setdefault(cid, f"no valid record at pack {pack} offset {off} (checksum or header damaged)")
    where = users_of(repo, list(bad))
    chunk_problems = [Problem("corrupt-chunk", f"chunk {cid.hex()}: {msg}", where[cid]) for cid, msg in bad.items()]
    return chunk_problems + problems
