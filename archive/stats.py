"""Headline figures of a repository: logical vs stored bytes, per share and in total."""
from __future__ import annotations

from sqlalchemy import text


def repository_stats(repo) -> dict:
    with repo.catalog.session() as s:
        stored, chunks = s.execute(text("SELECT coalesce(sum(length), 0), count(*) FROM chunks WHERE pack IS NOT NULL")).one()
        raw = s.execute(text("SELECT coalesce(sum(raw_len), 0) FROM chunks WHERE pack IS NOT NULL")).scalar()
        per_share = s.execute(text("""
            SELECT sh.name, count(v.id), coalesce(sum(v.size), 0), count(DISTINCT v.node_id)
            FROM shares sh LEFT JOIN nodes n ON n.share_id = sh.id
            LEFT JOIN versions v ON v.node_id = n.id
            GROUP BY sh.name ORDER BY sh.name""")).all()
        live = s.execute(text("""
            SELECT n.share_id, count(*) FROM dentries d JOIN nodes n ON n.id = d.node_id
            WHERE d.valid_to IS NULL AND n.kind = 'file' GROUP BY n.share_id""")).all()
        share_ids = dict(s.execute(text("SELECT name, id FROM shares")).all())
    packs = repo.store.packdir.list()
    pack_bytes = sum(repo.store.packdir.size(p) for p in packs)
    live_by_id = dict(live)
    shares = {}
    for name, versions, logical, _nodes in per_share:
        shares[name] = {"versions": versions, "logical_bytes": int(logical),
                        "files": live_by_id.get(share_ids[name], 0)}
    logical = sum(v["logical_bytes"] for v in shares.values())
    return {
        "logical_bytes": logical,
        "stored_bytes": int(stored),
        "pack_bytes": pack_bytes,
        "unique_bytes": int(raw),
        "ratio": round(logical / stored, 3) if stored else None,
        "chunks": chunks,
        "packs": len(packs),
        "versions": sum(v["versions"] for v in shares.values()),
        "files": sum(v["files"] for v in shares.values()),
        "shares": shares,
    }
