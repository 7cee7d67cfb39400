"""WSGI middleware that screens XML request bodies before wsgidav parses them.

wsgidav 4.4 parses PROPFIND/PROPPATCH/LOCK bodies with defusedxml (lxml is not installed),
which already refuses entity declarations (billion laughs).  On top of that this guard:

* caps the body at ``max_bytes`` (default 1 MiB): 413 instead of reading it into memory;
* refuses any DOCTYPE (no DTDs, no entities of any kind) with 400;
* refuses nesting deeper than ``max_depth`` (default 64) with 400, so no recursive code
  further down (tree serialisation of dead properties) can be driven into RecursionError;
* turns a chunked XML body into a sized one (wsgidav would otherwise treat it as empty).

The body is screened with a streaming expat parser and handed on as an in-memory stream.
"""
from __future__ import annotations

import io
import xml.parsers.expat

XML_METHODS = {"PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "REPORT", "SEARCH"}


class _Refused(Exception):
    def __init__(self, status: str, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


def screen(body: bytes, max_depth: int) -> None:
    """Raise _Refused for a DOCTYPE or excessive nesting; malformed XML passes through
    (wsgidav answers it with its own 400)."""
    p = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    depth = 0

    def start(name, attrs):
        nonlocal depth
        depth += 1
        if depth > max_depth:
            raise _Refused("400 Bad Request", f"XML nested deeper than {max_depth}")

    def end(name):
        nonlocal depth
        depth -= 1

    def doctype(*args):
        raise _Refused("400 Bad Request", "DOCTYPE / entity declarations are not accepted")

    p.StartElementHandler = start
    p.EndElementHandler = end
    p.StartDoctypeDeclHandler = doctype
    p.EntityDeclHandler = doctype
    try:
        p.Parse(body, True)
    except xml.parsers.expat.ExpatError:
        return
    except (LookupError, ValueError):      # e.g. encoding="x-unknown": expat cannot decode it
        raise _Refused("400 Bad Request", "XML body in an unsupported encoding") from None


class XMLGuard:
    def __init__(self, app, *, max_bytes: int = 1 << 20, max_depth: int = 64) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") not in XML_METHODS:
            return self.app(environ, start_response)
        try:
            body = self._read(environ)
            if body:
                screen(body, self.max_depth)
        except _Refused as r:
            data = (r.why + "\n").encode()
            start_response(r.status, [("Content-Type", "text/plain"),
                                      ("Content-Length", str(len(data))),
                                      ("Connection", "close")])
            return [data]
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)

    def _read(self, environ) -> bytes:
        cl = environ.get("CONTENT_LENGTH", "").strip()
        stream = environ["wsgi.input"]
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if cl and not chunked:
            try:
                n = int(cl)
            except ValueError:
                raise _Refused("400 Bad Request", "Content-Length is not a number") from None
            if n < 0:
                raise _Refused("400 Bad Request", "negative Content-Length")
            if n > self.max_bytes:
                raise _Refused("413 Payload Too Large",
                               f"XML body larger than {self.max_bytes} bytes")
            return stream.read(n) if n else b""
        if not chunked:
            return b""
        buf = bytearray()
        while True:
            part = stream.read(65536)
            if not part:
                return bytes(buf)
            buf += part
            if len(buf) > self.max_bytes:
                raise _Refused("413 Payload Too Large",
                               f"XML body larger than {self.max_bytes} bytes")
