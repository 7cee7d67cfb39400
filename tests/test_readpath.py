"""The lean read path (archive/readpath.py): block reads, verification, tree restore.

What a user sees: the exact bytes of every version, sequential or random access, plain or
encrypted; a flipped byte anywhere in a chunk record is an error, never different bytes; a tree
restore writes every file with its bytes and mtime and leaves no half-written file.
"""
from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings, strategies as st

from archive import Origin, Repository
from archive.codec import Codec
from archive.errors import Corrupt
from archive.keys import MasterKey
from archive.packs import REC, T_CHUNK, pack_record
from archive import readpath

from conftest import put_bytes


@pytest.fixture(scope="module", params=["plain", "encrypted"])
def _repo(request, tmp_path_factory):
    """One repository of each kind for the module (creating one costs a scrypt); every test
    works in a folder of its own, and the damaged files hold data no other test writes."""
    enc = request.param == "encrypted"
    r = Repository.init(tmp_path_factory.mktemp("repo") / "r", password="pw" if enc else None, encrypt=enc)
    r.add_share("s")
    yield r
    r.close()


@pytest.fixture
def efs(_repo, request):
    fs = _repo.share("s", origin=Origin("test"))
    base = "/" + request.node.name.replace("[", "-").replace("]", "")
    fs.mkdir(base)
    return _Sub(fs, base)


class _Sub:
    """The ShareFS seen from a folder of its own (paths are prefixed)."""

    def __init__(self, fs, base: str):
        self.fs, self.base, self.repo = fs, base, fs.repo

    def __getattr__(self, name):
        attr = getattr(self.fs, name)
        if name in ("open_read", "open_write", "stat", "mkdir", "exists"):
            return lambda path, *a, **k: attr(self.base + path, *a, **k)
        return attr


