"""Chunk encoding and the chunk store's write side: bytes round-trip exactly, damage is refused,
and catalog rows for new chunks follow the orphan rules (a live row is never moved)."""
from __future__ import annotations

import os

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from archive.catalog import models as m
from archive.codec import FAST_LEVEL, FLAG_AEAD, FLAG_ZSTD, PROBE, ZSTD_LEVEL, Codec
from archive.errors import Corrupt
from archive.keys import MasterKey
from archive.packs import T_CHUNK
from archive.store import ChunkStore

TEXT = b"".join(b"line %d of a log file, status=ok latency=%dms\n" % (i, i % 97) for i in range(3000))


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def codec(request) -> Codec:
    return Codec(MasterKey.generate(request.param))


def _roundtrip(codec: Codec, data: bytes) -> tuple[int, bytes]:
    cid = codec.chunk_id(data)
    flags, payload = codec.encode(T_CHUNK, cid, data)
    assert codec.decode(T_CHUNK, cid, flags, payload, len(data)) == data
    return flags, payload


def test_text_is_compressed_and_random_is_stored_as_is(codec):
    flags, payload = _roundtrip(codec, TEXT)
    assert flags & FLAG_ZSTD and len(payload) < len(TEXT) // 4
    rnd = os.urandom(200_000)
    flags, payload = _roundtrip(codec, rnd)
    assert not flags & FLAG_ZSTD
    assert len(payload) == len(rnd) + (28 if codec.key.encrypted else 0)     # nonce + tag only
    assert bool(flags & FLAG_AEAD) == codec.key.encrypted


def test_random_head_with_text_body_is_stored_either_way_and_reads_back(codec):
    # the probe looks at the head only: a wrong guess may cost ratio, never bytes
    _roundtrip(codec, os.urandom(4096) + TEXT)
    _roundtrip(codec, TEXT[:4096] + os.urandom(100_000))


@settings(max_examples=40, deadline=None)
@given(data=st.one_of(st.binary(max_size=3000), st.builds(lambda n, b: b * n, st.integers(1, 20000), st.binary(min_size=1, max_size=8))))
def test_any_bytes_round_trip(data):
    for enc in (False, True):
        _roundtrip(Codec(MasterKey.generate(enc)), data)


def test_a_flipped_payload_byte_or_a_swapped_id_is_refused():
    codec = Codec(MasterKey.generate(True))
    cid = codec.chunk_id(TEXT)
    flags, payload = codec.encode(T_CHUNK, cid, TEXT)
    bad = bytearray(payload)
    bad[len(bad) // 2] ^= 1
    with pytest.raises(Corrupt):
        codec.decode(T_CHUNK, cid, flags, bytes(bad), len(TEXT))
    with pytest.raises(Corrupt):
        codec.decode(T_CHUNK, bytes(32), flags, payload, len(TEXT))
    with pytest.raises(Corrupt):
        codec.decode(T_CHUNK, cid, flags, payload, len(TEXT) - 1)


def _rows(repo) -> dict[bytes, tuple]:
    with repo.catalog.session() as s:
        return {r[0]: tuple(r[1:]) for r in s.execute(select(
            m.Chunk.id, m.Pack.name, m.Chunk.offset, m.Chunk.length, m.Chunk.raw_len, m.Chunk.orphaned_at)
            .join(m.Pack, m.Pack.id == m.Chunk.pack, isouter=True))}


def test_register_adds_rows_replaces_orphans_and_never_moves_a_live_row(repo):
    a, b, c = (bytes([i]) * 32 for i in (1, 2, 3))
    with repo.catalog.write() as s:
        # a batch may name one chunk twice (two uploads shared it): one row, the first copy
        ChunkStore.register_chunks(s, [(a, "p1", 10, 100, 90), (b, "p1", 110, 200, 190), (a, "p2", 5, 100, 90)])
    assert _rows(repo) == {a: ("p1", 10, 100, 90, None), b: ("p1", 110, 200, 190, None)}
    with repo.catalog.write() as s:
        s.execute(update(m.Chunk).where(m.Chunk.id == b).values(orphaned_at=123))
    with repo.catalog.write() as s:
        ChunkStore.register_chunks(s, [(a, "p3", 1, 100, 90), (b, "p3", 2, 201, 190), (c, "p3", 3, 50, 40)])
    assert _rows(repo) == {a: ("p1", 10, 100, 90, None),          # live: the stored copy stays
                           b: ("p3", 2, 201, 190, None),          # orphan: the fresh copy takes over
                           c: ("p3", 3, 50, 40, None)}
    # a row without a pack (recover met a reference to a chunk no pack holds) is filled in
    d = bytes([4]) * 32
    with repo.catalog.write() as s:
        s.execute(m.Chunk.__table__.insert().values(id=d, pack=None, offset=0, length=0, raw_len=0))
    assert _rows(repo)[d] == (None, 0, 0, 0, None)
    assert repo.store.existing([d]) == set()                   # not reused: its bytes are stored again
    with repo.catalog.write() as s:
        ChunkStore.register_chunks(s, [(d, "p4", 7, 60, 50)])
    assert _rows(repo)[d] == ("p4", 7, 60, 50, None)
    assert repo.store.existing([d]) == {d}


def test_store_batch_writes_each_new_chunk_once_and_reads_back(repo):
    store = repo.store
    chunks = [TEXT, os.urandom(70_000), TEXT, b"x" * 5000]
    seen: dict = {}
    refs, new = store.store_batch(chunks, seen)
    assert [n for _, n in refs] == [len(c) for c in chunks]
    assert len(new) == 3 and refs[0][0] == refs[2][0]
    refs2, new2 = store.store_batch(chunks[:2], seen)       # this upload has them already
    assert new2 == [] and refs2 == refs[:2]
    store.sync()
    with repo.catalog.write() as s:
        ChunkStore.register_chunks(s, new)
    assert store.store_batch([TEXT], {})[1] == []            # the catalog has it now
    for (cid, _), data in zip(refs, chunks):
        assert store.load(cid, verify=True) == data


def test_a_chunk_whose_head_looks_incompressible_is_still_compressed(codec):
    # zip/jar members: the probe of the head sees compressed bytes, the rest still shrinks; the
    # fast level runs over the whole chunk instead of storing it raw
    data = os.urandom(4096) + TEXT
    flags, payload = _roundtrip(codec, data)
    assert flags & FLAG_ZSTD and len(payload) < len(data) // 2


def test_incompressible_chunks_are_stored_raw_and_read_back_identical(codec):
    for n in (4 * PROBE + 1, 65_536, 262_144):
        data = os.urandom(n)
        flags, payload = _roundtrip(codec, data)
        assert not flags & FLAG_ZSTD
        if codec.key.encrypted:
            assert len(payload) == n + 28
        else:
            assert payload == data


def test_frames_of_either_level_decode_with_any_codec():
    # the level is not part of the format: a chunk written at level 3 by an older version and
    # one written at the fast level both decode with a codec of the same key
    key = MasterKey.generate(True)
    for level in (ZSTD_LEVEL, FAST_LEVEL):
        frame = zstandard.ZstdCompressor(level=level).compress(TEXT)
        cid = Codec(key).chunk_id(TEXT)
        nonce = bytes(12)
        sealed = nonce + AESGCM(key.enc_key).encrypt(nonce, frame, bytes([T_CHUNK]) + cid)
        assert Codec(key).decode(T_CHUNK, cid, FLAG_ZSTD | FLAG_AEAD, sealed, len(TEXT)) == TEXT
