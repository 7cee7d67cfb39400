"""Packs as objects in S3-compatible storage (Ceph RGW, MinIO, Garage, rclone, AWS) via boto3.

    s3://BUCKET/PREFIX?endpoint=https://rgw.site-a:7480&region=us-east-1&retries=5

Credentials come from the usual AWS_* variables (or [repository] access_key_id /
secret_access_key).  Layout under PREFIX: `config.json`, `keys.json`, `packs/xx/<id>.pack`.

A pack is staged in the node's cache folder while it fills and is PUT once, whole, when the
writer seals it (at 64 MiB, in the background) or syncs it (a group commit): objects are never
appended to, so a commit's chunks and events are in the bucket before the catalog commit that
references them.  Reads are ranged GETs of aligned blocks kept in the local LRU cache.
Transient failures (endpoint down, throttling, 5xx) are retried by botocore with exponential
backoff; then they surface as `errors.Unavailable`, never as a half-done commit.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar
from urllib.parse import parse_qs, urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .chunkcache import BlockCache
from .errors import Corrupt, Unavailable
from .packstore import PackSink, PackStore

BLOCK = 1 << 20          # ranged-GET unit: 16 average chunks; a random 64 KiB read costs one
READAHEAD = 8            # blocks fetched at once when a pack is being read in order
T = TypeVar("T")
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class _S3Sink:
    """One pack being filled in a staging file; PUT once when sealed or synced."""

    appendable = False

    def __init__(self, store: "S3PackStore", pack_id: str):
        self.store, self.pack_id = store, pack_id
        self.path = store.staging / f"{pack_id}.pack"
        self._f = open(self.path, "wb")
        self._lock = threading.Lock()
        self._uploaded = False

    def write(self, data: bytes) -> None:
        self._f.write(data)

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
            if self._f.closed:
                raise Unavailable(f"pack {self.pack_id} could not be stored earlier; nothing was committed")
            self._f.flush()
            with open(self.path, "rb") as body:
                self.store.call(lambda: self.store.client.put_object(
                    Bucket=self.store.bucket, Key=self.store.pack_key(self.pack_id), Body=body),
                    f"upload of pack {self.pack_id}")
            self._uploaded = True
            self.store.known[self.pack_id] = (self.path.stat().st_size, time.time())

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()
            if self._uploaded and self.path.exists():
                self.store.cache.adopt(self.pack_id, self.path)      # write-through: fresh data is hot
            else:
                self.path.unlink(missing_ok=True)


class S3PackStore(PackStore):
    def __init__(self, bucket: str, prefix: str, endpoint: str | None, region: str | None, cache_dir: Path,
                 cache_size: int, credentials: dict, retries: int = 5):
        from concurrent.futures import ThreadPoolExecutor
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
        self._last_block: dict[str, int] = {}          # per pack: last block fetched (sequential reads)
        self.uploads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="s3-upload")
        self.requests = 0
        cfg = Config(retries={"max_attempts": max(1, retries), "mode": "standard"}, connect_timeout=5,
                     read_timeout=60, max_pool_connections=32, s3={"addressing_style": "path"},
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
        endpoint = q.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return cls(u.netloc, u.path, endpoint, q.get("region"), cache_dir, cache_size, credentials, retries)

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
            return r["Body"].read()
        except FileNotFoundError:
            raise Corrupt(f"pack {pack_id} is missing") from None
        except ClientError as e:        # 416: the range starts past the end
            if e.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""
            raise

    def read_range(self, pack_id: str, offset: int, length: int) -> bytes:
        whole = self.cache.read(pack_id, offset, length)
        if whole is not None and len(whole) == length:
            return whole
        out = bytearray()
        end = offset + length
        i, last = offset // BLOCK, (end - 1) // BLOCK
        while i <= last:
            lo, hi = max(offset, i * BLOCK) - i * BLOCK, min(end, (i + 1) * BLOCK) - i * BLOCK
            got = self.cache.read(f"{pack_id}.{i}", lo, hi - lo)
            if got is not None:
                out += got
                i += 1
                continue
            j = i                               # fetch the run of missing blocks in one GET
            while j < last and self.cache.read(f"{pack_id}.{j + 1}", 0, 0) is None:
                j += 1
            if self._last_block.get(pack_id) == i - 1:      # reading on through a pack: read ahead
                j = max(j, i + READAHEAD - 1)
            self._last_block[pack_id] = j
            data = self._get(pack_id, i * BLOCK, (j + 1) * BLOCK)
            for k in range(i, j + 1):
                block = data[(k - i) * BLOCK:(k - i + 1) * BLOCK]
                if block and self.cache.read(f"{pack_id}.{k}", 0, 0) is None:
                    self.cache.put(f"{pack_id}.{k}", block)
            out += data[offset - i * BLOCK if offset > i * BLOCK else 0:end - i * BLOCK]
            if len(data) < (j + 1 - i) * BLOCK:     # the pack ended
                break
            i = j + 1
        return bytes(out)

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
        self.uploads.shutdown(wait=True)
