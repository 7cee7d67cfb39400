"""Readers and writers of file content.

Writer: a sequential upload; chunks are cut, deduped, compressed and sealed in a thread pool
with a bounded number of batches in flight, so memory stays flat whatever the file size.
Reader: random access through the version's chunk list, a small cache and read-ahead.
Updater: random writes (SMB/NFS) staged in a sparse temporary file; on commit only the bytes
from the first changed chunk on are re-chunked, unchanged chunks are reused.
"""
from __future__ import annotations

import io
import os
import tempfile
import threading
from collections import OrderedDict, deque
from concurrent.futures import Future

import blake3

from . import events, rawsql, readpath, usage
from .chunker import StreamChunker
from .clock import to_us
from .errors import ArchiveError, Corrupt, QuotaExceeded
from .lazysql import models as m
from .lazysql import lazy_text, real, select
from .paths import fold
from .store import ChunkList, ChunkRef, NewChunk

BATCH = 4 * 1024 * 1024
IN_FLIGHT = 3
PREFETCH = 4
INLINE = 256 * 1024
REGISTER_EVERY = 2048        # new chunks (~160 MiB) between early chunk-row registrations
WINDOW = 512

# The chunk rows of a version from the chunk holding :p on (a Reader's window).
# A one-chunk version's chunk is in its row (versions.chunk), a longer list in chunk_lists:
# the two arms, each an index lookup (the view version_chunks would sort a whole list here).
_WINDOW_TEXT = """
    SELECT 0, v.size, c.id, p.name, c.offset, c.length, c.raw_len
    FROM versions v LEFT JOIN chunks c ON c.n = v.chunk LEFT JOIN packs p ON p.id = c.pack
    WHERE v.id = :v AND v.chunk IS NOT NULL
    UNION ALL
    SELECT * FROM (
        SELECT vc.offset, vc.length, c.id, p.name, c.offset, c.length, c.raw_len
        FROM chunk_lists vc LEFT JOIN chunks c ON c.n = vc.chunk LEFT JOIN packs p ON p.id = c.pack
        WHERE vc.version_id = :v AND vc.offset >= coalesce(
            (SELECT max(v2.offset) FROM chunk_lists v2 WHERE v2.version_id = :v AND v2.offset <= :p), 0)
        ORDER BY vc.offset LIMIT :n) w
    ORDER BY 1"""
_WINDOW_SQL = lazy_text(_WINDOW_TEXT)
_CHUNK_LIST_SQL = lazy_text("""
    SELECT 0, c.id, v.size FROM versions v LEFT JOIN chunks c ON c.n = v.chunk WHERE v.id = :v AND v.chunk IS NOT NULL
    UNION ALL
    SELECT * FROM (SELECT vc.offset, c.id, vc.length FROM chunk_lists vc LEFT JOIN chunks c ON c.n = vc.chunk
                   WHERE vc.version_id = :v) w
    ORDER BY 1""")


def chunk_list(repo, version_id: int) -> list[tuple[int, bytes, int]]:
    """(offset, chunk id, length) of every chunk of a version, in order."""
    with repo.catalog.session() as s:
        return [tuple(r) for r in s.execute(
            real(_CHUNK_LIST_SQL), {"v": version_id})]


def content_etag(repo, refs: ChunkList, size: int) -> str:
    """Content hash = keyed hash of the chunk ids: equal content, equal etag, at no extra pass."""
    h = blake3.blake3(key=repo.key.id_key)
    h.update(refs.ids)
    h.update(size.to_bytes(8, "big"))
    return h.hexdigest()[:32]


def small_etag(repo, data) -> str:
    """The etag `data` (a whole file held in memory) would get as a version: it is cut and its
    chunk ids hashed exactly as a Writer does, but nothing is looked up, compressed or stored.
    A tree upload compares it with the current version's etag first, so a file that only got
    a new mtime (a re-extracted archive) costs a read and a hash, not a Writer."""
    ch = StreamChunker(repo.key.seed, repo.chunk_avg)
    chunks = ch.push(data, BATCH) + ch.finish()        # as Writer.write, then Writer.prepare
    refs = ChunkList()
    chunk_id = repo.store.codec.chunk_id
    refs.extend((chunk_id(c), len(c)) for c in chunks)
    return content_etag(repo, refs, len(data))


