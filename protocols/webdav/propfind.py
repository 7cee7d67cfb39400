"""PROPFIND (Depth 0 and 1) on share folders and files, written straight from ``listdir``.

wsgidav's generic PROPFIND builds a resource object per child, asks it for each property,
assembles an ElementTree of the whole answer and serialises it at the end: about 0.1 ms per
child and property in Python, and the whole multistatus in memory.  Here the children's
``Entry`` objects (which already carry size, mtime, etag, node id) are turned into XML text
as ``listdir`` streams them, so a 10,000-entry folder costs one paged catalog scan:

* live properties come from the Entry, lock properties from one lock prefetch per request;
* dead properties cost one ``fs.get_props`` per child, and only when the request asks for
  them (allprop, propname, or a non-DAV property name);
* up to ``BUFFER`` bytes the answer is sent with a Content-Length (keep-alive); a larger
  answer is streamed chunked as it is produced (wsgidav then closes the connection after
  it, which is the price of never holding a huge listing in memory).

Anything unusual (conditional headers, the share list, lock-null resources, Depth:
infinity when enabled) goes to wsgidav's own implementation.
"""
from __future__ import annotations

from typing import Iterable, Iterator
from urllib.parse import quote
from xml.sax.saxutils import escape

from wsgidav import util
from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_NOT_FOUND, DAVError
from wsgidav.util import etree

from .errors import mapped
from .names import is_junk, lock_root

BUFFER = 1 << 20
HREF_SAFE = "/" + "!*'()," + "$-_|."
CONDITIONAL = ("HTTP_IF", "HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE",
               "HTTP_IF_UNMODIFIED_SINCE")
SUPPORTED_LOCK = ("<D:supportedlock><D:lockentry><D:lockscope><D:exclusive/></D:lockscope>"
                  "<D:locktype><D:write/></D:locktype></D:lockentry><D:lockentry><D:lockscope>"
                  "<D:shared/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>"
                  "</D:supportedlock>")
LIVE_FILE = ["{DAV:}resourcetype", "{DAV:}displayname", "{DAV:}creationdate",
             "{DAV:}getlastmodified", "{DAV:}getcontentlength", "{DAV:}getcontenttype",
             "{DAV:}getetag", "{DAV:}lockdiscovery", "{DAV:}supportedlock"]
LIVE_DIR = ["{DAV:}resourcetype", "{DAV:}displayname", "{DAV:}creationdate",
            "{DAV:}getlastmodified", "{DAV:}lockdiscovery", "{DAV:}supportedlock"]
QUOTA = ["{DAV:}quota-used-bytes", "{DAV:}quota-available-bytes"]


def _split(name: str) -> tuple[str, str]:
    if name.startswith("{"):
        ns, _, local = name[1:].partition("}")
        return ns, local
    return "", name


def empty_element(name: str) -> str:
    """<prefix:local/> for a Clark name, declaring its namespace locally."""
    ns, local = _split(name)
    if ns == "DAV:":
        return f"<D:{local}/>"
    if not ns:
        return f'<{local} xmlns=""/>'
    return f'<X:{local} xmlns:X="{escape(ns, {chr(34): "&quot;"})}"/>'


def parse_request(environ) -> tuple[str, list[str]]:
    """(mode, names) exactly as wsgidav validates a PROPFIND body (400 on nonsense)."""
    request = util.parse_xml_body(environ, allow_empty=True)
    if request is None:
        return "allprop", []
    if request.tag != "{DAV:}propfind":
        raise DAVError(HTTP_BAD_REQUEST)
    mode, names = None, []
    for node in request:
        if node.tag == "{DAV:}allprop":
            if mode:
                raise DAVError(HTTP_BAD_REQUEST)
            mode = "allprop"
        elif node.tag == "{DAV:}name":
            if mode:
                raise DAVError(HTTP_BAD_REQUEST)
            mode = "name"
        elif node.tag == "{DAV:}prop":
            if mode not in (None, "named"):
                raise DAVError(HTTP_BAD_REQUEST)
            mode = "named"
            names.extend(child.tag for child in node)
    return mode or "named", names


