"""Packs as objects in S3-compatible storage (Ceph RGW, MinIO, Garage, rclone, AWS) via boto3.

    s3://BUCKET/PREFIX?endpoint=https://rgw.site-a:7480&region=us-east-1&retries=5&part=8M&sign=auto

Credentials come from the usual AWS_* variables (or [repository] access_key_id /
secret_access_key).  Layout under PREFIX: `config.json`, `keys.json`, `packs/xx/<id>.pack`.

A pack is staged in the node's cache folder while it fills.  A small one (a group commit of
small files) is PUT once, whole, when the writer syncs it.  A large one goes up as a multipart
upload *while it fills*: every PART bytes staged become one part, uploaded by a small pool
(bounded memory: one part per worker), so when the writer seals the pack only its last part and
the completion are left, and the upload overlaps the chunking instead of following it.  The
object exists only once the upload completes, so a commit's chunks and events are in the
bucket before the catalog commit that references them; a node killed mid-upload leaves an
incomplete multipart upload, invisible to readers, which gc aborts after the grace period.

Request bodies are signed (SigV4's SHA-256 of every byte sent, which a server checks: the
integrity check of the transfer) except when the endpoint is on loopback (`sign=auto`, the
default): there no wire lies between the node and the store (and rclone does not even check
the hash), while hashing costs the archive ~0.75 ms of CPU per MiB uploaded, against ~4 for
the whole of a random-data ingest (`sign=1` keeps it, `sign=0` drops it anywhere).

Reads are ranged GETs of aligned blocks kept in the local LRU cache.  A block being fetched
is fetched once (concurrent readers wait for it), and a pack read in order is read ahead by
several GETs at once in the background, bounded by a fraction of the cache; the first GET of
a pack goes alone, the others wait for it (see `S3PackStore._block`).  A reader tells the store
which packs it will read next (`prefetch_hint`, from the chunk list), so the next pack's first
GET is on its way, alone, while the current pack is still being read.
Transient failures (endpoint down, throttling, 5xx) are retried by botocore with exponential
backoff; then they surface as `errors.Unavailable`, never as a half-done commit.
"""
from __future__ import annotations

import ipaddress
import os
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor, wait
from typing import BinaryIO, Callable, TypeVar
from urllib.parse import parse_qs, urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .chunkcache import BlockCache
from .errors import Corrupt, Unavailable
from .packstore import PackSink, PackStore

BLOCK = 1 << 20          # ranged-GET unit: 16 average chunks; a random 64 KiB read costs one
READAHEAD = 16           # blocks kept fetched ahead of a reader going through a pack in order
RUN = 8                  # blocks per read-ahead GET (8 MiB): each GET costs botocore ~2 ms of CPU and rclone
                         # 2-4 ms whatever its size; 4 MiB GETs cost 12-22 % more client CPU per cold MiB (s3cold4)
READERS = 4              # read-ahead GETs at once (across packs: one pack's READAHEAD holds 2)
OPENERS = 1              # first GETs of packs a reader will reach next (prefetch_hint): in order, one at a time
HINTED = 4               # packs opened per hint at most (a reader's window: 32 MiB of chunks)
FIRST_RUN = 1 << 20      # what a Reader's first read in a pack spans at most (Reader.READ_BLOCK)
PART = 8 << 20           # multipart part size (S3's minimum is 5 MiB)
UPLOADERS = 3            # parts (and sealed packs) uploaded at once: memory <= UPLOADERS x PART
T = TypeVar("T")
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchUpload"}


def _resolve(fut: Future, result, error: BaseException | None = None) -> None:
    """Resolve a GET's future once (close() may have failed it already)."""
    try:
        fut.set_exception(error) if error is not None else fut.set_result(result)
    except InvalidStateError:
        pass


def _trim(hints: dict, keep: int = 4096) -> None:
    """Per-pack read hints stay bounded however many packs a node reads (oldest first out)."""
    try:
        while len(hints) > keep:
            del hints[next(iter(hints))]
    except (KeyError, RuntimeError, StopIteration):      # another reader trimmed meanwhile
        pass


def _loopback(endpoint: str | None) -> bool:
    """Whether an endpoint URL names this machine (127.0.0.0/8, ::1, localhost)."""
    host = urlparse(endpoint).hostname if endpoint else None
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ts(t) -> float:
    """A listing's timestamp in seconds (a missing one counts as now: the upload is left alone)."""
    return t.timestamp() if isinstance(t, datetime) else time.time()


