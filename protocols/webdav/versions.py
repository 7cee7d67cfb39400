"""Per-file history over plain HTTP.

``GET /<share>/<path>?versions``        JSON list of the file's versions, oldest first
``GET /<share>/<path>?versions=html``   the same as an HTML table with download links
``GET /<share>/<path>?version=N``       the bytes of version N (ETag = that version's hash)

Each JSON item is the core's one serializer of a version (archive.types.Version.as_dict:
``version, size, created_at, mtime, deleted, etag, origin``, the same as `archivectl versions
--json`, ISO 8601 UTC times) plus ``placeholder`` and ``href``.  ``placeholder`` is true for a 0-byte version that was superseded by a non-empty
one within ``placeholder_window`` seconds: the first half of the Windows/Office save
dance (0-byte PUT, LOCK, PUT).  Such versions are kept (every completed PUT is a version)
and merely flagged, here and nowhere else.
"""
from __future__ import annotations

import html
import json
from urllib.parse import parse_qs, quote

from wsgidav import util
from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_NOT_FOUND, DAVError

from archive import errors

from .downloads import CountedReader, report_download
from .sendbody import DIRECT_KEY, DirectBody
from .errors import mapped

BLOCK = 1 << 20


def _versions_json(provider, fs, rel: str, base_href: str) -> list[dict]:
    with mapped():
        versions = list(fs.versions(rel))
    out = []
    for i, v in enumerate(versions):
        nxt = versions[i + 1] if i + 1 < len(versions) else None
        placeholder = bool(
            v.size == 0 and not v.deleted and nxt is not None and not nxt.deleted
            and nxt.size > 0 and nxt.created_at - v.created_at <= provider.placeholder_window)
        out.append({**v.as_dict(), "placeholder": placeholder, "href": f"{base_href}?version={v.number}"})
    return out


def maybe_serve_versions(provider, environ, start_response):
    """Serve a history request, or return None to let wsgidav handle the request."""
    if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
        return None
    qs = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if "versions" not in qs and "version" not in qs:
        return None
    from .names import split_url_path
    from .provider import Session

    path = environ.get("PATH_INFO", "/")
    share, rel = split_url_path(path)
    fs = Session.of(provider, environ).fs(share) if share else None
    if fs is None or rel == "/":
        raise DAVError(HTTP_NOT_FOUND)
    head = environ["REQUEST_METHOD"] == "HEAD"
    base_href = quote(environ.get("SCRIPT_NAME", "") + path)

    if "versions" in qs:
        items = _versions_json(provider, fs, rel, base_href)
        if not items:
            raise DAVError(HTTP_NOT_FOUND)
        if qs["versions"][0] == "html":
            rows = "".join(
                f"<tr><td><a href='{html.escape(i['href'])}'>{i['version']}</a></td>"
                f"<td>{i['size']}</td><td>{html.escape(i['created_at'])}</td>"
                f"<td>{'deleted' if i['deleted'] else ''}"
                f"{'placeholder' if i['placeholder'] else ''}</td>"
                f"<td>{html.escape((i['origin'] or {}).get('protocol') or '')}</td></tr>" for i in items)
            body = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Versions of "
                    f"{html.escape(path)}</title></head><body><h1>Versions of "
                    f"{html.escape(path)}</h1><table><tr><th>#</th><th>size</th>"
                    f"<th>created</th><th></th><th>via</th></tr>{rows}</table>"
                    f"</body></html>").encode("utf-8")
            ctype = "text/html; charset=utf-8"
        else:
            body = json.dumps({"path": path, "versions": items}, indent=1).encode("utf-8")
            ctype = "application/json"
        start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-cache")])
        return [b"" if head else body]

    try:
        number = int(qs["version"][0])
    except ValueError:
        raise DAVError(HTTP_BAD_REQUEST, context_info="version must be a number") from None
    with mapped():
        match = [v for v in fs.versions(rel) if v.number == number]
        if not match or match[0].deleted:
            raise DAVError(HTTP_NOT_FOUND, context_info=f"no version {number}")
        v = match[0]
        reader = fs.open_read(rel, version=number)
    # under our cheroot gateway the body goes out as the Reader's chunk views (.sendbody), as GET's does
    reader = CountedReader(reader, lambda sent: report_download(provider, environ, share, rel, number, v.size, sent),
                           direct=bool(environ.get(DIRECT_KEY)))
    headers = [("Content-Type", util.guess_mime_type(path)), ("Content-Length", str(v.size)),
               ("ETag", f'"{v.etag}"'), ("Last-Modified", util.get_rfc1123_time(v.mtime)),
               ("X-Archive-Version", str(number))]
    start_response("200 OK", headers)
    if head:
        reader.close()
        return [b""]
    return _stream(reader)


def _stream(reader):
    try:
        while True:
            buf = reader.read(BLOCK)
            if not buf and type(buf) is not DirectBody:    # a DirectBody is empty but carries the body
                break
            yield buf
    except errors.ArchiveError:
        return  # the connection is cut short: a client never gets wrong bytes
    finally:
        reader.close()
