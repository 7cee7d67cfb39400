"""Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts,
ListMultipartUploads.  Parts are staged by the core (:mod:`archive.multipart`); Complete
commits ONE version whose ETag is S3's ``md5(concatenated part MD5s)-N``."""
from __future__ import annotations

import hashlib

from archive import errors, objects

from .. import checksums
from ..chunked import checksum_b64, new_checksum
from ..errors import S3Error
from ..xml import document, el, iso, owner, parse
from ..app import Call, Response
from .common import meta_from_headers, meta_json, parse_range, quoted, stream
from .objects import _nf, check_write_conditions, copy_source, version_header

MIN_PART = 5 << 20


def _upload(call: Call, fs, key: str, completed: bool = False):
    uid = call.query.get("uploadId", "")
    try:
        up = call.app.staging.get(uid, completed)
    except errors.NotFound:
        raise S3Error("NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the "
                      "upload may have been aborted or completed.", UploadId=uid) from None
    if up.share != fs.share_name or up.key != key:
        raise S3Error("NoSuchUpload", "The specified upload does not exist.", UploadId=uid)
    return up


def create(call: Call) -> Response:
    fs = call.share(write=True)
    key = call.key_path()
    meta = meta_from_headers(call.headers)
    headers = []
    alg_name = call.headers.get("x-amz-checksum-algorithm")
    if alg_name:
        alg = checksums.ALGORITHMS.get(alg_name.upper())
        if alg is None:
            raise S3Error("InvalidRequest", f"Checksum algorithm {alg_name} is not supported by the archive "
                          f"(supported: {', '.join(sorted(checksums.ALGORITHMS))})")
        kind = (call.headers.get("x-amz-checksum-type") or checksums.default_type(alg)).upper()
        if not checksums.valid_type(alg, kind):
            raise S3Error("InvalidRequest", f"The {kind} checksum type is not supported for {alg_name.upper()}")
        meta["checksum"] = {"algorithm": alg, "type": kind}
        headers = [("x-amz-checksum-algorithm", alg.upper()), ("x-amz-checksum-type", kind)]
    up = call.app.staging.create(fs.share_name, key, call.user_name, meta)
    return Response(200, headers, document("InitiateMultipartUploadResult", [
        el("Bucket", fs.share_name), el("Key", key), el("UploadId", up.upload_id)]))


def _part_number(call: Call) -> int:
    try:
        n = int(call.query.get("partNumber", ""))
    except ValueError:
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000") from None
    if not 1 <= n <= 10000:
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000")
    return n


def upload_part(call: Call) -> Response:
    fs = call.share(write=True)
    key = call.key_path()
    up = _upload(call, fs, key)
    n = _part_number(call)
    if "x-amz-copy-source" in call.headers:
        return _upload_part_copy(call, up, n)
    body = call.body()
    alg = _algorithm(up)
    if alg:
        body.want(alg)
    part = call.app.staging.put_part(up.upload_id, n, body, checksum=(lambda: body.computed(alg)) if alg else None)
    if body.length is not None and part.size != body.length:
        raise S3Error("IncompleteBody", "You did not provide the number of bytes specified by the Content-Length")
    sums = body.checksum_headers()
    if alg and part.checksum:
        sums = [(k, v) for k, v in sums if k != f"x-amz-checksum-{alg}"] + [(f"x-amz-checksum-{alg}", part.checksum)]
    return Response(200, [("ETag", quoted(part.md5))] + sums)


def _algorithm(up) -> str | None:
    """The checksum algorithm the upload was created with (None: no checksum kept)."""
    return (up.meta.get("checksum") or {}).get("algorithm")


