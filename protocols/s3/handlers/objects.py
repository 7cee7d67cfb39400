"""Object operations: Get/Head/Put/Delete/Copy, DeleteObjects, retention, ACL and tagging views."""
from __future__ import annotations

import time
from urllib.parse import unquote

from archive import errors, objects

from .. import checksums
from ..errors import S3Error, from_archive
from ..xml import document, el, http_date, iso, owner, parse
from ..app import Call, Response
from .common import (check_conditions, etag_of, meta_from_headers, meta_json, object_headers, parse_range,
                     parse_version_id, quoted, stream, version_id)


def _nf(code: str):
    """Run a core call, mapping NotFound to `code`."""
    class _Ctx:
        def __enter__(self):
            return self

        def __exit__(self, et, e, tb):
            if isinstance(e, errors.ArchiveError):
                raise from_archive(e, code) from e
            return False
    return _Ctx()


def resolve(call: Call, fs, key: str, vid_text: str | None) -> objects.ObjectVersion:
    """The version a request names: the current one, or `versionId`'s (delete markers included;
    "null": the key's null version, see :mod:`..versioning`)."""
    state = call.versioning(fs.share_name)
    if vid_text is None or vid_text == "":
        try:
            return objects.current(fs, key)
        except (errors.NotFound, errors.NotADirectory, errors.IsADirectory):
            e = S3Error("NoSuchKey", "The specified key does not exist.", Key=key)
            try:
                node = objects.node_of(fs, key)
                vs = objects.versions_of(fs, node, key)
                if vs and vs[0].deleted:
                    e.headers = [("x-amz-delete-marker", "true"), ("x-amz-version-id", version_id(vs[0], state))]
            except errors.ArchiveError:
                pass
            raise e from None
    if vid_text == "null":
        v = next((v for v in _key_versions(fs, key) if state.is_null(v)), None)
        if v is None:
            raise S3Error("NoSuchVersion", "The specified version does not exist.", Key=key, VersionId=vid_text)
        return v
    number = parse_version_id(vid_text)
    try:
        node = objects.node_of(fs, key)
        return objects.version(fs, key, node, number)
    except (errors.NotFound, errors.NotADirectory, errors.IsADirectory):
        raise S3Error("NoSuchVersion", "The specified version does not exist.", Key=key,
                      VersionId=vid_text) from None


def _key_versions(fs, key: str) -> list[objects.ObjectVersion]:
    """Every archive version of the key's node, newest first ([] when there is none)."""
    try:
        return objects.versions_of(fs, objects.node_of(fs, key), key)
    except (errors.NotFound, errors.NotADirectory, errors.IsADirectory, errors.InvalidPath):
        return []


def get_object(call: Call, head: bool = False) -> Response:
    fs = call.share()
    key = call.key_path()
    v = resolve(call, fs, key, call.query.get("versionId"))
    if v.deleted:
        e = S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.",
                    Method=call.method, ResourceType="DeleteMarker")
        e.headers = [("x-amz-delete-marker", "true"), ("x-amz-version-id", version_id(v, call.versioning())),
                     ("Last-Modified", iso(v.created_at))]
        raise e
    check_conditions(call.headers, v)
    headers = object_headers(v, call.versioning())
    for q, h in (("response-content-type", "Content-Type"), ("response-content-language", "Content-Language"),
                 ("response-expires", "Expires"), ("response-cache-control", "Cache-Control"),
                 ("response-content-disposition", "Content-Disposition"),
                 ("response-content-encoding", "Content-Encoding")):
        if q in call.query:
            headers = [(k, val) for k, val in headers if k.lower() != h.lower()] + [(h, call.query[q])]
    size = v.size
    rng = None
    part = call.query.get("partNumber")
    if part is not None:
        rng = _part_range(v, part)
    else:
        rng = parse_range(call.headers.get("range"), size)
    status = 200
    start, length = 0, size
    if call.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
        # the whole object's checksum, or the part's; none for a byte range (it would not match)
        if part is not None:
            headers += checksums.headers(v.meta.get("checksum"), part=int(part))
        elif rng is None:
            headers += checksums.headers(v.meta.get("checksum"))
    if rng is not None:
        start, end = rng
        length = end - start + 1 if size else 0
        status = 206
        headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
    headers.append(("Content-Length", str(length)))
    if head:
        return Response(status, headers, b"")
    with _nf("NoSuchKey"):
        reader = objects.open_version(fs, v)
    return Response(status, headers, stream(reader, start, length))


