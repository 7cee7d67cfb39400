"""Strict HTTP/1.1 request framing: header lines, Content-Length, Transfer-Encoding, chunks.

cheroot (the WebDAV server's HTTP layer) is lenient where leniency is dangerous: it keeps
the last of two different ``Content-Length`` headers, accepts one together with
``Transfer-Encoding: chunked``, takes ``-1`` as a length, reads ``-3`` as a chunk size
(``int("-3", 16)``: the body "ends" and the rest of it becomes the next request), reads a
chunk-size line of any length and a chunk of any size into memory.  Those are the shapes
of request smuggling and of memory exhaustion, so the WebDAV adapter reads request
framing with this module instead (RFC 9112 sections 5, 6 and 7.1):

* :func:`parse_header_line` / :func:`request_framing`: one field per line, no obsolete
  line folding, no whitespace before the colon, ``Content-Length`` = digits only and one
  value (repeats must be identical), ``Transfer-Encoding`` = ``chunked`` alone and never
  together with ``Content-Length``;
* :class:`ChunkedReader`: a streaming decoder (``read(n)`` never buffers more than
  ``n`` bytes of a chunk) with bounded chunk-size lines, extensions and trailers.

Every violation raises :class:`FramingError` (a ``ValueError``), which the server answers
with ``400 Bad Request`` and a closed connection: after a framing error nothing that follows
on the connection can be trusted.  The module knows nothing of cheroot or WebDAV.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

MAX_HEADER_LINE = 16 * 1024      #: bytes of one header line (cheroot caps the whole block too)
MAX_HEADERS = 200                 #: header fields per request
MAX_SIZE_DIGITS = 16              #: hex digits of a chunk size (64 bits)
MAX_CHUNK_LINE = 4096             #: bytes of a chunk-size line with its extensions
MAX_TRAILER_BYTES = 16 * 1024     #: all trailer fields together
MAX_LENGTH_DIGITS = 19            #: decimal digits of a Content-Length (below 2**63)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,%d}" % MAX_SIZE_DIGITS)
_DIGITS = re.compile(rb"[0-9]+")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class FramingError(ValueError):
    """The request's framing is malformed or ambiguous: answer 400 and close."""


@dataclass(frozen=True)
class Framing:
    """How the request body is delimited: ``chunked``, or ``length`` bytes (0: no body)."""

    chunked: bool
    length: int


def parse_header_line(line: bytes) -> tuple[bytes, bytes]:
    """``Name: value\\r\\n`` -> (name, value without surrounding blanks)."""
    if len(line) > MAX_HEADER_LINE:
        raise FramingError("header line too long")
    if not line.endswith(b"\r\n"):
        raise FramingError("header line without CRLF")
    if line[:1] in (b" ", b"\t"):
        raise FramingError("obsolete line folding is not accepted")
    name, sep, value = line[:-2].partition(b":")
    if not sep or not _TOKEN.fullmatch(name):
        raise FramingError("malformed header field name")
    value = value.strip(b" \t")
    if _CTL.search(value):
        raise FramingError("control character in header value")
    return name, value


def _list_items(values: Iterable[bytes]) -> list[bytes]:
    return [item.strip(b" \t") for v in values for item in v.split(b",") if item.strip(b" \t")]


def parse_content_length(values: list[bytes]) -> int | None:
    """The one length all ``Content-Length`` fields agree on (None: there is none)."""
    items = _list_items(values)
    if not values:
        return None
    if not items:
        raise FramingError("empty Content-Length")
    for item in items:
        if not _DIGITS.fullmatch(item) or len(item.lstrip(b"0")) > MAX_LENGTH_DIGITS:
            raise FramingError(f"invalid Content-Length {item[:40]!r}")
    lengths = {int(item) for item in items}
    if len(lengths) != 1:
        raise FramingError("conflicting Content-Length values")
    return lengths.pop()


def request_framing(fields: Iterable[tuple[bytes, bytes]], max_body: int = 0) -> Framing:
    """Decide how the body is delimited from the request's header fields (in order)."""
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for name, value in fields:
        low = name.lower()
        if low == b"content-length":
            lengths.append(value)
        elif low == b"transfer-encoding":
            codings.append(value)
    length = parse_content_length(lengths)
    if codings:
        if lengths:
            raise FramingError("Content-Length together with Transfer-Encoding")
        te = [c.lower() for c in _list_items(codings)]
        if te != [b"chunked"]:
            raise FramingError("only Transfer-Encoding: chunked is supported")
        return Framing(True, 0)
    length = length or 0
    if max_body and length > max_body:
        raise FramingError("request body too large")
    return Framing(False, length)