def prepare_many(items: list[tuple["Writer", bytes]]) -> list["Writer"]:
    """Prepare fresh Writers of small files held whole in memory (a tree upload), all at once:
    each file is cut as Writer.write would cut it, and ONE store_batch stores the chunks of all
    of them (one existence query instead of a read transaction per file; a chunk two of the
    files share is stored once).  The new chunks' locations go with the first Writer, so the
    Writers must be committed in the same commit_many batch (the chunk rows are registered by
    that transaction, and its verify_refs checks the reused ones).  Runs on any thread; a
    failure aborts every Writer of the group."""
    writers = [w for w, _ in items]
    try:
        cut = [w._take(data) for w, data in items]
        repo = writers[0].repo
        refs, new = repo.store.store_batch([c for cs in cut for c in cs], {})
        pos = 0
        for w, cs in zip(writers, cut):
            w._refs.extend(refs[pos:pos + len(cs)])
            pos += len(cs)
        writers[0]._new.extend(new)
        for w in writers:
            w.prepare()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    return writers


class Writer:
    """Write sequentially, then commit() (one new version) or abort() (none)."""

    def __init__(self, fs, parts: tuple[str, ...], mtime: float | None = None):
        self.fs = fs
        self.repo = fs.repo
        self.parts = parts
        self.mtime = to_us(mtime) if mtime is not None else None
        self.size = 0
        self._chunker = StreamChunker(self.repo.key.seed, self.repo.chunk_avg)
        self._refs = ChunkList()
        self._futures: deque[Future] = deque()
        self._seen: dict[bytes, None] = {}
        self._new: list[NewChunk] = []
        self._state = "open"
        self._room = None
        if fs.quota is not None:            # a cheap early refusal (the share's counter, one row);
            used, quota = fs.usage()        # the commit checks again inside its transaction
            self._room = None if quota is None else quota - used

    # -- seeding (append, update) ----------------------------------------------------------
    def seed(self, refs: list[ChunkRef], size: int) -> None:
        """Start from existing chunks (their content is not re-read or re-stored)."""
        self._refs.extend(refs)
        self.size += size

    def seed_from(self, version_id: int, size: int) -> None:
        """Start with a version's content: reuse all chunks but the last (cut by end of file)."""
        rows = chunk_list(self.repo, version_id)
        if not rows:
            return
        self.seed([(cid, ln) for _, cid, ln in rows[:-1]], rows[-1][0])
        self.write(self.repo.store.load(rows[-1][1]))

    # -- streaming ---------------------------------------------------------------------------
    def write(self, data) -> int:
        if self._state != "open":
            raise ArchiveError(f"write on a {self._state} upload")
        n = len(data)
        self.size += n
        if self._room is not None and self.size > self._room:
            self.abort()
            raise QuotaExceeded(f"share {self.fs.share_name!r} is over its quota")
        try:
            chunks = self._chunker.push(data, BATCH)
            if chunks:
                self._submit(chunks)
        except BaseException:
            self.abort()
            raise
        return n

    def _take(self, data) -> list[bytes]:
        """All of a fresh Writer's content at once: its chunks, cut as write() then prepare()
        would cut them, for the caller to store (prepare_many)."""
        if self._state != "open" or self.size or self._futures:
            raise ArchiveError(f"_take on a {self._state} or already written upload")
        self.size = len(data)
        if self._room is not None and self.size > self._room:
            raise QuotaExceeded(f"share {self.fs.share_name!r} is over its quota")
        return self._chunker.push(data, BATCH) + self._chunker.finish()

    def _submit(self, chunks: list[bytes]) -> None:
        while len(self._futures) >= IN_FLIGHT:
            self._absorb(self._futures.popleft().result())
        self._futures.append(self.repo.store.pool.submit(self.repo.store.store_batch, chunks, self._seen))

    def _absorb(self, result) -> None:
        refs, new = result
        self._refs.extend(refs)
        self._new.extend(new)
        if len(self._new) >= REGISTER_EVERY:
            self._register()

    def _register(self) -> None:
        """Make a large upload's chunk rows known early, so memory does not grow with the file.

        The pack bytes are made durable first; the rows reference no version yet, so GC treats
        them as fresh orphans and spares them for its grace period, and the commit re-checks
        that they are still there."""
        store = self.repo.store
        store.sync()
        with self.repo.catalog.write() as s:
            store.register_chunks(s, self._new)
        for c in self._new:
            self._seen.pop(c[0], None)     # found by `existing` from now on
        self._new = []

    def _drain(self) -> None:
        while self._futures:
            self._absorb(self._futures.popleft().result())

    def prepare(self) -> None:
        """Finish chunking and storing (no catalog change yet); used by commit and commit_many."""
        if self._state != "open":
            raise ArchiveError(f"commit of a {self._state} upload")
        try:
            tail = self._chunker.finish()
            if tail and not self._futures and sum(map(len, tail)) <= INLINE:
                # Small files: a thread hand-off costs more than the work.
                self._absorb(self.repo.store.store_batch(tail, self._seen))
            elif tail:
                self._submit(tail)
            self._drain()
            if self._room is not None and self.size > self._room:
                raise QuotaExceeded(f"share {self.fs.share_name!r} is over its quota")
            self._etag = content_etag(self.repo, self._refs, self.size)
        except BaseException:
            self.abort()
            raise
        self._state = "prepared"

    @property
    def etag(self) -> str:
        """The content hash, known once prepare() has run."""
        return self._etag

    #: per-version object metadata (JSON text) stored with the version, e.g. S3's MD5 and Content-Type
    meta: str | None = None

    #: the node the version went to, once the commit has built its event (FTP's MFMT after STOR)
    node_id: int | None = None

    def event(self, s) -> dict:
        ev = self.fs.commit_event(s, self.parts, self.size, self.mtime, self._etag, chunks=self._refs)
        self.node_id = ev["node"]
        if self.meta is not None:
            ev["meta"] = self.meta
        return ev

    def commit(self):
        """Make the bytes written one new version; returns archive.Version."""
        self.prepare()
        return self.repo.group_commit.commit(self)

    def abort(self) -> None:
        """Drop the upload: no version; its written chunks are garbage for gc."""
        if self._state not in ("open", "prepared"):
            return
        self._state = "aborted"
        for f in self._futures:
            try:
                f.result()
            except BaseException:
                pass
        self._futures.clear()

    @property
    def committed(self) -> bool:
        return self._state == "committed"

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self._state == "open":
                self.commit()
        else:
            self.abort()


