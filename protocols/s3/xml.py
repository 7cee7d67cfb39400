"""S3 XML: response documents, and safe parsing of the few request bodies S3 has.

Request bodies (DeleteObjects, CompleteMultipartUpload, PutBucketVersioning, CreateBucket's
location) are parsed with expat into a tiny element tree after a size cap; any DOCTYPE or
entity declaration is refused (no billion laughs, no external entities), nesting is capped, and
namespaces are dropped (clients differ in whether they send S3's namespace).  Anything that is
not well-formed, or lacks what the operation needs, is MalformedXML.
"""
from __future__ import annotations

import time
import xml.parsers.expat
from dataclasses import dataclass, field
from typing import Iterable
from xml.sax.saxutils import escape

from .errors import S3Error

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_BODY = 2 << 20
MAX_DEPTH = 16


# -- parsing ---------------------------------------------------------------------------------
@dataclass
class Element:
    tag: str
    text: str = ""
    children: list["Element"] = field(default_factory=list)

    def find(self, tag: str) -> "Element | None":
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag: str) -> list["Element"]:
        return [c for c in self.children if c.tag == tag]

    def findtext(self, tag: str, default: str | None = None) -> str | None:
        c = self.find(tag)
        return c.text if c is not None else default


def parse(body: bytes, root: str | None = None) -> Element:
    """Parse a request body; MalformedXML for anything unsafe or broken."""
    if len(body) > MAX_BODY:
        raise S3Error("MalformedXML", "the XML body is too large")
    p = xml.parsers.expat.ParserCreate(namespace_separator="}")
    stack: list[Element] = []
    top: list[Element] = []

    def start(name, attrs):
        if len(stack) >= MAX_DEPTH:
            raise S3Error("MalformedXML", "the XML is nested too deeply")
        el = Element(name.rsplit("}", 1)[-1])
        (stack[-1].children if stack else top).append(el)
        stack.append(el)

    def end(name):
        stack.pop()

    def chars(data):
        if stack:
            stack[-1].text += data

    def refuse(*args):
        raise S3Error("MalformedXML", "DOCTYPE and entity declarations are not accepted")

    p.StartElementHandler, p.EndElementHandler, p.CharacterDataHandler = start, end, chars
    p.StartDoctypeDeclHandler = refuse
    p.EntityDeclHandler = refuse
    try:
        p.Parse(body, True)
    except xml.parsers.expat.ExpatError as e:
        raise S3Error("MalformedXML", f"The XML you provided was not well-formed: {e}") from None
    if len(top) != 1 or (root is not None and top[0].tag != root):
        raise S3Error("MalformedXML", f"expected a <{root}> document")
    for el in _iter(top[0]):
        el.text = el.text.strip() if el.children else el.text
    return top[0]


def _iter(el: Element):
    yield el
    for c in el.children:
        yield from _iter(c)


# -- building --------------------------------------------------------------------------------
def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def http_date(t: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))


#: Characters an XML parser would normalise away are sent as character references.
_CONTROL = {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


def el(tag: str, value=None, children: Iterable[str] = ()) -> str:
    """One element as text: a value (escaped) or already-built children."""
    if value is not None:
        if isinstance(value, bool):
            value = "true" if value else "false"
        return f"<{tag}>{escape(str(value), _CONTROL)}</{tag}>"
    return f"<{tag}>{''.join(children)}</{tag}>"


def document(root: str, children: Iterable[str]) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{NS}">' + "".join(children)
            + f"</{root}>").encode()


def error_document(code: str, message: str, resource: str = "", request_id: str = "", **extra: str) -> bytes:
    parts = [el("Code", code), el("Message", message)]
    parts += [el(k, v) for k, v in extra.items()]
    if resource:
        parts.append(el("Resource", resource))
    parts.append(el("RequestId", request_id))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + el("Error", children=parts)).encode()


def owner(name: str) -> str:
    return el("Owner", children=[el("ID", name), el("DisplayName", name)])