def _data(n: int, seed: int = 1) -> bytes:
    """Half incompressible (stored raw), half text (stored zstd): both decode paths."""
    rnd = random.Random(seed)
    half = rnd.randbytes(n // 2)
    text = b"".join(b"line %d of the file\n" % i for i in range(n // 20 + 1))[:n - len(half)]
    return half + text


def test_sequential_and_random_reads_return_the_exact_bytes(efs):
    data = _data(3 * 1024 * 1024 + 12345)
    put_bytes(efs, "/f.bin", data)
    r = efs.open_read("/f.bin")
    got = bytearray()
    while chunk := r.read(100_003):
        got += chunk
    assert bytes(got) == data
    rnd = random.Random(7)
    for _ in range(40):
        pos, n = rnd.randrange(len(data)), rnd.randrange(1, 300_000)
        r.seek(pos)
        assert r.read(n) == data[pos:pos + n]
        buf = bytearray(n)
        r.seek(pos)
        got_n = r.readinto(buf)
        assert bytes(buf[:got_n]) == data[pos:pos + n]
    r.seek(0)
    assert r.read() == data
    r.close()


def test_reads_interleaved_with_other_files_keep_their_bytes(efs):
    """Coalesced reads land in reused buffers (readpath.Buffers): a block one Reader holds
    decoded (views into its buffer for raw chunks) is never overwritten by another file's read."""
    a, b = random.Random(11).randbytes(3 << 20), random.Random(12).randbytes(3 << 20)
    put_bytes(efs, "/a", a)
    put_bytes(efs, "/b", b)
    ra = efs.open_read("/a")
    got = ra.read(100_000)                    # block 0 decoded, the next ones read ahead
    for _ in range(3):
        assert efs.open_read("/b").read() == b
    rb, got_b = efs.open_read("/b"), b""
    while chunk := ra.read(70_001):
        got += chunk
        got_b += rb.read(50_000)
    assert got == a
    assert got_b == b[:len(got_b)]


def test_one_chunk_and_empty_files(efs):
    put_bytes(efs, "/small", b"tiny file")
    put_bytes(efs, "/empty", b"")
    assert efs.open_read("/small").read() == b"tiny file"
    assert efs.open_read("/empty").read() == b""


def _flip_in_payload(repo, fs, path: str) -> None:
    """Flip one byte in the middle of the payload of the file's second chunk record."""
    from archive.streams import chunk_list
    entry = fs.stat(path)
    with repo.catalog.engine.connect() as c:
        vid = c.exec_driver_sql("SELECT id FROM versions WHERE node_id = ? AND number = ?",
                                (entry.node_id, entry.version)).scalar()
    cid = chunk_list(repo, vid)[1][1]
    pack, off, ln, _ = repo.store.location(cid)
    p = repo.store.packdir.path(pack)
    with open(p, "r+b") as f:
        f.seek(off + REC.size + (ln - REC.size) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))


@pytest.mark.parametrize("text", [False, True], ids=["raw-chunk", "zstd-chunk"])
def test_a_flipped_pack_byte_is_an_error_never_data(efs, text):
    data = (b"compressible text line\n" * 200_000) if text else random.Random(1003).randbytes(2 << 20)
    put_bytes(efs, "/f", data)
    _flip_in_payload(efs.repo, efs, "/f")
    r = efs.open_read("/f")
    with pytest.raises(Corrupt):
        while r.read(1 << 20):
            pass


class _NoPool:
    """A pool that refuses work: a sequential read of a local repository must not use one."""

    def submit(self, fn, *args):
        raise AssertionError(f"{getattr(fn, '__name__', fn)} handed to the pool")


def test_a_local_sequential_read_decodes_on_the_reading_thread(efs, monkeypatch):
    """The Reader's read-ahead of a local pack store is the kernel's: every block is decoded on
    the reading thread (no pool future, no hand-off), and a block further on is still verified:
    a flipped byte there is an error, never data."""
    data = random.Random(2024).randbytes(5 << 20)
    put_bytes(efs, "/seq", data)
    put_bytes(efs, "/bad", data[::-1])
    _flip_in_payload(efs.repo, efs, "/bad")
    monkeypatch.setattr(efs.repo.store, "pool", _NoPool())
    r, got = efs.open_read("/seq"), bytearray()
    while views := r.readviews(300_001):
        for v in views:
            got += v
    assert bytes(got) == data
    assert len(r._cache) <= 2                 # the decoded blocks a local Reader keeps
    r.seek(0)
    assert r.read() == data
    r = efs.open_read("/bad")
    r.seek(len(data) - (1 << 20))             # read the tail first: the damaged chunk is early
    assert r.read() == data[::-1][-(1 << 20):]
    r.seek(0)
    with pytest.raises(Corrupt):
        while r.readviews(1 << 20):
            pass


def test_tree_restore_writes_bytes_and_mtimes_and_streams_large_files(efs, tmp_path, monkeypatch):
    monkeypatch.setattr(readpath, "BATCH_FILES", 5)          # several batches
    monkeypatch.setattr(readpath, "BATCH_FILE_MAX", 200_000)  # and the streamed path
    files = {}
    for i in range(16):
        d = f"/t/d{i % 4}"
        files[f"{d}/f{i}"] = _data(random.Random(i).randrange(0, 40_000), seed=i)
    files["/t/big"] = _data(700_000, seed=99)
    files["/t/empty"] = b""
    for p, data in files.items():
        efs.mkdir(p.rsplit("/", 1)[0], parents=True) if not efs.exists(p.rsplit("/", 1)[0]) else None
        with efs.open_write(p, mtime=1_700_000_000 + len(data)) as w:
            w.write(data)
    streamed = []
    out = tmp_path / "out"
    n = readpath.restore_tree(efs.fs, efs.base + "/t", out, None,
                              lambda e, target: (streamed.append(e.name),
                                                 target.write_bytes(efs.open_entry(e).read())))
    assert n == len(files)
    assert streamed == ["big"]
    for p, data in files.items():
        local = out / p[len("/t/"):]
        assert local.read_bytes() == data
        if p != "/t/big":
            assert local.stat().st_mtime == 1_700_000_000 + len(data)
    assert not [x for x in out.rglob(".*partial")]


def test_restore_without_a_reader_streams_large_files_and_reports_their_progress(efs, tmp_path, monkeypatch):
    monkeypatch.setattr(readpath, "BATCH_FILE_MAX", 200_000)
    monkeypatch.setattr(readpath, "RUNS_AHEAD", 1)
    big, small = _data(1_500_000, seed=3), _data(5_000, seed=4)
    efs.mkdir("/p")
    put_bytes(efs, "/p/big", big)
    put_bytes(efs, "/p/small", small)
    seen: dict = {}

    class Bar:
        def __init__(self, e):
            self.name = e.name
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return False
        def update(self, n):
            seen[self.name] = seen.get(self.name, 0) + n
    n = readpath.restore(readpath.TreeSource(efs.fs), efs.base + "/p", tmp_path / "o", progress=Bar)
    assert n == 2
    assert (tmp_path / "o" / "big").read_bytes() == big and (tmp_path / "o" / "small").read_bytes() == small
    assert seen == {"big": len(big)}


def test_tree_restore_of_a_damaged_file_fails_and_leaves_no_partial_file(efs, tmp_path):
    efs.mkdir("/t")
    put_bytes(efs, "/t/a", random.Random(1005).randbytes(300_000))
    _flip_in_payload(efs.repo, efs, "/t/a")
    out = tmp_path / "out"
    with pytest.raises(Corrupt):
        readpath.restore_tree(efs.fs, efs.base + "/t", out, None, lambda e, t: None)
    assert list(out.iterdir()) == []


def test_runs_coalesce_adjacent_records_of_one_pack_only():
    rows = [(0, 10, b"a", "p", 100, 50, 10), (10, 10, b"b", "p", 150, 50, 10),
            (20, 10, b"c", "q", 200, 50, 10), (30, 10, b"d", "q", 250 + readpath.RUN_GAP + 1, 50, 10),
            (40, 10, b"e", None, None, None, None), (50, 10, b"f", "q", 0, 50, 10)]
    assert [[r[2] for r in run] for run in readpath.runs(rows)] == [[b"a", b"b"], [b"c"], [b"d"], [b"e"], [b"f"]]
    assert [len(x) for x in readpath.runs(rows[:2], limit=60)] == [1, 1]


@pytest.mark.parametrize("encrypted", [False, True])
@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), pos=st.integers(min_value=0), bit=st.integers(0, 7),
       compressible=st.booleans())
