"""Rebuild a lost or damaged catalog from the packs alone.

Chunk records give the chunk table.  Catalog records give everything else: legacy one-event
records (written before the commit chain existed) are replayed first, in time order, then the
commit chain's transactions in chain order, through the same `events.apply` the live system
uses, so the rebuilt catalog equals the one that was lost (docs/architecture.md, "Events, the
commit chain and recover").  Damaged records are skipped one by one and reported; the rebuild
goes on with every record that is intact.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

from . import chain, events, usage
from .auditlog import insert_rows as insert_audit
from .catalog import models as m
from .catalog.db import Catalog, migrate
from .catalog.health import move_aside, probe_sqlite
from .check import paths_in
from .errors import Corrupt, Exists
from .packs import T_CHUNK, T_EVENT, T_TXN, Damage, PackDir
from .packstore import PackStore


@dataclass
class RecoverReport:
    packs: int = 0
    chunks: int = 0
    transactions: int = 0
    legacy_events: int = 0
    events: int = 0
    versions: int = 0
    shares: int = 0
    dead_transactions: int = 0          # written by writers that died before their catalog commit
    torn_tails: int = 0                 # interrupted appends: never held anything acknowledged
    moved_aside: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)         # pack ranges that held no valid record
    unreadable: list[str] = field(default_factory=list)      # records intact but undecodable
    missing: list[str] = field(default_factory=list)         # gaps in the commit chain
    failed: list[str] = field(default_factory=list)          # events that could not be applied
    incomplete_versions: list[str] = field(default_factory=list)   # versions whose chunks are lost

    @property
    def complete(self) -> bool:
        """True when nothing the packs ever held was lost."""
        return not (self.damaged or self.unreadable or self.missing or self.failed or self.incomplete_versions)

    def as_dict(self) -> dict:
        return {**self.__dict__, "complete": self.complete}


def _prepare_catalog(catalog_url: str, force: bool, rep: RecoverReport) -> Catalog:
    """An empty catalog to rebuild into; a damaged one (or, with force, a healthy one) is moved
    aside first, and so is a stale WAL left beside a deleted catalog (SQLite would replay it)."""
    if not catalog_url.startswith("sqlite:///"):
        catalog = Catalog(catalog_url)
        if not catalog_is_empty(catalog):
            catalog.close()
            raise Exists("the catalog database is not empty: recover into an empty database "
                         "(create a new one and point the repository's catalog URL at it)")
        return catalog
    db = Path(catalog_url[len("sqlite:///"):])
    health = probe_sqlite(db)
    if health.state == "absent":
        rep.moved_aside += move_aside(db, "stale", with_main=False)
    elif health.state == "damaged":
        rep.moved_aside += [f"{p} (damaged: {health.reason})" for p in move_aside(db, "damaged")]
    elif health.state == "content":
        if not force:
            raise Exists("the catalog is not empty: pass --force to rebuild it (the old one is kept aside)")
        rep.moved_aside += move_aside(db, "replaced")
    return Catalog(catalog_url)


def catalog_is_empty(catalog: Catalog) -> bool:
    with catalog.engine.connect() as c:
        try:
            return all(c.execute(text(f"SELECT count(*) FROM {t}")).scalar() == 0
                       for t in ("shares", "users", "nodes", "chunks"))
        except Exception:
            return True


def _read_packs(packdir: PackDir, codec, rep: RecoverReport, progress):
    """Every chunk location, legacy event and transaction record, each once (gc may have copied
    records into a second pack before a crash: copies share their id)."""
    chunks: dict[bytes, tuple] = {}
    legacy: dict[bytes, tuple[int, int, dict]] = {}
    txns: dict[bytes, chain.Txn] = {}
    for pack in packdir.list():
        rep.packs += 1
        damage: list[Damage] = []
        try:
            for r in packdir.scan(pack, damage=damage):
                if r.rtype == T_CHUNK:
                    chunks.setdefault(r.rid, (pack, r.offset, r.total_len, r.raw_len))
                    continue
                if r.rid in legacy or r.rid in txns:
                    continue
                where = f"pack {pack} offset {r.offset}"
                try:
                    data = codec.decode(r.rtype, r.rid, r.flags, r.payload, r.raw_len)
                    if r.rtype == T_TXN:
                        txns[r.rid] = chain.Txn.from_payload(r.rid, data, where)
                    elif r.rtype == T_EVENT:
                        ev = json.loads(data)
                        legacy[r.rid] = (int(ev["at"]), len(legacy), ev)
                except (Corrupt, ValueError, KeyError, TypeError) as e:
                    rep.unreadable.append(f"{where}: {e}")
        except OSError as e:
            rep.damaged.append(f"pack {pack}: cannot be read: {e}")
        for d in damage:
            if d.torn:
                rep.torn_tails += 1
            else:
                rep.damaged.append(str(d))
        if progress:
            progress(1)
    return chunks, sorted(legacy.values(), key=lambda t: (t[0], t[1])), txns


def _apply_txn(s, evs: list[dict], label: str, rep: RecoverReport) -> None:
    """A transaction applies whole, as it did live; if it cannot (an earlier record was lost),
    each event that still applies is kept and each one that does not is reported."""
    try:
        with s.begin_nested():
            events.apply_many(s, evs)
        rep.events += len(evs)
        return
    except Exception:
        pass
    for ev in evs:
        try:
            with s.begin_nested():
                events.apply(s, ev)
            rep.events += 1
        except Exception as e:
            rep.failed.append(f"{label}: {ev.get('op')} event of {ev.get('at')}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]}")


def recover(path, key, codec, catalog_url: str, force: bool = False, progress=None) -> RecoverReport:
    """Rebuild the catalog at `catalog_url` from the packs under `path`; see RecoverReport."""
    rep = RecoverReport()
    catalog = _prepare_catalog(catalog_url, force, rep)
    try:
        migrate(catalog)
        chunks, legacy, txns = _read_packs(PackDir(path if isinstance(path, PackStore) else Path(path) / "packs"),
                                          codec, rep, progress)
        resolved = chain.resolve(txns)
        rep.dead_transactions = len(resolved.dead)
        rep.missing = resolved.gaps
        with catalog.write() as s:
            names = sorted({p for p, _, _, _ in chunks.values()})
            for i in range(0, len(names), 1000):
                s.execute(text("INSERT INTO packs (name) VALUES (:name)"), [{"name": p} for p in names[i:i + 1000]])
            pack_ids = dict(s.execute(text("SELECT name, id FROM packs")).all())
            # pack by pack, in pack order: the chunks of one pack get neighbouring keys
            rows = sorted(({"id": cid, "pack": pack_ids[p], "offset": o, "length": ln, "raw_len": raw}
                           for cid, (p, o, ln, raw) in chunks.items()), key=lambda r: (r["pack"], r["offset"]))
            for i in range(0, len(rows), 1000):
                s.execute(text('INSERT INTO chunks (id, pack, "offset", length, raw_len, orphaned_at) '
                               "VALUES (:id, :pack, :offset, :length, :raw_len, NULL)"), rows[i:i + 1000])
            rep.chunks = len(rows)
            for at, _, ev in legacy:
                _apply_txn(s, [ev], "legacy event", rep)
            rep.legacy_events = len(legacy)
            for t in resolved.chain:
                _apply_txn(s, t.events, f"transaction {t.rid.hex()} ({t.where})", rep)
            rep.transactions = len(resolved.chain)
            # the replay moved every share's usage counter as the live commits did; recounted
            # from the rebuilt rows all the same (a transaction applied event by event, or not
            # at all, after a lost record would leave it off)
            usage.recount(s)
            if resolved.chain:
                tip = resolved.chain[-1]
                # Later transactions must sort after every record seen, dead ones included.
                chain.set_head(s, tip.rid, tip.seq, max(t.at for t in txns.values()))
            rep.versions = s.execute(text("SELECT count(*) FROM versions")).scalar()
            rep.shares = s.execute(text("SELECT count(*) FROM shares")).scalar()
            holes = s.execute(text(
                "SELECT DISTINCT v.node_id, v.number FROM version_chunks vc JOIN versions v ON v.id = vc.version_id "
                "LEFT JOIN chunks c ON c.n = vc.chunk WHERE c.pack IS NULL")).all()
            paths = paths_in(s, {n for n, _ in holes})
            rep.incomplete_versions = sorted(f"{paths[n]}@v{num}" for n, num in holes)
            insert_audit(s, [dict(at=int(time.time() * 1e6), user=None, protocol="cli", address=None, action="recover",
                                  share=None, path=None, version=None,
                                  detail=json.dumps({k: v if not isinstance(v, list) else len(v)
                                                     for k, v in rep.as_dict().items()}))])
    finally:
        catalog.close()
    return rep
