"""SMB2 wire format: the 64-byte header and the fixed parts of every request we parse.

Lean on purpose: `struct` on memoryviews, no generic structure classes (impacket's
`Structure` marshalling is where its server spends its time).  Every parser checks lengths
and offsets against the buffer and raises :class:`WireError` (answered with
STATUS_INVALID_PARAMETER) instead of reading past the end: these are the functions the
property tests throw random bytes at.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct("<4sHHIHHIIQIIQ16s")   # 64 bytes
assert HEADER.size == 64
MAGIC = b"\xfeSMB"
TRANSFORM_MAGIC = b"\xfdSMB"

NEGOTIATE, SESSION_SETUP, LOGOFF, TREE_CONNECT, TREE_DISCONNECT, CREATE, CLOSE, FLUSH, READ, WRITE, \
    LOCK, IOCTL, CANCEL, ECHO, QUERY_DIRECTORY, CHANGE_NOTIFY, QUERY_INFO, SET_INFO, OPLOCK_BREAK = range(19)

FLAG_RESPONSE = 0x1
FLAG_ASYNC = 0x2
FLAG_RELATED = 0x4
FLAG_SIGNED = 0x8


class WireError(ValueError):
    """A request that does not parse: the answer is STATUS_INVALID_PARAMETER."""


@dataclass
class Header:
    credit_charge: int
    status: int
    command: int
    credits: int
    flags: int
    next_command: int
    message_id: int
    process_id: int
    tree_id: int
    session_id: int
    signature: bytes

    @property
    def async_id(self) -> int:
        return self.process_id | (self.tree_id << 32)


def parse_header(buf: bytes | memoryview) -> Header:
    if len(buf) < 64:
        raise WireError("short SMB2 header")
    (magic, size, charge, status, cmd, credits, flags, nxt, mid, pid, tid, sid, sig) = HEADER.unpack_from(buf, 0)
    if magic != MAGIC or size != 64:
        raise WireError("not an SMB2 header")
    if nxt and (nxt < 64 or nxt % 8 or nxt > len(buf)):
        raise WireError("bad NextCommand")
    return Header(charge, status, cmd, credits, flags, nxt, mid, pid, tid, sid, sig)


def build_header(req: Header, status: int, credits: int, session_id: int, tree_id: int,
                 flags: int = FLAG_RESPONSE) -> bytearray:
    return bytearray(HEADER.pack(MAGIC, 64, req.credit_charge, status, req.command, credits,
                                 flags | (req.flags & FLAG_ASYNC), 0, req.message_id,
                                 req.process_id, tree_id, session_id, bytes(16)))


def split_compound(buf: bytes | memoryview) -> list[memoryview]:
    """The messages of a (possibly compound) request, each as its own view."""
    mv = memoryview(buf)
    out = []
    while True:
        h = parse_header(mv)
        if h.next_command:
            out.append(mv[:h.next_command])
            mv = mv[h.next_command:]
        else:
            out.append(mv)
            return out


def body(msg: memoryview, fmt: struct.Struct, size: int) -> tuple:
    """Unpack the fixed body after the header; the StructureSize must be the documented one."""
    if len(msg) < 64 + fmt.size:
        raise WireError("short body")
    vals = fmt.unpack_from(msg, 64)
    if vals[0] != size:
        raise WireError(f"StructureSize {vals[0]} != {size}")
    return vals


def field(msg: memoryview, offset: int, length: int) -> memoryview:
    """A variable field named by an offset from the header start; bounds-checked."""
    if length == 0:
        return msg[0:0]
    if offset < 64 or offset + length > len(msg):
        raise WireError("field outside the message")
    return msg[offset:offset + length]


def utf16(b: bytes | memoryview) -> str:
    if len(b) % 2:
        raise WireError("odd UTF-16 length")
    try:
        return bytes(b).decode("utf-16-le")
    except UnicodeDecodeError:
        raise WireError("bad UTF-16") from None


# -- NEGOTIATE ---------------------------------------------------------------------------
NEG_REQ = struct.Struct("<HHHHI16sIHH")        # 36


@dataclass
class NegotiateRequest:
    security_mode: int
    capabilities: int
    client_guid: bytes
    dialects: list[int]
    contexts: list[tuple[int, bytes]]


def parse_negotiate(msg: memoryview) -> NegotiateRequest:
    size, count, secmode, _, caps, guid, ctx_off, ctx_count, _ = body(msg, NEG_REQ, 36)
    if count == 0 or 100 + 2 * count > len(msg):
        raise WireError("bad dialect count")
    dialects = list(struct.unpack_from(f"<{count}H", msg, 100))
    contexts: list[tuple[int, bytes]] = []
    if 0x0311 in dialects and ctx_count:
        off = ctx_off
        for i in range(ctx_count):
            if off + 8 > len(msg) or off < 64:
                raise WireError("negotiate context outside the message")
            ctype, dlen = struct.unpack_from("<HH", msg, off)
            data = field(msg, off + 8, dlen) if dlen else msg[0:0]
            if dlen and off + 8 + dlen > len(msg):
                raise WireError("negotiate context too long")
            contexts.append((ctype, bytes(data)))
            off += 8 + dlen
            off += -off % 8
    return NegotiateRequest(secmode, caps, bytes(guid), dialects, contexts)


def parse_id_list(data: bytes, head: str = "<H") -> list[int]:
    """A context body that is a 2-byte count then 2-byte ids (signing / encryption capabilities)."""
    if len(data) < 2:
        raise WireError("short context")
    n = struct.unpack_from("<H", data)[0]
    if 2 + 2 * n > len(data):
        raise WireError("context count past its data")
    return list(struct.unpack_from(f"<{n}H", data, 2))


def parse_preauth_context(data: bytes) -> tuple[list[int], bytes]:
    if len(data) < 4:
        raise WireError("short preauth context")
    n, salt_len = struct.unpack_from("<HH", data)
    if 4 + 2 * n + salt_len > len(data):
        raise WireError("preauth context past its data")
    return list(struct.unpack_from(f"<{n}H", data, 4)), data[4 + 2 * n: 4 + 2 * n + salt_len]


def negotiate_context(ctype: int, data: bytes) -> bytes:
    return struct.pack("<HHI", ctype, len(data), 0) + data


# -- SESSION_SETUP / TREE_CONNECT ------------------------------------------------------------
SESS_REQ = struct.Struct("<HBBIIHHQ")     # 24


def parse_session_setup(msg: memoryview) -> tuple[int, int, bytes, int]:
    """(flags, security_mode, security blob, previous session id)."""
    size, flags, secmode, caps, channel, off, length, prev = body(msg, SESS_REQ, 25)
    return flags, secmode, bytes(field(msg, off, length)), prev


TREE_REQ = struct.Struct("<HHHH")


def parse_tree_connect(msg: memoryview) -> str:
    size, flags, off, length = body(msg, TREE_REQ, 9)
    return utf16(field(msg, off, length))


# -- CREATE ----------------------------------------------------------------------------------
CREATE_REQ = struct.Struct("<HBBIQQIIIIIHHII")    # 56


@dataclass
class CreateRequest:
    oplock: int
    desired_access: int
    attributes: int
    share_access: int
    disposition: int
    options: int
    name: str
    contexts: dict[bytes, bytes]


def parse_create(msg: memoryview) -> CreateRequest:
    (size, _sec, oplock, _imp, _flags, _res, access, attrs, share, disp, opts,
     noff, nlen, coff, clen) = body(msg, CREATE_REQ, 57)
    name = utf16(field(msg, noff, nlen)) if nlen else ""
    return CreateRequest(oplock, access, attrs, share, disp, opts, name,
                         parse_create_contexts(field(msg, coff, clen)) if clen else {})


def parse_create_contexts(buf: memoryview) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    off = 0
    while True:
        if off + 16 > len(buf):
            raise WireError("short create context")
        nxt, noff, nlen, _, doff, dlen = struct.unpack_from("<IHHHHI", buf, off)
        if off + noff + nlen > len(buf) or (dlen and off + doff + dlen > len(buf)):
            raise WireError("create context outside its buffer")
        out[bytes(buf[off + noff: off + noff + nlen])] = bytes(buf[off + doff: off + doff + dlen]) if dlen else b""
        if not nxt:
            return out
        if nxt < 16 or nxt % 8:
            raise WireError("bad create context chain")
        off += nxt


def create_contexts(items: list[tuple[bytes, bytes]]) -> bytes:
    """Encode response create contexts (name at 16, data 8-aligned after it)."""
    out = bytearray()
    for i, (name, data) in enumerate(items):
        doff = 16 + len(name)
        doff += -doff % 8
        entry = bytearray(struct.pack("<IHHHHI", 0, 16, len(name), 0, doff if data else 0, len(data)))
        entry += name + bytes(doff - 16 - len(name)) + data
        if i + 1 < len(items):
            entry += bytes(-len(entry) % 8)
            struct.pack_into("<I", entry, 0, len(entry))
        out += entry
    return bytes(out)


# -- handle-based requests -----------------------------------------------------------------
CLOSE_REQ = struct.Struct("<HHI16s")
FLUSH_REQ = struct.Struct("<HHI16s")
READ_REQ = struct.Struct("<HBBIQ16sIIIHH")        # 48 (+1 buffer byte)
WRITE_REQ = struct.Struct("<HHIQ16sIIHHI")        # 48
LOCK_REQ = struct.Struct("<HHI16s")
LOCK_ELEM = struct.Struct("<QQII")
IOCTL_REQ = struct.Struct("<HHI16sIIIIIIII")      # 56
QDIR_REQ = struct.Struct("<HBBI16sHHI")           # 32
QINFO_REQ = struct.Struct("<HBBIHHIII16s")        # 40
SINFO_REQ = struct.Struct("<HBBIHHI16s")          # 32


def parse_close(msg: memoryview) -> tuple[int, bytes]:
    size, flags, _, fid = body(msg, CLOSE_REQ, 24)
    return flags, fid


def parse_flush(msg: memoryview) -> bytes:
    return body(msg, FLUSH_REQ, 24)[3]


def parse_read(msg: memoryview) -> tuple[int, int, bytes, int]:
    """(length, offset, file id, minimum count)."""
    size, _pad, _flags, length, offset, fid, minimum, _ch, _rem, _co, _cl = body(msg, READ_REQ, 49)
    return length, offset, fid, minimum


def parse_write(msg: memoryview) -> tuple[memoryview, int, bytes]:
    """(data view, offset, file id): the data is not copied."""
    size, doff, length, offset, fid, _ch, _rem, _co, _cl, _flags = body(msg, WRITE_REQ, 49)
    return field(msg, doff, length), offset, fid


def parse_lock(msg: memoryview) -> tuple[bytes, list[tuple[int, int, int]]]:
    size, count, _seq, fid = body(msg, LOCK_REQ, 48)
    if count == 0 or len(msg) < 88 + 24 * count:
        raise WireError("bad lock count")
    locks = [LOCK_ELEM.unpack_from(msg, 88 + 24 * i)[:3] for i in range(count)]
    return fid, locks


@dataclass
class IoctlRequest:
    ctl_code: int
    file_id: bytes
    input: bytes
    max_output: int
    flags: int


def parse_ioctl(msg: memoryview) -> IoctlRequest:
    (size, _r, code, fid, ioff, icount, _maxin, _ooff, _ocount, maxout, flags, _r2) = body(msg, IOCTL_REQ, 57)
    return IoctlRequest(code, fid, bytes(field(msg, ioff, icount)), maxout, flags)


def parse_query_directory(msg: memoryview) -> tuple[int, int, bytes, str, int]:
    """(info class, flags, file id, pattern, output buffer length)."""
    size, cls, flags, _index, fid, noff, nlen, outlen = body(msg, QDIR_REQ, 33)
    return cls, flags, fid, utf16(field(msg, noff, nlen)) if nlen else "", outlen


def parse_query_info(msg: memoryview) -> tuple[int, int, int, int, bytes, bytes]:
    """(info type, class, output length, additional info, file id, input buffer)."""
    size, itype, cls, outlen, ioff, _r, ilen, addl, _flags, fid = body(msg, QINFO_REQ, 41)
    return itype, cls, outlen, addl, fid, bytes(field(msg, ioff, ilen)) if ilen else b""


def parse_set_info(msg: memoryview) -> tuple[int, int, bytes, bytes]:
    """(info type, class, file id, buffer)."""
    size, itype, cls, blen, boff, _r, _addl, fid = body(msg, SINFO_REQ, 33)
    return itype, cls, fid, bytes(field(msg, boff, blen))


# -- FILETIME ------------------------------------------------------------------------------
EPOCH_DIFF = 116444736000000000


def filetime(t: float | None) -> int:
    return 0 if t is None else int(t * 10_000_000) + EPOCH_DIFF


def from_filetime(ft: int) -> float:
    return (ft - EPOCH_DIFF) / 10_000_000
