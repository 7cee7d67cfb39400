"""The chunk store: dedupe, encode and append chunks; load and verify them.

Uploads hand it batches of chunks from a thread pool (pyfastcdc, blake3, zstandard and
cryptography release the GIL on large buffers, so two cores work at once).  New chunks become
catalog rows only when the version that uses them commits; until then they are invisible, and
GC spares young packs (a grace period) and every commit re-checks,
inside its transaction, that the chunks it references are still there.
"""
from __future__ import annotations

from array import array
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from . import rawsql as raw
from .catalog.db import Catalog
from .clock import now_us
from .codec import FLAG_AEAD, Codec
from .errors import Conflict, Corrupt
from .chain import Txn
from .packs import T_CHUNK, T_TXN, PackDir, PackWriter

SMALL_TXN = 2048          # bytes of a transaction record's JSON below which it is not compressed
ChunkRef = tuple[bytes, int]                      # (chunk id, plaintext length)


class ChunkList:
    """A version's chunk list kept compact (36 bytes a chunk): a 4 GiB upload has ~50,000."""

    __slots__ = ("ids", "lens")

    def __init__(self) -> None:
        self.ids = bytearray()
        self.lens = array("I")

    def extend(self, refs) -> None:
        for cid, n in refs:
            self.ids += cid
            self.lens.append(n)

    def __len__(self) -> int:
        return len(self.lens)

    def __iter__(self):
        ids = self.ids
        for i, n in enumerate(self.lens):
            yield bytes(ids[32 * i:32 * i + 32]), n


NewChunk = tuple[bytes, str, int, int, int]        # (id, pack, offset, record length, raw length)


_PACK_SQL = "INSERT INTO packs (name) VALUES (?) ON CONFLICT (name) DO NOTHING"
# A row without a pack (a chunk recover found referenced but not stored) or an orphan takes the
# fresh copy's place.
_REGISTER_SQL = ('INSERT INTO chunks (id, pack, "offset", length, raw_len, orphaned_at) '
                 "VALUES (?, (SELECT id FROM packs WHERE name = ?), ?, ?, ?, NULL) "
                 f'ON CONFLICT {raw.CHUNK_ID_KEY} DO UPDATE SET pack = excluded.pack, "offset" = excluded."offset", '
                 "length = excluded.length, raw_len = excluded.raw_len, orphaned_at = NULL "
                 "WHERE chunks.id = excluded.id AND (chunks.orphaned_at IS NOT NULL OR chunks.pack IS NULL)")
# (raw.CHUNK_BY_ID: by the id's 16-byte prefix, then the whole id; the id bound twice)
_LOCATION_SQL = ('SELECT p.name, c."offset", c.length, c.raw_len FROM chunks c '
                 "LEFT JOIN packs p ON p.id = c.pack WHERE substr(c.id, 1, 16) = substr(?, 1, 16) AND c.id = ?")



def _ids_in(n: int) -> str:
    """Chunk rows whose id is one of n ids, bound twice (the ids, then the ids again): by the
    unique index on the id's first 16 bytes, then the whole id (raw.CHUNK_BY_ID)."""
    marks = ", ".join("?" * n)
    return f"substr(id, 1, 16) IN ({', '.join(['substr(?, 1, 16)'] * n)}) AND id IN ({marks})"


