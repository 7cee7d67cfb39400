"""`aws-chunked` bodies: streaming uploads cut into signed (or unsigned) chunks, with trailers.

    <hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n ... 0[;chunk-signature=<sig>]\\r\\n
    [<trailer name>:<value>\\r\\n ... [x-amz-trailer-signature:<sig>\\r\\n]] \\r\\n

Each chunk signature chains from the previous one (the first from the request's seed
signature); the trailer signature covers the trailer lines.  Trailing checksums
(x-amz-checksum-crc32 / crc32c / sha1 / sha256) are verified against the decoded bytes.
The decoder is a file-like object: it never holds more than one chunk in memory, and every
failure raises a ChunkError carrying the S3 error code, before the last byte is handed out,
so the upload is aborted and nothing is committed.
"""
from __future__ import annotations

import base64
import hashlib
import zlib
from typing import BinaryIO

from . import sigv4

MAX_LINE = 4096
MAX_CHUNK = 64 << 20


class ChunkError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# -- checksums -------------------------------------------------------------------------------
#: Reflected polynomial and width of each CRC S3 offers (checksums.py combines part CRCs with them).
CRC_POLY = {"crc32": (0xEDB88320, 32), "crc32c": (0x82F63B78, 32), "crc64nvme": (0x9A6C9329AC4BC9B5, 64)}
_TABLES: dict[str, list[int]] = {}


def _reflected_table(poly: int) -> list[int]:
    """Byte-at-a-time table of a reflected CRC."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


class _CRC:
    """CRC32 (zlib), CRC32C (google_crc32c when installed) or a table-driven pure-Python reflected
    CRC (~0.3 s per MiB: computed only when a client asks for that algorithm)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.value = 0
        poly, self.width = CRC_POLY[kind]
        self.mask = (1 << self.width) - 1
        self.fast = None
        if kind == "crc32":
            self.fast = zlib.crc32
        elif kind == "crc32c":
            try:
                import google_crc32c  # type: ignore
                self.fast = lambda data, value: google_crc32c.extend(value, bytes(data))
            except ImportError:
                pass
        if self.fast is None and kind not in _TABLES:
            _TABLES[kind] = _reflected_table(poly)

    def update(self, data: bytes) -> None:
        if self.fast is not None:
            self.value = self.fast(data, self.value)
            return
        c = self.value ^ self.mask
        t = _TABLES[self.kind]
        for b in data:
            c = t[(c ^ b) & 0xFF] ^ (c >> 8)
        self.value = c ^ self.mask

    def digest(self) -> bytes:
        return self.value.to_bytes(self.width // 8, "big")


CHECKSUMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")


def new_checksum(kind: str):
    """A hasher for x-amz-checksum-<kind> (digest() gives the raw bytes S3 base64-encodes)."""
    if kind in CRC_POLY:
        return _CRC(kind)
    if kind in ("sha1", "sha256"):
        return hashlib.new(kind)
    raise ChunkError("InvalidRequest", f"unsupported checksum algorithm {kind!r}")


def checksum_b64(h) -> str:
    return base64.b64encode(h.digest()).decode()


# -- the decoder -----------------------------------------------------------------------------
class ChunkedReader:
    """Decode an aws-chunked body from `raw` (the HTTP body, already de-framed by the server)."""

    def __init__(self, raw: BinaryIO, auth: "sigv4.Auth | None", signed: bool, trailer: str | None = None,
                 decoded_length: int | None = None):
        self.raw = raw
        self.auth = auth
        self.signed = signed
        self.trailer_name = trailer.strip().lower() if trailer else None
        self.decoded_length = decoded_length
        self.previous = auth.signature if auth else ""
        self.left = 0                 # bytes left in the current chunk
        self.done = False
        self.total = 0
        self.trailers: dict[str, str] = {}
        self._sig: str | None = None
        self._hash = None
        self._sum = None
        if self.trailer_name:
            if not self.trailer_name.startswith("x-amz-checksum-"):
                raise ChunkError("InvalidRequest", f"unsupported trailer {trailer!r}")
            self._sum = new_checksum(self.trailer_name[len("x-amz-checksum-"):])

    def _line(self) -> bytes:
        line = self.raw.readline(MAX_LINE)
        if not line.endswith(b"\n"):
            raise ChunkError("IncompleteBody", "the aws-chunked body ended early or has an over-long line")
        return line.rstrip(b"\r\n")

    def _header(self) -> None:
        line = self._line()
        size_text, _, ext = line.partition(b";")
        try:
            size = int(size_text.strip(), 16)
        except ValueError:
            raise ChunkError("InvalidRequest", "bad aws-chunked chunk header") from None
        if size < 0 or size > MAX_CHUNK:
            raise ChunkError("InvalidRequest", "aws-chunked chunk too large")
        sig = None
        if ext.startswith(b"chunk-signature="):
            sig = ext[len(b"chunk-signature="):].decode("ascii", "replace")
        if self.signed and sig is None:
            raise ChunkError("SignatureDoesNotMatch", "chunk signature missing")
        self._sig = sig
        self._hash = hashlib.sha256() if self.signed else None
        self.left = size
        if size == 0:
            self._finish_chunk()
            self._read_trailers()
            self.done = True

    def _finish_chunk(self) -> None:
        if self.signed:
            text = sigv4.chunk_string_to_sign(self.auth, self.previous, self._hash.hexdigest())
            want = sigv4.sign(self.auth.signing_key, text)
            if not sigv4.same(want, self._sig or ""):
                raise ChunkError("SignatureDoesNotMatch", "chunk signature does not match")
            self.previous = want

    def _read_trailers(self) -> None:
        lines = []
        while True:
            line = self._line()
            if not line:
                break
            lines.append(line)
            if len(lines) > 16:
                raise ChunkError("InvalidRequest", "too many trailer lines")
        sig = None
        signed_text = b""
        for line in lines:
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "x-amz-trailer-signature":
                sig = value.strip()
            else:
                self.trailers[name] = value.strip()
                signed_text += f"{name}:{value.strip()}\n".encode("latin-1")
        if self.signed and self.trailer_name:
            text = sigv4.trailer_string_to_sign(self.auth, self.previous, hashlib.sha256(signed_text).hexdigest())
            if not sigv4.same(sigv4.sign(self.auth.signing_key, text), sig or ""):
                raise ChunkError("SignatureDoesNotMatch", "trailer signature does not match")
        if self.trailer_name:
            got = self.trailers.get(self.trailer_name)
            if got is None:
                raise ChunkError("InvalidRequest", f"the declared trailer {self.trailer_name} is missing")
            if got != checksum_b64(self._sum):
                raise ChunkError("BadDigest", f"the {self.trailer_name} you specified did not match the calculated checksum")
        if self.decoded_length is not None and self.total != self.decoded_length:
            raise ChunkError("IncompleteBody", "x-amz-decoded-content-length does not match the body")

    def read(self, n: int = -1) -> bytes:
        """Up to n decoded bytes (b"" at the end, after every check passed)."""
        while not self.done and self.left == 0:
            self._header()
        if self.done:
            return b""
        want = self.left if n is None or n < 0 else min(n, self.left)
        data = self.raw.read(want)
        if not data:
            raise ChunkError("IncompleteBody", "the aws-chunked body ended inside a chunk")
        self.left -= len(data)
        self.total += len(data)
        if self._hash is not None:
            self._hash.update(data)
        if self._sum is not None:
            self._sum.update(data)
        if self.left == 0:
            if self._line() != b"":
                raise ChunkError("InvalidRequest", "chunk data is longer than its declared size")
            self._finish_chunk()
        return data