class Mutation:
    """A namespace change (create, remove, mkdir, rmdir, rename) waiting to share a transaction
    with others: `build(s)` returns its events (reading only), `audit(evs)` its audit rows."""
    __slots__ = ("repo", "build", "audit")

    def __init__(self, repo, build, audit=None) -> None:
        self.repo, self.build, self.audit = repo, build, audit


def _commit_batch(writers: list) -> list:
    """Commit prepared writers (and Mutations) in one transaction; returns, per item, a Version
    (a Mutation: its event list) or the exception that item alone hit (a folder in the way, a
    vanished parent), so one bad upload does not fail the others of its batch.  Errors of the
    whole transaction (disk full) are raised."""
    repo = writers[0].repo
    outcome: list = [None] * len(writers)
    new = [c for w in writers if isinstance(w, Writer) for c in w._new]
    refs = [w._refs for w in writers if isinstance(w, Writer)]
    keys = {(w.fs.share_id, tuple(map(fold, w.parts)) if w.fs.ci else w.parts)
            for w in writers if isinstance(w, Writer)}
    distinct = len(writers) > 1 and len(keys) == len(writers)      # no Mutation, no path twice

    def build_all(s):
        """Uploads of distinct paths only (a tree put): every event is built first (they read
        nothing another one changes), then all are applied as one run (events.apply_many:
        executemany).  None, having applied nothing, when two of them landed on one node (a
        deleted file's history continued under two names): the sequential build then
        decides as it always did."""
        evs, nodes = [], set()
        pending: dict[int, tuple] = {}   # per share: its counter, quota and what was admitted
        for i, w in enumerate(writers):
            try:
                ev = w.event(s)
                usage.admit(s, ev, w.fs.share_name, pending)
            except ArchiveError as e:
                outcome[i] = e
                continue
            if ev["node"] in nodes:
                return None
            nodes.add(ev["node"])
            evs.append(ev)
            outcome[i] = ev
        events.apply_many(s, evs)
        return evs

    def build(s):
        evs = []
        cache = s.info["parents"] = {}  # uploads change no folders: resolve each once
        if distinct:
            got = build_all(s)
            if got is not None:
                del s.info["parents"]
                return got
            outcome[:] = [None] * len(writers)
        for i, w in enumerate(writers):
            # Building an event only reads (and allocates ids), so an item refused here left
            # nothing to roll back: no savepoint per item.  Applying raises no ArchiveError;
            # anything it raises fails the whole transaction, as before.
            if isinstance(w, Mutation):
                cache.clear()           # folders may move or go: resolve again, before and after
                try:
                    evs_i = w.build(s)
                except ArchiveError as e:
                    outcome[i] = e
                    continue
                events.apply_many(s, evs_i)
                cache.clear()
                evs.extend(evs_i)
                outcome[i] = evs_i
                continue
            try:
                ev = w.event(s)
                if len(writers) > 1:      # the quota, counting the batch so far (one alone: mutate's check)
                    usage.admit(s, ev, w.fs.share_name)
            except ArchiveError as e:
                outcome[i] = e
                continue
            events.apply(s, ev)           # later writers of the batch see earlier ones
            evs.append(ev)
            outcome[i] = ev
        del s.info["parents"]
        return evs

    def audit(evs):
        rows = []
        for w, ev in zip(writers, outcome):
            if isinstance(w, Mutation):
                if isinstance(ev, list) and w.audit:
                    rows += w.audit(ev)
            elif isinstance(ev, dict):
                rows.append(repo.audit_row("write", w.fs.origin, w.fs.share_name, "/" + "/".join(w.parts),
                                           ev["number"]))
        return rows
    try:
        repo.mutate(build, new_chunks=new, refs=refs, audit=audit, applied=True, plain=True)
    except BaseException:
        for w in writers:
            if isinstance(w, Writer):
                w.abort()
        raise
    results = []
    for w, ev in zip(writers, outcome):
        if isinstance(w, Mutation):
            results.append(ev)
        elif isinstance(ev, dict):
            w._state = "committed"
            results.append(w.fs._version_of(ev))
        else:
            w.abort()
            results.append(ev)
    return results