def _upload_part_copy(call: Call, up, n: int) -> Response:
    src_fs, src = copy_source(call)
    rng_text = call.headers.get("x-amz-copy-source-range")
    start, length = 0, src.size
    if rng_text:
        if not rng_text.startswith("bytes=") or "-" not in rng_text:
            raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last")
        a, _, b = rng_text[6:].partition("-")
        try:
            first, last = int(a), int(b)
        except ValueError:
            raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form "
                          "bytes=first-last") from None
        if first > last or last >= src.size:
            raise S3Error("InvalidRange", "The requested range is not satisfiable", status=416)
        start, length = first, last - first + 1
    with _nf("NoSuchKey"):
        reader = objects.open_version(src_fs, src)
    alg = _algorithm(up)
    h = new_checksum(alg) if alg else None

    def blocks():
        for block in stream(reader, start, length):
            if h is not None:
                h.update(block)
            yield block
    part = call.app.staging.put_part(up.upload_id, n, blocks(), checksum=(lambda: checksum_b64(h)) if h else None)
    fields = [el("LastModified", iso(part.modified)), el("ETag", quoted(part.md5))]
    if alg and part.checksum:
        fields.append(el(f"Checksum{alg.upper()}", part.checksum))
    doc = document("CopyPartResult", fields)
    return Response(200, [("x-amz-copy-source-version-id", str(src.number))], doc)


def complete(call: Call) -> Response:
    fs = call.share(write=True)
    key = call.key_path()
    up = _upload(call, fs, key, completed=True)
    # (x-amz-checksum-* of a Complete are the whole object's, not of this XML)
    doc = parse(call.body(object_checksums=False).read_all(4 << 20), "CompleteMultipartUpload")
    done = call.app.staging.completed(up.upload_id)
    if done is not None:            # a retried Complete: the same answer
        return _completed(call, fs, key, done["etag"], done["version"], done.get("checksum"))
    alg = _algorithm(up)
    wanted, sent = [], {}
    for p in doc.findall("Part"):
        try:
            wanted.append((int(p.findtext("PartNumber") or ""), (p.findtext("ETag") or "").strip().strip('"')))
        except ValueError:
            raise S3Error("MalformedXML", "PartNumber must be an integer") from None
        if alg and p.findtext(f"Checksum{alg.upper()}"):
            sent[wanted[-1][0]] = p.findtext(f"Checksum{alg.upper()}").strip()
    if not wanted:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not validate against "
                      "our published schema")
    staged = {p.number: p for p in call.app.staging.parts(up.upload_id)}
    prev = 0
    min_part = int(call.app.config.get("min_part_size", MIN_PART))
    for i, (n, etag) in enumerate(wanted):
        if n <= prev:
            raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order.")
        prev = n
        p = staged.get(n)
        if p is None or (etag and etag != p.md5) or (n in sent and sent[n] != p.checksum):
            raise S3Error("InvalidPart", "One or more of the specified parts could not be found.", PartNumber=str(n))
        if i < len(wanted) - 1 and p.size < min_part:
            raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.",
                          PartNumber=str(n))
    check_write_conditions(call, fs, key)
    md5s = b"".join(bytes.fromhex(staged[n].md5) for n, _ in wanted)
    etag = f"{hashlib.md5(md5s).hexdigest()}-{len(wanted)}"
    meta = dict(up.meta)
    meta["etag"] = etag
    meta["parts"] = [staged[n].size for n, _ in wanted]
    stored = None
    if alg:
        kind = up.meta["checksum"]["type"]
        values = [(staged[n].checksum, staged[n].size) for n, _ in wanted]
        if any(v is None for v, _ in values):
            raise S3Error("InvalidPart", "A part of this upload has no checksum.")
        stored = {"algorithm": alg, "type": kind, "value": checksums.object_value(alg, kind, values),
                  "parts": [v for v, _ in values]}
        claimed = call.headers.get(f"x-amz-checksum-{alg}")
        claimed_type = call.headers.get("x-amz-checksum-type")
        if claimed_type is not None and claimed_type.strip().upper() != kind:
            raise S3Error("BadDigest", f"The upload's checksum type is {kind}, not {claimed_type.strip()}.")
        if claimed is not None and claimed.strip() != stored["value"]:
            raise S3Error("BadDigest", f"The x-amz-checksum-{alg} you specified did not match the calculated checksum.")
        meta["checksum"] = stored
    with _nf("NoSuchKey"):
        fs.ensure_folders(key)
        ver = call.app.staging.complete(up.upload_id, fs, key, [n for n, _ in wanted], meta_json(meta),
                                        record={"etag": etag, "checksum": stored})
    call.app.ctx.event("s3", "commit", user=call.user_name, share=fs.share_name, path=key, version=ver.number,
                       size=ver.size)
    return _completed(call, fs, key, etag, ver.number, stored)


