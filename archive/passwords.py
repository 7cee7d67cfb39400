"""Salted slow password hashes for catalog users (scrypt, from the standard library)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os

N, R, P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, dk = stored.split("$")
        if algo != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
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
