"""What several handlers share: ETags, version ids, object metadata, conditions, ranges.

ETag rule (the same whichever protocol wrote the version): a version written over S3 keeps the
MD5 of its body (single PUT, computed while it streamed) or S3's multipart ETag
(``md5-of-part-md5s-N``) in its metadata, and that is its ETag.  A version written by any other
protocol has no MD5 (the core hashes content with keyed BLAKE3), so its ETag is the core's
content hash with the suffix ``-1``: clients (boto3, awscli, s3cmd, rclone) treat a dashed
ETag as "not an MD5" and do not check the body against it.
"""
from __future__ import annotations

import json
import re
from email.utils import parsedate_to_datetime

from archive.objects import ObjectVersion

from ..errors import S3Error
from ..xml import http_date

#: Headers stored with a version and returned by GET/HEAD (besides x-amz-meta-*).
STORED_HEADERS = ("content-type", "cache-control", "content-disposition", "content-encoding",
                  "content-language", "expires")
DEFAULT_TYPE = "binary/octet-stream"
MAX_META = 2048


def etag_of(v: ObjectVersion) -> str:
    if v.meta.get("etag"):
        return v.meta["etag"]
    if v.meta.get("md5"):
        return v.meta["md5"]
    return f"{v.etag}-1"


def quoted(etag: str) -> str:
    return f'"{etag}"'


def version_id(v: ObjectVersion, state=None) -> str:
    """The VersionId is the archive's version number (what `archivectl versions` shows), or
    "null" for a version written while the bucket was unversioned or suspended (`state`: the
    bucket's :class:`~protocols.s3.versioning.BucketState`)."""
    return "null" if state is not None and state.is_null(v) else str(v.number)


def parse_version_id(text: str) -> int:
    if not text.isdigit() or len(text) > 12 or int(text) < 1:
        raise S3Error("InvalidArgument", "Invalid version id specified", ArgumentName="versionId",
                      ArgumentValue=text)
    return int(text)


def meta_from_headers(headers: dict[str, str]) -> dict:
    """The metadata a PUT/Create/Copy(REPLACE) stores: content headers and x-amz-meta-*."""
    meta: dict = {}
    size = 0
    for h in STORED_HEADERS:
        if h in headers:
            meta[h] = headers[h]
    user = {}
    for k, v in headers.items():
        if k.startswith("x-amz-meta-"):
            user[k[len("x-amz-meta-"):]] = v
            size += len(k) + len(v)
    if size > MAX_META:
        raise S3Error("MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size.",
                      status=400)
    if user:
        meta["user"] = user
    return meta


def meta_json(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True)


def object_headers(v: ObjectVersion, state=None) -> list[tuple[str, str]]:
    h = [("ETag", quoted(etag_of(v))), ("Last-Modified", http_date(v.mtime)),
         ("x-amz-version-id", version_id(v, state)), ("Accept-Ranges", "bytes"),
         ("Content-Type", v.meta.get("content-type") or DEFAULT_TYPE)]
    for k in STORED_HEADERS[1:]:
        if k in v.meta:
            h.append((k.title(), v.meta[k]))
    for k, val in (v.meta.get("user") or {}).items():
        h.append((f"x-amz-meta-{k}", val))
    if v.meta.get("parts"):
        h.append(("x-amz-mp-parts-count", str(len(v.meta["parts"]))))
    return h


def _http_time(text: str) -> float | None:
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _etag_match(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any(t.strip('"').removeprefix("W/").strip('"') == etag for t in tags)


def check_conditions(headers: dict[str, str], v: ObjectVersion, prefix: str = "", get: bool = True) -> None:
    """If-Match / If-None-Match / If-(Un)Modified-Since, in RFC 7232's order (prefix
    "x-amz-copy-source-" for CopyObject's source conditions)."""
    etag = etag_of(v)
    im, inm = headers.get(prefix + "if-match"), headers.get(prefix + "if-none-match")
    ims, ius = headers.get(prefix + "if-modified-since"), headers.get(prefix + "if-unmodified-since")
    mtime = int(v.mtime)
    if im is not None:
        if not _etag_match(im, etag):
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                          Condition="If-Match")
    elif ius is not None:
        t = _http_time(ius)
        if t is not None and mtime > t:
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                          Condition="If-Unmodified-Since")
    if inm is not None:
        if _etag_match(inm, etag):
            raise _not_modified(etag, get and not prefix, "If-None-Match")
    elif ims is not None:
        t = _http_time(ims)
        if t is not None and mtime <= t:
            raise _not_modified(etag, get and not prefix, "If-Modified-Since")


def _not_modified(etag: str, get: bool, condition: str) -> S3Error:
    """304 for a GET/HEAD whose copy is current, 412 for anything else."""
    if get:
        e = S3Error("NotModified", "Not Modified", status=304)
        e.headers = [("ETag", quoted(etag))]
        return e
    return S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                   Condition=condition)


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single byte range, None for no/ignored range; InvalidRange
    (416) when it cannot be satisfied.  Multi-range and malformed headers are ignored (whole body),
    as S3 does."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    a, b = m.group(1), m.group(2)
    if a == "":
        n = int(b)
        if n == 0:
            raise _invalid_range(size)
        return max(0, size - n), size - 1 if size else -1
    start = int(a)
    end = int(b) if b else size - 1
    if b and end < start:
        return None
    if start >= size:
        raise _invalid_range(size)
    return start, min(end, size - 1)


def _invalid_range(size: int) -> S3Error:
    e = S3Error("InvalidRange", "The requested range is not satisfiable", ActualObjectSize=str(size))
    e.headers = [("Content-Range", f"bytes */{size}")]
    return e


def stream(reader, start: int, length: int, block: int = 1 << 20):
    """The bytes [start, start+length) of a Reader, block by block; closes it at the end."""
    try:
        reader.seek(start)
        left = length
        while left > 0:
            data = reader.read(min(block, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        reader.close()