def commit_many(writers: list["Writer"]) -> list:
    """Commit prepared writers in one transaction (one fsync for many small files, e.g. a tree
    put); raises the first per-writer error after committing the others."""
    if not writers:
        return []
    results = _commit_batch(writers)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


class _Waiter:
    """One calling thread of GroupCommit: `wake` is a lock it holds while it waits, released once
    when its last item is committed or when leadership is handed to it (never both: a thread
    asked to lead still has items queued, and nobody else leads meanwhile)."""
    __slots__ = ("wake", "left", "lead")

    def __init__(self, n: int) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()
        self.left = n
        self.lead = False


class GroupCommit:
    """Concurrent commits of one process share transactions (group commit).

    Sixty-four sensors uploading small files at once would otherwise queue for the catalog's
    write lock one fsync pair each.  Whoever finds no leader commits the oldest waiting uploads
    (its own among them when the queue is short) in one transaction, then hands leadership on,
    so no caller keeps serving the others while its own client waits.

    Each waiting thread sleeps on a lock of its own, released when its items are committed or
    when it is to lead next: with 16 NFS REMOVEs in flight, a Condition's notify_all after
    every batch woke all 15 waiters to look and sleep again (futex and GIL hand-offs were most
    of a pipelined REMOVE's server CPU).
    """

    MAX_BATCH = 128

    def __init__(self) -> None:
        self._cv = threading.Lock()           # guards _pending and _leading
        self._pending: list[list] = []        # [writer, _Waiter, result]
        self._leading = False

    def commit(self, writer: "Writer | Mutation"):
        """Commit a prepared Writer (returns its Version) or a Mutation (returns its events)."""
        with self._cv:
            solo = not self._leading and not self._pending
            if solo:
                self._leading = True
        if solo:
            return self._commit_alone(writer)
        result = self.commit_all([writer])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def commit_all(self, writers: list) -> list:
        """Commit several prepared Writers / Mutations from one thread (the NFS commit loop's
        batch, staging.commit_staged): they queue together and this thread leads batches, or
        waits, until every one is committed.  Per writer its result, or the exception it alone
        hit (returned, not raised: the others' results stand)."""
        if not writers:
            return []
        me = _Waiter(len(writers))
        items = [[w, me, None] for w in writers]
        with self._cv:
            self._pending.extend(items)
            lead = not self._leading
            if lead:
                self._leading = True
        while True:
            if not lead:
                me.wake.acquire()             # committed, or asked to lead
                if not me.lead:
                    break
                me.lead = False
            with self._cv:
                batch = self._pending[:self.MAX_BATCH]
                del self._pending[:self.MAX_BATCH]
            try:
                self._run(batch)
            finally:                          # whatever happens, the waiters hear and someone leads
                with self._cv:
                    for it in batch:
                        w = it[1]
                        w.left -= 1
                        if not w.left and w is not me:
                            w.wake.release()
                    lead = self._hand_on(me)
            if not me.left:
                break
        return [it[2] for it in items]

    def _hand_on(self, me: "_Waiter | None" = None) -> bool:
        """After a batch (under `_cv`): the oldest waiting item's thread leads next (True when
        that is `me`, which then goes on leading); none waiting, nobody leads."""
        if not self._pending:
            self._leading = False
            return False
        nxt = self._pending[0][1]
        if nxt is me:
            return True
        nxt.lead = True
        nxt.wake.release()
        return False

    def _commit_alone(self, writer: "Writer | Mutation"):
        """Nobody leads and nobody waits: commit on this thread as a batch of one, without the
        hand-off's waiter and wake-ups (one client writing files one after another).  Whoever
        arrives meanwhile queues and waits as usual, and leads after this commit."""
        try:
            result = _commit_batch([writer])[0]
        finally:
            with self._cv:
                self._hand_on()
        if isinstance(result, BaseException):
            raise result
        return result

    @staticmethod
    def _run(batch: list[list]) -> None:
        try:
            results = _commit_batch([it[0] for it in batch])
        except BaseException as e:     # the whole transaction failed: every waiter hears why
            results = [e] * len(batch)
        for it, r in zip(batch, results):
            it[2] = r


