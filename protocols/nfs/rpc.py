"""ONC RPC v2 (RFC 5531): record marking over TCP, call headers, credentials, replies.

A TCP stream carries records; each record is one or more fragments, each prefixed by a
4-byte mark (high bit = last fragment, low 31 bits = length).  A call is
xid, CALL, rpcvers=2, prog, vers, proc, cred, verf, then the procedure's arguments.  The
server answers MSG_ACCEPTED (SUCCESS, PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL,
GARBAGE_ARGS, SYSTEM_ERR) or MSG_DENIED (RPC_MISMATCH, AUTH_ERROR).
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ..sendviews import send_views
from .xdr import Packer, Unpacker, XDRError

CALL, REPLY = 0, 1
MSG_ACCEPTED, MSG_DENIED = 0, 1
SUCCESS, PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR = range(6)
RPC_MISMATCH, AUTH_ERROR = 0, 1
AUTH_BADCRED, AUTH_REJECTEDCRED, AUTH_BADVERF, AUTH_REJECTEDVERF, AUTH_TOOWEAK = 1, 2, 3, 4, 5
AUTH_NONE, AUTH_SYS = 0, 1

MAX_AUTH = 400              # RFC 5531: opaque_auth bodies are at most 400 bytes
MAX_GROUPS = 16


class RecordError(Exception):
    """The byte stream is not valid record marking (or a record is too large): close it."""


@dataclass(frozen=True)
class Cred:
    """The caller's credentials: AUTH_SYS fields, or flavor AUTH_NONE with zeros."""
    flavor: int
    uid: int = 0
    gid: int = 0
    gids: tuple[int, ...] = ()
    machine: str = ""


@dataclass
class Call:
    xid: int
    prog: int
    vers: int
    proc: int
    cred: Cred
    args: Unpacker


class Denied(Exception):
    """The call is refused before dispatch: `reply` is the whole encoded answer."""

    def __init__(self, reply: bytes) -> None:
        super().__init__("rpc call denied")
        self.reply = reply


def parse_cred(flavor: int, body) -> Cred:
    if flavor == AUTH_NONE:
        return Cred(AUTH_NONE)
    if flavor == AUTH_SYS:
        u = Unpacker(bytes(body))
        u.u32()                                    # stamp
        machine = u.string(255)
        uid, gid = u.u32(), u.u32()
        n = u.u32()
        if n > MAX_GROUPS:
            raise XDRError(f"{n} groups in AUTH_SYS (at most {MAX_GROUPS})")
        gids = tuple(u.u32() for _ in range(n))
        return Cred(AUTH_SYS, uid, gid, gids, machine)
    return Cred(flavor)


def parse_call(record: bytes | memoryview) -> Call:
    """Decode a call header.  Raises Denied (with the reply to send) for a wrong RPC version
    or bad credentials, XDRError when even the xid cannot be read (nothing to answer)."""
    u = Unpacker(record)
    xid = u.u32()
    if u.u32() != CALL:
        raise XDRError("not a call")
    try:
        rpcvers = u.u32()
        if rpcvers != 2:
            raise Denied(Packer().u32(xid).u32(REPLY).u32(MSG_DENIED).u32(RPC_MISMATCH).u32(2).u32(2).bytes())
        prog, vers, proc = u.u32(), u.u32(), u.u32()
        flavor = u.u32()
        body = u.opaque(MAX_AUTH)
        u.u32()
        u.opaque(MAX_AUTH)                         # verifier: AUTH_NONE expected, ignored
        cred = parse_cred(flavor, body)
    except XDRError:
        raise Denied(Packer().u32(xid).u32(REPLY).u32(MSG_DENIED).u32(AUTH_ERROR).u32(AUTH_BADCRED).bytes()) \
            from None
    if cred.flavor not in (AUTH_NONE, AUTH_SYS):
        raise Denied(Packer().u32(xid).u32(REPLY).u32(MSG_DENIED).u32(AUTH_ERROR).u32(AUTH_REJECTEDCRED).bytes())
    return Call(xid, prog, vers, proc, cred, u)


def accepted(xid: int, stat: int = SUCCESS, body: bytes | bytearray = b"", low: int = 0, high: int = 0) -> bytes:
    """An accepted reply (AUTH_NONE verifier); PROG_MISMATCH carries the supported versions."""
    p = Packer().u32(xid).u32(REPLY).u32(MSG_ACCEPTED).u32(AUTH_NONE).u32(0).u32(stat)
    if stat == PROG_MISMATCH:
        p.u32(low).u32(high)
    p.buf += body
    return p.bytes()


def reply_header(xid: int) -> Packer:
    """A Packer already holding an accepted SUCCESS header; procedures append their results."""
    return Packer().u32(xid).u32(REPLY).u32(MSG_ACCEPTED).u32(AUTH_NONE).u32(0).u32(SUCCESS)


# -- record marking ----------------------------------------------------------------------------
def _recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            return None
        got += k
    return buf


def read_record(sock: socket.socket, limit: int, alloc=None) -> bytearray | memoryview | None:
    """One whole record; None at a clean end of stream.  RecordError when a record would
    exceed `limit` bytes or the stream ends inside one.  With `alloc` (length -> a bytearray
    at least that long, e.g. a reused buffer), a record of one fragment (what clients send) is
    received straight into that buffer and returned as a memoryview of its first bytes."""
    out = bytearray()
    while True:
        mark = _recv_exact(sock, 4)
        if mark is None:
            if out:
                raise RecordError("connection closed inside a record")
            return None
        (word,) = struct.unpack(">I", mark)
        last, length = word & 0x80000000, word & 0x7FFFFFFF
        if len(out) + length > limit:
            raise RecordError(f"record larger than {limit} bytes")
        if length and last and alloc is not None and not out:
            view = memoryview(alloc(length))[:length]
            got = 0
            while got < length:
                k = sock.recv_into(view[got:], length - got)
                if k == 0:
                    raise RecordError("connection closed inside a fragment")
                got += k
            return view
        if length:
            frag = _recv_exact(sock, length)
            if frag is None:
                raise RecordError("connection closed inside a fragment")
            if not out and last:
                return frag
            out += frag
        if last:
            return out


def frame(reply: bytes | bytearray) -> bytes:
    """The reply as one last fragment."""
    return struct.pack(">I", 0x80000000 | len(reply)) + bytes(reply)


_MARK = struct.Struct(">I")
#: replies up to this size are joined with their mark and sent with one sendall; larger ones
#: (READ data) go out with sendmsg from their pieces, never copied into one buffer
JOIN_MAX = 64 * 1024


def send_record(sock: socket.socket, reply) -> None:
    """Send one reply as one last fragment.  `reply` is a buffer or a list of buffers (a
    Packer's parts: the header, then a READ's data as it came from the reader)."""
    parts = [reply] if isinstance(reply, (bytes, bytearray, memoryview)) else reply
    size = sum(len(x) for x in parts)
    mark = _MARK.pack(0x80000000 | size)
    if size <= JOIN_MAX:
        sock.sendall(mark + b"".join(parts))
        return
    send_views(sock, [memoryview(mark)] + [memoryview(x).cast("B") for x in parts if len(x)])
