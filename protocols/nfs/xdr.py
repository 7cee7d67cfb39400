"""XDR (RFC 4506) encoding and decoding: the wire format of ONC RPC, MOUNT and NFS.

`xdrlib` left the standard library in Python 3.13, and the protocol only needs a handful
of types, so this is a small, strict implementation: every decode checks that the bytes are
there and that variable-length items respect a caller-given bound, raising XDRError
(answered GARBAGE_ARGS) instead of reading past the record or allocating huge buffers.
"""
from __future__ import annotations

import struct

_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


class XDRError(ValueError):
    """Malformed XDR: truncated, over-long, or not a valid value of the type."""


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


class Packer:
    """Appends XDR items to a bytearray; a large opaque at the end of a message can stay a
    separate piece (`opaque_tail`), sent after `buf` without being copied into it."""

    __slots__ = ("buf", "tail")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.tail: list | None = None

    def u32(self, v: int) -> "Packer":
        self.buf += _U32.pack(v & 0xFFFFFFFF)
        return self

    def i32(self, v: int) -> "Packer":
        self.buf += _I32.pack(v)
        return self

    def u64(self, v: int) -> "Packer":
        self.buf += _U64.pack(v & 0xFFFFFFFFFFFFFFFF)
        return self

    def i64(self, v: int) -> "Packer":
        self.buf += _I64.pack(v)
        return self

    def bool(self, v: bool) -> "Packer":
        return self.u32(1 if v else 0)

    def fixed(self, data: bytes) -> "Packer":
        """Fixed-length opaque (the length is known to both sides)."""
        self.buf += data
        self.buf += b"\0" * _pad(len(data))
        return self

    def opaque(self, data: bytes | bytearray | memoryview) -> "Packer":
        """Variable-length opaque: length, bytes, padding."""
        self.u32(len(data))
        return self.fixed(data)

    def string(self, s: str) -> "Packer":
        return self.opaque(s.encode("utf-8", "surrogateescape"))

    def opaque_tail(self, data, size: int | None = None) -> "Packer":
        """Variable-length opaque as the message's last item: its length goes into `buf`, the
        bytes themselves (and the padding) become the tail, not copied (a READ's data).  `data`
        is one buffer, or a list of buffers of `size` bytes in all (a READ's chunk views).
        Nothing may be packed after it."""
        pieces = data if isinstance(data, list) else [data]
        n = len(data) if size is None else size
        self.u32(n)
        self.tail = pieces + [b"\0" * _pad(n)] if n % 4 else pieces
        return self

    def parts(self) -> list:
        """The message as buffers to send one after the other: `buf`, then the tail."""
        return [self.buf, *self.tail] if self.tail else [self.buf]

    def bytes(self) -> bytes:
        return b"".join(self.parts()) if self.tail else bytes(self.buf)


class Unpacker:
    """Reads XDR items from a buffer without copying more than each item."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        self.pos = pos

    def _take(self, n: int):
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise XDRError(f"truncated: need {n} bytes at offset {self.pos}, have {len(self.data) - self.pos}")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def u32(self) -> int:
        return _U32.unpack(self._take(4))[0]

    def i32(self) -> int:
        return _I32.unpack(self._take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self._take(8))[0]

    def i64(self) -> int:
        return _I64.unpack(self._take(8))[0]

    def bool(self) -> bool:
        v = self.u32()
        if v > 1:
            raise XDRError(f"bad boolean {v}")
        return v == 1

    def enum(self, allowed) -> int:
        v = self.u32()
        if v not in allowed:
            raise XDRError(f"bad enum value {v}")
        return v

    def fixed(self, n: int):
        out = self._take(n)
        self._take(_pad(n))
        return out

    def opaque(self, limit: int):
        """Variable-length opaque of at most `limit` bytes (a memoryview/bytes slice)."""
        n = self.u32()
        if n > limit:
            raise XDRError(f"opaque of {n} bytes exceeds the limit of {limit}")
        return self.fixed(n)

    def string(self, limit: int = 1024) -> str:
        raw = bytes(self.opaque(limit))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise XDRError("string is not UTF-8") from None

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def done(self) -> None:
        """Arguments must use the whole record (trailing bytes mean a garbled call)."""
        if self.pos != len(self.data):
            raise XDRError(f"{len(self.data) - self.pos} unexpected trailing bytes")