def _part_range(v: objects.ObjectVersion, part: str) -> tuple[int, int] | None:
    try:
        n = int(part)
    except ValueError:
        raise S3Error("InvalidArgument", "Part number must be an integer") from None
    sizes = v.meta.get("parts") or [v.size]
    if not 1 <= n <= len(sizes):
        raise S3Error("InvalidPart", "The requested partnumber is not satisfiable")
    start = sum(sizes[:n - 1])
    return (start, start + sizes[n - 1] - 1) if sizes[n - 1] else None


def put_object(call: Call) -> Response:
    if "x-amz-copy-source" in call.headers:
        return copy_object(call)
    fs = call.share(write=True)
    key = call.key_path()
    body = call.body()
    check_write_conditions(call, fs, key)
    meta = meta_from_headers(call.headers)
    with _nf("NoSuchKey"):
        fs.ensure_folders(key, target=True)     # one plain read when the folders exist
        w = fs.open_write(key, check=False)     # ensure_folders(target=True) made open_write's check
    try:
        while True:
            data = body.read()
            if not data:
                break
            w.write(data)
        if body.length is not None and body.size != body.length:
            raise S3Error("IncompleteBody", "You did not provide the number of bytes specified by the Content-Length")
    except BaseException:
        w.abort()
        raise
    meta["md5"] = body.md5.hexdigest()
    sent = body.sent()
    if sent is not None:     # verified: returned with x-amz-checksum-mode and by GetObjectAttributes
        meta["checksum"] = {"algorithm": sent[0], "type": checksums.FULL_OBJECT, "value": sent[1]}
    w.meta = meta_json(meta)
    with _nf("NoSuchKey"):
        ver = w.commit()
    call.app.ctx.event("s3", "commit", user=call.user_name, share=fs.share_name, path=key, version=ver.number,
                       size=ver.size)
    return Response(200, [("ETag", quoted(meta["md5"]))] + version_header(call, ver.number)
                    + body.checksum_headers())


def version_header(call: Call, number: int, share: str | None = None) -> list[tuple[str, str]]:
    """x-amz-version-id of a new version: only when the bucket's versioning is Enabled (S3 sends
    none for an unversioned or suspended bucket; the archive keeps the version all the same)."""
    return [("x-amz-version-id", str(number))] if call.versioning(share).status == "Enabled" else []


def check_write_conditions(call: Call, fs, key: str) -> None:
    """Conditional writes: `If-None-Match: *` (only if absent), `If-Match: etag` (only over it)."""
    inm = call.headers.get("if-none-match", "").strip()
    if not inm and "if-match" not in call.headers:
        return
    try:
        cur = objects.current(fs, key)
    except errors.ArchiveError:
        cur = None
    if inm:
        if cur is not None and (inm == "*" or inm.strip('"') == etag_of(cur)):
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                          Condition="If-None-Match")
    if "if-match" in call.headers:
        if cur is None:
            raise S3Error("NoSuchKey", "The specified key does not exist.", Key=key)
        check_conditions({"if-match": call.headers["if-match"]}, cur, get=False)


def delete_object(call: Call) -> Response:
    fs = call.share(write=True)
    key = call.key_path()
    vid = call.query.get("versionId")
    state = call.versioning(fs.share_name)
    if vid:
        v = resolve(call, fs, key, vid)
        _purge_s3(call, fs, key, v, state)
        headers = [("x-amz-version-id", version_id(v, state))]
        if v.deleted:
            headers.append(("x-amz-delete-marker", "true"))
        return Response(204, headers)
    marker = _delete_marker(fs, key)
    headers = []
    if marker is not None and state.status is not None:
        headers = [("x-amz-delete-marker", "true"),
                   ("x-amz-version-id", str(marker) if state.status == "Enabled" else "null")]
    return Response(204, headers)


def _purge_s3(call: Call, fs, key: str, v: objects.ObjectVersion, state) -> None:
    """Purge the version the client named; a null version takes the null versions it replaced
    with it (to an S3 client they are the same "null" version)."""
    _purge(call, fs, key, v)
    if state.is_null(v):
        for old in _key_versions(fs, key):
            if old.number < v.number and state.is_null(old):
                _purge(call, fs, key, old)


def _purge(call: Call, fs, key: str, v: objects.ObjectVersion) -> None:
    try:
        objects.purge_version(fs, key, v.node, v.number)
    except errors.WormLocked as e:
        raise S3Error("AccessDenied", f"Access Denied because object protected by object lock: {e}") from None
    except errors.PermissionDenied as e:
        raise S3Error("AccessDenied", str(e)) from None