def test_decode_record_returns_the_plaintext_or_raises(encrypted, data, pos, bit, compressible):
    """Any single flipped bit of a chunk record (header or payload) is Corrupt, never other bytes."""
    codec = Codec(MasterKey.generate(encrypted))
    plain = data * 20 if compressible else data
    cid = codec.chunk_id(plain)
    flags, payload = codec.encode(T_CHUNK, cid, plain)
    rec = pack_record(T_CHUNK, cid, flags, len(plain), payload)
    assert bytes(readpath.decode_record(codec, encrypted, memoryview(rec), cid, len(plain))) == plain
    # decoded into a caller's buffer (what load_run does for a run)
    got, used = readpath.decode_record(codec, encrypted, memoryview(rec), cid, len(plain),
                                       memoryview(bytearray(len(rec) + len(plain))))
    assert bytes(got) == plain and used <= len(rec) + len(plain)
    bad = bytearray(rec)
    i = pos % len(bad)
    bad[i] ^= 1 << bit
    try:
        got = readpath.decode_record(codec, encrypted, memoryview(bytes(bad)), cid, len(plain),
                                     memoryview(bytearray(len(rec) + len(plain))))[0]
    except Corrupt:
        pass
    else:
        assert bytes(got) == plain
    try:
        got = bytes(readpath.decode_record(codec, encrypted, memoryview(bytes(bad)), cid, len(plain)))
    except Corrupt:
        return
    # Not an error: then the flip hit what this path does not read (the CRC field, unused flag
    # bits) or a bit of the zstd frame that decodes to the same bytes (the keyed BLAKE3 of the
    # result is what proves them); either way the bytes must be exactly the plaintext.
    assert got == plain


