"""XDR, RPC record/call parsing and file handles: examples and properties (hypothesis)."""
from __future__ import annotations

import bisect
import os
import socket
import struct
import threading

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocols.nfs import fattr as F
from protocols.nfs import handles as H
from protocols.nfs import listing as L
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
        t = threading.Thread(target=a.sendall, args=(wire + wire,))
        t.start()
        assert bytes(rpc.read_record(b, 1 << 20)) == b"".join(frags)
        reused = bytearray(b"\xee" * 4096)                        # into a (dirty) reused buffer
        assert bytes(rpc.read_record(b, 1 << 20, lambda n: reused)) == b"".join(frags)
        t.join()
    finally:
        a.close()
        b.close()


def test_a_record_buffer_something_still_views_is_never_reused():
    from protocols.nfs import server
    c = server._Connection(None, None, "127.0.0.1")
    assert len(c._alloc(100)) == 100                                  # small records: their own buffer
    buf = c._alloc(server.BIG_RECORD)
    assert len(buf) == server.MAX_RECORD
    view = memoryview(buf)[8:16]                                      # e.g. a WRITE's data kept somewhere
    c.pool.give(buf)
    assert c.pool.free == []
    del view
    c.pool.give(buf)
    assert c.pool.free == [buf] and len(buf) == server.MAX_RECORD
    assert c._alloc(server.BIG_RECORD) is buf and c.pool.free == []


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


@given(st.binary(max_size=300), st.binary(max_size=40))
def test_opaque_tail_encodes_like_opaque(head, data):
    p = Packer().opaque(head).u32(7).opaque_tail(memoryview(data))
    assert p.bytes() == Packer().opaque(head).u32(7).opaque(data).bytes()
    assert b"".join(bytes(x) for x in p.parts()) == p.bytes() and p.parts()[1:2] != [p.buf]


@given(st.binary(max_size=40), st.lists(st.binary(max_size=30), max_size=5))
def test_opaque_tail_of_several_pieces_encodes_like_their_join(head, pieces):
    """A READ's data as the core's chunk views: one opaque, the pieces sent as they are."""
    views = [memoryview(x) for x in pieces]
    data = b"".join(pieces)
    p = Packer().opaque(head).opaque_tail(views, len(data))
    assert p.bytes() == Packer().opaque(head).opaque(data).bytes()
    assert all(a is b for a, b in zip(p.parts()[1:], views))          # not copied


@settings(deadline=None, max_examples=20)
@given(st.lists(st.integers(0, 300_000), min_size=1, max_size=4), st.integers(1, 5000))
def test_send_record_sends_every_piece_whole_through_partial_sends(sizes, step):
    """A large reply goes out with sendmsg in pieces; a slow reader (a small socket buffer and
    a timeout socket: sendmsg sends part of it) must still get the exact record."""
    pieces = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    pieces[0] = bytearray(pieces[0])
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.settimeout(30)
    got = bytearray()
    size = sum(sizes)

    def read() -> None:
        while len(got) < 4 + size:
            chunk = b.recv(step)
            if not chunk:
                return
            got.extend(chunk)
    t = threading.Thread(target=read)
    t.start()
    try:
        rpc.send_record(a, pieces)
        t.join(30)
        assert struct.unpack(">I", got[:4])[0] == 0x80000000 | size
        assert bytes(got[4:]) == b"".join(pieces)
    finally:
        a.close()
        b.close()
        t.join()


sealer = H.Sealer(b"k" * 32)


@given(st.sampled_from([H.NODE, H.SNAPSHOTS]), u32s, u64s, u64s, u64s)
def test_handles_round_trip(kind, share, node, at, gen):
    h = H.Handle(kind, share, node, at, gen)
    raw = sealer.encode(h)
    assert len(raw) <= 64 and sealer.decode(raw) == h


@given(u32s, u64s, u64s, u64s)
def test_kept_node_handles_equal_freshly_sealed_ones(share, node, at, gen):
    small = H.Sealer(b"k" * 32)
    small.SEALED_LIMIT = 2
    for _ in range(2):                       # sealed, then served from the kept ones
        for n, g in ((node, gen), (node, gen ^ 1), (node ^ 1, gen)):   # 3 > limit: dropped
            raw = small.encode_node(share, n, at, g)
            assert raw == sealer.encode(H.Handle(H.NODE, share, n, at, g))
            assert sealer.decode(raw) == H.Handle(H.NODE, share, n, at, g)
    assert len(small._sealed) <= 2


