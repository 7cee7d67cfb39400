"""ListObjects (v1), ListObjectsV2 and ListObjectVersions.

Keys come from the core's key-ordered walk (:func:`archive.objects.iter_keys`), which streams;
a page stops after max-keys (+1 to know whether it is truncated), so a 100,000-key bucket pages
at the cost of one page.  With delimiter "/" the core hands folders over as common prefixes
without walking into them; any other delimiter groups keys here.
"""
from __future__ import annotations

import base64
from typing import Iterator
from urllib.parse import quote

from archive import errors, objects

from ..errors import S3Error
from ..xml import document, el, iso, owner
from ..app import Call, Response
from ..versioning import visible
from .common import etag_of, quoted, version_id

MAX_KEYS = 1000


def _max_keys(call: Call) -> int:
    text = call.query.get("max-keys")
    if text is None or text == "":
        return MAX_KEYS
    try:
        n = int(text)
    except ValueError:
        raise S3Error("InvalidArgument", "Provided max-keys not an integer or within integer range",
                      ArgumentName="max-keys", ArgumentValue=text) from None
    if n < 0:
        raise S3Error("InvalidArgument", "Argument maxKeys must be an integer between 0 and 2147483647",
                      ArgumentName="max-keys", ArgumentValue=text)
    return min(n, MAX_KEYS)


def _enc(call: Call):
    mode = call.query.get("encoding-type")
    if mode is None:
        return lambda s: s
    if mode != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request", ArgumentName="encoding-type")
    return lambda s: quote(s, safe="/")


def entries(fs, prefix: str, delimiter: str, after: str, deleted: bool = False) -> Iterator[tuple[str, object]]:
    """("key", ObjectVersion) and ("prefix", "common/prefix/") in key order, after `after`."""
    folders = delimiter == "/"
    last_cp = None
    for kind, item in objects.iter_keys(fs, prefix, after, folders=folders, deleted=deleted):
        if kind == "dir":
            if after and after.startswith(item):
                continue
            yield "prefix", item
            continue
        key = item.key
        if delimiter:
            rest = key[len(prefix):]
            i = rest.find(delimiter)
            if i >= 0:
                cp = prefix + rest[:i + len(delimiter)]
                if cp == last_cp or (after and after.startswith(cp)):
                    continue
                last_cp = cp
                yield "prefix", cp
                continue
        yield "key", item


def _page(it, n: int) -> tuple[list, bool]:
    out = []
    for x in it:
        if len(out) == n:
            return out, True
        out.append(x)
    return out, False


def _page_fields(call: Call, max_keys: int, delimiter: str, enc, truncated: bool) -> list[str]:
    out = [el("MaxKeys", max_keys)]
    if delimiter:
        out.append(el("Delimiter", enc(delimiter)))
    if "encoding-type" in call.query:
        out.append(el("EncodingType", "url"))
    return out + [el("IsTruncated", truncated)]


def _contents(call: Call, v: objects.ObjectVersion, enc, with_owner: bool) -> str:
    parts = [el("Key", enc(v.key)), el("LastModified", iso(v.mtime)), el("ETag", quoted(etag_of(v))),
             el("Size", v.size), el("StorageClass", "STANDARD")]
    if with_owner:
        parts.append(owner((v.origin.user if v.origin and v.origin.user else call.user_name)))
    return el("Contents", children=parts)


