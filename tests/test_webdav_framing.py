"""protocols/webdav/framing.py: example and property-based tests of the request-framing parser."""
from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.webdav.framing import (
    MAX_CHUNK_LINE,
    ChunkedReader,
    Framing,
    FramingError,
    parse_chunk_size,
    parse_content_length,
    parse_header_line,
    request_framing,
)


def encode_chunked(pieces: list[bytes], ext: bytes = b"") -> bytes:
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in pieces if p)
    return out + b"0\r\n\r\n"


def decode(body: bytes, block: int = 7) -> bytes:
    r = ChunkedReader(io.BufferedReader(io.BytesIO(body)))
    out = bytearray()
    while part := r.read(block):
        out += part
    assert r.done
    return bytes(out)


# -- examples ------------------------------------------------------------------------------

def test_examples_of_refused_framing():
    with pytest.raises(FramingError):
        request_framing([(b"Content-Length", b"3"), (b"Content-Length", b"5")])
    with pytest.raises(FramingError):
        request_framing([(b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")])
    with pytest.raises(FramingError):
        request_framing([(b"Content-Length", b"-1")])
    with pytest.raises(FramingError):
        request_framing([(b"Content-Length", b"1e3")])
    with pytest.raises(FramingError):
        request_framing([(b"Transfer-Encoding", b"gzip, chunked")])
    with pytest.raises(FramingError):
        request_framing([(b"Transfer-Encoding", b"chunked, chunked")])
    with pytest.raises(FramingError):
        parse_header_line(b"Content-Length : 3\r\n")      # whitespace before the colon
    with pytest.raises(FramingError):
        parse_header_line(b" folded\r\n")
    for bad in (b"-3\r\n", b"zz\r\n", b"\r\n", b"1" * 17 + b"\r\n", b"+3\r\n", b"0x3\r\n",
                b"3", b"3;" + b"x" * MAX_CHUNK_LINE + b"\r\n", b"3;\x00\r\n"):
        with pytest.raises(FramingError):
            parse_chunk_size(bad)


def test_examples_of_accepted_framing():
    assert request_framing([]) == Framing(False, 0)
    assert request_framing([(b"Content-Length", b"42")]) == Framing(False, 42)
    assert request_framing([(b"content-length", b"7"), (b"Content-Length", b"7, 7")]) == Framing(False, 7)
    assert request_framing([(b"Transfer-Encoding", b"Chunked")]) == Framing(True, 0)
    assert parse_header_line(b"X-A:  v  \r\n") == (b"X-A", b"v")
    assert parse_chunk_size(b"1A;name=value\r\n") == 26
    assert parse_chunk_size(b"ffffffffffffffff\r\n") == 2 ** 64 - 1
    assert decode(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: 1\r\n\r\n") == b"abcde"


def test_reader_refuses_broken_bodies_and_reports_once():
    seen = []
    for body in (b"3\r\nabcX\r\n0\r\n\r\n",        # no CRLF after the data
                 b"5\r\nabc",                       # body ends inside a chunk
                 b"3\r\nabc\r\n",                   # ends before the last chunk
                 b"-3\r\nabc\r\n0\r\n\r\n",
                 b"0\r\nbad trailer\r\n\r\n"):
        r = ChunkedReader(io.BufferedReader(io.BytesIO(body)), on_error=seen.append)
        with pytest.raises(FramingError):
            while r.read(1024):
                pass
        with pytest.raises(FramingError):           # stays failed
            r.read(1)
    assert len(seen) == 5


def test_reader_enforces_max_body_and_streams_huge_announced_chunks():
    r = ChunkedReader(io.BufferedReader(io.BytesIO(b"10\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n")), max_body=8)
    with pytest.raises(FramingError):
        r.read(4)
    # a chunk announcing 2**64-1 bytes is read as it arrives, never allocated up front
    r = ChunkedReader(io.BufferedReader(io.BytesIO(b"ffffffffffffffff\r\nabc")))
    assert r.read(2) == b"ab"
    with pytest.raises(FramingError):
        while r.read(2):
            pass


# -- properties ------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12), st.integers(min_value=1, max_value=400),
       st.sampled_from([b"", b";a=b", b";x", b' ;q="1"']))
def test_chunked_round_trip(pieces, block, ext):
    assert decode(encode_chunked(pieces, ext), block) == b"".join(pieces)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_never_crashes_on_garbage(body):
    """Any byte string either decodes or raises FramingError: no other exception, and
    never more body bytes than the input holds."""
    r = ChunkedReader(io.BufferedReader(io.BytesIO(body)))
    got = 0
    try:
        while part := r.read(64):
            got += len(part)
    except FramingError:
        pass
    assert got <= len(body)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"Content-Length", b"Transfer-Encoding", b"content-length",
                                           b"X-Other"]),
                          st.one_of(st.sampled_from([b"chunked", b"0", b"3", b"-1", b"3, 3", b"3, 4",
                                                     b"gzip", b"", b" 5 "]),
                                    st.binary(max_size=8))),
                max_size=4))
def test_framing_is_never_ambiguous(fields):
    """Accepted framing is unique: never both chunked and a length, and every accepted
    length is the one value all Content-Length fields give."""
    try:
        f = request_framing(fields)
    except FramingError:
        return
    lengths = [v for n, v in fields if n.lower() == b"content-length"]
    codings = [v for n, v in fields if n.lower() == b"transfer-encoding"]
    if f.chunked:
        assert not lengths and codings
    else:
        assert not codings
        values = {int(x) for v in lengths for x in v.split(b",") if x.strip()}
        assert values <= {f.length} and f.length >= 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_chunk_size_is_hex_or_refused(size):
    try:
        n = parse_chunk_size(size + b"\r\n")
    except FramingError:
        return
    assert n >= 0 and int(size.split(b";")[0].strip(), 16) == n


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_header_line_parser_accepts_only_token_names(line):
    try:
        name, value = parse_header_line(line + b"\r\n")
    except FramingError:
        return
    assert name and b" " not in name and b":" not in name and b"\r" not in value and b"\n" not in value
