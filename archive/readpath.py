"""The lean read path: chunks decoded straight from coalesced pack reads.

Why: a whole-file download or a tree restore used to pay, per 64 KiB chunk, a catalog lookup
(or a window row), a thread-pool future, one `pread` of one record, a CRC *and* a keyed BLAKE3
of the same bytes.  The chunks of a file are written one after the other into the same pack,
so their records are usually adjacent: one `pread` of a few MiB fetches dozens of them, and
each is then checked and decoded in place (memoryview slices, no copy for a stored-raw chunk).

Verification stays: every chunk is authenticated before its bytes leave this module: by its
AES-GCM tag (encrypted repositories; the record's type and id are the associated data) or by
its keyed BLAKE3 id (plain repositories; stronger than the record's CRC, which is therefore not
computed a second time).  A record that is not where the catalog says (gc moved it meanwhile)
or that fails its check is retried through `ChunkStore.load`, which re-reads the location and
raises Corrupt rather than return wrong bytes.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from typing import Sequence

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .codec import FLAG_AEAD, FLAG_ZSTD, NONCE
from .errors import Corrupt
from .packs import REC, REC_MAGIC, T_CHUNK
from .packstore import LocalPackStore

#: the most bytes one coalesced pread fetches (and a block of read-ahead holds)
RUN_BYTES = 4 * 1024 * 1024
#: records this far apart in one pack are still read with one pread (the gap is read and dropped)
RUN_GAP = 64 * 1024

#: AES-GCM's tag, after the ciphertext
TAG = 16
_CHUNK_AD = bytes([T_CHUNK])
#: cryptography >= 44 decrypts into a caller's buffer
_DECRYPT_INTO = hasattr(AESGCM, "decrypt_into")

# A chunk row as the Reader's window and the tree restore fetch it:
# (file offset, length, chunk id, pack id, record offset, record length, raw length)
Row = tuple


def runs(rows: Sequence[Row], limit: int = RUN_BYTES, gap: int = RUN_GAP) -> list[list[Row]]:
    """Split chunk rows (in the order they are wanted) into runs that one pread each can fetch:
    same pack, each record starting at most `gap` bytes after the previous one ends, at most
    `limit` bytes from the first record's start to the last one's end."""
    out: list[list[Row]] = []
    cur: list[Row] = []
    start = end = 0
    for r in rows:
        if r[3] is None:                      # no location known: a run of its own (load looks it up)
            if cur:
                out.append(cur)
            out.append([r])
            cur = []
            continue
        if cur and r[3] == cur[0][3] and end <= r[4] <= end + gap and r[4] + r[5] - start <= limit:
            cur.append(r)
            end = r[4] + r[5]
            continue
        if cur:
            out.append(cur)
        cur, start, end = [r], r[4], r[4] + r[5]
    if cur:
        out.append(cur)
    return out


class Buffers:
    """Buffers the coalesced preads of a local pack store land in, reused once nothing views
    them any more.

    Why: `archivectl serve` fixes glibc's mmap threshold at 128 KiB (protocols/memory.py), so a
    fresh 1 MiB `bytes` per pread was a new mapping whose pages faulted in one by one and went
    back to the kernel when freed: measured here, that doubled the core's CPU per MiB read
    (0.54 -> 1.3 ms).  A buffer handed out is kept (at most `keep_bytes` per size class) and
    handed out again only when no memoryview of it is left (a bytearray refuses to resize while
    it is exported, which `_free` tries), so the decoded chunks (memoryviews into it for a chunk
    stored raw) stay valid for as long as anything holds them.  What is kept stays allocated
    for the life of the process: at most 8 MiB per size class (256 KiB to 4 MiB, and larger
    for an oversized record), more busy buffers than that are allocated and freed as before."""

    def __init__(self, keep_bytes: int = 8 * 1024 * 1024, smallest: int = 256 * 1024) -> None:
        self.keep_bytes, self.smallest = keep_bytes, smallest
        self.lock = threading.Lock()
        self.kept: dict[int, list[bytearray]] = {}

    @staticmethod
    def _free(buf: bytearray) -> bool:
        try:
            del buf[-1:]
        except BufferError:
            return False
        buf.append(0)
        return True

    def view(self, n: int) -> memoryview:
        """A writable view of n bytes; the buffer stays busy for as long as a view of it lives."""
        size = self.smallest
        while size < n:
            size *= 2
        with self.lock:
            kept = self.kept.setdefault(size, [])
            for buf in kept:
                if self._free(buf):
                    return memoryview(buf)[:n]     # exported before the lock is let go
            buf = bytearray(size)
            if len(kept) * size < self.keep_bytes:
                kept.append(buf)
            return memoryview(buf)[:n]


BUFFERS = Buffers()


def read_range(packs, pack_id: str, offset: int, length: int) -> memoryview:
    """The bytes of a pack range: read into a reused buffer (`Buffers`) from a local pack store,
    through the store's read_range from any other."""
    if isinstance(packs, LocalPackStore):
        view = BUFFERS.view(length)
        return view[:packs.read_into(pack_id, offset, view)]
    return memoryview(packs.read_range(pack_id, offset, length))


