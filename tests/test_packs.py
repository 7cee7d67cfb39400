"""Pack records: a damaged record costs that record only; parsing resynchronises on the next one."""
from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archive.packs import (PACK_HEADER, PACK_MAGIC, REC, REC_MAGIC, T_CHUNK, T_TXN, PackDir, PackWriter,
                           pack_record, parse_pack)


def _record(rtype: int, rid: bytes, payload: bytes) -> bytes:
    return pack_record(rtype, rid, 0, len(payload), payload)


def _pack(payloads: list[bytes]) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """A pack image and (offset, end, rid) of each record."""
    out, where = bytearray(PACK_MAGIC + bytes(16)), []
    for i, p in enumerate(payloads):
        rid = i.to_bytes(4, "big") * 8
        start = len(out)
        out += _record(T_CHUNK if i % 2 else T_TXN, rid, p)
        where.append((start, len(out), rid))
    return bytes(out), where


def _parse(buf: bytes):
    damage: list = []
    recs = list(parse_pack(buf, "p", damage=damage))
    return recs, damage


def test_an_intact_pack_parses_without_damage():
    buf, where = _pack([b"a" * 10, b"b" * 100, b"", b"c" * 3])
    recs, damage = _parse(buf)
    assert [(r.offset, r.rid, r.payload) for r in recs] == [(s, rid, buf[s + REC.size:e]) for s, e, rid in where]
    assert damage == []


def test_a_flipped_payload_byte_loses_that_record_only():
    buf, where = _pack([os.urandom(300) for _ in range(5)])
    bad = bytearray(buf)
    bad[where[2][0] + REC.size + 7] ^= 0x01
    recs, damage = _parse(bytes(bad))
    assert [r.offset for r in recs] == [w[0] for i, w in enumerate(where) if i != 2]
    assert [(d.start, d.end, d.torn) for d in damage] == [(where[2][0], where[2][1], False)]
    assert "checksum" in damage[0].reason


def test_flipped_header_fields_lose_that_record_only():
    buf, where = _pack([os.urandom(200) for _ in range(4)])
    fields = {"magic": 0, "type": 4, "id": 10, "payload_len": 4 + 1 + 1 + 32 + 4, "crc": REC.size - 4}
    for name, at in fields.items():
        bad = bytearray(buf)
        bad[where[1][0] + at] ^= 0x40
        recs, damage = _parse(bytes(bad))
        assert [r.offset for r in recs] == [where[0][0], where[2][0], where[3][0]], name
        assert len(damage) == 1 and damage[0].start == where[1][0] and not damage[0].torn, name


def test_a_damaged_pack_header_is_reported_and_its_records_still_read():
    buf, where = _pack([b"x" * 50, b"y" * 50])
    bad = bytearray(buf)
    bad[3] ^= 0xFF
    recs, damage = _parse(bytes(bad))
    assert len(recs) == 2
    assert [(d.start, d.end, d.torn) for d in damage] == [(0, PACK_HEADER, False)]
    assert "header" in damage[0].reason


def test_a_torn_tail_is_told_apart_from_damage():
    buf, where = _pack([b"x" * 50, b"y" * 500])
    for cut in (where[1][0] + 3, where[1][0] + REC.size + 100):
        recs, damage = _parse(buf[:cut])
        assert len(recs) == 1 and len(damage) == 1 and damage[0].torn
    recs, damage = _parse(buf + bytes(4096))               # zeros a filesystem left after a crash
    assert len(recs) == 2 and len(damage) == 1 and damage[0].torn
    recs, damage = _parse(PACK_MAGIC[:5])                  # a pack whose creation was interrupted
    assert recs == [] and damage[0].torn


def test_scan_and_writer_agree_on_disk(tmp_path):
    pd = PackDir(tmp_path)
    w = PackWriter(pd)
    locs = [w.append(T_CHUNK, bytes([i]) * 32, 0, 5, b"hello") for i in range(3)]
    w.close()
    damage: list = []
    recs = list(pd.scan(locs[0][0], damage=damage))
    assert [r.offset for r in recs] == [loc[1] for loc in locs] and damage == []
    path = pd.path(locs[0][0])
    raw = bytearray(path.read_bytes())
    raw[locs[1][1] + REC.size] ^= 1
    path.write_bytes(bytes(raw))
    recs = list(pd.scan(locs[0][0], damage=damage))
    assert [r.offset for r in recs] == [locs[0][1], locs[2][1]] and len(damage) == 1