@pytest.mark.parametrize("which", ["last", "middle"])
def test_a_chunk_list_with_rows_missing_is_corrupt_not_a_hang(efs, which):
    """A damaged catalog (chunk-list rows lost) must fail the read, never spin or return other
    bytes: the Reader used to loop for ever when no row covered the read position."""
    from sqlalchemy import text
    data = random.Random(1006).randbytes(600_000)
    put_bytes(efs, "/gap", data)
    with efs.repo.catalog.engine.begin() as c:
        vid = c.execute(text("SELECT max(id) FROM versions WHERE size = 600000")).scalar()
        offs = [r[0] for r in c.execute(text(
            "SELECT offset FROM chunk_lists WHERE version_id = :v ORDER BY offset"), {"v": vid})]
        assert len(offs) >= 3
        gone = offs[-1] if which == "last" else offs[len(offs) // 2]
        c.execute(text("DELETE FROM chunk_lists WHERE version_id = :v AND offset = :o"),
                  {"v": vid, "o": gone})
    with efs.open_read("/gap") as f:
        f.seek(gone)
        with pytest.raises(Corrupt):
            f.read(1000)
    with pytest.raises(Corrupt):
        with efs.open_read("/gap") as f:
            f.read()


def test_a_read_across_a_lost_chunk_list_row_is_corrupt_not_other_bytes(efs):
    """One read that starts before a lost row and ends after it (the rows around it are in one
    block): Corrupt, never the next chunk's bytes shifted into the hole, also through readviews
    and readinto."""
    from sqlalchemy import text
    rnd = random.Random(1008)     # text: small records, so the lost one is within RUN_GAP
    words = [rnd.randbytes(rnd.randint(2, 9)).hex().encode() for _ in range(500)]
    data = b" ".join(rnd.choice(words) for _ in range(200_000))[:900_000]
    put_bytes(efs, "/hole", data)
    with efs.repo.catalog.engine.begin() as c:
        vid = c.execute(text("SELECT max(id) FROM versions WHERE size = 900000")).scalar()
        offs = [r[0] for r in c.execute(text(
            "SELECT offset FROM chunk_lists WHERE version_id = :v ORDER BY offset"), {"v": vid})]
        assert len(offs) >= 4
        gone = offs[len(offs) // 2]
        c.execute(text("DELETE FROM chunk_lists WHERE version_id = :v AND offset = :o"),
                  {"v": vid, "o": gone})
    for how in ("read", "readviews", "readinto"):
        with efs.open_read("/hole") as f:
            with pytest.raises(Corrupt):
                if how == "read":
                    f.read(gone + 1000)
                elif how == "readviews":
                    f.readviews(gone + 1000)
                else:
                    f.readinto(bytearray(gone + 1000))
            f.seek(0)
            assert f.read(gone) == data[:gone]


def test_a_seek_back_into_a_window_end_block_reads_the_whole_longer_block(tmp_path):
    """The decoded-block cache outlives a window, and a window's last block is cut at the
    window's end.  Read that short block sequentially, move on into the next window, then seek
    back into it: the reloaded window's block at that offset holds more rows.  Keyed by offset
    alone, the short cached block stood in for the long one and the read failed (IndexError,
    an NFS READ's "system error"); now the bytes are right."""
    repo = Repository.init(tmp_path / "r", chunk_avg=4096)     # small chunks: a window is ~2 MiB
    repo.add_share("s")
    fs = repo.share("s")
    data = os.urandom(8 << 20)
    with fs.open_write("/f") as w:
        w.write(data)
    r = fs.open_entry(fs.stat("/f"))
    r.seek(0)
    r.readviews(1)                                    # the first window
    first, _ = r._blocks[-1]
    k = r._win[first][0]                              # its last, cut-short block
    e = r._win[-1][0] + r._win[-1][1]                 # the window's end
    assert 0 < k < e < len(data)
    for _ in range(2):                                # the second pass is sequential: cached by block
        r.seek(k)
        assert b"".join(r.readviews(e - k)) == data[k:e]
    r.seek(e)
    assert b"".join(r.readviews(4096)) == data[e:e + 4096]   # the next window
    for start in (k, k + 1):
        r.seek(start)
        got = b"".join(r.readviews(e - k + 200_000))
        assert got == data[start:start + len(got)] and len(got) > e - start
    r.close()
    repo.close()
