"""Chunk and record payload encoding: keyed id, zstd, AEAD.

A payload is compressed when that shrinks it, then sealed with AES-256-GCM under the master key
with the record's id and type as associated data, so a record cannot be swapped for another.
"""
from __future__ import annotations

import os
import threading

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import Corrupt
from .keys import MasterKey

FLAG_ZSTD = 1
FLAG_AEAD = 2
ZSTD_LEVEL = 3
NONCE = 12
PROBE = 4096


class Codec:
    """Encodes and decodes payloads; safe to share between threads."""

    def __init__(self, key: MasterKey, level: int = ZSTD_LEVEL):
        self.key = key
        self._aead = AESGCM(key.enc_key) if key.encrypted else None
        self._level = level
        self._local = threading.local()

    def chunk_id(self, data) -> bytes:
        return blake3.blake3(data, key=self.key.id_key).digest()

    def _zc(self):
        loc = self._local
        if not hasattr(loc, "c"):
            loc.c = zstandard.ZstdCompressor(level=self._level)
            loc.probe = zstandard.ZstdCompressor(level=1)
            loc.d = zstandard.ZstdDecompressor()
        return loc

    def encode(self, rtype: int, rid: bytes, data, compress: bool = True) -> tuple[int, bytes]:
        """Return (flags, payload) for plaintext `data` (`compress=False`: not even tried)."""
        flags = 0
        payload = self._compress(data) if compress else None
        if payload is not None and len(payload) < len(data):
            flags |= FLAG_ZSTD
        else:
            payload = bytes(data)
        if self._aead is not None:
            nonce = os.urandom(NONCE)
            payload = nonce + self._aead.encrypt(nonce, payload, bytes([rtype]) + rid)
            flags |= FLAG_AEAD
        return flags, payload

    def _compress(self, data) -> bytes | None:
        """zstd, unless a cheap probe of the chunk's head shows it will not shrink (media, ciphertext)."""
        z = self._zc()
        if len(data) > 4 * PROBE:
            head = memoryview(data)[:PROBE]
            if len(z.probe.compress(head)) > PROBE * 0.97:
                return None
        return z.c.compress(data)

    def decode(self, rtype: int, rid: bytes, flags: int, payload: bytes, raw_len: int) -> bytes:
        """Return the plaintext, or raise Corrupt; never returns wrong bytes."""
        if flags & FLAG_AEAD:
            if self._aead is None:
                raise Corrupt("record is encrypted but the repository key is not")
            try:
                payload = self._aead.decrypt(payload[:NONCE], payload[NONCE:], bytes([rtype]) + rid)
            except InvalidTag:
                raise Corrupt(f"record {rid.hex()} failed authentication") from None
        if flags & FLAG_ZSTD:
            try:
                payload = self._zc().d.decompress(payload, max_output_size=raw_len)
            except zstandard.ZstdError as e:
                raise Corrupt(f"record {rid.hex()} does not decompress: {e}") from None
        if len(payload) != raw_len:
            raise Corrupt(f"record {rid.hex()} has length {len(payload)}, expected {raw_len}")
        return payload
