"""Per-repository zstd dictionaries: trained once from the first compressible chunks a writer
sees, stored encrypted beside keys.json, named by the id every zstd frame that used one carries.

Why: a 64 KiB chunk compressed on its own starts with an empty history, which costs text ~9 %
against restic's 1 MiB blobs; a dictionary trained on the repository's own data gives every
chunk that history back (docs/benchmarks.md, "text9").

Records in the pack store (put_meta / get_meta, so a local folder and an S3 bucket hold them
alike and every node and `recover` find them):
    dict-<id as 8 hex digits>   one dictionary, immutable once written (the envelope below)
    dict-current                the id (8 hex digits) new chunks are compressed with
Envelope: MAGIC, flags (1 = AES-256-GCM), the 4-byte id, then the zstd-compressed dictionary as
either nonce + ciphertext (the master key's AEAD key, the magic and id as associated data) or
plain followed by a keyed BLAKE3 tag (the id key): a damaged or swapped dictionary is refused,
never used.

Order of the durable steps (a kill -9 between any two leaves a readable repository):
    1. dict-<id> is written and fsynced (with its folder entry)
    2. dict-current names it
    3. only then do chunks compressed with it reach a pack, and a commit reference them.
A chunk names its dictionary in its zstd frame header (dictID), inside the AEAD payload: the
catalog and the pack format are unchanged, and chunks written before (dictID 0) read as
before.  Two writers that train at the same time each write their own dict-<id> (ids are
random and checked for absence first) and one of them wins dict-current: every chunk still
names a dictionary that exists.
"""
from __future__ import annotations

import logging
import os
import threading

import blake3
import zstandard

from .durable import fsync_dir
from .errors import Corrupt
from .keys import MasterKey

log = logging.getLogger(__name__)

MAGIC = b"EAZD\x01"
F_AEAD = 1
CURRENT = "dict-current"
#: bytes of compressible chunks gathered before training (the first chunks a writer sees)
SAMPLE_BYTES = int(os.environ.get("EDGE_ARCHIVE_DICT_SAMPLE", 4 * 1024 * 1024))
MIN_SAMPLES = 8
#: dictionary size (at most an eighth of the sample): of the bench text at level 3, 110 KiB stored
#: 0.343, 256 KiB 0.336, 512 KiB 0.333, 1 MiB 0.332 (docs/benchmarks.md, "text9")
DICT_SIZE = 512 * 1024
#: How chunks are compressed with a dictionary at the default level 3 (text11): level 3's own
#: strategy (dfast), window (2 MiB) and long-hash table (2^17), but a 2^15 short-hash table
#: (level 3 has 2^16) and 6-byte minimum matches (level 3: 5).  With a 512 KiB dictionary zstd
#: copies the dictionary's tables into the context for every 64 KiB frame and then searches
#: them; the smaller table is cheaper to copy and to miss in, and the longer minimum match wins
#: back what it loses on text: on the bench's text 0.3329 of raw vs level 3's 0.3327 for ~11 %
#: less compression CPU (offline, one core, interleaved runs; docs/benchmarks.md, "text11").
#: Source code likes 5-byte matches: the sdists corpus stores +1.6 % (chunk bytes) with these,
#: versions +0.2 %; min_match 5 with the same tables is the alternative (text +0.4 %, sdists 0).
#: Any other level keeps that level's parameters.  The frames are ordinary zstd frames (dictID
#: and content size in the header, 2 MiB window): decode is unchanged.
DICT_LEVEL3 = dict(window_log=21, hash_log=17, chain_log=15, search_log=1, min_match=6,
                   target_length=0, strategy=zstandard.STRATEGY_DFAST)


def compression_params(level: int) -> "zstandard.ZstdCompressionParameters | None":
    """Parameters for compressing with a dictionary at `level` (None: the level's own)."""
    if level != 3:
        return None
    return zstandard.ZstdCompressionParameters(write_content_size=1, write_dict_id=1, **DICT_LEVEL3)


