"""NTLMv2 inside SPNEGO, checked against the catalog's NT hashes.

Only what the server side of NTLMv2 needs (MS-NLMP 3.2.5, 3.3.2): a CHALLENGE, the
verification of the client's NTProofStr, and the session key.  NTLMv1 and LM responses are
refused.  SPNEGO framing comes from impacket; the NTLM messages are parsed here, with
bounds checks, because impacket's parsers raise arbitrary exceptions on bad input.

Why the stock impacket server is not used for this: it keeps "authenticated" per TCP
connection, so a failed login leaves the connection usable, and it lets empty and anonymous
users in as guests.  Here a session exists only after a successful AUTHENTICATE.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from impacket.spnego import SPNEGO_NegTokenInit, SPNEGO_NegTokenResp, TypesMech

from .wire import WireError

NTLMSSP_OID = TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]
SIG = b"NTLMSSP\x00"

NEG_UNICODE = 0x00000001
NEG_REQUEST_TARGET = 0x00000004
NEG_SIGN = 0x00000010
NEG_SEAL = 0x00000020
NEG_NTLM = 0x00000200
NEG_ANONYMOUS = 0x00000800
NEG_ALWAYS_SIGN = 0x00008000
NEG_TARGET_TYPE_SERVER = 0x00020000
NEG_EXTENDED_SESSIONSECURITY = 0x00080000
NEG_TARGET_INFO = 0x00800000
NEG_VERSION = 0x02000000
NEG_128 = 0x20000000
NEG_KEY_EXCH = 0x40000000
NEG_56 = 0x80000000
_ECHO = (NEG_UNICODE | NEG_SIGN | NEG_SEAL | NEG_ALWAYS_SIGN | NEG_EXTENDED_SESSIONSECURITY
         | NEG_128 | NEG_KEY_EXCH | NEG_56)


def negotiate_token() -> bytes:
    """The SPNEGO hint in the NEGOTIATE response: we speak NTLMSSP."""
    t = SPNEGO_NegTokenInit()
    t["MechTypes"] = [NTLMSSP_OID]
    return t.getData()


def unwrap(blob: bytes) -> tuple[bytes, bool]:
    """(NTLMSSP token, was it SPNEGO-wrapped) from a SESSION_SETUP security buffer."""
    if blob.startswith(SIG):
        return blob, False
    try:
        if blob[:1] == b"\x60":
            t = SPNEGO_NegTokenInit(blob)
            if NTLMSSP_OID not in t["MechTypes"]:
                raise WireError("no NTLMSSP in the client's mechanisms")
            token = t.fields.get("MechToken", b"")
            # an optimistic token for another mechanism (Kerberos) is ignored: the answer then
            # names NTLMSSP and the client starts over with an NTLM NEGOTIATE
            return (token if token.startswith(SIG) else b""), True
        if blob[:1] == b"\xa1":
            return SPNEGO_NegTokenResp(blob)["ResponseToken"], True
    except WireError:
        raise
    except Exception:
        raise WireError("bad SPNEGO token") from None
    raise WireError("unknown security blob")


def wrap_challenge(challenge: bytes) -> bytes:
    r = SPNEGO_NegTokenResp()
    r["NegState"] = b"\x01"                 # accept-incomplete
    r["SupportedMech"] = NTLMSSP_OID
    r["ResponseToken"] = challenge
    return r.getData()


def select_ntlm() -> bytes:
    """accept-incomplete naming NTLMSSP, with no token: 'use NTLM instead'."""
    r = SPNEGO_NegTokenResp()
    r["NegState"] = b"\x01"
    r["SupportedMech"] = NTLMSSP_OID
    return r.getData()


def wrap_final(accepted: bool) -> bytes:
    r = SPNEGO_NegTokenResp()
    r["NegState"] = b"\x00" if accepted else b"\x02"   # accept-completed | reject
    return r.getData()


def message_type(token: bytes) -> int:
    if len(token) < 12 or not token.startswith(SIG):
        raise WireError("not an NTLMSSP message")
    return struct.unpack_from("<I", token, 8)[0]


def parse_negotiate_flags(token: bytes) -> int:
    if message_type(token) != 1 or len(token) < 16:
        raise WireError("not an NTLMSSP NEGOTIATE")
    return struct.unpack_from("<I", token, 12)[0]


def _av(av_id: int, value: bytes) -> bytes:
    return struct.pack("<HH", av_id, len(value)) + value


def build_challenge(client_flags: int, server_challenge: bytes, name: str, domain: str) -> bytes:
    """A CHALLENGE_MESSAGE.  No MsvAvTimestamp on purpose: without it clients send no MIC,
    so SPNEGO needs no mechListMIC exchange (integrity comes from SMB signing instead)."""
    flags = (client_flags & _ECHO) | NEG_REQUEST_TARGET | NEG_NTLM | NEG_TARGET_INFO \
        | NEG_TARGET_TYPE_SERVER | NEG_VERSION
    dom = domain.upper().encode("utf-16-le")
    host = name.upper().encode("utf-16-le")
    info = _av(2, dom) + _av(1, host) + _av(4, domain.lower().encode("utf-16-le")) \
        + _av(3, name.lower().encode("utf-16-le")) + _av(0, b"")
    head = 56
    return (SIG + struct.pack("<I", 2) + struct.pack("<HHI", len(dom), len(dom), head)
            + struct.pack("<I", flags) + server_challenge + bytes(8)
            + struct.pack("<HHI", len(info), len(info), head + len(dom))
            + b"\x0a\x00\x7c\x4f\x00\x00\x00\x0f" + dom + info)


@dataclass
class Authenticate:
    lm: bytes
    nt: bytes
    domain: str
    user: str
    workstation: str
    encrypted_session_key: bytes
    flags: int


def parse_authenticate(token: bytes) -> Authenticate:
    if message_type(token) != 3 or len(token) < 64:
        raise WireError("not an NTLMSSP AUTHENTICATE")

    def buf(i: int) -> bytes:
        length, _max, off = struct.unpack_from("<HHI", token, 12 + 8 * i)
        if length and off + length > len(token):
            raise WireError("NTLM field outside the message")
        return token[off:off + length] if length else b""

    flags = struct.unpack_from("<I", token, 60)[0]

    def text(b: bytes) -> str:
        try:
            return b.decode("utf-16-le") if flags & NEG_UNICODE else b.decode("latin-1")
        except UnicodeDecodeError:
            raise WireError("bad NTLM name") from None
    return Authenticate(buf(0), buf(1), text(buf(2)), text(buf(3)), text(buf(4)), buf(5), flags)


def _hmac_md5(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.md5).digest()


def verify_ntlmv2(nt_hash: bytes, auth: Authenticate, server_challenge: bytes) -> bytes | None:
    """The exported session key when the NTLMv2 response proves the NT hash, else None."""
    if len(auth.nt) < 16 + 28:                 # NTLMv1 (24 bytes) or nothing: refused
        return None
    ntowf = _hmac_md5(nt_hash, (auth.user.upper() + auth.domain).encode("utf-16-le"))
    proof = _hmac_md5(ntowf, server_challenge + auth.nt[16:])
    if not hmac.compare_digest(proof, auth.nt[:16]):
        return None
    base = _hmac_md5(ntowf, proof)
    if auth.flags & NEG_KEY_EXCH and len(auth.encrypted_session_key) == 16:
        return _rc4(base, auth.encrypted_session_key)
    return base


def _rc4(key: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
    from cryptography.hazmat.primitives.ciphers import Cipher
    return Cipher(ARC4(key), mode=None).encryptor().update(data)


def new_challenge() -> bytes:
    return os.urandom(8)
