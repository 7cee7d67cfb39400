"""Repository keys: a random master key, optionally wrapped by a passphrase.

The master key holds three independent secrets: the AEAD key for chunk/record payloads, the
BLAKE3 key for chunk ids (ids reveal nothing about content) and the FastCDC gear seed (cut
points do not fingerprint content).  Changing the passphrase only rewraps this small file.

Unwrapping costs one scrypt (N=2**15, r=8: 32 MiB, ~0.1-0.2 s), which every `archivectl` command
of an encrypted repository pays.  Its strength stays; what `prefetch` changes is *when* it is
paid: the CLI starts the derivation on a second thread as soon as it knows the repository and
the passphrase, while the main thread imports the rest of the program (hashlib.scrypt releases
the GIL), and `parse_keyfile` picks the result up.  The derived key only ever lives in this
process's memory, handed over once.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import BadPassword

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


@dataclass(frozen=True)
class MasterKey:
    enc_key: bytes      # 32 bytes, AES-256-GCM
    id_key: bytes       # 32 bytes, keyed BLAKE3 for chunk ids
    seed: int           # FastCDC gear seed
    encrypted: bool

    @classmethod
    def generate(cls, encrypted: bool) -> "MasterKey":
        return cls(os.urandom(32), os.urandom(32), int.from_bytes(os.urandom(4), "big") | 1, encrypted)

    def to_bytes(self) -> bytes:
        return self.enc_key + self.id_key + self.seed.to_bytes(4, "big")

    @classmethod
    def from_bytes(cls, raw: bytes, encrypted: bool) -> "MasterKey":
        return cls(raw[:32], raw[32:64], int.from_bytes(raw[64:68], "big"), encrypted)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=128 * 1024 * 1024, dklen=32)


class _Derivation(threading.Thread):
    """One scrypt on its own (daemon) thread: a command that ends early does not wait for it."""

    def __init__(self, args: tuple) -> None:
        super().__init__(name="keys-prefetch", daemon=True)
        self.args, self.result = args, None

    def run(self) -> None:
        try:
            self.result = _scrypt(*self.args)
        except Exception:       # parse_keyfile derives it again and reports the error itself
            self.result = None


_prefetched: dict[tuple, _Derivation] = {}
_prefetch_lock = threading.Lock()


def prefetch(keyfile: bytes, password: str | None) -> None:
    """Start deriving the key-encryption key of `keyfile` (keys.json) for `password` in the
    background; a later `parse_keyfile` of the same file and passphrase waits for it instead of
    deriving it again.  Does nothing for an unencrypted or unreadable keyfile."""
    if not password:
        return
    try:
        doc = json.loads(keyfile)
        k = doc["kdf"] if doc.get("encrypted") else None
        if not k or k.get("name") != "scrypt":
            return
        args = (password, base64.b64decode(k["salt"]), int(k["n"]), int(k["r"]), int(k["p"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return
    with _prefetch_lock:
        if args in _prefetched:
            return
        job = _prefetched[args] = _Derivation(args)
    job.start()


_handed: dict[tuple[bytes, str | None], "MasterKey"] = {}


def hand_over(keyfile: bytes, password: str | None, key: "MasterKey") -> None:
    """Keep a key just unwrapped from `keyfile` for the next `parse_keyfile` of the same file and
    passphrase in this process, which takes it instead of paying the scrypt again (the CLI's lean
    read path, when it hands a command over to the full path)."""
    _handed[(keyfile, password)] = key


def _kdf(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    with _prefetch_lock:
        job = _prefetched.pop((password, salt, n, r, p), None)     # handed over once, then forgotten
    if job is not None:
        job.join()
        if job.result is not None:
            return job.result
    return _scrypt(password, salt, n, r, p)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def keyfile_bytes(key: MasterKey, password: str | None) -> bytes:
    """keys.json: the master key, wrapped by the passphrase when the repository is encrypted."""
    if key.encrypted:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        if not password:
            raise BadPassword("an encrypted repository needs a passphrase")
        salt, nonce = os.urandom(16), os.urandom(12)
        kek = _kdf(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        doc = {
            "encrypted": True,
            "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)},
            "nonce": _b64(nonce),
            "wrapped": _b64(AESGCM(kek).encrypt(nonce, key.to_bytes(), b"edge-archive-master-key")),
        }
    else:
        doc = {"encrypted": False, "key": _b64(key.to_bytes())}
    return json.dumps(doc, indent=1).encode()


def write_keyfile(path: Path, key: MasterKey, password: str | None) -> None:
    """Write keys.json atomically."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(keyfile_bytes(key, password))
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_keyfile(path: Path, password: str | None) -> MasterKey:
    return parse_keyfile(path.read_bytes(), password)


def parse_keyfile(data: bytes, password: str | None) -> MasterKey:
    if _handed:
        key = _handed.pop((data, password), None)     # handed over once, then forgotten
        if key is not None:
            return key
    doc = json.loads(data)
    if not doc["encrypted"]:
        return MasterKey.from_bytes(base64.b64decode(doc["key"]), False)
    if not password:
        raise BadPassword("this repository is encrypted: give the passphrase (EDGE_ARCHIVE_PASSWORD)")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    k = doc["kdf"]
    kek = _kdf(password, base64.b64decode(k["salt"]), k["n"], k["r"], k["p"])
    try:
        raw = AESGCM(kek).decrypt(base64.b64decode(doc["nonce"]), base64.b64decode(doc["wrapped"]),
                                  b"edge-archive-master-key")
    except InvalidTag:
        raise BadPassword("wrong passphrase") from None
    return MasterKey.from_bytes(raw, True)