class _S3Sink:
    """One pack being filled in a staging file; a single PUT, or a multipart upload that
    starts while the pack fills (see the module docstring)."""

    appendable = False

    def __init__(self, store: "S3PackStore", pack_id: str):
        self.store, self.pack_id = store, pack_id
        self.path = store.staging / f"{pack_id}.pack"
        self._f = open(self.path, "wb")
        self._lock = threading.Lock()
        self._uploaded = False
        self._written = 0
        self._queued = 0                     # bytes handed to part uploads so far
        self._upload_id: str | None = None
        self._parts: list[tuple[int, int, int, Future]] = []     # (number, start, end, etag future)

    def write(self, data: bytes) -> None:
        if self._uploaded:          # never silently: these bytes would not reach the store
            raise Unavailable(f"pack {self.pack_id} was already uploaded; nothing was committed")
        self._f.write(data)
        self._written += len(data)
        if self.store.part and self._written - self._queued >= self.store.part:
            self._queue_parts()

    def _queue_parts(self) -> None:
        """Hand every full PART staged so far to the upload pool (the writer thread goes on).
        Memory stays bounded: a queued part is only a byte range of the staging file, read
        by the worker that uploads it (at most UPLOADERS parts in memory at once)."""
        if self._failed:
            return
        self._f.flush()
        if self._upload_id is None:
            try:
                self._upload_id = self.store.call(lambda: self.store.client.create_multipart_upload(
                    Bucket=self.store.bucket, Key=self.store.pack_key(self.pack_id))["UploadId"],
                    f"upload of pack {self.pack_id}")
            except Exception as e:
                self._failed, self._cause = True, str(e)     # reported at sync; stop trying
                return
            self.store.active_uploads.add(self._upload_id)
        while self._written - self._queued >= self.store.part:
            lo, hi = self._queued, self._queued + self.store.part
            n = len(self._parts) + 1
            self._parts.append((n, lo, hi, self.store.uploads.submit(self._put_part, n, lo, hi, self._upload_id)))
            self._queued = hi

    _failed = False
    _cause = "an earlier upload failed"          # what made _failed true, for whoever syncs next

    def _put_part(self, n: int, lo: int, hi: int, upload_id: str) -> str:
        with open(self.path, "rb") as f:
            body = os.pread(f.fileno(), hi - lo, lo)
        r = self.store.call(lambda: self.store.client.upload_part(
            Bucket=self.store.bucket, Key=self.store.pack_key(self.pack_id), UploadId=upload_id,
            PartNumber=n, Body=body), f"upload of pack {self.pack_id}")
        return r["ETag"]

    def seal(self) -> None:
        self._f.flush()
        self.store.uploads.submit(self._upload_quietly)

    def _upload_quietly(self) -> None:
        try:
            self.sync()
        except Exception:            # reported to whoever syncs next
            pass

    def sync(self) -> None:
        with self._lock:
            if self._uploaded:
                return
            if self._f.closed or self._failed:
                self._abort()
                raise Unavailable(f"pack {self.pack_id} could not be stored earlier ({self._cause}); "
                                  "nothing was committed")
            self._f.flush()
            if self._upload_id is None:
                with open(self.path, "rb") as body:
                    self.store.call(lambda: self.store.client.put_object(
                        Bucket=self.store.bucket, Key=self.store.pack_key(self.pack_id), Body=body),
                        f"upload of pack {self.pack_id}")
            else:
                self._complete()
            self._uploaded = True
            self.store.known[self.pack_id] = (self.path.stat().st_size, time.time())

    def in_store(self) -> bool:
        """Whether the object may exist: its upload completed (waits for one in progress; a PUT
        that failed on this side may still have landed, but then the commit's own sync PUTs
        it again, inside the catalog's write lock)."""
        with self._lock:
            return self._uploaded

    def _complete(self) -> None:
        if self._written > self._queued:          # the last, short part: here, not in the pool
            n = len(self._parts) + 1
            done: Future = Future()
            self._parts.append((n, self._queued, self._written, done))
            self._queued = self._written
        etags = []
        try:
            for n, lo, hi, fut in self._parts:
                # a part still queued behind other work runs here: never wait on the pool from it
                if fut.cancel():
                    etags.append(self._put_part(n, lo, hi, self._upload_id))
                else:
                    etags.append(fut.result())
            self.store.call(lambda: self.store.client.complete_multipart_upload(
                Bucket=self.store.bucket, Key=self.store.pack_key(self.pack_id), UploadId=self._upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p[0], "ETag": e} for p, e in zip(self._parts, etags)]}),
                f"upload of pack {self.pack_id}")
        except FileNotFoundError:                 # NoSuchUpload: aborted (by a gc) meanwhile
            self._cause = "its multipart upload was aborted"
            self._abort()
            raise Unavailable(f"upload of pack {self.pack_id} was lost; nothing was committed") from None
        except BaseException as e:
            self._cause = str(e)
            self._abort()
            raise
        self.store.active_uploads.discard(self._upload_id)

    def _abort(self) -> None:
        """Best effort: drop the parts (gc aborts what a crash or a dead store leaves behind)."""
        if self._upload_id is None:
            return
        for *_, fut in self._parts:
            fut.cancel()
        # a part still being sent could land after the abort and keep its bytes: let it end first
        wait([fut for *_, fut in self._parts if not fut.done()], timeout=120)
        upload_id, self._upload_id = self._upload_id, None
        self.store.active_uploads.discard(upload_id)
        self._failed = True
        try:
            self.store.client.abort_multipart_upload(Bucket=self.store.bucket,
                                                     Key=self.store.pack_key(self.pack_id), UploadId=upload_id)
        except Exception:
            pass

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()
            if self._uploaded and self.path.exists():
                self.store.cache.adopt(self.pack_id, self.path)      # write-through: fresh data is hot
            else:
                self._abort()
                self.path.unlink(missing_ok=True)