def _delete_marker(fs, key: str) -> int | None:
    """A delete marker (tombstone) for `key`, or None when there is nothing to mark."""
    try:
        return objects.delete_marker(fs, key)
    except errors.IsADirectory:
        return None


def delete_objects(call: Call) -> Response:
    fs = call.share(write=True)
    doc = parse(call.body().read_all(2 << 20), "Delete")
    quiet = (doc.findtext("Quiet") or "").strip().lower() == "true"
    items = doc.findall("Object")
    if not items or len(items) > 1000:
        raise S3Error("MalformedXML", "Delete needs 1 to 1000 <Object> elements")
    out = []
    for item in items:
        key = item.findtext("Key") or ""
        vid = item.findtext("VersionId")
        try:
            call.key_path(key)
            if vid:
                v = resolve(call, fs, key, vid)
                _purge_s3(call, fs, key, v, call.versioning(fs.share_name))
                if not quiet:
                    parts = [el("Key", key), el("VersionId", vid)]
                    if v.deleted:
                        parts += [el("DeleteMarker", True), el("DeleteMarkerVersionId", vid)]
                    out.append(el("Deleted", children=parts))
            else:
                marker = _delete_marker(fs, key)
                if not quiet:
                    parts = [el("Key", key)]
                    if marker is not None:
                        state = call.versioning(fs.share_name)
                        parts += [el("DeleteMarker", True),
                                  el("DeleteMarkerVersionId", marker if state.status == "Enabled" else "null")]
                    out.append(el("Deleted", children=parts))
        except (S3Error, errors.ArchiveError) as e:
            err = e if isinstance(e, S3Error) else from_archive(e)
            if err.code == "NoSuchVersion" or err.code == "NoSuchKey":
                if not quiet:
                    out.append(el("Deleted", children=[el("Key", key)] + ([el("VersionId", vid)] if vid else [])))
                continue
            out.append(el("Error", children=[el("Key", key)] + ([el("VersionId", vid)] if vid else [])
                          + [el("Code", err.code), el("Message", err.message)]))
    return Response(200, [], document("DeleteResult", out))


def parse_copy_source(call: Call) -> tuple[str, str, str | None]:
    src = call.headers["x-amz-copy-source"]
    path, _, q = src.partition("?")
    path = unquote(path).lstrip("/")
    bucket, _, key = path.partition("/")
    vid = None
    if q:
        for part in q.split("&"):
            k, _, v = part.partition("=")
            if k == "versionId":
                vid = unquote(v)
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                      ArgumentName="x-amz-copy-source")
    return bucket, key, vid


def copy_source(call: Call) -> tuple[object, objects.ObjectVersion]:
    bucket, key, vid = parse_copy_source(call)
    src_fs = call.share(bucket)
    call.key_path(key)
    v = resolve(call, src_fs, key, vid)
    if v.deleted:
        raise S3Error("InvalidRequest", "The source of a copy request may not specifically refer to a delete marker "
                      "by version id.")
    check_conditions(call.headers, v, prefix="x-amz-copy-source-", get=False)
    return src_fs, v


def copy_object(call: Call) -> Response:
    src_fs, src = copy_source(call)
    fs = call.share(write=True)
    key = call.key_path()
    directive = call.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.")
    if directive == "REPLACE":
        meta = meta_from_headers(call.headers)
        for k in ("md5", "etag", "parts", "checksum"):
            if k in src.meta:
                meta[k] = src.meta[k]
    else:
        meta = dict(src.meta)
        if src_fs.share_name == fs.share_name and src.key == key and src.latest:
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to "
                          "itself without changing the object's metadata, storage class, website redirect "
                          "location or encryption attributes.")
    with _nf("NoSuchKey"):
        fs.ensure_folders(key)
        ver = objects.copy_version(src_fs, src, fs, key, meta)
    etag = etag_of(objects.ObjectVersion(key, src.node, ver.number, src.size, ver.created_at, ver.mtime, False,
                                         src.etag, meta))
    doc = document("CopyObjectResult", [el("LastModified", iso(ver.mtime)), el("ETag", quoted(etag))])
    return Response(200, version_header(call, ver.number, fs.share_name)
                    + [("x-amz-copy-source-version-id", version_id(src, call.versioning(src_fs.share_name)))], doc)