#: fastcover parameters without zstd's search over k/d (that took 2-12 s, this ~0.15 s on 4 MiB)
TRAIN = {"k": 200, "d": 8}
MAX_TRIES = 3


def meta_name(dict_id: int) -> str:
    return f"dict-{dict_id:08x}"


def seal(key: MasterKey, dict_id: int, data: bytes) -> bytes:
    """The stored record: the dictionary zstd-compressed (512 KiB of text snippets become
    ~0.2 MiB: 2 % of a 23 MB repository otherwise), then sealed."""
    ident = dict_id.to_bytes(4, "big")
    data = zstandard.ZstdCompressor(level=9).compress(data)
    if key.encrypted:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        nonce = os.urandom(12)
        return MAGIC + bytes([F_AEAD]) + ident + nonce + AESGCM(key.enc_key).encrypt(nonce, data, MAGIC + ident)
    return MAGIC + b"\0" + ident + data + blake3.blake3(MAGIC + ident + data, key=key.id_key).digest()


def unseal(key: MasterKey, dict_id: int, blob: bytes) -> bytes:
    """The dictionary's bytes, or Corrupt."""
    ident = dict_id.to_bytes(4, "big")
    head = len(MAGIC) + 5
    if len(blob) < head + 32 or blob[:len(MAGIC)] != MAGIC or blob[len(MAGIC) + 1:head] != ident:
        raise Corrupt(f"compression dictionary {dict_id:08x} is damaged (bad header)")
    body = blob[head:]
    if blob[len(MAGIC)] & F_AEAD:
        if not key.encrypted:
            raise Corrupt(f"compression dictionary {dict_id:08x} is encrypted but the repository key is not")
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        try:
            data = AESGCM(key.enc_key).decrypt(body[:12], body[12:], MAGIC + ident)
        except InvalidTag:
            raise Corrupt(f"compression dictionary {dict_id:08x} failed authentication") from None
    else:
        if key.encrypted:
            raise Corrupt(f"compression dictionary {dict_id:08x} is not encrypted in an encrypted repository")
        data, tag = body[:-32], body[-32:]
        if blake3.blake3(MAGIC + ident + data, key=key.id_key).digest() != tag:
            raise Corrupt(f"compression dictionary {dict_id:08x} fails its checksum")
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=16 << 20)
    except zstandard.ZstdError as e:
        raise Corrupt(f"compression dictionary {dict_id:08x} does not decompress: {e}") from None


