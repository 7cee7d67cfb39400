"""Property-based tests (hypothesis) of every SMB packet parser the adapter has, of the
crypto round trips, and of the request seam as a whole: random bytes are an error status
or a dropped connection, never an exception that escapes."""
from __future__ import annotations

import hashlib
import hmac
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from protocols.smb import auth, crypto, wire
from protocols.smb.connection import Connection, Drop
from protocols.smb.errors import SMBError
from protocols.smb.files import smb_path

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PARSERS = [wire.parse_negotiate, wire.parse_session_setup, wire.parse_tree_connect, wire.parse_create,
           wire.parse_close, wire.parse_flush, wire.parse_read, wire.parse_write, wire.parse_lock,
           wire.parse_ioctl, wire.parse_query_directory, wire.parse_query_info, wire.parse_set_info]


def header(command: int = 0, next_command: int = 0, flags: int = 0) -> bytes:
    return struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 1, 0, command, 1, flags, next_command, 7, 0, 3, 9,
                       bytes(16))


@FAST
@given(st.binary(max_size=400))
def test_parse_header_and_compound_only_raise_wire_errors(data):
    for fn in (wire.parse_header, wire.split_compound):
        try:
            fn(data)
        except WireError_:
            pass


WireError_ = wire.WireError


@FAST
@given(st.sampled_from(PARSERS), st.binary(max_size=300))
def test_body_parsers_only_raise_wire_errors(parser, body):
    msg = memoryview(header() + body)
    try:
        parser(msg)
    except wire.WireError:
        pass


@FAST
@given(st.sampled_from(PARSERS), st.binary(min_size=60, max_size=200), st.integers(0, 0xFFFF),
       st.integers(0, 0xFFFFFFFF))
def test_body_parsers_with_plausible_structure_size_and_wild_offsets(parser, body, off, length):
    sizes = {wire.parse_negotiate: 36, wire.parse_session_setup: 25, wire.parse_tree_connect: 9,
             wire.parse_create: 57, wire.parse_close: 24, wire.parse_flush: 24, wire.parse_read: 49,
             wire.parse_write: 49, wire.parse_lock: 48, wire.parse_ioctl: 57, wire.parse_query_directory: 33,
             wire.parse_query_info: 41, wire.parse_set_info: 33}
    b = bytearray(body)
    struct.pack_into("<H", b, 0, sizes[parser])
    struct.pack_into("<HI", b, 2, off, length)          # offsets/lengths land in various fields
    try:
        parser(memoryview(header() + bytes(b)))
    except wire.WireError:
        pass


@FAST
@given(st.lists(st.sampled_from([0x0202, 0x0210, 0x0300, 0x0302, 0x0311]), min_size=1, max_size=5),
       st.binary(min_size=16, max_size=16), st.lists(st.sampled_from([1, 2, 8]), max_size=3))
def test_negotiate_round_trip(dialects, guid, ctx_types):
    ctxs = b""
    for t in ctx_types:
        data = struct.pack("<HHH", 1, 32, 1) + bytes(32) if t == 1 else struct.pack("<HH", 1, 2)
        ctxs += bytes(-len(ctxs) % 8) + wire.negotiate_context(t, data)
    fixed_end = 64 + 36 + 2 * len(dialects)
    pad = -fixed_end % 8
    off = fixed_end + pad if ctxs else 0
    body = struct.pack("<HHHHI16sIHH", 36, len(dialects), 1, 0, 0x7F, guid, off, len(ctx_types), 0)
    msg = header() + body + struct.pack(f"<{len(dialects)}H", *dialects) + (bytes(pad) + ctxs if ctxs else b"")
    req = wire.parse_negotiate(memoryview(msg))
    assert req.dialects == dialects and req.client_guid == guid and req.capabilities == 0x7F
    if 0x0311 in dialects:
        assert [c[0] for c in req.contexts] == ctx_types


@FAST
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40), st.lists(st.tuples(st.binary(min_size=4, max_size=4),
                                                             st.binary(max_size=40)), max_size=4, unique_by=lambda t: t[0]),
       st.integers(0, 5), st.integers(0, 0xFFFFFFFF))
def test_create_round_trip(name, contexts, disposition, options):
    nb = name.encode("utf-16-le")
    cbuf = wire.create_contexts(contexts) if contexts else b""
    noff = 64 + 56
    coff = noff + len(nb) + (-(noff + len(nb)) % 8)
    body = struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, 0x12019F, 0x80, 7, disposition, options,
                       noff, len(nb), coff if cbuf else 0, len(cbuf))
    msg = header(5) + body + nb + bytes(coff - noff - len(nb)) + cbuf
    req = wire.parse_create(memoryview(msg))
    assert req.name == name and req.disposition == disposition and req.options == options
    assert req.contexts == dict(contexts)