def decode_record(codec, encrypted: bool, rec: memoryview, cid: bytes, raw_len: int, out=None):
    """The verified plaintext of one chunk record held in `rec` (header + payload); a
    memoryview into `rec` for a chunk stored raw in a plain repository (no copy).

    `out` (encrypted repositories): a writable view the record is decrypted into (at least the
    payload's length less NONCE and TAG bytes), so that a chunk stored raw comes back as a view
    of it rather than a fresh `bytes`; returns (plaintext, bytes of `out` used) then."""
    if len(rec) < REC.size:
        raise Corrupt(f"chunk {cid.hex()}: truncated record")
    magic, rtype, flags, rid, rlen, plen, _crc = REC.unpack_from(rec)
    if magic != REC_MAGIC or rtype != T_CHUNK or rid != cid or rlen != raw_len or plen != len(rec) - REC.size:
        raise Corrupt(f"chunk {cid.hex()}: the pack holds another record there")
    payload = rec[REC.size:]
    if encrypted:
        if not flags & FLAG_AEAD:             # never accept an unauthenticated record here
            raise Corrupt(f"chunk {cid.hex()}: record is not encrypted in an encrypted repository")
        if out is None:
            return codec.decode(T_CHUNK, cid, flags, payload, raw_len)
        nonce, sealed, ad = payload[:NONCE], payload[NONCE:], _CHUNK_AD + cid
        try:
            # codec.decode's AES-GCM step (same key, nonce, associated data); a chunk stored
            # raw is decrypted straight into `out`, a compressed one (smaller) into a bytes
            if flags & FLAG_ZSTD:
                return _decompress_into(codec, codec.open_sealed(nonce, sealed, ad), cid, raw_len, out), raw_len
            if len(sealed) - TAG != raw_len or len(out) < raw_len:
                raise Corrupt(f"record {cid.hex()} has length {len(sealed) - TAG}, expected {raw_len}")
            codec.open_sealed(nonce, sealed, ad, out[:raw_len])
        except InvalidTag:
            raise Corrupt(f"record {cid.hex()} failed authentication") from None
        return out[:raw_len], raw_len
    if out is not None and flags & FLAG_ZSTD and not flags & FLAG_AEAD:
        data, used = _decompress_into(codec, payload, cid, raw_len, out), raw_len
    else:
        data, used = codec.decode(T_CHUNK, cid, flags, payload, raw_len), 0
    if codec.chunk_id(data) != cid:
        raise Corrupt(f"chunk {cid.hex()} fails its checksum (its bytes do not match its id)")
    return data if out is None else (data, used)


def _decompress_into(codec, payload, cid: bytes, raw_len: int, out) -> memoryview:
    """codec.decode's zstd step, into out[:raw_len] rather than a fresh `bytes`: exactly
    raw_len bytes from the payload's frame, else Corrupt."""
    if len(out) < raw_len:
        raise Corrupt(f"chunk {cid.hex()}: no room to decode it")
    dst = out[:raw_len]
    try:
        reader = codec.decompressor(payload, cid).stream_reader(payload)
        n = 0
        while n < raw_len:
            k = reader.readinto(dst[n:])
            if not k:
                break
            n += k
        if n != raw_len or reader.read(1):
            raise Corrupt(f"record {cid.hex()} does not decode to {raw_len} bytes")
    except zstandard.ZstdError as e:
        raise Corrupt(f"record {cid.hex()} does not decompress: {e}") from None
    return dst


