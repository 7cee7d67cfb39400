"""Chunk and record payload encoding: keyed id, zstd, AEAD.

A payload is compressed when that shrinks it, then sealed with AES-256-GCM under the master key
with the record's id and type as associated data, so a record cannot be swapped for another.

Compression level per chunk: a zstd-1 probe of the chunk's first 4 KiB picks it.  Data that
compresses well (text, code, binaries) gets level 3; data the probe barely shrinks (zip/jar
members, media, ciphertext, random) gets level 1 over the whole chunk, which is ~2x cheaper than
level 3 on such data at 0.3 % more bytes, and on incompressible data runs at ~4.7 GB/s, so it is
tried rather than skipped: zip/jar chunks whose head looks incompressible still shrink by ~4 %
(docs/benchmarks.md, "textcodec").  Any level writes the same zstd frames: decode is unchanged.

A repository's compressible chunks are compressed with its zstd dictionary (archive/dictionary.py)
once a writer has trained one from its first such chunks: -9 % on the bench's text at the same
level.  At level 3 those chunks use dictionary.DICT_LEVEL3 (level 3 with a 2^15 short-hash table
and 6-byte minimum matches): the same stored size on the bench's text for ~11 % less compression
CPU (source code stores ~1.6 % more with them: the dictionary module says why and the alternative).  Tried and not taken (docs/benchmarks.md, "text11"): zstd's "attach" mode (frames of
unknown size via compressobj, or ZSTD_c_forceAttachDict through the cffi backend) is no faster
than the copy of the dictionary's tables (the search of the attached tables costs what the copy
saved); the fast strategy at 2^18 / 7-byte matches kept the text ratio but stored the versions
corpus 1 % worse.  The frame header names the dictionary (dictID, inside the AEAD payload), so `decode`
loads it by that id from the pack store; frames without one (dictID 0: every chunk written
before, chunks that compress little, transaction records) decode as always.  A Codec without a
store (tests, tools) neither trains nor reads dictionaries: a chunk that needs one is Corrupt.
"""
from __future__ import annotations

import os
import threading

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .dictionary import Dictionaries
from .errors import Corrupt
from .keys import MasterKey
from .packs import T_CHUNK          # only chunks use the dictionary

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

    def __init__(self, key: MasterKey, level: int = ZSTD_LEVEL, store=None):
        """`store`: the repository's pack store, where its dictionaries are (None: none)."""
        self.key = key
        self._aead = AESGCM(key.enc_key) if key.encrypted else None
        self._level = level
        self._local = threading.local()
        self.dictionaries = Dictionaries(store, key, level)

    def chunk_id(self, data) -> bytes:
        return blake3.blake3(data, key=self.key.id_key).digest()

    def _zc(self):
        loc = self._local
        if not hasattr(loc, "c"):
            loc.c = zstandard.ZstdCompressor(level=self._level)
            loc.fast = zstandard.ZstdCompressor(level=FAST_LEVEL)
            loc.probe = zstandard.ZstdCompressor(level=1)
            loc.d = zstandard.ZstdDecompressor()
            loc.dc = {}         # dictionary id -> compressor (zstd contexts are per thread)
            loc.dd = {}         # dictionary id -> decompressor
        return loc

    def encode(self, rtype: int, rid: bytes, data, compress: bool = True) -> tuple[int, bytes]:
        """Return (flags, payload) for plaintext `data` (`compress=False`: not even tried)."""
        flags = 0
        payload = self._compress(data, rtype == T_CHUNK) if compress else None
        if payload is not None and len(payload) < len(data):
            flags |= FLAG_ZSTD
        else:
            payload = bytes(data)
        if self._aead is not None:
            nonce = os.urandom(NONCE)
            payload = nonce + self._aead.encrypt(nonce, payload, bytes([rtype]) + rid)
            flags |= FLAG_AEAD
        return flags, payload

    def _compress(self, data, chunk: bool = False) -> bytes:
        """zstd at the repository's level (with its dictionary for a chunk, once there is one),
        or at FAST_LEVEL without when a probe of the chunk's head shows it compresses little
        (the caller keeps the raw bytes if this is not smaller)."""
        z = self._zc()
        if len(data) > 4 * PROBE:
            head = memoryview(data)[:PROBE]
            if len(z.probe.compress(head)) > PROBE * FAST_ABOVE:
                return z.fast.compress(data)
        if chunk:
            d = self.dictionaries.current(data)
            if d is not None:
                c = z.dc.get(d.dict_id())
                if c is None:
                    c = z.dc[d.dict_id()] = self.dictionaries.compressor(d)
                return c.compress(data)
        return z.c.compress(data)

    def open_sealed(self, nonce, sealed, ad, out=None):
        """decode's AES-GCM step alone, into `out` when given (the lean read path decrypts a
        run's chunks into one reused buffer); raises InvalidTag as AESGCM does."""
        if out is None:
            return self._aead.decrypt(nonce, sealed, ad)
        self._aead.decrypt_into(nonce, sealed, ad, out)
        return out

    def decompressor(self, payload, rid: bytes):
        """The zstd decompressor for this frame: with the dictionary its dictID names."""
        z = self._zc()
        try:
            dict_id = zstandard.get_frame_parameters(payload).dict_id
        except zstandard.ZstdError as e:
            raise Corrupt(f"record {rid.hex()} does not decompress: {e}") from None
        if not dict_id:
            return z.d
        d = z.dd.get(dict_id)
        if d is None:
            try:
                d = z.dd[dict_id] = zstandard.ZstdDecompressor(dict_data=self.dictionaries.get(dict_id))
            except Corrupt as e:
                raise Corrupt(f"record {rid.hex()} needs a compression dictionary it cannot have: {e}") from None
        return d

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
                payload = self.decompressor(payload, rid).decompress(payload, max_output_size=raw_len)
            except zstandard.ZstdError as e:
                raise Corrupt(f"record {rid.hex()} does not decompress: {e}") from None
        if len(payload) != raw_len:
            raise Corrupt(f"record {rid.hex()} has length {len(payload)}, expected {raw_len}")
        return payload