@settings(max_examples=150, deadline=None)
@given(payloads=st.lists(st.binary(min_size=0, max_size=120), min_size=1, max_size=8),
       flip=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_single_flipped_bit_costs_at_most_the_record_it_hits(payloads, flip, bit):
    buf, where = _pack(payloads)
    pos = flip % len(buf)
    bad = bytearray(buf)
    bad[pos] ^= 1 << bit
    recs, damage = _parse(bytes(bad))
    got = {(r.offset, r.rid, r.payload) for r in recs}
    originals = {(s, rid, buf[s + REC.size:e]) for s, e, rid in where}
    assert got <= originals                                 # never a record that was not written
    hit = [w for w in where if w[0] <= pos < w[1]]
    assert got >= originals - {(s, rid, buf[s + REC.size:e]) for s, e, rid in hit}
    if hit or pos < len(PACK_MAGIC):
        assert damage and not any(d.torn for d in damage)


@settings(max_examples=100, deadline=None)
@given(payloads=st.lists(st.binary(min_size=0, max_size=120), min_size=1, max_size=6), cut=st.integers(min_value=0))
def test_a_truncated_pack_keeps_every_complete_record(payloads, cut):
    buf, where = _pack(payloads)
    n = cut % (len(buf) + 1)
    recs, damage = _parse(buf[:n])
    assert [r.offset for r in recs] == [s for s, e, _ in where if e <= n]
    assert all(d.torn for d in damage)


def test_records_of_older_packs_without_a_header_crc_still_parse():
    payload = b"older record"
    old = REC.pack(REC_MAGIC, T_CHUNK, 0, b"o" * 32, len(payload), len(payload), zlib.crc32(payload)) + payload
    recs, damage = _parse(PACK_MAGIC + bytes(16) + old)
    assert [r.payload for r in recs] == [payload] and damage == []


@settings(max_examples=100, deadline=None)
@given(garbage=st.binary(min_size=0, max_size=400))
def test_garbage_is_reported_and_never_taken_for_a_record(garbage):
    recs, damage = _parse(PACK_MAGIC + bytes(16) + garbage)
    assert recs == [] or REC_MAGIC in garbage
    assert bool(damage) == bool(garbage)


def test_background_flushes_keep_every_record_and_a_failed_one_fails_the_next_sync(tmp_path, monkeypatch):
    """A local pack is fsynced in the background as it grows; an error of such an fsync is told
    once by the kernel, so it must fail the next sync() (nothing acknowledged on a lost write)
    and that pack takes no more appends."""
    import errno
    import threading

    import archive.packs as packs
    from archive.errors import NoSpace

    monkeypatch.setattr(packs, "FLUSH_EVERY", 1000)
    pd = PackDir(tmp_path)
    w = PackWriter(pd)
    locs = [w.append(T_CHUNK, bytes([i]) * 32, 0, 600, bytes([i]) * 600) for i in range(20)]
    w.sync()
    assert [r.payload for r in pd.scan(locs[0][0])] == [bytes([i]) * 600 for i in range(20)]

    failed = threading.Event()
    sink = w._f
    real_sync = type(sink).sync

    def sync_fails_in_background(self):
        if threading.current_thread().name == "pack-flush" and not failed.is_set():
            failed.set()
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real_sync(self)

    monkeypatch.setattr(type(sink), "sync", sync_fails_in_background)
    first = w.append(T_CHUNK, b"a" * 32, 0, 2000, b"a" * 2000)       # starts a background fsync
    assert failed.wait(10)
    w._flusher.join(10)
    with pytest.raises(NoSpace):
        w.sync()
    nxt = w.append(T_CHUNK, b"b" * 32, 0, 5, b"after")
    assert nxt[0] != first[0]                                          # a fresh pack
    w.sync()
    w.close()
    assert [r.payload for r in pd.scan(nxt[0])] == [b"after"]


def test_a_new_pack_and_a_meta_record_have_their_folder_entries_synced(tmp_path, monkeypatch):
    """A pack's bytes fsynced under a name that is not durable are lost on a power cut, so the
    first sync of a new pack fsyncs its fan-out folder and packs/ (only the first), and put_meta
    fsyncs the repository folder after its rename."""
    import archive.packstore as packstore
    synced: list = []
    real = packstore.fsync_dir
    monkeypatch.setattr(packstore, "fsync_dir", lambda p: (synced.append(os.fspath(p)), real(p)))
    store = packstore.LocalPackStore(tmp_path)
    sink = store.create("ab" + "0" * 30)
    sink.write(b"x" * 100)
    assert synced == []
    sink.sync()
    assert synced == [str(tmp_path / "packs" / "ab"), str(tmp_path / "packs")]
    sink.write(b"y")
    sink.sync()                                        # the names are durable already
    assert len(synced) == 2
    sink.close()
    again = store.create("ab" + "0" * 30)              # an existing pack reopened: nothing new
    again.sync()
    again.close()
    assert len(synced) == 2
    store.put_meta("config.json", b"{}")
    assert synced[2:] == [str(tmp_path)]