class Dictionaries:
    """The dictionaries of one repository: loaded by id on demand (readers), and the one new
    chunks use, trained from this writer's first compressible chunks when the repository has
    none.  Safe to share between threads."""

    def __init__(self, store, key: MasterKey, level: int):
        self.store = store
        self.key = key
        self.level = level
        #: what chunks are compressed with once there is a dictionary (None: plain `level`)
        self.params = compression_params(level)
        self._lock = threading.RLock()      # _load_current calls get
        self._by_id: dict[int, zstandard.ZstdCompressionDict] = {}
        self._current: "zstandard.ZstdCompressionDict | None" = None
        self._looked = False                # dict-current was read once
        self._samples: list[bytes] = []
        self._sampled = 0
        self._tries = 0
        self._busy = False                  # one thread trains; the others go on without

    # -- reading ---------------------------------------------------------------------------------
    def get(self, dict_id: int) -> zstandard.ZstdCompressionDict:
        """The dictionary with this id, or Corrupt naming it."""
        d = self._by_id.get(dict_id)
        if d is not None:
            return d
        blob = self.store.get_meta(meta_name(dict_id)) if self.store is not None else None
        if blob is None:
            raise Corrupt(f"compression dictionary {dict_id:08x} ({meta_name(dict_id)}) is missing "
                          "from the repository")
        d = zstandard.ZstdCompressionDict(unseal(self.key, dict_id, blob))
        if d.dict_id() != dict_id:
            raise Corrupt(f"compression dictionary {meta_name(dict_id)} holds dictionary {d.dict_id():08x}")
        with self._lock:
            if dict_id not in self._by_id:
                # One round trip under the lock: it proves the dictionary loads, and builds its
                # decompression tables once (threads then share them read-only).
                probe = zstandard.ZstdCompressor(dict_data=d).compress(b"edge")
                if zstandard.ZstdDecompressor(dict_data=d).decompress(probe) != b"edge":
                    raise Corrupt(f"compression dictionary {meta_name(dict_id)} does not work")
                self._by_id[dict_id] = d
            return self._by_id[dict_id]

    # -- writing ---------------------------------------------------------------------------------
    def current(self, chunk) -> "zstandard.ZstdCompressionDict | None":
        """The dictionary to compress `chunk` (a compressible chunk) with; None while there is
        none, in which case the chunk may become a training sample."""
        d = self._current
        if d is not None or self.store is None:
            return d
        if not self._looked:
            self._load_current()
            if self._current is not None:
                return self._current
        if self._tries >= MAX_TRIES:
            return None
        with self._lock:
            if self._busy or self._current is not None:
                return self._current
            self._samples.append(bytes(chunk))
            self._sampled += len(chunk)
            if self._sampled < SAMPLE_BYTES or len(self._samples) < MIN_SAMPLES:
                return None
            samples, self._samples, self._sampled = self._samples, [], 0
            self._busy = True
        try:
            self._train(samples)
        finally:
            self._busy = False
        return None                         # this chunk goes without: it may be in the sample

    def compressor(self, d: zstandard.ZstdCompressionDict) -> zstandard.ZstdCompressor:
        """A compressor for chunks with `d` (one per thread: zstd contexts are not shared)."""
        if self.params is None:
            return zstandard.ZstdCompressor(level=self.level, dict_data=d)
        return zstandard.ZstdCompressor(dict_data=d, compression_params=self.params)

    def _precompute(self, d: zstandard.ZstdCompressionDict) -> None:
        """Build the dictionary's compression tables once, with the parameters `compressor`
        uses (zstd takes a precomputed dictionary's parameters for small frames)."""
        if self.params is None:
            d.precompute_compress(level=self.level)
        else:
            d.precompute_compress(compression_params=self.params)

    def _load_current(self) -> None:
        with self._lock:
            if self._looked:
                return
            try:
                raw = self.store.get_meta(CURRENT)
                if raw is not None:
                    d = self.get(int(raw.strip(), 16))
                    self._precompute(d)
                    self._current = d
            except (Corrupt, ValueError) as e:      # a writer without one trains another
                log.warning("not compressing with the repository's dictionary: %s", e)
            self._looked = True

    def _train(self, samples: list[bytes]) -> None:
        from . import faults
        self._tries += 1
        try:
            while True:
                dict_id = int.from_bytes(os.urandom(4), "big") % ((1 << 31) - 32768) + 32768
                if self.store.get_meta(meta_name(dict_id)) is None:
                    break
            size = min(DICT_SIZE, sum(map(len, samples)) // 8)
            d = zstandard.train_dictionary(size, samples, dict_id=dict_id, threads=1, **TRAIN)
            if d.dict_id() != dict_id:
                raise zstandard.ZstdError(f"trained dictionary has id {d.dict_id()}, wanted {dict_id}")
            self.store.put_meta(meta_name(dict_id), seal(self.key, dict_id, d.as_bytes()))
            _sync_folder(self.store)
            self.store.put_meta(CURRENT, b"%08x\n" % dict_id)
            _sync_folder(self.store)
            faults.point("dictionary")
        except Exception as e:      # no dictionary is never an error: chunks go without one
            log.warning("training the repository's compression dictionary failed: %s", e)
            return
        self._precompute(d)
        with self._lock:
            self._by_id[dict_id] = d
            self._current = d


def _sync_folder(store) -> None:
    """A local store's put_meta fsyncs the file and renames it: fsync the folder too, so the
    name survives a power cut before any chunk that needs it is committed."""
    from .packstore import LocalPackStore
    if not isinstance(store, LocalPackStore):
        return                  # an object store's PUT is durable when it returns
    fsync_dir(store.local_dir)
