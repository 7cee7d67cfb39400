"""SMB 2/3 key derivation, signing and encryption (MS-SMB2 3.1.4), on `cryptography`.

Why here and not in impacket: impacket's server signs with HMAC-SHA256 only and never
verifies, derives no SMB 3 keys and has no transform header; a desktop that requires SMB 3
signing or encryption cannot talk to it.  Everything is keyed per session, so the functions
take keys and bytes and hold no state.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.ciphers import algorithms

# dialects
SMB202, SMB210, SMB300, SMB302, SMB311 = 0x0202, 0x0210, 0x0300, 0x0302, 0x0311
DIALECTS = (SMB311, SMB302, SMB300, SMB210, SMB202)          # server preference order
# signing algorithms (SMB2_SIGNING_CAPABILITIES)
HMAC_SHA256, AES_CMAC, AES_GMAC = 0, 1, 2
# ciphers (SMB2_ENCRYPTION_CAPABILITIES); the 256-bit ones are 3.1.1 only
AES128_CCM, AES128_GCM, AES256_CCM, AES256_GCM = 1, 2, 3, 4
CIPHERS = (AES128_GCM, AES128_CCM, AES256_GCM, AES256_CCM)   # server preference order
CCM = (AES128_CCM, AES256_CCM)
WIDE = (AES256_CCM, AES256_GCM)

SIGNED_FLAG = 0x00000008


def kdf(key: bytes, label: bytes, context: bytes, bits: int = 128) -> bytes:
    """SP800-108 counter mode with HMAC-SHA256, one block (what SMB 3 uses for every key)."""
    data = b"\x00\x00\x00\x01" + label + b"\x00" + context + struct.pack(">I", bits)
    return hmac.new(key, data, hashlib.sha256).digest()[: bits // 8]


class SessionKeys:
    """The keys of one authenticated session for its dialect (and, for 3.1.1, preauth hash)."""

    def __init__(self, session_key: bytes, dialect: int, preauth: bytes | None,
                 signing_algo: int | None = None, cipher: int | None = None) -> None:
        sk = session_key[:16].ljust(16, b"\x00")
        # MS-SMB2 3.3.5.5.3: AES-256 keys come from the full session key with L = 256
        # (NTLM's session key is 16 bytes, Kerberos' may be 32); signing stays 128-bit.
        wide = cipher in WIDE and dialect == SMB311
        ck, bits = (session_key if wide else sk), (256 if wide else 128)
        self.dialect = dialect
        self.cipher = cipher
        if dialect >= SMB300:
            if dialect == SMB311:
                self.signing = kdf(sk, b"SMBSigningKey\x00", preauth or b"")
                self.encrypt_key = kdf(ck, b"SMBS2CCipherKey\x00", preauth or b"", bits)
                self.decrypt_key = kdf(ck, b"SMBC2SCipherKey\x00", preauth or b"", bits)
            else:
                self.signing = kdf(sk, b"SMB2AESCMAC\x00", b"SmbSign\x00")
                self.encrypt_key = kdf(sk, b"SMB2AESCCM\x00", b"ServerOut\x00")
                self.decrypt_key = kdf(sk, b"SMB2AESCCM\x00", b"ServerIn \x00")
            self.algo = signing_algo if signing_algo is not None else AES_CMAC
        else:
            self.signing = sk
            self.encrypt_key = self.decrypt_key = None
            self.algo = HMAC_SHA256
        self._enc = _aead(cipher, self.encrypt_key) if cipher and self.encrypt_key else None
        self._dec = _aead(cipher, self.decrypt_key) if cipher and self.decrypt_key else None
        self._nonce_prefix = os.urandom(4)
        self._counter = 0

    # -- signing -------------------------------------------------------------------------
    def signature(self, msg: bytes | bytearray | memoryview, is_response: bool) -> bytes:
        """The 16-byte signature of a message whose signature field (bytes 48..64) is zero."""
        if self.algo == HMAC_SHA256:
            return hmac.new(self.signing, msg, hashlib.sha256).digest()[:16]
        if self.algo == AES_GMAC:
            mid = bytes(msg[24:32])
            command = struct.unpack_from("<H", msg, 12)[0]
            role = (1 if is_response else 0) | (2 if command == 0x0C else 0)
            nonce = mid + struct.pack("<I", role)
            return AESGCM(self.signing).encrypt(nonce, b"", bytes(msg))
        c = CMAC(algorithms.AES(self.signing))
        c.update(bytes(msg))
        return c.finalize()

    def sign(self, msg: bytearray) -> None:
        """Sign a response in place (sets the SIGNED flag first, as the signature covers it)."""
        struct.pack_into("<I", msg, 16, struct.unpack_from("<I", msg, 16)[0] | SIGNED_FLAG)
        msg[48:64] = bytes(16)
        msg[48:64] = self.signature(msg, True)

    def verify(self, msg: bytes | memoryview) -> bool:
        """Check a signed request's signature (constant time)."""
        got = bytes(msg[48:64])
        buf = bytearray(msg)
        buf[48:64] = bytes(16)
        return hmac.compare_digest(got, self.signature(buf, False))

    # -- encryption ----------------------------------------------------------------------
    def _nonce(self) -> bytes:
        self._counter += 1
        n = self._nonce_prefix + struct.pack("<Q", self._counter)
        return n[:11] if self.cipher in CCM else n

    def encrypt(self, msg: bytes, session_id: int) -> bytes:
        """A transform header (0xFD 'SMB') + ciphertext for one (possibly compound) message."""
        if self._enc is None:
            raise ValueError("session has no encryption key")
        nonce = self._nonce()
        aad = nonce.ljust(16, b"\x00") + struct.pack("<IHHQ", len(msg), 0, 1, session_id)
        out = self._enc.encrypt(nonce, msg, aad)
        return b"\xfdSMB" + out[-16:] + aad + out[:-16]

    def decrypt(self, frame: bytes | memoryview) -> bytes | None:
        """The plaintext of a transform-header frame, or None when it does not authenticate."""
        if self._dec is None or len(frame) < 52:
            return None
        sig = bytes(frame[4:20])
        aad = bytes(frame[20:52])
        nonce = aad[:11] if self.cipher in CCM else aad[:12]
        try:
            return self._dec.decrypt(nonce, bytes(frame[52:]) + sig, aad)
        except Exception:
            return None


def _aead(cipher: int, key: bytes):
    return AESCCM(key, tag_length=16) if cipher in CCM else AESGCM(key)


def preauth_update(h: bytes, msg: bytes | memoryview) -> bytes:
    """PreauthIntegrityHashValue = SHA-512(previous || message) (3.1.1 only)."""
    return hashlib.sha512(h + bytes(msg)).digest()
