"""Rebuild a lost catalog from the packs alone.

Chunk records give the chunk table; event records, replayed in time order through the same
`events.apply` the live system uses, give shares, users, grants, folders and every version.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass

from sqlalchemy import text

from . import events
from .catalog import models as m
from .catalog.db import Catalog, migrate
from .errors import Corrupt, Exists
from .packs import T_CHUNK, T_EVENT, PackDir
from .packstore import PackStore


@dataclass
class RecoverReport:
    packs: int = 0
    chunks: int = 0
    events: int = 0
    skipped_events: int = 0
    versions: int = 0
    shares: int = 0
    damaged_packs: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def catalog_is_empty(catalog: Catalog) -> bool:
    with catalog.engine.connect() as c:
        try:
            return c.execute(text("SELECT count(*) FROM shares")).scalar() == 0
        except Exception:
            return True


def recover(path, key, codec, catalog_url: str, force: bool = False, progress=None) -> RecoverReport:
    """Rebuild the catalog at `catalog_url` (SQLite file moved aside when it has content)."""
    from .catalog.db import sqlite_url
    rep = RecoverReport()
    catalog = Catalog(catalog_url)
    if not catalog_is_empty(catalog):
        if not force:
            raise Exists("the catalog is not empty: pass --force to rebuild it (the old one is kept aside)")
        catalog.close()
        if catalog_url.startswith("sqlite:///"):
            db = catalog_url[len("sqlite:///"):]
            stamp = time.strftime("%Y%m%d%H%M%S")
            for suffix in ("", "-wal", "-shm"):
                try:
                    shutil.move(db + suffix, f"{db}.broken-{stamp}{suffix}")
                except FileNotFoundError:
                    pass
        catalog = Catalog(catalog_url)
    migrate(catalog)
    packdir = PackDir(path if isinstance(path, PackStore) else path / "packs")
    evs: list[tuple[int, int, dict]] = []
    chunks: dict[bytes, tuple] = {}
    for i, pack in enumerate(packdir.list()):
        rep.packs += 1
        try:
            for r in packdir.scan(pack):
                if r.rtype == T_CHUNK and r.rid not in chunks:
                    chunks[r.rid] = (pack, r.offset, r.total_len, r.raw_len)
                elif r.rtype == T_EVENT:
                    try:
                        data = codec.decode(T_EVENT, r.rid, r.flags, r.payload, r.raw_len)
                        ev = json.loads(data)
                        evs.append((ev["at"], len(evs), ev))
                    except (Corrupt, ValueError, KeyError):
                        rep.skipped_events += 1
        except Corrupt:
            rep.damaged_packs += 1
        if progress:
            progress(1)
    evs.sort(key=lambda t: (t[0], t[1]))
    with catalog.write() as s:
        rows = [{"id": cid, "pack_id": p, "offset": o, "length": ln, "raw_len": raw, "orphaned_at": None}
                for cid, (p, o, ln, raw) in chunks.items()]
        for i in range(0, len(rows), 1000):
            s.execute(m.Chunk.__table__.insert(), rows[i:i + 1000])
        rep.chunks = len(rows)
        for _, _, ev in evs:
            try:
                with s.begin_nested():
                    events.apply(s, ev)
                rep.events += 1
            except Exception:
                rep.skipped_events += 1
        rep.versions = s.execute(text("SELECT count(*) FROM versions")).scalar()
        rep.shares = s.execute(text("SELECT count(*) FROM shares")).scalar()
        s.add(m.AuditEvent(at=int(time.time() * 1e6), user=None, protocol="cli", address=None, action="recover",
                           share=None, path=None, version=None, detail=json.dumps(rep.as_dict())))
    catalog.close()
    return rep
