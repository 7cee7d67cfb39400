"""Request bodies: bounded reading and every integrity check S3 clients ask for.

The body a handler reads is the decoded payload (aws-chunked removed).  While it streams, the
declared `x-amz-content-sha256`, `Content-MD5` and `x-amz-checksum-*` values are recomputed;
a mismatch raises S3Error at the end of the body, before the handler commits anything, so a
tampered upload never becomes a version.  The MD5 is always computed: it is the ETag S3
clients expect for a single PUT.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import BinaryIO

from . import sigv4
from .chunked import CHECKSUMS, ChunkedReader, ChunkError, checksum_b64, new_checksum
from .errors import S3Error

BLOCK = 1 << 20


class _Limited:
    """At most `length` bytes of the raw input (readline for the chunk decoder)."""

    def __init__(self, raw: BinaryIO, length: int | None):
        self.raw, self.left = raw, length

    def read(self, n: int = -1) -> bytes:
        if self.left is None:
            return self.raw.read(n if n is not None and n >= 0 else BLOCK)
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.raw.read(n)
        self.left -= len(data)
        if not data and self.left > 0:
            raise S3Error("IncompleteBody", "the request body is shorter than its Content-Length")
        return data

    def readline(self, n: int = -1) -> bytes:
        if self.left is not None:
            if self.left <= 0:
                return b""
            n = self.left if n is None or n < 0 else min(n, self.left)
        line = self.raw.readline(n)
        if self.left is not None:
            self.left -= len(line)
        return line


class Body:
    """The decoded request body with its checks; read() until b"" (then everything passed)."""

    def __init__(self, environ: dict, headers: dict[str, str], auth: "sigv4.Auth | None",
                 object_checksums: bool = True):
        # (object_checksums=False: x-amz-checksum-* headers name the object, not this body, as in
        # CompleteMultipartUpload)
        length = environ.get("CONTENT_LENGTH") or headers.get("content-length")
        chunked_http = "chunked" in (headers.get("transfer-encoding") or "").lower()
        try:
            n = int(length) if length not in (None, "") else None
        except ValueError:
            raise S3Error("InvalidArgument", "bad Content-Length") from None
        if n is None and not chunked_http:
            n = 0
        self.raw = _Limited(environ["wsgi.input"], n)
        payload = auth.payload_hash if auth is not None else sigv4.UNSIGNED
        self.expected_sha256 = None
        self.stream: object = self.raw
        if payload.startswith("STREAMING-"):
            if payload not in (sigv4.STREAMING, sigv4.STREAMING_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER):
                raise S3Error("InvalidArgument", f"unsupported x-amz-content-sha256 {payload}")
            decoded = headers.get("x-amz-decoded-content-length")
            try:
                decoded_n = int(decoded) if decoded is not None else None
            except ValueError:
                raise S3Error("InvalidArgument", "bad x-amz-decoded-content-length") from None
            try:
                self.stream = ChunkedReader(self.raw, auth, signed=payload != sigv4.STREAMING_UNSIGNED_TRAILER,
                                            trailer=headers.get("x-amz-trailer"), decoded_length=decoded_n)
            except ChunkError as e:
                raise S3Error(e.code, str(e)) from None
            self.length = decoded_n
        else:
            if payload != sigv4.UNSIGNED:
                if len(payload) != 64 or any(c not in "0123456789abcdef" for c in payload):
                    raise S3Error("InvalidArgument", "x-amz-content-sha256 must be a hex SHA-256 or a known marker")
                self.expected_sha256 = payload
            self.length = n
        self._sha = hashlib.sha256() if self.expected_sha256 else None
        self.md5 = hashlib.md5()
        self.content_md5 = headers.get("content-md5")
        if self.content_md5 is not None:
            try:
                if len(base64.b64decode(self.content_md5, validate=True)) != 16:
                    raise ValueError
            except (ValueError, binascii.Error):
                raise S3Error("InvalidDigest", "The Content-MD5 you specified was not valid.") from None
        self.sums = {}
        for kind in CHECKSUMS:
            v = headers.get(f"x-amz-checksum-{kind}")
            if v is not None and object_checksums:
                self.sums[kind] = (v, new_checksum(kind))
        self.size = 0
        self.finished = False

    def read(self, n: int = BLOCK) -> bytes:
        if self.finished:
            return b""
        try:
            data = self.stream.read(n)
        except ChunkError as e:
            raise S3Error(e.code, str(e)) from None
        if data:
            self.size += len(data)
            self.md5.update(data)
            if self._sha is not None:
                self._sha.update(data)
            for _, h in self.sums.values():
                h.update(data)
            return data
        self._finish()
        return b""

    def _finish(self) -> None:
        self.finished = True
        if self._sha is not None and not hmac.compare_digest(self._sha.hexdigest(), self.expected_sha256):
            raise S3Error("XAmzContentSHA256Mismatch",
                          "The provided 'x-amz-content-sha256' header does not match what was computed.")
        if self.content_md5 is not None and base64.b64encode(self.md5.digest()).decode() != self.content_md5:
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
        for kind, (want, h) in self.sums.items():
            if want is not None and checksum_b64(h) != want:
                raise S3Error("BadDigest", f"The x-amz-checksum-{kind} you specified did not match the calculated checksum.")

    def read_all(self, limit: int) -> bytes:
        """A small body (XML documents), whole; EntityTooLarge past `limit`."""
        out = bytearray()
        while True:
            data = self.read(BLOCK)
            if not data:
                return bytes(out)
            out += data
            if len(out) > limit:
                raise S3Error("EntityTooLarge", "the request body is too large for this operation")

    def drain(self) -> None:
        """Consume what is left of the body (so the connection can be reused)."""
        try:
            while self.raw.read(BLOCK):
                pass
        except Exception:
            pass

    def want(self, kind: str) -> None:
        """Compute checksum `kind` over the body too (before the first read)."""
        if kind not in self.sums:
            self.sums[kind] = (None, new_checksum(kind))

    def computed(self, kind: str) -> str | None:
        """The base64 checksum `kind` of the whole body (after the last read), verified against
        the client's value when it sent one; None when it was not computed."""
        if kind in self.sums:
            return checksum_b64(self.sums[kind][1])
        trailer = getattr(self.stream, "trailers", {}).get(f"x-amz-checksum-{kind}")
        return trailer

    def sent(self) -> tuple[str, str] | None:
        """(kind, value) of the checksum the client sent and that was verified (header or
        aws-chunked trailer), after the last read."""
        for kind, (want, _) in self.sums.items():
            if want is not None:
                return kind, want
        name = getattr(self.stream, "trailer_name", None)
        if name and name.startswith("x-amz-checksum-") and name in getattr(self.stream, "trailers", {}):
            return name[len("x-amz-checksum-"):], self.stream.trailers[name]
        return None

    def checksum_headers(self) -> list[tuple[str, str]]:
        return [(f"x-amz-checksum-{k}", v) for k, (v, _) in self.sums.items() if v is not None]