def parse_chunk_size(line: bytes) -> int:
    """The size announced by one chunk-size line (``1A;ext=v\\r\\n`` -> 26)."""
    if not line.endswith(b"\r\n"):
        if len(line) > MAX_CHUNK_LINE:
            raise FramingError("chunk-size line too long")
        raise FramingError("body ended inside a chunk-size line")
    if len(line) > MAX_CHUNK_LINE:
        raise FramingError("chunk-size line too long")
    size, _, ext = line[:-2].partition(b";")
    size = size.rstrip(b" \t")
    if not _HEX.fullmatch(size):
        raise FramingError(f"invalid chunk size {size[:40]!r}")
    if _CTL.search(ext):
        raise FramingError("control character in chunk extension")
    return int(size, 16)


class LineIteration:
    """``readlines`` and line iteration for a reader that has ``readline`` (file protocol)."""

    def readline(self, size: int | None = -1) -> bytes:
        raise NotImplementedError

    def readlines(self, hint: int = 0) -> list[bytes]:
        lines = []
        while line := self.readline():
            lines.append(line)
        return lines

    def __iter__(self) -> "LineIteration":
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class ChunkedReader(LineIteration):
    """``wsgi.input`` for a chunked request body, decoded as it is read.

    ``rfile`` is the connection's buffered reader.  ``on_error`` is called once before a
    :class:`FramingError` propagates (the server uses it to close the connection).
    ``bytes_read`` counts decoded body bytes; ``done`` turns true after the last chunk.
    """

    def __init__(self, rfile: Any, max_body: int = 0, on_error: Any = None) -> None:
        self._rfile = rfile
        self._max = max_body
        self._on_error = on_error
        self._left = 0              # bytes left in the current chunk
        self.bytes_read = 0
        self.done = False
        self._failed: FramingError | None = None

    def _fail(self, why: str) -> FramingError:
        err = FramingError(why)
        self._failed = err
        if self._on_error is not None:
            self._on_error(err)
        return err

    def _readline(self, limit: int) -> bytes:
        return self._rfile.readline(limit + 1)

    def _next_chunk(self) -> None:
        try:
            size = parse_chunk_size(self._readline(MAX_CHUNK_LINE))
        except FramingError as exc:
            raise self._fail(str(exc)) from None
        if self._max and self.bytes_read + size > self._max:
            raise self._fail("request body too large")
        if size == 0:
            self._read_trailers()
            self.done = True
        self._left = size

    def _read_trailers(self) -> None:
        total = 0
        while True:
            line = self._readline(MAX_TRAILER_BYTES)
            total += len(line)
            if total > MAX_TRAILER_BYTES:
                raise self._fail("trailer section too large")
            if line == b"\r\n":
                return
            try:
                parse_header_line(line)
            except FramingError as exc:
                raise self._fail(f"bad trailer: {exc}") from None

    def _end_chunk(self) -> None:
        if self._rfile.read(2) != b"\r\n":
            raise self._fail("chunk data not followed by CRLF")

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` body bytes (all that is left when negative); b"" at the end."""
        if self._failed is not None:
            raise self._failed
        want = -1 if size is None else size
        out = bytearray()
        while not self.done and (want < 0 or len(out) < want):
            if self._left == 0:
                self._next_chunk()
                continue
            n = self._left if want < 0 else min(self._left, want - len(out))
            data = self._rfile.read(n)
            if len(data) < n:
                raise self._fail("body ended inside a chunk")
            out += data
            self._left -= n
            self.bytes_read += n
            if self._left == 0:
                self._end_chunk()
            if want >= 0 and out:
                break           # one chunk's worth at a time keeps reads streaming
        return bytes(out)

    def readline(self, size: int | None = -1) -> bytes:
        out = bytearray()
        limit = -1 if size is None else size
        while limit < 0 or len(out) < limit:
            c = self.read(1)
            if not c:
                break
            out += c
            if c == b"\n":
                break
        return bytes(out)

    def close(self) -> None:
        """Nothing to release: the connection owns the socket."""