@FAST
@given(st.binary(max_size=64), st.integers(0, 2**40))
def test_write_round_trip_is_zero_copy(data, offset):
    body = struct.pack("<HHIQ16sIIHHI", 49, 64 + 48, len(data), offset, b"F" * 16, 0, 0, 0, 0, 0)
    view, off, fid = wire.parse_write(memoryview(header(9) + body + data))
    assert bytes(view) == data and off == offset and fid == b"F" * 16


@FAST
@given(st.lists(st.tuples(st.integers(0, 2**63), st.integers(0, 2**63), st.integers(0, 0x1F)), min_size=1, max_size=8))
def test_lock_round_trip(locks):
    body = struct.pack("<HHI16s", 48, len(locks), 0, b"L" * 16) + b"".join(
        struct.pack("<QQII", o, n, f, 0) for o, n, f in locks)
    fid, got = wire.parse_lock(memoryview(header(10) + body))
    assert fid == b"L" * 16 and got == locks


@FAST
@given(st.binary(max_size=300))
def test_ntlm_and_spnego_parsers_only_raise_wire_errors(blob):
    for fn in (auth.unwrap, auth.message_type, auth.parse_authenticate, auth.parse_negotiate_flags):
        try:
            fn(blob)
        except wire.WireError:
            pass
    try:
        auth.parse_authenticate(b"NTLMSSP\x00\x03\x00\x00\x00" + blob.ljust(60, b"\xff"))
    except wire.WireError:
        pass


@FAST
@given(st.text(max_size=60))
def test_smb_path_never_escapes_the_share(name):
    try:
        path, past = smb_path(name, None)
    except (SMBError, Exception) as e:          # InvalidPath / SMBError only
        from archive.errors import ArchiveError
        assert isinstance(e, (SMBError, ArchiveError)), repr(e)
        return
    assert path.startswith("/") and ".." not in path.split("/")


@FAST
@given(st.text(alphabet="abcXYZ", min_size=1, max_size=8), st.text(alphabet="abcXYZ", min_size=1, max_size=8),
       st.binary(min_size=8, max_size=8), st.binary(min_size=16, max_size=16), st.booleans())
def test_ntlmv2_verification(user, password, challenge, client_nonce, key_exch):
    from archive.passwords import nt_hash
    nth = bytes.fromhex(nt_hash(password))
    ntowf = hmac.new(nth, (user.upper() + "WORKGROUP").encode("utf-16-le"), hashlib.md5).digest()
    blob = b"\x01\x01" + bytes(6) + bytes(8) + client_nonce + bytes(4) + b"\x00\x00\x00\x00"
    proof = hmac.new(ntowf, challenge + blob, hashlib.md5).digest()
    base = hmac.new(ntowf, proof, hashlib.md5).digest()
    exported = os.urandom(16)
    enc = auth._rc4(base, exported) if key_exch else b""
    a = auth.Authenticate(b"", proof + blob, "WORKGROUP", user, "", enc, auth.NEG_KEY_EXCH if key_exch else 0)
    assert auth.verify_ntlmv2(nth, a, challenge) == (exported if key_exch else base)
    wrong = bytes.fromhex(nt_hash(password + "x"))
    assert auth.verify_ntlmv2(wrong, a, challenge) is None


@FAST
@given(st.binary(min_size=64, max_size=300), st.sampled_from([crypto.AES128_CCM, crypto.AES128_GCM,
                                                              crypto.AES256_CCM, crypto.AES256_GCM]),
       st.sampled_from([crypto.SMB300, crypto.SMB311]), st.integers(0, 2**63))
def test_encrypt_decrypt_round_trip_and_tamper(msg, cipher, dialect, sid):
    if cipher in crypto.WIDE and dialect != crypto.SMB311:
        dialect = crypto.SMB311                                  # AES-256 exists in 3.1.1 only
    k = crypto.SessionKeys(os.urandom(16), dialect, os.urandom(64), None, cipher)
    assert len(k.encrypt_key) == len(k.decrypt_key) == (32 if cipher in crypto.WIDE else 16)
    server_side = k
    client = crypto.SessionKeys.__new__(crypto.SessionKeys)      # the client decrypts with the server's out-key
    client.__dict__.update(k.__dict__)
    client._dec = crypto._aead(cipher, k.encrypt_key)
    frame = server_side.encrypt(msg, sid)
    assert frame[:4] == b"\xfdSMB" and client.decrypt(frame) == msg
    bad = bytearray(frame)
    bad[-1] ^= 1
    assert client.decrypt(bytes(bad)) is None