@given(st.sampled_from(["file", "dir"]), st.booleans(), st.booleans(), st.integers(0, 2 ** 40),
       st.floats(0, 4e9, allow_nan=False), u32s, u32s, u64s, u64s)
def test_a_listed_entry_post_op_attr_packs_like_its_attrs(kind, ro_entry, ro_export, size, mtime, uid, gid,
                                                          fsid, node):
    """READDIRPLUS packs an entry's post_op_attr in one struct: the bytes GETATTR's path
    (attrs_of, then fattr3) gives for the same entry."""
    from archive.types import Entry
    e = Entry("n", "/n", kind, size if kind == "file" else 0, mtime, mtime - 1, node, 1, "", ro_entry)
    want = F.post_op_attr_bytes(F.attrs_of(e, fsid, readonly=ro_export), uid, gid)
    assert F.listed_post_op_bytes(e, fsid, ro_export, uid, gid) == want


@given(u32s, u64s, u64s, u64s)
def test_handle_macs_are_the_keyed_blake2b_of_the_body(share, node, at, gen):
    """Handles survive restarts and upgrades: the MAC stays BLAKE2b-128 keyed with the key's
    first 64 bytes, however it is computed (a copied keyed state since nfs11)."""
    import hashlib
    key = bytes(range(80))
    raw = H.Sealer(key).encode(H.Handle(H.NODE, share, node, at, gen))
    body = H._BODY.pack(H.VERSION, H.NODE, share, node, at, gen)
    assert raw == body + hashlib.blake2b(body, key=key[:64], digest_size=16).digest()


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


# -- attribute and listing encodings (fattr.py, listing.py) ----------------------------------------
def _fattr3_reference(a, uid: int, gid: int) -> bytes:
    """fattr3 item by item with the Packer (RFC 1813 2.5), as the adapter encoded it before."""
    def time(p, t):
        sec = int(t)
        p.u32(sec).u32(int((t - sec) * 1e9) % 1_000_000_000)
    p = Packer()
    p.u32(a.kind).u32(a.mode).u32(2 if a.kind == F.NF3DIR else 1).u32(uid).u32(gid)
    p.u64(a.size).u64((a.size + 4095) & ~4095).u32(0).u32(0).u64(a.fsid).u64(a.fileid)
    time(p, a.mtime)
    time(p, a.mtime)
    time(p, a.ctime)
    return p.bytes()


times = st.floats(0, 2 ** 32 - 1, allow_nan=False)


@given(st.sampled_from([F.NF3REG, F.NF3DIR]), st.integers(0, 0o7777), st.integers(0, 2 ** 62), u32s, u64s,
       times, times, u32s, u32s)
def test_fattr3_is_one_struct_equal_to_the_item_by_item_encoding(kind, mode, size, fsid, fileid, mtime, ctime, uid,
                                                                 gid):
    a = F.Attrs(kind, mode, size, fsid, fileid, mtime, ctime)
    assert F.fattr3_bytes(a, uid, gid) == _fattr3_reference(a, uid, gid)
    assert len(F.fattr3_bytes(a, uid, gid)) == 84
    p = Packer()
    F.post_op_attr(p, a, uid, gid)
    assert p.bytes() == F.post_op_attr_bytes(a, uid, gid) == Packer().bool(True).bytes() + _fattr3_reference(a, uid,
                                                                                                             gid)


class _E:
    """What listing.Item needs of an Entry."""
    def __init__(self, name: str, node_id: int) -> None:
        self.name, self.node_id = name, node_id


@given(st.text(min_size=1, max_size=40), u64s, st.binary(min_size=1, max_size=64))
def test_listing_items_encode_entry3_fields(name, node, handle):
    it = L.Item(_E(name, node), handle)
    assert it.head == Packer().bool(True).u64(node).string(name).u64(node).bytes()
    assert it.handle == Packer().bool(True).opaque(handle).bytes()
    assert L.name_xdr(name) == Packer().string(name).bytes()


@settings(deadline=None, max_examples=50)
@example(200, 4, 5, [("b", 1, False), ("a", 40, True), ("a", 70, True), ("b", 31, False), ("b", 5, False)])
@given(st.integers(0, 200), st.integers(1, 9), st.integers(1, 20),
       st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 80), st.booleans()), max_size=40))
