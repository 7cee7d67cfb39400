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