class _Item:
    """What one <response> needs: a resource-like view of an Entry."""

    __slots__ = ("href", "url_path", "rel", "entry", "is_dir", "name")

    def __init__(self, url_path: str, rel: str, entry, name: str) -> None:
        self.url_path, self.rel, self.entry, self.name = url_path, rel, entry, name
        self.is_dir = entry.is_dir
        self.href = quote(url_path + ("/" if self.is_dir and not url_path.endswith("/") else ""),
                          safe=HREF_SAFE)


def serve(provider, res, environ, start_response, default_handler):
    """Answer the PROPFIND for a DirResource/FileResource, or defer to wsgidav."""
    if any(h in environ for h in CONDITIONAL):
        return default_handler(environ, start_response)
    depth = environ.get("HTTP_DEPTH", "infinity").strip().lower()
    if depth not in ("0", "1"):
        return default_handler(environ, start_response)
    mode, names = parse_request(environ)
    session = res.session
    fs = res.fs
    share = res.share
    storage = provider.lock_storage
    ignore_junk = provider.junk_policy == "ignore"

    locks_by_root: dict[str, list[dict]] = {}
    for lk in storage.prefetch(res.get_ref_url()):
        locks_by_root.setdefault(lk["root"], []).append(lk)

    def items() -> Iterator[_Item]:
        yield _Item(res.path, res.rel, res.entry, res.get_display_name())
        if depth == "1" and res.is_collection:
            seen = set()
            base = res.path.rstrip("/")
            rel_base = res.rel.rstrip("/")
            with mapped():
                for e in fs.listdir(res.rel):
                    if ignore_junk and is_junk(e.name):
                        continue
                    seen.add(e.name)
                    yield _Item(f"{base}/{e.name}", f"{rel_base}/{e.name}", e, e.name)
            # lock-null members are rare: let the provider build them
            if any(r.rsplit("/", 1)[0] == lock_root(res.path) for r in locks_by_root):
                for member in res.get_member_list():
                    if getattr(member, "entry", 1) is None and member.name not in seen:
                        yield member  # type: ignore[misc]

    child_props: dict[str, dict] = {}

    def render(item) -> str:
        if not isinstance(item, _Item):      # a lock-null resource from the provider
            props = item.get_properties(mode, name_list=names if mode == "named" else None)
            return _render_generic(item.get_href(), props)
        e = item.entry
        dead: dict[str, str] | None = None

        def dead_props() -> dict[str, str]:
            nonlocal dead
            if dead is None:
                if item.rel != res.rel and depth == "1":
                    if not child_props:           # one query for every child of the folder
                        with mapped():
                            child_props["*"] = fs.child_props(res.rel)
                    dead = dict(child_props["*"].get(item.entry.name, {}))
                else:
                    with mapped():
                        dead = dict(fs.get_props(item.rel))
            return dead

        if mode in ("allprop", "name"):
            wanted = list(LIVE_DIR if item.is_dir else LIVE_FILE)
            if mode == "name" and item.is_dir:
                wanted += QUOTA
            wanted += list(dead_props().keys())
        else:
            wanted = names
        ok: list[str] = []
        missing: list[str] = []
        for name in wanted:
            if mode == "name":
                ok.append(empty_element(name))
                continue
            value = _live(name, item, session, share, locks_by_root, res)
            if value is None and not name.startswith("{DAV:}"):
                v = dead_props().get(name)
                if v is not None:
                    value = _strip_decl(v)
            if value is None:
                missing.append(empty_element(name))
            else:
                ok.append(value)
        return _response(item.href, ok, missing)

    head = '<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">'
    tail = "</D:multistatus>"
    gen = items()
    # produce up to BUFFER bytes before deciding between Content-Length and streaming
    parts: list[bytes] = [head.encode()]
    size = len(parts[0])
    exhausted = False
    for item in gen:
        b = render(item).encode("utf-8")
        parts.append(b)
        size += len(b)
        if size > BUFFER:
            break
    else:
        exhausted = True
    headers = [("Content-Type", "application/xml; charset=utf-8"),
               ("Date", util.get_rfc1123_time())]
    if exhausted:
        parts.append(tail.encode())
        body = b"".join(parts)
        start_response("207 Multi-Status", headers + [("Content-Length", str(len(body)))])
        return [body]
    start_response("207 Multi-Status", headers)
    return _stream(parts, gen, render, tail)


