"""Chunk and record payload encoding: keyed id, zstd, AEAD.

A payload is compressed when that shrinks it, then sealed with AES-256-GCM under the master key
with the record's id and type as associated data, so a record cannot be swapped for another.

Compression level per chunk: a zstd-1 probe of the chunk's first 4 KiB picks it.  Data that
compresses well (text, code, binaries) gets level 3; data the probe barely shrinks (zip/jar
members, media, ciphertext, random) gets level 1 over the whole chunk, which is ~2x cheaper than
level 3 on such data at 0.3 % more bytes, and on incompressible data runs at ~4.7 GB/s, so it is
tried rather than skipped: zip/jar chunks whose head looks incompressible still shrink by ~4 %
(docs/benchmarks.md, "textcodec").  Any level writes the same zstd frames: decode is unchanged.
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
#: level for chunks whose probe shrinks by less than FAST_ABOVE (they compress little)
FAST_LEVEL = 1
FAST_ABOVE = 0.90
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
            loc.fast = zstandard.ZstdCompressor(level=FAST_LEVEL)
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

    def _compress(self, data) -> bytes:
        """zstd at the repository's level, or at FAST_LEVEL when a probe of the chunk's head
        shows it compresses little (the caller keeps the raw bytes if this is not smaller)."""
        z = self._zc()
        if len(data) > 4 * PROBE:
            head = memoryview(data)[:PROBE]
            if len(z.probe.compress(head)) > PROBE * FAST_ABOVE:
                return z.fast.compress(data)
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