def load_run(store, run: Sequence[Row]) -> list:
    """The verified plaintexts of a run's chunks (bytes or memoryviews), in order."""
    first = run[0]
    if first[3] is None or len(run) == 1 and first[5] is None:
        return [store.load(first[2], None)]
    codec = store.codec
    encrypted = codec.key.encrypted
    base = first[4]
    try:
        buf = read_range(store.packdir.store, first[3], base, run[-1][4] + run[-1][5] - base)
    except Corrupt:                           # the pack is gone (gc): each chunk looks itself up
        buf = memoryview(b"")
    out = []
    if encrypted:
        total = sum(r[6] for r in run) if _DECRYPT_INTO else 0
    else:                                     # room for the compressed ones (a raw one is a view of buf)
        total = 0
        for r in run:
            a = r[4] - base
            if len(buf) >= a + REC.size and REC.unpack_from(buf, a)[2] & FLAG_ZSTD:
                total += r[6]
    if len(run) > 1 and 0 < total <= RUN_BYTES:
        # Decrypted and decompressed into one reused buffer (`Buffers`) for the run: a fresh
        # `bytes` per chunk was, in `archivectl serve` (mmap threshold 128 KiB), a new mapping
        # per chunk whose pages faulted in one by one and were unmapped again when the block
        # was dropped.
        plain = BUFFERS.view(total)
        used = 0
        for r in run:
            a = r[4] - base
            try:
                data, n = decode_record(codec, encrypted, buf[a:a + r[5]], r[2], r[6], plain[used:])
                used += n
                out.append(data)
            except Corrupt:
                out.append(store.load(r[2], (r[3], r[4], r[5], r[6])))
        return out
    for r in run:
        a = r[4] - base
        try:
            out.append(decode_record(codec, encrypted, buf[a:a + r[5]], r[2], r[6]))
        except Corrupt:
            # Moved by gc since the row was read, or really damaged: load() re-reads the
            # location and either finds the chunk's new place or raises.
            out.append(store.load(r[2], (r[3], r[4], r[5], r[6])))
    return out


# -- restoring a tree ----------------------------------------------------------------------------

#: files of at most this size are restored in batches; larger ones stream through a Reader (or
#: are a batch of their own, `restore`)
BATCH_FILE_MAX = 8 * 1024 * 1024
#: a batch ends at this many files or this many bytes (what it holds in memory at most)
BATCH_FILES = 512
BATCH_BYTES = 32 * 1024 * 1024
#: coalesced reads decoded ahead of the file being written
RUNS_AHEAD = 4


def _batch_sql(n: int) -> str:
    """Every chunk row of n (node, version number) pairs, with named parameters :n<i>, :v<i>
    (SQLAlchemy's text() and sqlite3 both take them)."""
    pairs = ", ".join(f"(:n{i}, :v{i})" for i in range(n))
    # Joined from the list (not `(node_id, number) IN (VALUES ...)`, which SQLite answers with
    # a scan of every version): one index lookup per file.  A one-chunk version holds its chunk
    # in its row, a longer one in chunk_lists: one arm each (through the view version_chunks,
    # SQLite would materialize the whole view for the LEFT JOIN).
    return f"""
        WITH w(n, num) AS (VALUES {pairs})
        SELECT v.node_id, v.number, v.deleted, 0, v.size, c.id, p.name, c.offset, c.length, c.raw_len
        FROM w JOIN versions v ON v.node_id = w.n AND v.number = w.num
        LEFT JOIN chunks c ON c.n = v.chunk
        LEFT JOIN packs p ON p.id = c.pack
        WHERE v.chunk IS NOT NULL
        UNION ALL
        SELECT v.node_id, v.number, v.deleted, vc.offset, vc.length, c.id, p.name, c.offset, c.length, c.raw_len
        FROM w JOIN versions v ON v.node_id = w.n AND v.number = w.num
        LEFT JOIN chunk_lists vc ON vc.version_id = v.id
        LEFT JOIN chunks c ON c.n = vc.chunk
        LEFT JOIN packs p ON p.id = c.pack
        WHERE v.chunk IS NULL
        ORDER BY 1, 4"""


class TreeSource:
    """What a tree restore reads: a share's listing, its catalog and its chunk store.  This one
    is a ShareFS at `at` (None: now); the CLI's lean path (archive/cli/files.py) gives its own."""

    def __init__(self, fs, at: float | None = None) -> None:
        self.fs, self.at = fs, at
        self.store = fs.repo.store

    def listdir(self, rel: str, entry):
        """The entries of the folder `rel` (`entry`: its own entry, None for the top)."""
        return self.fs.listdir(rel, at=self.at)

    def query(self, sql: str, params: dict) -> list:
        from sqlalchemy import text
        with self.fs.repo.catalog.engine.connect() as c:
            rows = c.execute(text(sql), params).all()
            c.rollback()
        return rows

    def submit(self, fn, *args):
        return self.store.pool.submit(fn, *args)

    def missing(self, e, why: str) -> Exception:
        from .errors import NotFound
        return NotFound(f"{self.fs._show(e.path)} version {e.version} {why}")