class S3PackStore(PackStore):
    part = PART             # multipart part size; 0: a pack is one PUT at seal

    def __init__(self, bucket: str, prefix: str, endpoint: str | None, region: str | None, cache_dir: Path,
                 cache_size: int, credentials: dict, retries: int = 5, sign: bool | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint = endpoint
        q = f"?endpoint={endpoint}" if endpoint else ""
        self.location = f"s3://{bucket}/{self.prefix}{q}"
        self.local_dir = cache_dir
        self.staging = cache_dir / "staging"
        self.staging.mkdir(parents=True, exist_ok=True)
        for stale in self.staging.glob("*.pack"):      # a crashed run's unacknowledged packs
            stale.unlink(missing_ok=True)
        self.cache = BlockCache(cache_dir / "blocks", cache_size)
        self.known: dict[str, tuple[int, float]] = {}
        self._last_block: dict[str, int] = {}          # per pack: last block read (sequential reads)
        self._inflight: dict[str, tuple[Future, int]] = {}     # block name -> (its GET, first block of the GET)
        self._fetching = threading.Lock()
        self._ends: dict[str, int] = {}                # pack sizes learnt from GETs (Content-Range, short reads)
        self._first: dict[str, Future] = {}            # per pack: this node's first GET of it (see _block)
        self.active_uploads: set[str] = set()           # this node's multipart uploads in progress
        self.uploads = ThreadPoolExecutor(max_workers=UPLOADERS, thread_name_prefix="s3-upload")
        self.readers = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="s3-read")
        self.openers = ThreadPoolExecutor(max_workers=OPENERS, thread_name_prefix="s3-open")
        self.requests = 0
        # None: sign request bodies unless the endpoint is on loopback (see the module docstring)
        self.sign_payload = not _loopback(endpoint) if sign is None else sign
        cfg = Config(retries={"max_attempts": max(1, retries), "mode": "standard"}, connect_timeout=5,
                     read_timeout=60, max_pool_connections=32,
                     s3={"addressing_style": "path", "payload_signing_enabled": self.sign_payload},
                     request_checksum_calculation="when_required", response_checksum_validation="when_required")
        session = boto3.session.Session(aws_access_key_id=credentials.get("access_key_id"),
                                        aws_secret_access_key=credentials.get("secret_access_key"))
        self.client = session.client("s3", endpoint_url=endpoint, region_name=region or os.environ.get(
            "AWS_DEFAULT_REGION") or "us-east-1", config=cfg)

    @classmethod
    def from_url(cls, url: str, cache_dir: Path, cache_size: int, credentials: dict) -> "S3PackStore":
        u = urlparse(url)
        if not u.netloc:
            raise ValueError(f"{url!r}: no bucket (s3://BUCKET/PREFIX?endpoint=URL)")
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        retries = int(q.get("retries") or os.environ.get("EDGE_ARCHIVE_S3_RETRIES") or 5)
        from .packstore import parse_size
        part = parse_size(q.get("part"), PART)       # ?part=0: one PUT per pack, no multipart
        if part and part < 5 << 20:
            raise ValueError(f"{url!r}: part must be 0 or at least 5M (S3's smallest part)")
        sign = {"auto": None, "": None, "1": True, "0": False}.get(q.get("sign", "auto").lower(), "bad")
        if sign == "bad":
            raise ValueError(f"{url!r}: sign must be auto, 1 or 0")
        endpoint = q.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        store = cls(u.netloc, u.path, endpoint, q.get("region"), cache_dir, cache_size, credentials, retries, sign)
        store.part = part
        return store

    # -- plumbing ----------------------------------------------------------------------------
    def call(self, fn: Callable[[], T], what: str) -> T:
        """One request (botocore retries it with backoff); failures become archive errors."""
        self.requests += 1
        try:
            return fn()
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise FileNotFoundError(what) from None
            if code == "InvalidRange":
                raise EOFError(what) from None
            raise Unavailable(f"object store error during {what}: {code or e}") from None
        except BotoCoreError as e:
            raise Unavailable(f"object store unreachable during {what}: {e}") from None

    def pack_key(self, pack_id: str) -> str:
        return f"{self.prefix}packs/{pack_id[:2]}/{pack_id}.pack"

    def ensure_bucket(self) -> None:
        try:
            self.call(lambda: self.client.head_bucket(Bucket=self.bucket), f"lookup of bucket {self.bucket}")
        except FileNotFoundError:
            self.call(lambda: self.client.create_bucket(Bucket=self.bucket), f"creation of bucket {self.bucket}")

    # -- packs -------------------------------------------------------------------------------
    def create(self, pack_id: str) -> PackSink:
        return _S3Sink(self, pack_id)

    def _get(self, pack_id: str, start: int, end: int) -> bytes:
        try:
            r = self.call(lambda: self.client.get_object(Bucket=self.bucket, Key=self.pack_key(pack_id),
                                                         Range=f"bytes={start}-{end - 1}"),
                          f"read of pack {pack_id}")
            total = str(r.get("ContentRange") or "").rpartition("/")[2]
            if total.isdigit():        # "bytes 0-4194303/67155000": the pack's size, for free
                self._ends[pack_id] = int(total)
                _trim(self._ends)
            return r["Body"].read()
        except FileNotFoundError:
            raise Corrupt(f"pack {pack_id} is missing") from None
        except EOFError:                # 416: the range starts past the end (read-ahead)
            return b""

    def read_range(self, pack_id: str, offset: int, length: int) -> bytes:
        if self.cache.has(pack_id):                     # a pack this node uploaded (write-through)
            whole = self.cache.read(pack_id, offset, length)
            if whole is not None and len(whole) == length:
                return whole
        end = offset + length
        first, last = offset // BLOCK, (end - 1) // BLOCK
        prev = self._last_block.pop(pack_id, None)
        self._last_block[pack_id] = last                # most recent last: the oldest are dropped
        _trim(self._last_block)
        ahead = (prev is None and first == 0) or (prev is not None and first - 2 <= prev < last)
        # A read from the start of a pack whose size is unknown here reads ahead only once its
        # own GET is back and has told the size (Content-Range): a small pack costs one GET,
        # not one plus a few past its end.
        # Nor before this node's first GET of the pack is back (see _block).
        blind = ahead and ((pack_id not in self._ends and pack_id not in self.known) or pack_id not in self._first)
        if ahead and not blind:
            self._read_ahead(pack_id, last + 1)         # reading on through the pack, into a new block
        parts = []
        for i in range(first, last + 1):
            lo, hi = max(offset - i * BLOCK, 0), min(end - i * BLOCK, BLOCK)
            got = self.cache.read(f"{pack_id}.{i}", lo, hi - lo)       # just the bytes asked for
            if got is None:
                got = self._block(pack_id, i, last)[lo:hi]      # a view of the GET's bytes
            elif blind:                                 # a short cached block is the pack's last
                short = self.cache.size(f"{pack_id}.{i}")
                if short is not None and short < BLOCK:
                    self._ends[pack_id] = i * BLOCK + short
            parts.append(got)
            if len(got) < hi - lo:                      # the pack ended
                break
        if blind:
            self._read_ahead(pack_id, last + 1)
        # one copy at most: a view into a GET's buffer is not handed out (it would keep the
        # whole GET alive as long as any chunk decoded from it)
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def _opening(self, pack_id: str) -> Future | None:
        """The first GET of a pack while it is still on its way (call with _fetching held)."""
        f0 = self._first.get(pack_id)
        return f0 if f0 is not None and not f0.done() else None

    def _claim(self, pack_id: str, i: int, last: int) -> tuple[int, Future]:
        """Claim blocks i..j of a pack for one GET (j <= last: up to the first block already
        cached or on its way), registering its Future for each; it is the pack's first GET if
        the pack has none yet.  Call with _fetching held."""
        j = i
        while j < last and f"{pack_id}.{j + 1}" not in self._inflight and not self.cache.has(f"{pack_id}.{j + 1}"):
            j += 1
        fut: Future = Future()
        fut.set_running_or_notify_cancel()
        for k in range(i, j + 1):
            self._inflight[f"{pack_id}.{k}"] = (fut, i)
        if pack_id not in self._first:
            self._first[pack_id] = fut
            _trim(self._first)
        return j, fut

    def _block(self, pack_id: str, i: int, last: int) -> bytes:
        """Block i of a pack: from the cache, from a GET already on its way, or fetched now
        (with the missing blocks up to `last`, in one GET).

        The first GET of a pack this node sends goes alone: any other GET of that pack waits
        until it is back.  Some stores do work per object on its first request of any kind
        (rclone serve s3 hashes the whole object for its ETag, ~10 ms per MiB, and keeps the
        hash): several first GETs at once, from the read-ahead or from the reader's parallel
        chunk fetches landing mid-pack, would each pay that whole cost (measured: 8 parallel
        first GETs of a 64 MiB object cost rclone 0.82 s of CPU, one GET alone then 8 cost
        0.16 s).  Elsewhere it costs one round trip per pack, and only when reads of a pack
        not fetched yet overlap."""
        name = f"{pack_id}.{i}"
        while True:
            with self._fetching:
                pending = self._inflight.get(name)
                if pending is None and self.cache.has(name):    # fetched meanwhile
                    got = self.cache.read(name, 0, BLOCK)
                    if got is not None:
                        return got
                opening = self._opening(pack_id) if pending is None else None
                if pending is None and opening is None:
                    j, fut = self._claim(pack_id, i, last)
                    pending = (fut, i)
                    mine = j
                else:
                    mine = None
            if opening is None:
                break
            wait([opening])                     # its error, if any, is for its own reader to report
        if mine is not None:
            self._fetch(pack_id, i, mine, pending[0])
        data = pending[0].result()
        k = i - pending[1]
        return memoryview(data)[k * BLOCK:(k + 1) * BLOCK]

    def _fetch(self, pack_id: str, i: int, j: int, fut: Future) -> None:
        """One GET of blocks i..j; its waiters get the bytes (or the error) as soon as they
        arrive, and the blocks go into the cache after that: a reader waiting on a read-ahead
        GET decodes while the read-ahead thread writes the cache.  Until written the blocks
        stay in flight, so a reader coming meanwhile takes them from the GET, not a new one."""
        data = None
        try:
            data = self._get(pack_id, i * BLOCK, (j + 1) * BLOCK)
            if len(data) < (j + 1 - i) * BLOCK:         # the pack ends here: read ahead no further
                self._ends[pack_id] = min(self._ends.get(pack_id, 1 << 62), i * BLOCK + len(data))
                _trim(self._ends)
        except BaseException as e:
            _resolve(fut, None, e)
        try:
            if data is not None:
                _resolve(fut, data)
                view = memoryview(data)
                for k in range(i, j + 1):
                    block = view[(k - i) * BLOCK:(k - i + 1) * BLOCK]
                    if block:
                        try:
                            self.cache.put(f"{pack_id}.{k}", block)
                        except OSError:         # the cache disk: a miss later, never an error
                            pass
        finally:
            with self._fetching:
                for k in range(i, j + 1):
                    if self._inflight.get(f"{pack_id}.{k}", (None,))[0] is fut:
                        del self._inflight[f"{pack_id}.{k}"]

    wants_hints = True

    def prefetch_hint(self, wants) -> None:
        """Start the first GET of the packs a reader will reach next: `wants` is (pack id,
        offset, length) of the records it will read, in reading order.  For each pack this
        node has not read yet (not cached, no GET sent), the blocks of its first run there
        (the records from its first offset on, up to a Reader's 1 MiB run) are fetched in the
        background, alone (see `_block`): a store that does work per object on its first
        request (rclone hashes the whole object) does it while the reader is still in the pack
        before, not on its path.  Generic elsewhere: the GET is the one the reader would send
        when it gets there.  At most HINTED packs are started per hint (a random reader's
        window of many packs costs a few GETs at most), OPENERS at once, on their own threads
        (never queued behind a read-ahead)."""
        todo, spans = [], {}
        with self._fetching:
            for pack_id, offset, length in wants:
                length = length or 1            # a row without its record's length: its block
                span = spans.get(pack_id)
                if span is not None:            # the first run there grows (up to FIRST_RUN)
                    if span[0] <= offset and offset + length <= span[0] + FIRST_RUN:
                        span[1] = max(span[1], offset + length)
                elif len(spans) < HINTED and pack_id not in self._first and not self.cache.has(pack_id):
                    spans[pack_id] = [offset, offset + length]
            for pack_id, (lo, hi) in spans.items():
                i, last = lo // BLOCK, (hi - 1) // BLOCK
                if f"{pack_id}.{i}" in self._inflight or self.cache.has(f"{pack_id}.{i}"):
                    continue
                j, fut = self._claim(pack_id, i, last)
                todo.append((pack_id, i, j, fut))
        for pack_id, i, j, fut in todo:
            try:
                self.openers.submit(self._fetch, pack_id, i, j, fut)     # errors: for its waiters
            except RuntimeError as e:       # the store closed meanwhile
                _resolve(fut, None, Unavailable(f"the pack store was closed ({e})"))
                with self._fetching:
                    for k in range(i, j + 1):
                        self._inflight.pop(f"{pack_id}.{k}", None)

    def _read_ahead(self, pack_id: str, start: int) -> None:
        """Keep up to READAHEAD blocks (at most a quarter of the cache) fetched or on their way
        after `start`, RUN blocks per background GET; stop at the pack's end when it is known."""
        ahead = min(READAHEAD, self.cache.limit // BLOCK // 4)
        size = self.known.get(pack_id, (None,))[0] or self._ends.get(pack_id)
        stop = start + ahead
        last = None if size is None else (size + BLOCK - 1) // BLOCK    # blocks in the pack
        if last is not None:
            stop = min(stop, last)
        runs, later = [], None
        with self._fetching:
            later = self._opening(pack_id)   # the pack's first GET goes alone (see _block): after it
            # whole RUN-aligned groups (cut at the pack's end only), so topping up as the reader
            # moves one block on is one RUN-block GET every RUN blocks, not one 1 MiB GET per block
            for g in range(start // RUN, (stop + RUN - 1) // RUN) if later is None else ():
                hi = (g + 1) * RUN if last is None else min((g + 1) * RUN, last)
                missing = [k for k in range(max(start, g * RUN), hi)
                           if f"{pack_id}.{k}" not in self._inflight and not self.cache.has(f"{pack_id}.{k}")]
                if not missing or (size is None and g * RUN >= stop):
                    continue
                i, j = missing[0], missing[-1]
                fut: Future = Future()
                fut.set_running_or_notify_cancel()
                for k in range(i, j + 1):
                    self._inflight.setdefault(f"{pack_id}.{k}", (fut, i))
                runs.append((i, j, fut))
                if pack_id not in self._first:      # no GET of it yet: this one alone, then the rest
                    self._first[pack_id] = later = fut
                    _trim(self._first)
                    break
        for i, j, fut in runs:
            self.readers.submit(self._fetch, pack_id, i, j, fut)   # errors: for its waiters, if any
        if later is not None:               # outside the lock: a done future calls back at once
            later.add_done_callback(lambda f: self._after_first(f, pack_id, start))

    def _after_first(self, fut: Future, pack_id: str, start: int) -> None:
        """The read-ahead held back by a pack's first GET, once it is back (not after a failure
        or close(), which fails it with the fetch lock held)."""
        if fut.cancelled() or fut.exception() is not None:
            return
        try:
            self._read_ahead(pack_id, start)
        except RuntimeError:                # the store closed meanwhile (no new GETs)
            pass

    def open_stream(self, pack_id: str) -> BinaryIO:
        f = tempfile.TemporaryFile(dir=self.staging, prefix="scan-")
        try:
            self.call(lambda: self.client.download_fileobj(self.bucket, self.pack_key(pack_id), f),
                      f"read of pack {pack_id}")
        except FileNotFoundError:
            f.close()
            raise Corrupt(f"pack {pack_id} is missing") from None
        except BaseException:
            f.close()
            raise
        f.seek(0)
        return f

    def list(self) -> list[str]:
        out = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + "packs/")
        try:
            for page in self.call(lambda: list(pages), "listing of packs"):
                for o in page.get("Contents", []):
                    name = o["Key"].rsplit("/", 1)[-1]
                    if name.endswith(".pack"):
                        pid = name[:-5]
                        mt = o["LastModified"]
                        self.known[pid] = (o["Size"], mt.timestamp() if isinstance(mt, datetime) else time.time())
                        out.append(pid)
        except FileNotFoundError:
            return []
        return sorted(out)

    def _head(self, pack_id: str) -> tuple[int, float]:
        if pack_id not in self.known:
            try:
                h = self.call(lambda: self.client.head_object(Bucket=self.bucket, Key=self.pack_key(pack_id)),
                              f"lookup of pack {pack_id}")
            except FileNotFoundError:
                raise Corrupt(f"pack {pack_id} is missing") from None
            self.known[pack_id] = (h["ContentLength"], h["LastModified"].timestamp())
        return self.known[pack_id]

    def size(self, pack_id: str) -> int:
        return self._head(pack_id)[0]

    def mtime(self, pack_id: str) -> float:
        return self._head(pack_id)[1]

    def exists(self, pack_id: str) -> bool:
        """Asks the store (another node's gc may have removed it)."""
        self.known.pop(pack_id, None)
        try:
            self._head(pack_id)
            return True
        except Corrupt:
            return False

    def delete(self, pack_id: str) -> None:
        self.known.pop(pack_id, None)
        self.cache.forget(pack_id)
        self.call(lambda: self.client.delete_object(Bucket=self.bucket, Key=self.pack_key(pack_id)),
                  f"deletion of pack {pack_id}")

    def reclaim_uploads(self, grace: float) -> int:
        """Abort the multipart uploads of packs that saw no new part for `grace` seconds (a node
        killed mid-upload leaves them: invisible to readers, but the store keeps their parts).
        This node's uploads in progress are left alone.  Returns how many were aborted."""
        limit = time.time() - grace
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                             Prefix=self.prefix + "packs/")
        try:
            uploads = self.call(lambda: [u for p in pages for u in p.get("Uploads", [])], "listing of uploads")
        except FileNotFoundError:
            return 0
        aborted = 0
        for u in uploads:
            key, uid = u["Key"], u["UploadId"]
            if uid in self.active_uploads or (grace > 0 and _ts(u.get("Initiated")) > limit):
                continue
            try:
                if grace > 0:                       # a slow upload is alive while parts still come
                    parts = self.call(lambda: self.client.list_parts(Bucket=self.bucket, Key=key, UploadId=uid),
                                      f"listing of the parts of {key}").get("Parts", [])
                    if any(_ts(p.get("LastModified")) > limit for p in parts):
                        continue
                self.call(lambda: self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=uid),
                          f"abort of the upload of {key}")
                aborted += 1
            except FileNotFoundError:               # finished or aborted meanwhile
                continue
        return aborted

    # -- identity ----------------------------------------------------------------------------
    def get_meta(self, name: str) -> bytes | None:
        try:
            r = self.call(lambda: self.client.get_object(Bucket=self.bucket, Key=self.prefix + name), f"read of {name}")
        except FileNotFoundError:
            return None
        return r["Body"].read()

    def put_meta(self, name: str, data: bytes) -> None:
        self.call(lambda: self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data),
                  f"write of {name}")

    def close(self) -> None:
        self.openers.shutdown(wait=True, cancel_futures=True)
        self.readers.shutdown(wait=True, cancel_futures=True)
        with self._fetching:                # read-ahead runs cancelled before they started
            for fut, _ in list(self._inflight.values()):
                if not fut.done():
                    fut.set_exception(Unavailable("the pack store was closed"))
            self._inflight.clear()
        self.uploads.shutdown(wait=True)