def _completed(call: Call, fs, key: str, etag: str, number: int, stored: dict | None = None) -> Response:
    fields = [el("Location", f"/{fs.share_name}/{key}"), el("Bucket", fs.share_name), el("Key", key),
              el("ETag", quoted(etag))]
    if stored:
        fields += [el(f"Checksum{stored['algorithm'].upper()}", stored["value"]), el("ChecksumType", stored["type"])]
    return Response(200, version_header(call, number, fs.share_name), document("CompleteMultipartUploadResult", fields))


def abort(call: Call) -> Response:
    fs = call.share(write=True)
    up = _upload(call, fs, call.key_path())
    call.app.staging.abort(up.upload_id)
    return Response(204)


def list_parts(call: Call) -> Response:
    fs = call.share()
    key = call.key_path()
    up = _upload(call, fs, key)
    try:
        marker = int(call.query.get("part-number-marker") or 0)
        max_parts = min(int(call.query.get("max-parts") or 1000), 1000)
    except ValueError:
        raise S3Error("InvalidArgument", "part-number-marker and max-parts must be integers") from None
    parts = [p for p in call.app.staging.parts(up.upload_id) if p.number > marker]
    page, truncated = parts[:max_parts], len(parts) > max_parts
    body = [el("Bucket", fs.share_name), el("Key", key), el("UploadId", up.upload_id),
            el("Initiator", children=[el("ID", up.user or ""), el("DisplayName", up.user or "")]), owner(up.user or ""),
            el("StorageClass", "STANDARD"), el("PartNumberMarker", marker),
            el("NextPartNumberMarker", page[-1].number if page else marker), el("MaxParts", max_parts),
            el("IsTruncated", truncated)]
    alg = _algorithm(up)
    if alg:
        body.append(el("ChecksumAlgorithm", alg.upper()))
    for p in page:
        fields = [el("PartNumber", p.number), el("LastModified", iso(p.modified)), el("ETag", quoted(p.md5)),
                  el("Size", p.size)]
        if alg and p.checksum:
            fields.append(el(f"Checksum{alg.upper()}", p.checksum))
        body.append(el("Part", children=fields))
    return Response(200, [], document("ListPartsResult", body))


def list_uploads(call: Call) -> Response:
    fs = call.share()
    prefix = call.query.get("prefix", "")
    try:
        max_uploads = min(int(call.query.get("max-uploads") or 1000), 1000)
    except ValueError:
        raise S3Error("InvalidArgument", "max-uploads must be an integer") from None
    key_marker = call.query.get("key-marker", "")
    ups = [u for u in call.app.staging.uploads(fs.share_name) if u.key.startswith(prefix) and u.key > key_marker]
    page, truncated = ups[:max_uploads], len(ups) > max_uploads
    body = [el("Bucket", fs.share_name), el("KeyMarker", key_marker), el("UploadIdMarker", ""),
            el("Prefix", prefix), el("MaxUploads", max_uploads), el("IsTruncated", truncated)]
    if truncated and page:
        body += [el("NextKeyMarker", page[-1].key), el("NextUploadIdMarker", page[-1].upload_id)]
    for u in page:
        body.append(el("Upload", children=[
            el("Key", u.key), el("UploadId", u.upload_id),
            el("Initiator", children=[el("ID", u.user or ""), el("DisplayName", u.user or "")]),
            owner(u.user or ""), el("StorageClass", "STANDARD"), el("Initiated", iso(u.initiated))]))
    return Response(200, [], document("ListMultipartUploadsResult", body))


__all__ = ["create", "upload_part", "complete", "abort", "list_parts", "list_uploads", "parse_range"]