class ChunkStore:
    def __init__(self, catalog: Catalog, packdir: PackDir, codec: Codec):
        self.catalog = catalog
        self.packdir = packdir
        self.codec = codec
        self.writer = PackWriter(packdir)
        self.pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="chunks")
        self._local = threading.local()

    # -- writing -----------------------------------------------------------------------------
    def existing(self, ids: list[bytes]) -> set[bytes]:
        """Ids already stored and referenced-or-fresh (orphans are rewritten, see gc)."""
        if not ids:
            return set()
        ids = list(set(ids))
        found: set[bytes] = set()
        # Plain SQL on a pooled DBAPI connection (Catalog.raw_read): an expanding IN through
        # SQLAlchemy cost ~0.1 ms of Python per small file, more than the rest of its prepare.
        with raw.read(self.catalog) as r:
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                found.update(row[0] for row in raw.run(
                    r, f"SELECT id FROM chunks WHERE {_ids_in(len(part))} AND orphaned_at IS NULL "
                    "AND pack IS NOT NULL",
                    part + part).fetchall())
        return found

    def store_batch(self, chunks: list[bytes], seen: dict[bytes, None]) -> tuple[list[ChunkRef], list[NewChunk]]:
        """Store the chunks this upload has not seen and the store does not have; returns the
        refs of all of them and the locations of the ones written."""
        ids = [self.codec.chunk_id(c) for c in chunks]
        have = self.existing([i for i in ids if i not in seen])
        out: list[ChunkRef] = []
        new: list[NewChunk] = []
        for cid, data in zip(ids, chunks):
            if cid not in seen and cid not in have:
                flags, payload = self.codec.encode(T_CHUNK, cid, data)
                pack, off, ln = self.writer.append(T_CHUNK, cid, flags, len(data), payload)
                new.append((cid, pack, off, ln, len(data)))
                seen[cid] = None
            out.append((cid, len(data)))
        return out, new

    def write_txn(self, txn: "Txn") -> None:
        """One record holding a whole catalog transaction (durable at the next sync())."""
        data = txn.payload()
        # A small record (one upload or namespace change: ~0.5 KiB of JSON) is stored as it is:
        # zstd saved ~150 bytes of it for ~12 us, a tenth of the commit's Python.
        flags, payload = self.codec.encode(T_TXN, txn.rid, data, compress=len(data) > SMALL_TXN)
        self.writer.append(T_TXN, txn.rid, flags, len(data), payload)

    def sync(self) -> None:
        self.writer.sync()

    def verify_refs(self, s: Session, refs: "list[ChunkList]", new: list[NewChunk]) -> None:
        """Inside the commit transaction: every chunk the version uses must still be stored.

        GC deletes chunk rows and pack files only inside write transactions, so once this check
        passes nothing it saw can vanish before the commit; if GC won a race, the upload fails
        with Conflict instead of committing a version with holes.
        """
        fresh = {c[0] for c in new}
        packs = {c[1] for c in new}
        if not self.packdir.store.fenced:
            # A local pack file exists from its first byte, so its absence always means gc took it.
            for pack in packs:
                if not self.packdir.exists(pack):
                    raise Conflict("a pack of this upload was reclaimed by gc meanwhile; upload again")
        else:
            self._verify_fenced(packs)
        wanted = list({cid for refs_ in refs for cid, _ in refs_ if cid not in fresh})
        for i in range(0, len(wanted), 500):
            part = wanted[i:i + 500]
            n = raw.scalar(s, f"SELECT count(*) FROM chunks WHERE {_ids_in(len(part))} "
                           "AND pack IS NOT NULL", part + part)
            if n != len(part):
                raise Conflict("chunks this upload reuses were reclaimed by gc meanwhile; upload again")

    def _verify_fenced(self, packs: set[str]) -> None:
        """An object store's packs of this upload are still there (inside the write transaction).

        A pack whose upload has not completed is in no listing: no gc can have taken it, and
        none can until this transaction ends (gc deletes inside write transactions).  The others
        are safe if the gc fence has not moved since before they were created (one small GET,
        PackStore.gc_fence); only when it moved is each asked about (a HEAD, which makes some
        servers, rclone's local backend among them, hash the whole pack)."""
        sent = []
        for pack in packs:
            in_store, value = self.writer.fence_state(pack)
            if in_store:
                sent.append((pack, value))
        if not sent:
            return
        fence = self.packdir.store.gc_fence()
        self.writer.saw_fence(fence)
        for pack, value in sent:
            if value != fence and not self.packdir.exists(pack):
                raise Conflict("a pack of this upload was reclaimed by gc meanwhile; upload again")

    @staticmethod
    def register_chunks(s: Session, new: list[NewChunk]) -> None:
        """Catalog rows for freshly written chunks; an orphaned row takes the fresh copy's place.

        One prepared statement run with executemany: building an ORM/Core insert per 500 rows
        cost ~15 % of a random-data put in SQLAlchemy's per-value coercion.  The upsert syntax
        is the same in SQLite (>= 3.24) and PostgreSQL."""
        if not new:
            return
        new = list({c[0]: c for c in reversed(new)}.values())   # two uploads of a batch may share a chunk
        s.flush()                       # ORM rows of the builder first (nothing pending: a no-op)
        # plain SQL on the session's connection (archive/rawsql.py): one prepared executemany
        raw.many(s, _PACK_SQL, [(p,) for p in dict.fromkeys(c[1] for c in new)])
        raw.many(s, _REGISTER_SQL, [c[:5] for c in new])

    # -- reading -----------------------------------------------------------------------------
    def location(self, cid: bytes | None) -> tuple[str, int, int, int]:
        if cid is None:               # a chunk reference whose row is gone (a damaged catalog)
            raise Corrupt("a chunk of this version is missing from the catalog")
        with raw.read(self.catalog) as r:
            row = raw.run(r, _LOCATION_SQL, (cid, cid)).fetchone()
        if row is None or row[0] is None:
            raise Corrupt(f"chunk {cid.hex()} is missing from the catalog")
        return tuple(row)

    def load(self, cid: bytes, loc: tuple[str, int, int, int] | None = None, verify: bool | None = None) -> bytes:
        """Plaintext of a chunk; raises Corrupt rather than return wrong bytes."""
        if loc is None or loc[0] is None:
            loc = self.location(cid)
        encrypted = self.codec.key.encrypted
        check_id = verify or (verify is None and not encrypted)
        # The GCM tag authenticates an encrypted record and the keyed BLAKE3 id a plain one:
        # the CRC is only needed when neither is checked.
        crc = not encrypted and not check_id
        try:
            rec = self.packdir.read_record(loc[0], loc[1], loc[2], check_crc=crc)
        except Corrupt:
            fresh = self.location(cid)        # GC may have moved it meanwhile
            if fresh == tuple(loc):
                raise
            rec = self.packdir.read_record(fresh[0], fresh[1], fresh[2], check_crc=crc)
        if rec.rid != cid or rec.rtype != T_CHUNK:
            raise Corrupt(f"chunk {cid.hex()}: pack record has another id")
        if encrypted and not rec.flags & FLAG_AEAD:
            raise Corrupt(f"chunk {cid.hex()}: record is not encrypted in an encrypted repository")
        data = self.codec.decode(T_CHUNK, cid, rec.flags, rec.payload, rec.raw_len)
        if check_id:
            if self.codec.chunk_id(data) != cid:
                raise Corrupt(f"chunk {cid.hex()} fails its checksum (its bytes do not match its id)")
        return data

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.writer.close()