@FAST
@given(st.binary(min_size=64, max_size=200), st.sampled_from([(crypto.SMB202, None), (crypto.SMB300, None),
                                                              (crypto.SMB311, crypto.AES_CMAC),
                                                              (crypto.SMB311, crypto.AES_GMAC)]),
       st.integers(0, 199))
def test_sign_verify_and_any_flipped_byte_fails(raw, dialect_algo, pos):
    dialect, algo = dialect_algo
    k = crypto.SessionKeys(os.urandom(16), dialect, os.urandom(64), algo, None)
    msg = bytearray(header(5) + raw)
    k.sign(msg)
    # a request signed the same way verifies (the role bit differs only for GMAC responses)
    req = bytearray(msg)
    req[48:64] = bytes(16)
    req[48:64] = k.signature(req, False)
    assert k.verify(bytes(req))
    i = pos % len(req)
    if 48 <= i < 64:
        return
    req[i] ^= 0x40
    assert not k.verify(bytes(req))


# -- the seam: random frames through a real Connection ----------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from smb_helpers import SMBServerFixture
    s = SMBServerFixture(tmp_path_factory.mktemp("wire"))
    yield s.adapter._server
    s.close()


class _NullSock:
    def sendall(self, data): pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(st.integers(0, 0x30), st.binary(max_size=200), st.integers(0, 3))
def test_any_request_frame_is_a_status_or_a_drop(server, command, body, flags):
    conn = Connection(server, _NullSock(), "127.0.0.1")
    neg = struct.pack("<HHHHI16sIHH", 36, 1, 1, 0, 0, bytes(16), 0, 0, 0) + struct.pack("<H", 0x0202)
    out = conn.process(bytearray(header(0) + neg))
    assert out is not None and struct.unpack_from("<I", out, 8)[0] == 0
    try:
        out = conn.process(bytearray(header(command, flags=flags << 2) + body))
    except Drop:
        return
    if out is not None:
        assert out[:4] == b"\xfeSMB"
        status = struct.unpack_from("<I", out, 8)[0]
        assert command in (0, 1, 13) or status != 0   # nothing succeeds without a session


@FAST
@given(st.binary(max_size=120))
def test_context_parsers_only_raise_wire_errors(data):
    for fn in (wire.parse_id_list, wire.parse_preauth_context,
               lambda d: wire.parse_create_contexts(memoryview(d))):
        try:
            fn(data)
        except wire.WireError:
            pass


@FAST
@given(st.lists(st.integers(0, 0xFFFF), max_size=10), st.binary(max_size=32))
def test_preauth_and_id_list_round_trip(ids, salt):
    got_ids, got_salt = wire.parse_preauth_context(struct.pack("<HH", len(ids), len(salt))
                                                   + struct.pack(f"<{len(ids)}H", *ids) + salt)
    assert got_ids == ids and got_salt == salt
    assert wire.parse_id_list(struct.pack("<H", len(ids)) + struct.pack(f"<{len(ids)}H", *ids)) == ids


def test_aes_256_keys_follow_the_sp800_108_kdf_with_l_256():
    """Independent re-derivation (MS-SMB2 3.1.4.2): HMAC-SHA256(key, i || label || 0 || context || L)
    with L = 256 for AES-256 cipher keys, 128 for the signing key."""
    sk, pre = bytes(range(16)), bytes(range(64))

    def ref(label: bytes, bits: int) -> bytes:
        data = struct.pack(">I", 1) + label + b"\x00" + pre + struct.pack(">I", bits)
        return hmac.new(sk, data, hashlib.sha256).digest()[:bits // 8]
    k = crypto.SessionKeys(sk, crypto.SMB311, pre, None, crypto.AES256_GCM)
    assert k.encrypt_key == ref(b"SMBS2CCipherKey\x00", 256)
    assert k.decrypt_key == ref(b"SMBC2SCipherKey\x00", 256)
    assert k.signing == ref(b"SMBSigningKey\x00", 128)
    k128 = crypto.SessionKeys(sk, crypto.SMB311, pre, None, crypto.AES128_GCM)
    assert k128.encrypt_key == ref(b"SMBS2CCipherKey\x00", 128)