def _stream(parts: list[bytes], gen: Iterable, render, tail: str) -> Iterator[bytes]:
    yield b"".join(parts)
    batch: list[bytes] = []
    n = 0
    for item in gen:
        b = render(item).encode("utf-8")
        batch.append(b)
        n += len(b)
        if n >= 256 * 1024:
            yield b"".join(batch)
            batch, n = [], 0
    batch.append(tail.encode())
    yield b"".join(batch)


def _strip_decl(v: str) -> str:
    if v.startswith("<?xml"):
        return v[v.index("?>") + 2:].lstrip()
    return v


_MIME: dict[str, str] = {}


def _memo_by_second(fmt):
    """Cache a time formatter per whole second: a 10,000-entry listing repeats few seconds."""
    cache: dict[int, str] = {}

    def format_time(t: float) -> str:
        k = int(t)
        v = cache.get(k)
        if v is None:
            if len(cache) > 100_000:
                cache.clear()
            v = cache[k] = fmt(k)
        return v
    return format_time


_rfc1123 = _memo_by_second(util.get_rfc1123_time)
_rfc3339 = _memo_by_second(util.get_rfc3339_time)


def _mime(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    v = _MIME.get(ext)
    if v is None:
        v = _MIME[ext] = escape(util.guess_mime_type(name))
    return v


def _live(name: str, item: _Item, session, share: str, locks_by_root, res) -> str | None:
    """XML text of a live property, or None when the resource has no such property."""
    e = item.entry
    if name == "{DAV:}resourcetype":
        return "<D:resourcetype><D:collection/></D:resourcetype>" if item.is_dir \
            else "<D:resourcetype/>"
    if name == "{DAV:}getcontentlength":
        return None if item.is_dir else f"<D:getcontentlength>{e.size}</D:getcontentlength>"
    if name == "{DAV:}getlastmodified":
        return f"<D:getlastmodified>{_rfc1123(e.mtime)}</D:getlastmodified>"
    if name == "{DAV:}creationdate":
        return f"<D:creationdate>{_rfc3339(e.ctime)}</D:creationdate>"
    if name == "{DAV:}getetag":
        return None if item.is_dir or not e.etag else f'<D:getetag>"{escape(e.etag)}"</D:getetag>'
    if name == "{DAV:}getcontenttype":
        if item.is_dir:
            return None
        return f"<D:getcontenttype>{_mime(item.name)}</D:getcontenttype>"
    if name == "{DAV:}displayname":
        return f"<D:displayname>{escape(item.name)}</D:displayname>"
    if name == "{DAV:}supportedlock":
        return SUPPORTED_LOCK
    if name == "{DAV:}lockdiscovery":
        if not locks_by_root.get(lock_root(item.url_path)):
            return "<D:lockdiscovery/>"
        # rare: let wsgidav render the active locks
        r = res.provider.get_resource_inst(item.url_path, res.environ)
        el = r.get_property_value("{DAV:}lockdiscovery")
        return _element_text(el)
    if name in QUOTA and item.is_dir:
        used, quota = session.usage(share)
        if name == "{DAV:}quota-used-bytes":
            return f"<D:quota-used-bytes>{used}</D:quota-used-bytes>"
        if quota is None:
            return None
        return f"<D:quota-available-bytes>{max(0, quota - used)}</D:quota-available-bytes>"
    return None


def _element_text(el) -> str:
    return etree.tostring(el, encoding="unicode")


def _render_generic(href: str, props) -> str:
    ok, missing = [], []
    for name, value in props:
        if isinstance(value, DAVError) or value is None:
            (missing if isinstance(value, DAVError) else ok).append(empty_element(name))
        elif isinstance(value, str):
            el = etree.Element(name)
            el.text = value
            ok.append(_element_text(el))
        else:
            ok.append(_element_text(value))
    return _response(href, ok, missing)


def _response(href: str, ok: list[str], missing: list[str]) -> str:
    """One <D:response>: found properties under 200, missing ones under 404."""
    out = [f"<D:response><D:href>{escape(href)}</D:href>"]
    if ok:
        out.append("<D:propstat><D:prop>" + "".join(ok) +
                   "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>")
    if missing:
        out.append("<D:propstat><D:prop>" + "".join(missing) +
                   "</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>")
    out.append("</D:response>")
    return "".join(out)


__all__ = ["serve", "parse_request", "empty_element", "HTTP_NOT_FOUND"]