class Reader(io.RawIOBase):
    """Random access to one version's content.

    Chunks are fetched in *blocks*: runs of records adjacent in one pack, read with one pread
    each and verified in place (archive/readpath.py).  The block under the read position is
    decoded on the calling thread (a one-chunk file never touches the thread pool); while the
    reads go on sequentially the next READ_AHEAD blocks of a remote pack store (S3) are decoded
    in the pool, so a download finds them ready; a local pack store's are read ahead by the
    kernel and decoded on the calling thread too (Reader._prefetch).  At most READ_AHEAD + 2
    blocks of READ_BLOCK bytes are held per Reader (2 for a local store), whatever the file
    size."""

    READ_BLOCK = 1024 * 1024
    READ_AHEAD = 2

    def __init__(self, repo, version_id: int, size: int, etag: str = ""):
        super().__init__()
        self.repo = repo
        self.version_id = version_id
        self.size = size
        self.etag = etag
        self._pos = 0
        self._next = 0                     # where a sequential read would continue
        self._win: list[tuple] = []        # (offset, length, chunk id, pack, poff, plen, raw_len)
        self._hint = 0                     # the window row a sequential read wants next
        self._prefetched = None            # the block whose read-ahead was last started
        self._blk_of: list[int] = []       # window row -> block number
        self._blocks: list[tuple[int, int]] = []   # block -> (first row, end row)
        self._cache: OrderedDict[tuple, object] = OrderedDict()   # _key(block) -> chunks | Future
        self._single: OrderedDict[int, object] = OrderedDict()  # chunk's file offset -> data (random reads)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        pos = base + offset
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def _load_window(self, pos: int) -> None:
        params = {"v": self.version_id, "p": pos, "n": WINDOW}
        catalog = self.repo.catalog
        if catalog.is_sqlite:
            # The same statement on one of the commit path's idle sqlite3 connections (stdlib in
            # native mode, else detached from the engine's pool): no SQLAlchemy Connection,
            # compile or Result per file (rawsql.select_all; docs/benchmarks.md "rawread").
            rows = rawsql.select_all(catalog, _WINDOW_TEXT, params)
        else:
            with catalog.engine.connect() as s:
                rows = s.execute(_WINDOW_SQL, params).all()
                s.rollback()
        if not rows:
            raise Corrupt(f"version {self.version_id} has no chunk at offset {pos}")
        self._win = [tuple(r) for r in rows]
        self._hint = 0
        self._prefetched = None
        self._blocks, self._blk_of = [], []
        i = 0
        for run in readpath.runs(self._win, self.READ_BLOCK):
            self._blk_of.extend([len(self._blocks)] * len(run))
            self._blocks.append((i, i + len(run)))
            i += len(run)
        packs = self.repo.store.packdir.store
        if packs.wants_hints:   # s3cold3: the packs this window and the next one will read
            end = self._win[-1][0] + self._win[-1][1]
            q, more = dict(params, p=end), []
            if end < self.size and catalog.is_sqlite:
                more = rawsql.select_all(catalog, _WINDOW_TEXT, q)
            elif end < self.size:
                with catalog.engine.connect() as s:
                    more = s.execute(_WINDOW_SQL, q).all()
            packs.prefetch_hint([(r[3], r[4], r[5]) for r in (*self._win, *more) if r[3] is not None])

    def _index(self, pos: int) -> int:
        w = self._win
        i = self._hint                         # a sequential read: the row after the last one,
        if i < len(w) and w[i][0] <= pos < w[i][0] + w[i][1]:
            self._hint = i + 1
            return i
        if 0 < i <= len(w) and w[i - 1][0] <= pos < w[i - 1][0] + w[i - 1][1]:
            return i - 1                       # or the rest of the last one
        if not w or pos < w[0][0] or pos >= w[-1][0] + w[-1][1]:
            self._load_window(pos)
            w = self._win
        lo, hi = 0, len(w) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if w[mid][0] <= pos:
                lo = mid
            else:
                hi = mid - 1
        if not w[lo][0] <= pos < w[lo][0] + w[lo][1]:
            # A gap in the chunk list (a damaged catalog): no row covers pos.  Without this the
            # caller would take a negative length and loop for ever instead of failing.
            raise Corrupt(f"version {self.version_id} has no chunk at offset {pos}")
        self._hint = lo + 1
        return lo

    def _key(self, b: int) -> tuple[int, int]:
        """A decoded block's cache key: its file offset *and* its row count.  The cache outlives
        a window, and a window's last block is cut at the window's end: after a seek back, the
        reloaded window's block at the same offset holds more rows than the cached one (the
        offset alone took the short block for the long one and indexed past its end)."""
        first, end = self._blocks[b]
        return self._win[first][0], end - first

    def _block_rows(self, b: int) -> list[tuple]:
        first, end = self._blocks[b]
        return self._win[first:end]

    def _prefetch(self, b: int) -> None:
        store = self.repo.store
        # A local pack is read ahead by the kernel (sequential preads of one file) and its next
        # block decoded on this thread when it is reached: the pool's futures cost more CPU in
        # hand-offs than they saved (~0.1 ms per MiB; docs/benchmarks.md "read11").
        # It also keeps two decoded blocks, not four: fewer busy buffers per Reader, so that
        # concurrent downloads still find theirs in readpath.Buffers (a fresh one faults in).
        ahead = 0 if isinstance(store.packdir.store, readpath.LocalPackStore) else self.READ_AHEAD
        for nb in range(b + 1, min(b + 1 + ahead, len(self._blocks))):
            key = self._key(nb)
            if key not in self._cache:
                self._cache[key] = store.pool.submit(readpath.load_run, store, self._block_rows(nb))
        while len(self._cache) > ahead + 2:
            self._cache.popitem(last=False)

    def _chunks(self, i: int, sequential: bool) -> tuple[list, int, int]:
        """The verified plaintexts of the block holding window row i, as (chunks, first row,
        end row): chunks[j - first] is row j's.  A random read gets row i alone."""
        b = self._blk_of[i]
        first, end = self._blocks[b]
        key = self._key(b)
        got = self._cache.get(key)
        if got is None and not sequential:
            # A random read (NFS, SMB, a REST offset) decodes only the chunk it needs, not the
            # whole block; a read continuing from there is sequential and goes by blocks.
            row = self._win[i]
            data = self._single.get(row[0])
            if data is None:
                data = readpath.load_run(self.repo.store, [row])[0]
                self._single[row[0]] = data
                while len(self._single) > 4:
                    self._single.popitem(last=False)
            return [data], i, i + 1
        if got is None:
            got = readpath.load_run(self.repo.store, self._win[first:end])
            self._cache[key] = got
        else:
            self._cache.move_to_end(key)
            if isinstance(got, Future):
                try:
                    got = got.result()
                except BaseException:
                    self._cache.pop(key, None)
                    raise
                self._cache[key] = got
        if sequential and self._prefetched != key:     # once per block, not per chunk
            self._prefetched = key
            self._prefetch(b)
        return got, first, end

    def _pieces(self, n: int):
        """Yield (data, start, take) covering up to n bytes from the position on.

        The rows of one block are walked here directly (one block lookup per block, not one
        per chunk); a row that does not start where the previous one ended (a gap in a damaged
        chunk list) goes back through _index, which raises Corrupt."""
        sequential = self._pos == self._next
        if not sequential:
            self._prefetched = None
        pos, size = self._pos, self.size
        while n > 0 and pos < size:
            i = self._index(pos)
            got, first, end = self._chunks(i, sequential)
            w = self._win
            while True:
                off, ln = w[i][0], w[i][1]
                start = pos - off
                take = ln - start
                if take > n:
                    take = n
                yield got[i - first], start, take
                n -= take
                pos += take
                self._pos = pos
                i += 1
                if n <= 0 or pos >= size or i >= end or w[i][0] != pos:
                    break
            self._hint = i             # the next row (or, after a partial take, the one after it)
            sequential = True          # the rest of one read continues where it is
        self._next = self._pos

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        n = 0
        for data, start, take in self._pieces(len(view)):
            view[n:n + take] = data[start:start + take]
            n += take
        return n

    def readviews(self, n: int) -> list[memoryview]:
        """Up to n bytes from the position on, as views of the verified chunks themselves (no
        copy; [] at the end of the file): what a sender hands to socket.sendmsg (FTP's RETR).
        The views stay valid for as long as they are held."""
        return [memoryview(d)[s:s + t] for d, s, t in self._pieces(n)]

    def read(self, n: int = -1) -> bytes:
        left = max(0, self.size - self._pos)
        n = left if n is None or n < 0 else min(n, left)
        parts = [(d, s, t) for d, s, t in self._pieces(n)]
        if len(parts) == 1:
            d, s, t = parts[0]
            if s == 0 and t == len(d) and isinstance(d, bytes):
                return d                       # a whole decoded chunk: no copy
            return bytes(d[s:s + t])
        return b"".join(d[s:s + t] if s or t != len(d) else d for d, s, t in parts)

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        self._cache.clear()
        self._single.clear()
        super().close()