def get_retention(call: Call) -> Response:
    fs = call.share()
    key = call.key_path()
    v = resolve(call, fs, key, call.query.get("versionId"))
    until = objects.worm_until(call.repo, fs.share_name, v)
    if until is None:
        raise S3Error("NoSuchObjectLockConfiguration", "The specified object does not have a ObjectLock configuration")
    return Response(200, [], document("Retention", [el("Mode", "COMPLIANCE"), el("RetainUntilDate", iso(until))]))


def get_acl(call: Call) -> Response:
    """A fixed view: the caller's own full control (grants live in the archive, not in ACLs)."""
    if call.key:
        resolve(call, call.share(), call.key_path(), call.query.get("versionId"))
    else:
        call.share()
    name = call.user_name
    grant = el("Grant", children=[
        f'<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">'
        f"{el('ID', name)}{el('DisplayName', name)}</Grantee>", el("Permission", "FULL_CONTROL")])
    return Response(200, [], document("AccessControlPolicy", [owner(name), el("AccessControlList", children=[grant])]))


def get_tagging(call: Call) -> Response:
    if call.key:
        resolve(call, call.share(), call.key_path(), call.query.get("versionId"))
    else:
        call.share()
    return Response(200, [], document("Tagging", [el("TagSet", children=[])]))


def now() -> float:
    return time.time()


_ATTRIBUTES = {"etag", "checksum", "objectparts", "storageclass", "objectsize"}


def get_attributes(call: Call) -> Response:
    """GetObjectAttributes: ETag, Checksum, ObjectParts (sizes and checksums of a multipart
    object's parts, paged by x-amz-max-parts / x-amz-part-number-marker), StorageClass, ObjectSize."""
    fs = call.share()
    key = call.key_path()
    wanted = {a.strip().lower() for a in call.headers.get("x-amz-object-attributes", "").split(",") if a.strip()}
    if not wanted or not wanted <= _ATTRIBUTES:
        raise S3Error("InvalidArgument", "Invalid attribute name specified.", ArgumentName="x-amz-object-attributes")
    vid = call.query.get("versionId")
    v = resolve(call, fs, key, vid)
    state = call.versioning(fs.share_name)
    if v.deleted:
        e = S3Error("NoSuchKey", "The specified key does not exist.", Key=key)
        e.headers = [("x-amz-delete-marker", "true"), ("x-amz-version-id", version_id(v, state))]
        raise e
    check_conditions(call.headers, v)
    try:
        max_parts = min(int(call.headers.get("x-amz-max-parts") or 1000), 1000)
        marker = int(call.headers.get("x-amz-part-number-marker") or 0)
    except ValueError:
        raise S3Error("InvalidArgument", "x-amz-max-parts and x-amz-part-number-marker must be integers") from None
    if max_parts < 0 or marker < 0:
        raise S3Error("InvalidArgument", "x-amz-max-parts and x-amz-part-number-marker must not be negative")
    stored = v.meta.get("checksum") or None
    body = []
    if "etag" in wanted:
        body.append(el("ETag", etag_of(v)))
    if "checksum" in wanted and stored:
        body.append(el("Checksum", children=[el(f"Checksum{stored['algorithm'].upper()}", stored["value"]),
                                             el("ChecksumType", stored.get("type", checksums.FULL_OBJECT))]))
    sizes = v.meta.get("parts")
    if "objectparts" in wanted and sizes:
        part_sums = (stored or {}).get("parts") or []
        numbers = [n for n in range(1, len(sizes) + 1) if n > marker]
        page = numbers[:max_parts]
        truncated = len(numbers) > len(page)
        fields = [el("PartsCount", len(sizes)), el("PartNumberMarker", marker),
                  el("NextPartNumberMarker", page[-1] if page else marker), el("MaxParts", max_parts),
                  el("IsTruncated", truncated)]
        for n in page:
            part = [el("PartNumber", n), el("Size", sizes[n - 1])]
            if len(part_sums) == len(sizes):
                part.append(el(f"Checksum{stored['algorithm'].upper()}", part_sums[n - 1]))
            fields.append(el("Part", children=part))
        body.append(el("ObjectParts", children=fields))
    if "storageclass" in wanted:
        body.append(el("StorageClass", "STANDARD"))
    if "objectsize" in wanted:
        body.append(el("ObjectSize", v.size))
    headers = [("Last-Modified", http_date(v.mtime))]
    if state.status is not None:        # (a never-versioned bucket shows no version ids)
        headers.append(("x-amz-version-id", version_id(v, state)))
    return Response(200, headers, document("GetObjectAttributesResponse", body))