def list_objects(call: Call) -> Response:
    fs = call.share()
    v2 = call.query.get("list-type") == "2"
    enc = _enc(call)
    prefix = call.query.get("prefix", "")
    delimiter = call.query.get("delimiter", "")
    max_keys = _max_keys(call)
    if call.query.get("allow-unordered") == "true" and delimiter:
        raise S3Error("InvalidArgument", "allow-unordered cannot be used with a delimiter",
                      ArgumentName="allow-unordered")      # (keys always come in order here)
    if v2:
        token = call.query.get("continuation-token")
        start_after = call.query.get("start-after", "")
        if token is not None:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                              ArgumentName="continuation-token") from None
        else:
            after = start_after
    else:
        after = call.query.get("marker", "")
    items, truncated = _page(entries(fs, prefix, delimiter, after), max_keys) if max_keys else ([], False)
    with_owner = not v2 or call.query.get("fetch-owner") == "true"
    # botocore url-decodes the top-level Prefix of v2 answers only
    body = [el("Name", fs.share_name), el("Prefix", enc(prefix) if v2 else prefix)]
    if v2:
        if "continuation-token" in call.query:
            body.append(el("ContinuationToken", call.query["continuation-token"]))
        if call.query.get("start-after"):
            body.append(el("StartAfter", enc(call.query["start-after"])))
    else:
        body.append(el("Marker", enc(after)))
    body += _page_fields(call, max_keys, delimiter, enc, truncated)
    last = None
    for kind, item in items:
        if kind == "key":
            body.append(_contents(call, item, enc, with_owner))
            last = item.key
        else:
            body.append(el("CommonPrefixes", children=[el("Prefix", enc(item))]))
            last = item
    if v2:
        body.append(el("KeyCount", len(items)))
        if truncated and last is not None:
            body.append(el("NextContinuationToken", base64.urlsafe_b64encode(last.encode()).decode()))
    elif truncated and last is not None and delimiter:
        body.append(el("NextMarker", enc(last)))
    return Response(200, [], document("ListBucketResult", body))


def list_versions(call: Call) -> Response:
    fs = call.share()
    enc = _enc(call)
    prefix = call.query.get("prefix", "")
    delimiter = call.query.get("delimiter", "")
    max_keys = _max_keys(call)
    key_marker = call.query.get("key-marker", "")
    vid_marker = call.query.get("version-id-marker", "")
    if vid_marker and not key_marker:
        raise S3Error("InvalidArgument", "A version-id marker cannot be specified without a key marker.")
    rows: list[tuple[str, object]] = []
    state = call.versioning(fs.share_name)

    def versions_after() -> Iterator[tuple[str, object]]:
        if key_marker and vid_marker:
            try:
                node = objects.node_of(fs, key_marker)
                vs = visible(objects.versions_of(fs, node, key_marker), state)
                ids = [version_id(v, state) for v in vs]
                if vid_marker in ids:
                    for v in vs[ids.index(vid_marker) + 1:]:
                        yield "version", v
            except errors.ArchiveError:
                pass
        for kind, item in entries(fs, prefix, delimiter, key_marker, deleted=True):
            if kind == "prefix":
                yield kind, item
                continue
            for v in visible(objects.versions_of(fs, item.node, item.key), state):
                yield "version", v
    truncated = False
    if max_keys:
        rows, truncated = _page(versions_after(), max_keys)
    body = [el("Name", fs.share_name), el("Prefix", enc(prefix)), el("KeyMarker", enc(key_marker)),
            el("VersionIdMarker", vid_marker)] + _page_fields(call, max_keys, delimiter, enc, truncated)
    last = None
    for kind, item in rows:
        if kind == "prefix":
            body.append(el("CommonPrefixes", children=[el("Prefix", enc(item))]))
            last = (item, "")
            continue
        v = item
        who = owner(v.origin.user if v.origin and v.origin.user else call.user_name)
        common = [el("Key", enc(v.key)), el("VersionId", version_id(v, state)), el("IsLatest", v.latest),
                  el("LastModified", iso(v.created_at))]
        if v.deleted:
            body.append(el("DeleteMarker", children=common + [who]))
        else:
            body.append(el("Version", children=common + [el("ETag", quoted(etag_of(v))), el("Size", v.size),
                                                        el("StorageClass", "STANDARD"), who]))
        last = (v.key, version_id(v, state))
    if truncated and last is not None:
        body.append(el("NextKeyMarker", enc(last[0])))
        if last[1]:
            body.append(el("NextVersionIdMarker", last[1]))
    return Response(200, [], document("ListVersionsResult", body))