def _write(target, pieces, mtime: float) -> None:
    """Write a file under a temporary name, set its mtime and rename it into place: a failed
    restore never leaves a truncated file under the real name."""
    import os
    tmp = target.with_name(f".{target.name}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        try:
            for p in pieces:
                view = memoryview(p)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.utime(tmp, (mtime, mtime))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _restore_batch(src: TreeSource, batch: list, bar=None) -> None:
    """Restore files (entry, target) together: one catalog query for all their chunk lists, the
    files ordered by where their first chunk lies, adjacent records (of one file or of
    consecutive ones) read with one pread, decoding RUNS_AHEAD reads ahead (`src.submit`).  A
    file's chunks are written as they come, so a batch of one large file holds at most
    RUNS_AHEAD + 1 reads in memory; `bar.update(n)` is told of every n bytes written."""
    store = src.store
    params = {}
    for i, (e, _) in enumerate(batch):
        params[f"n{i}"], params[f"v{i}"] = e.node_id, e.version
    rows = src.query(_batch_sql(len(batch)), params)
    chunks: dict[tuple[int, int], list] = {}
    deleted = set()
    for node, number, dele, off, ln, cid, pack, poff, plen, raw in rows:
        lst = chunks.setdefault((node, number), [])
        if dele:
            deleted.add((node, number))
        if cid is not None:
            lst.append((off, ln, cid, pack, poff, plen, raw))
    for e, _ in batch:
        if (e.node_id, e.version) not in chunks or (e.node_id, e.version) in deleted:
            raise src.missing(e, "is gone")

    def where(item) -> tuple:
        lst = chunks[(item[0].node_id, item[0].version)]
        return (lst[0][3] or "", lst[0][4] or 0) if lst else ("", 0)
    order = sorted(batch, key=where)
    flat = [r for e, _ in order for r in chunks[(e.node_id, e.version)]]
    plan = runs(flat)
    pending: list = []           # futures of the runs, in order
    nxt = 0
    got: deque = deque()         # decoded chunks not yet written, in order

    def more() -> None:
        nonlocal nxt
        while nxt < len(plan) and len(pending) < RUNS_AHEAD:
            pending.append(src.submit(load_run, store, plan[nxt]))
            nxt += 1
        got.extend(pending.pop(0).result())

    def pieces(e, n: int):
        """The file's n chunks as they are decoded; raises if they do not add up to its size
        (before _write renames the file into place)."""
        total = 0
        for _ in range(n):
            if not got:
                more()
            p = got.popleft()
            total += len(p)
            yield p
            if bar is not None:
                bar.update(len(p))
        if total != e.size:
            raise src.missing(e, "has chunks that do not add up to its size")
    for e, target in order:
        _write(target, pieces(e, len(chunks[(e.node_id, e.version)])), e.mtime)


def restore_tree(fs, rel: str, dest, at: float | None, large) -> int:
    """Write the tree under `rel` of the ShareFS `fs` (as it was `at`) into the local folder
    `dest`; returns the number of files.  Small files go in batches (`_restore_batch`); each file
    above BATCH_FILE_MAX is handed to `large(entry, target)`, which streams it through a Reader."""
    return restore(TreeSource(fs, at), rel, dest, large)


def restore(src: TreeSource, rel: str, dest, large=None, top=None, progress=None) -> int:
    """restore_tree from any TreeSource (`top`: the entry of `rel`, for its listdir); without
    `large`, a file above BATCH_FILE_MAX is a batch of its own (its chunks streamed to disk as
    they are decoded), shown by `progress(entry)` when given (a context manager giving a bar
    with update(n), as click.progressbar)."""
    from .paths import join, split
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    batch: list = []
    size = 0
    stack = [(rel, dest, top)]
    while stack:
        r, d, entry = stack.pop()
        for e in src.listdir(r, entry):
            if e.is_dir:
                (d / e.name).mkdir(exist_ok=True)
                stack.append((join(split(r) + (e.name,)), d / e.name, e))
                continue
            count += 1
            if e.size > BATCH_FILE_MAX or e.version is None:
                if large is not None:
                    large(e, d / e.name)
                elif e.version is None:
                    raise src.missing(e, "has no content")
                elif progress is None:
                    _restore_batch(src, [(e, d / e.name)])
                else:
                    with progress(e) as bar:
                        _restore_batch(src, [(e, d / e.name)], bar)
                continue
            batch.append((e, d / e.name))
            size += e.size
            if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
                _restore_batch(src, batch)
                batch, size = [], 0
    if batch:
        _restore_batch(src, batch)
    return count