def test_listing_windows_give_each_reader_the_whole_folder_once(n, chunk, max_items, schedule):
    """Two readers page through one folder through shared windows, their pages interleaved
    and a page's generator left open while the other reader moves on (refilling and trimming
    the window under it): each gets every name once, in order.  A page's items running out is
    EOF to the client (READDIR answers eof then), so it must happen only at the folder's end."""
    entries = [_E(f"n{i:03d}", 1000 + i) for i in range(n)]
    names = {e.node_id: e.name for e in entries}

    items = [L.Item(e, b"h") for e in entries]
    keys = [e.name for e in entries]

    def fetch(after: str, k: int):
        i = bisect.bisect_right(keys, after)
        return items[i:i + k]
    saved = L.CHUNK, L.MAX_ITEMS
    L.CHUNK, L.MAX_ITEMS = chunk, max_items
    try:
        lists = L.Listings(ttl=3600)
        readers = {r: {"got": [], "cookie": 0, "page": None, "eof": False} for r in "ab"}

        def take(r: str, k: int) -> None:
            """Reader r takes up to k more items of its current page (a new page after its
            cookie if it has none); the page running out is EOF."""
            st_ = readers[r]
            if st_["eof"]:
                return
            if st_["page"] is None:
                cookie = st_["cookie"]
                st_["page"] = (it for batch in lists.pages(("f", 1, 0), 1.0, cookie, lambda: names[cookie], fetch)
                               for it in batch)
            for _ in range(k):
                it = next(st_["page"], None)
                if it is None:
                    st_["page"], st_["eof"] = None, True
                    return
                st_["got"].append(it.entry.name)
                st_["cookie"] = it.entry.node_id

        for r, k, end_page in schedule:
            take(r, k)
            if end_page:                    # the client's reply is full: next page after its cookie
                readers[r]["page"] = None
        for r in "ab":                      # then each pages on to the end, 7 a page
            readers[r]["page"] = None
            for _ in range(n // 7 + 2):
                take(r, 7)
                readers[r]["page"] = None
        for r in "ab":
            assert readers[r]["eof"] and readers[r]["got"] == [e.name for e in entries]
    finally:
        L.CHUNK, L.MAX_ITEMS = saved


def test_the_commit_loop_wakes_when_the_first_session_falls_due():
    """_next_due (what the loop sleeps) matches due(): commit_idle after a durable write,
    EMPTY_IDLE for a created file never written, abandon_timeout with unsynced writes."""
    from protocols.nfs.writes import EMPTY_IDLE, Session, WriteSessions
    ws = WriteSessions(commit_idle=5, abandon_timeout=100)
    try:
        assert ws._next_due(0.0) == float("inf")
        s = Session(("s", 1), None, None)
        s.last, s.owed, s.written = 1000.0, True, True
        ws._sessions[s.key] = s
        assert ws._next_due(1000.0) == 5 and ws.due(1004.9) == [] and ws.due(1005.0) == [s]
        s.written = False                                   # created, never written
        assert ws._next_due(1000.0) == EMPTY_IDLE and ws.due(1000.0 + EMPTY_IDLE) == [s]
        s.written, s.unsynced = True, True                  # never COMMITted: only abandoned
        assert ws._next_due(1000.0) == 100 and ws.due(1099.0) == [] and ws.due(1100.0) == [s]
        t = Session(("s", 2), None, None)
        t.last, t.owed, t.written = 1002.0, True, True
        ws._sessions[t.key] = t
        assert ws._next_due(1000.0) == 7                    # the first of several
    finally:
        ws._sessions.clear()
        ws.close()


def test_reads_of_one_file_wait_their_turn_lowest_offset_first():
    from protocols.nfs.readorder import ReadOrder
    order, ran = ReadOrder(), []

    def read(key, offset):
        with order.turn(key, offset):
            ran.append((key, offset))
    with order.turn("f", 0):                                  # a READ of f is running
        threads = [threading.Thread(target=read, args=("f", off)) for off in (5 << 17, 1 << 17, 3 << 17)]
        for t in threads:
            t.start()
            while len(order._files["f"].waiting) < threads.index(t) + 1:   # queued (not a timing)
                threading.Event().wait(0.001)
        other = threading.Thread(target=read, args=("g", 7))   # another file does not wait
        other.start()
        other.join(10)
        assert ran == [("g", 7)]
    for t in threads:
        t.join(10)
    assert ran[1:] == [("f", 1 << 17), ("f", 3 << 17), ("f", 5 << 17)]
    assert order.files() == 0                                 # nothing left behind


def test_pipelined_reads_of_one_file_all_get_their_bytes(tmp_path):
    from nfs_helpers import NFSServer, RawRPC
    data = os.urandom(3 * 1024 * 1024 + 777)
    s = NFSServer(tmp_path)
    try:
        fs = s.fs()
        with fs.open_write("/r.bin") as w:
            w.write(data)
        r = RawRPC(s.port)
        op = lambda b: struct.pack(">I", len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)   # noqa: E731
        _, rep = r.call(100005, 3, 1, op(b"/office"))
        root = rep[32:32 + struct.unpack(">I", rep[28:32])[0]]
        _, rep = r.call(100003, 3, 3, op(root) + op(b"r.bin"))
        fh = rep[32:32 + struct.unpack(">I", rep[28:32])[0]]
        block = 128 * 1024
        offsets = list(range(0, len(data), block))[::-1] + [len(data) + 5]   # backwards, one past the end
        xids = {r.send_call(100003, 3, 6, op(fh) + struct.pack(">QI", off, block)): off for off in offsets}
        for _ in offsets:
            rep = r.recv_record()
            off = xids.pop(struct.unpack(">I", rep[:4])[0])
            assert struct.unpack(">II", rep[24:32]) == (0, 1)          # NFS3_OK, attributes follow
            count, eof, n = struct.unpack(">III", rep[116:128])     # after status and fattr3
            assert rep[128:128 + n] == data[off:off + block] and n == count
            assert eof == (off + block >= len(data))
        assert xids == {}
        r.close()
    finally:
        s.close()


def test_a_read_passed_over_max_passes_times_goes_next():
    from protocols.nfs import readorder as RO
    far = [10 ** 9, 0, None, 0]                   # another client's READ far into the file
    waiting = [far]
    for i in range(RO.MAX_PASSES):
        waiting.append([i, i + 1, None, 0])       # a client streaming through lower offsets
        assert RO._next_of(waiting)[0] == i
    waiting.append([RO.MAX_PASSES, 99, None, 0])
    assert RO._next_of(waiting) is far            # it does not starve the far one
    assert RO._next_of(waiting)[0] == RO.MAX_PASSES and waiting == []


def test_a_call_borrows_a_buffer_of_its_connection_and_gets_it_back_after_the_reply():
    from protocols.nfs import buffers
    result = {}

    def worker() -> None:
        result["outside"] = buffers.borrow()                  # not a connection's worker: none
        pool = buffers.Pool(1024, keep=1)
        buffers.lend(pool)
        a = buffers.borrow()
        reply = [memoryview(a)[:10]]                          # READ data still to be sent
        buffers.settle()
        result["while viewed"] = list(pool.free)
        b = buffers.borrow()
        del reply                                             # sent and dropped
        buffers.settle()
        result["after"] = pool.free == [b] and b is not a and len(b) == 1024
    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert result == {"outside": None, "while viewed": [], "after": True}


def test_a_read_calls_file_handle_and_offset_are_read_from_its_bytes():
    """server._read_target (which READs queue for the worker reading their file) finds the
    handle and offset after either credential flavour, and gives up on anything cut short."""
    from protocols.nfs.server import _read_target
    op = lambda b: struct.pack(">I", len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)   # noqa: E731
    head = struct.pack(">IIIIII", 7, 0, 2, 100003, 3, 6)
    sys_cred = struct.pack(">I", 1) + op(struct.pack(">I", 0) + op(b"host") + struct.pack(">IIII", 1, 2, 1, 5))
    none_cred = struct.pack(">I", 0) + op(b"")
    fh = bytes(range(37))
    for cred, verf in ((sys_cred, struct.pack(">I", 0) + op(b"")), (none_cred, struct.pack(">I", 0) + op(b"vv"))):
        rec = head + cred + verf + op(fh) + struct.pack(">QI", (1 << 40) + 3, 4096)
        assert _read_target(rec) == (fh, (1 << 40) + 3)
        assert _read_target(memoryview(bytearray(rec))) == (fh, (1 << 40) + 3)
        for cut in (0, 10, 30, len(rec) - 5):
            assert _read_target(rec[:cut]) is None
    rec = head + none_cred + struct.pack(">I", 0) + op(b"") + op(b"x" * 65) + struct.pack(">QI", 0, 1)
    assert _read_target(rec) is None                          # no handle is that long
