"""XDR, RPC record/call parsing and file handles: examples and properties (hypothesis)."""
from __future__ import annotations

import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.nfs import handles as H
from protocols.nfs import rpc
from protocols.nfs.exports import parse_exports
from protocols.nfs.xdr import Packer, Unpacker, XDRError

u32s = st.integers(0, 2 ** 32 - 1)
u64s = st.integers(0, 2 ** 64 - 1)


@given(u32s, u64s, st.integers(-2 ** 31, 2 ** 31 - 1), st.binary(max_size=300), st.text(max_size=60), st.booleans())
def test_xdr_round_trip(a, b, c, blob, text, flag):
    p = Packer().u32(a).u64(b).i32(c).opaque(blob).string(text).bool(flag)
    assert len(p.buf) % 4 == 0
    u = Unpacker(p.bytes())
    assert (u.u32(), u.u64(), u.i32(), bytes(u.opaque(300)), u.string(300), u.bool()) == (a, b, c, blob, text, flag)
    u.done()


@given(st.binary(max_size=64))
def test_xdr_decoding_garbage_raises_only_xdr_errors(raw):
    u = Unpacker(raw)
    try:
        u.u32()
        u.opaque(16)
        u.string(8)
        u.u64()
        u.bool()
    except XDRError:
        pass


def test_xdr_limits_and_truncation():
    with pytest.raises(XDRError):
        Unpacker(struct.pack(">I", 1 << 30) + b"x").opaque(1024)        # huge length: refused, not allocated
    with pytest.raises(XDRError):
        Unpacker(struct.pack(">I", 8) + b"abc").opaque(1024)            # truncated
    with pytest.raises(XDRError):
        Unpacker(struct.pack(">I", 2)).bool()
    with pytest.raises(XDRError):
        Unpacker(Packer().opaque(b"\xff\xfe").bytes()).string()
    with pytest.raises(XDRError):
        Unpacker(b"\0" * 8).done()


def _call(xid, prog, vers, proc, cred: bytes, args: bytes = b"") -> bytes:
    return struct.pack(">IIIIII", xid, 0, 2, prog, vers, proc) + cred + struct.pack(">II", 0, 0) + args


def _auth_sys(uid, gid, gids, machine="host") -> bytes:
    body = Packer().u32(0).string(machine).u32(uid).u32(gid).u32(len(gids))
    for g in gids:
        body.u32(g)
    return Packer().u32(1).opaque(body.bytes()).bytes()


@given(u32s, u32s, u32s, u32s, u32s, u32s, st.lists(u32s, max_size=16), st.binary(max_size=40))
def test_call_headers_round_trip(xid, prog, vers, proc, uid, gid, gids, args):
    call = rpc.parse_call(_call(xid, prog, vers, proc, _auth_sys(uid, gid, gids), args))
    assert (call.xid, call.prog, call.vers, call.proc) == (xid, prog, vers, proc)
    assert (call.cred.uid, call.cred.gid, call.cred.gids) == (uid, gid, tuple(gids))
    assert bytes(call.args.data[call.args.pos:]) == args


@given(st.binary(max_size=120))
def test_call_parsing_of_garbage_raises_only_protocol_errors(raw):
    try:
        rpc.parse_call(raw)
    except (XDRError, rpc.Denied):
        pass


def test_bad_credentials_and_rpc_version_are_denied():
    with pytest.raises(rpc.Denied) as d:
        rpc.parse_call(struct.pack(">IIIIII", 5, 0, 3, 100003, 3, 0))
    assert struct.unpack(">IIII", d.value.reply[:16]) == (5, 1, 1, 0)           # MSG_DENIED RPC_MISMATCH
    too_many = _auth_sys(0, 0, list(range(17)))
    with pytest.raises(rpc.Denied) as d:
        rpc.parse_call(_call(6, 100003, 3, 0, too_many))
    assert struct.unpack(">IIIII", d.value.reply[:20]) == (6, 1, 1, 1, 1)       # AUTH_ERROR AUTH_BADCRED
    with pytest.raises(rpc.Denied):
        rpc.parse_call(_call(7, 100003, 3, 0, Packer().u32(6).opaque(b"krb").bytes()))   # RPCSEC_GSS: refused


@settings(deadline=None, max_examples=50)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=6))
def test_record_marking_reassembles_fragments(frags):
    a, b = socket.socketpair()
    try:
        wire = b"".join(struct.pack(">I", (0x80000000 if i == len(frags) - 1 else 0) | len(f)) + f
                        for i, f in enumerate(frags))
        t = threading.Thread(target=a.sendall, args=(wire,))
        t.start()
        assert bytes(rpc.read_record(b, 1 << 20)) == b"".join(frags)
        t.join()
    finally:
        a.close()
        b.close()


def test_record_limits_and_truncation():
    a, b = socket.socketpair()
    a.sendall(struct.pack(">I", 0x80000000 | 5000))
    with pytest.raises(rpc.RecordError):
        rpc.read_record(b, 4096)
    a.close()
    b.close()
    a, b = socket.socketpair()
    a.sendall(struct.pack(">I", 0x80000000 | 50) + b"x" * 10)
    a.close()
    with pytest.raises(rpc.RecordError):
        rpc.read_record(b, 4096)
    b.close()
    a, b = socket.socketpair()
    a.close()
    assert rpc.read_record(b, 4096) is None
    b.close()


sealer = H.Sealer(b"k" * 32)


@given(st.sampled_from([H.NODE, H.SNAPSHOTS]), u32s, u64s, u64s, u64s)
def test_handles_round_trip(kind, share, node, at, gen):
    h = H.Handle(kind, share, node, at, gen)
    raw = sealer.encode(h)
    assert len(raw) <= 64 and sealer.decode(raw) == h


@given(u64s, st.integers(0, H.SIZE - 1), st.integers(1, 255))
def test_any_altered_handle_is_refused(node, pos, flip):
    raw = bytearray(sealer.encode(H.Handle(H.NODE, 1, node, 0, 7)))
    raw[pos] ^= flip
    with pytest.raises(H.BadHandle):
        sealer.decode(bytes(raw))


def test_handles_of_another_key_and_length_are_refused():
    raw = H.Sealer(b"other-key" * 4).encode(H.Handle(H.NODE, 1, 2, 0, 3))
    with pytest.raises(H.BadHandle):
        sealer.decode(raw)
    with pytest.raises(H.BadHandle):
        sealer.decode(raw[:-1])


def test_export_configuration_is_checked():
    ex = parse_exports([{"share": "office", "clients": ["10.0.0.0/8"], "user": "alice"}], "admin")
    assert ex[0].allows("10.1.2.3") and not ex[0].allows("11.0.0.1") and not ex[0].allows("junk")
    assert ex[0].allows("::ffff:10.0.0.1")
    assert parse_exports([], "admin") is None
    assert parse_exports([{"share": "s"}], "admin")[0].user == "admin"
    for bad in ([{"share": "s", "clients": ["not-a-net"]}], [{"share": "s", "usr": "x"}], [{"clients": []}], "x"):
        with pytest.raises(ValueError):
            parse_exports(bad, "admin")