class Updater:
    """Random writes staged in a sparse temporary file, committed as one version."""

    def __init__(self, fs, parts: tuple[str, ...], base: m.Version | None, truncate: bool):
        self.fs = fs
        self.repo = fs.repo
        self.parts = parts
        self._base = base
        self._reader = Reader(self.repo, base.id, base.size) if base is not None else None
        self._base_limit = 0 if (truncate or base is None) else base.size
        self.size = self._base_limit
        self._stage = self._new_stage()
        self._extents: list[list[int]] = []
        self._dirty = base is None or (truncate and base.size > 0)
        self._first_dirty = 0 if self._dirty else None
        self.mtime: float | None = None
        self._state = "open"

    def _new_stage(self):
        """The file the written bytes are staged in (an anonymous file under the repository's tmp)."""
        return tempfile.TemporaryFile(dir=self.repo.tmp, prefix="update-")

    def _mark(self, pos: int) -> None:
        self._dirty = True
        self._first_dirty = pos if self._first_dirty is None else min(self._first_dirty, pos)

    def pwrite(self, data, offset: int) -> int:
        if self._state != "open":
            raise ArchiveError(f"write on a {self._state} update")
        n = len(data)
        if n == 0:
            return 0
        os.pwrite(self._stage.fileno(), data, offset)
        self._add_extent(offset, offset + n)
        self.size = max(self.size, offset + n)
        self._mark(offset)
        return n

    def _add_extent(self, a: int, b: int) -> None:
        out, placed = [], False
        for s, e in self._extents:
            if e < a or s > b:
                out.append([s, e])
            else:
                a, b = min(a, s), max(b, e)
        out.append([a, b])
        out.sort()
        self._extents = out

    def truncate(self, size: int) -> None:
        if size == self.size:
            return
        if size < self.size:
            self._extents = [[s, min(e, size)] for s, e in self._extents if s < size]
            self._base_limit = min(self._base_limit, size)
            self._stage.truncate(size)
        self._mark(min(size, self.size))
        self.size = size

    def pread(self, n: int, offset: int) -> bytes:
        end = min(self.size, offset + n)
        return b"".join(self._pieces(offset, end)) if end > offset else b""

    def _pieces(self, pos: int, end: int):
        """Yield the file's bytes in [pos, end): staged extents, else base content, else zeros."""
        ext = self._extents
        while pos < end:
            hit = next((e for e in ext if e[0] <= pos < e[1]), None)
            if hit is not None:
                stop = min(end, hit[1], pos + BATCH)       # bounded: a 1 GiB extent is not one read
                yield os.pread(self._stage.fileno(), stop - pos, pos)
                pos = stop
                continue
            nxt = min([e[0] for e in ext if e[0] > pos] + [end])
            if pos < self._base_limit:
                stop = min(nxt, self._base_limit)
                self._reader.seek(pos)
                while pos < stop:
                    piece = self._reader.read(min(stop - pos, BATCH))
                    if not piece:
                        raise Corrupt("base content ended early")
                    yield piece
                    pos += len(piece)
            else:
                stop = nxt
                while pos < stop:
                    k = min(stop - pos, BATCH)
                    yield bytes(k)
                    pos += k

    def commit(self):
        """One new version if anything changed (None otherwise); unchanged chunks are reused."""
        w = self._prepared_writer()
        if w is None:
            return None
        try:
            version = self.repo.group_commit.commit(w)
        finally:
            w.abort()
            self.close()
        self._state = "committed"
        return version

    def _prepared_writer(self) -> "Writer | None":
        """The new version's Writer with its chunks stored and nothing in the catalog yet (None,
        and closed, when nothing changed): what commit hands to the group commit, and what
        staging.commit_staged hands it for many updates at once."""
        if self._state != "open":
            raise ArchiveError(f"commit of a {self._state} update")
        if not self._dirty:
            self.close()
            return None
        w = Writer(self.fs, self.parts, mtime=self.mtime)
        start = 0
        if self._base is not None and self._first_dirty:
            rows = chunk_list(self.repo, self._base.id)[:-1]   # the last chunk was cut by EOF
            keep = [(cid, ln) for off, cid, ln in rows if off + ln <= self._first_dirty]
            start = sum(ln for _, ln in keep)
            w.seed(keep, start)
        try:
            for piece in self._pieces(start, self.size):
                w.write(piece)
            w.prepare()
        except BaseException:
            w.abort()
            self.close()
            raise
        return w

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        if self._state == "open":
            self._state = "closed"
        try:
            self._stage.close()
        except OSError:
            pass
