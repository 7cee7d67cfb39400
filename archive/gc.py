"""Garbage collection: reclaim chunks no version references and rewrite sparse packs.

Safe while uploads run: GC never touches a pack younger than the grace period (an upload in
flight appends there), forgets an unreferenced chunk only after it has been unreferenced for the
grace period, and removes pack files only while holding the catalog's write lock, after
re-checking that nothing references them — the same lock under which every commit re-checks
that its chunks still exist.  Before its first deletion it moves the store's gc fence, which a
commit of fresh packs in an object store reads instead of asking for each pack.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from sqlalchemy import text

from .clock import now_us
from . import faults
from .errors import Corrupt
from .packs import T_CHUNK, T_EVENT, T_TXN, PackWriter

CATALOG_RECORDS = (T_EVENT, T_TXN)     # copied whole: recover needs every one (it dedupes copies by id)

DEFAULT_GRACE = 3600.0
SPARSE = 0.5
SMALL = 4 * 1024 * 1024      # each process starts a pack: gc gathers the small ones


@dataclass
class GCReport:
    chunks_deleted: int = 0
    packs_deleted: int = 0
    packs_rewritten: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    skipped_young: int = 0
    uploads_aborted: int = 0
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "details"}


def collect(repo, grace: float = DEFAULT_GRACE, dry_run: bool = False, progress=None) -> GCReport:
    rep = GCReport()
    now = now_us()
    limit = now - int(grace * 1_000_000)
    with repo.catalog.write() as s:
        s.execute(text("UPDATE chunks SET orphaned_at = NULL WHERE orphaned_at IS NOT NULL AND "
                       "n IN (SELECT chunk FROM version_chunks)"))
        s.execute(text("UPDATE chunks SET orphaned_at = :now WHERE orphaned_at IS NULL AND "
                       "n NOT IN (SELECT chunk FROM version_chunks)"), {"now": now})
        doomed = s.execute(text("SELECT count(*) FROM chunks WHERE orphaned_at IS NOT NULL AND orphaned_at <= :l"),
                           {"l": limit if grace > 0 else now}).scalar()
        rep.chunks_deleted = doomed
        if not dry_run:
            s.execute(text("DELETE FROM chunks WHERE orphaned_at IS NOT NULL AND orphaned_at <= :l"),
                      {"l": limit if grace > 0 else now})
        if dry_run:
            s.rollback()
    packdir = repo.store.packdir
    packs = packdir.list()
    # The live bytes of every pack in one pass over the chunk rows (there is no index on
    # chunks.pack, migration 0018: ~11 B a chunk); a pack's own rows are read again, from a
    # fresh snapshot, only when it is rewritten.  A chunk added to an old pack after this pass
    # can only make a pack look sparser than it is: the rewrite reads its rows, and the check
    # under the write lock before a deletion counts them.
    with repo.catalog.session() as s:
        live_of = dict(s.execute(text("SELECT p.name, sum(c.length) FROM chunks c JOIN packs p ON p.id = c.pack "
                                      "GROUP BY p.name")).all())
    writer = PackWriter(packdir)
    fence_moved = False
    for pack in packs:
        if progress:
            progress(1)
        try:
            size, mtime = packdir.size(pack), packdir.mtime(pack)
        except (FileNotFoundError, Corrupt):
            continue
        rep.bytes_before += size
        if pack == repo.store.writer.pack_id or (grace > 0 and mtime > time.time() - grace):
            rep.skipped_young += 1
            continue
        live_bytes = live_of.get(pack) or 0
        damage: list = []
        records = list(packdir.scan(pack, with_payload=False, damage=damage))
        if any(not d.torn for d in damage):
            rep.details.append(f"{pack}: damaged, left as it is (see `archivectl check --read-data`)")
            continue
        event_bytes = sum(r.total_len for r in records if r.rtype in CATALOG_RECORDS)
        small = size < SMALL and len(packs) > 1
        if live_bytes + event_bytes >= SPARSE * size and not small:
            continue
        if dry_run:
            rep.details.append(f"would rewrite {pack}: {live_bytes + event_bytes} of {size} bytes live")
            continue
        with repo.catalog.session() as s:
            live_at = dict(s.execute(text('SELECT c."offset", c.id FROM chunks c '
                                          "WHERE c.pack = (SELECT id FROM packs WHERE name = :p)"), {"p": pack}).all())
        moves = []
        for r in packdir.scan(pack):
            if r.rtype in CATALOG_RECORDS or (r.rtype == T_CHUNK and live_at.get(r.offset) == r.rid):
                new_pack, new_off, ln = writer.append(r.rtype, r.rid, r.flags, r.raw_len, r.payload)
                if r.rtype == T_CHUNK:
                    moves.append((r.rid, pack, r.offset, new_pack, new_off, ln))
        writer.sync()
        with repo.catalog.write() as s:
            for new_pack in dict.fromkeys(mv[3] for mv in moves):
                s.execute(text("INSERT INTO packs (name) VALUES (:p) ON CONFLICT (name) DO NOTHING"), {"p": new_pack})
            for cid, old_pack, old_off, new_pack, new_off, ln in moves:
                s.execute(text('UPDATE chunks SET pack = (SELECT id FROM packs WHERE name = :np), "offset" = :no, '
                               'length = :ln WHERE substr(id, 1, 16) = substr(:c, 1, 16) AND id = :c AND pack = (SELECT id FROM packs WHERE name = :op) '
                               'AND "offset" = :oo'),
                          {"np": new_pack, "no": new_off, "ln": ln, "c": cid, "op": old_pack, "oo": old_off})
        faults.point("gc-moved")           # a crash here leaves two copies of the records: harmless
        with repo.catalog.write() as s:
            left = s.scalar(text("SELECT count(*) FROM chunks WHERE pack = (SELECT id FROM packs WHERE name = :p)"),
                            {"p": pack})
            if left == 0:
                if not fence_moved:
                    # after the listing, before the first deletion: a commit of a pack
                    # created before the listing sees the fence moved (PackStore.gc_fence)
                    packdir.store.move_gc_fence()
                    fence_moved = True
                packdir.delete(pack)
                s.execute(text("DELETE FROM packs WHERE name = :p"), {"p": pack})
                if moves or event_bytes:
                    rep.packs_rewritten += 1
                else:
                    rep.packs_deleted += 1
            else:
                rep.details.append(f"{pack}: {left} chunks appeared meanwhile; kept")
    writer.close()
    if not dry_run:         # multipart uploads of a node killed mid-pack, idle for the grace period
        rep.uploads_aborted = packdir.store.reclaim_uploads(grace)
        if rep.uploads_aborted:
            rep.details.append(f"{rep.uploads_aborted} unfinished pack uploads aborted")
    rep.bytes_after = sum(packdir.size(p) for p in packdir.list())
    return rep
