"""Salted slow password hashes for catalog users (scrypt, from the standard library).

scrypt is memory-hard by design: one hash with N=2**14, r=8 takes 16 MiB (128 * r * N).
A serving process verifies passwords on many threads at once (64 clients logging in made
the server's RSS jump by 1 GB), so at most ``HASH_SLOTS`` hashes run at the same time
(one per core: they are CPU-bound, more in parallel would not finish sooner).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading

N, R, P = 2**14, 8, 1
HASH_SLOTS = max(2, os.cpu_count() or 2)
_slots = threading.BoundedSemaphore(HASH_SLOTS)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    """One scrypt hash, waiting for a slot (bounds memory: see the module docstring)."""
    with _slots:
        return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=32)


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    dk = _scrypt(password.encode(), salt, N, R, P)
    return f"scrypt${N}${R}${P}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, dk = stored.split("$")
        if algo != "scrypt":
            return False
        got = _scrypt(password.encode(), base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(dk))


_dummy: list[str] = []


def dummy_hash() -> str:
    """A hash to verify against for unknown users, so timing does not reveal which names exist
    (made on first use: scrypt at import would slow every archivectl start)."""
    if not _dummy:
        _dummy.append(hash_password("not-a-user"))
    return _dummy[0]


def nt_hash(password: str) -> str:
    """The NT hash (MD4 of the UTF-16LE password, hex) that NTLM authentication needs.

    It is password-equivalent for NTLM, which is why the catalog stores it only for users
    enabled for SMB (as Samba does).  MD4 is gone from OpenSSL 3's default provider, so it
    is computed here (RFC 1320), on short inputs only."""
    return _md4(password.encode("utf-16-le")).hex()


def _md4(data: bytes) -> bytes:
    import struct

    def rotl(x: int, n: int) -> int:
        x &= 0xFFFFFFFF
        return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF

    msg = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", len(data) * 8)
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    for off in range(0, len(msg), 64):
        x = struct.unpack("<16I", msg[off:off + 64])
        a, b, c, d = h
        for i in range(16):
            k, s = i, (3, 7, 11, 19)[i % 4]
            a, b, c, d = d, rotl(a + ((b & c) | (~b & d)) + x[k], s), b, c
        for i in range(16):
            k, s = (i % 4) * 4 + i // 4, (3, 5, 9, 13)[i % 4]
            a, b, c, d = d, rotl(a + ((b & c) | (b & d) | (c & d)) + x[k] + 0x5A827999, s), b, c
        for i in range(16):
            k, s = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)[i], (3, 9, 11, 15)[i % 4]
            a, b, c, d = d, rotl(a + (b ^ c ^ d) + x[k] + 0x6ED9EBA1, s), b, c
        h = [(v + w) & 0xFFFFFFFF for v, w in zip(h, (a, b, c, d))]
    return struct.pack("<4I", *h)
