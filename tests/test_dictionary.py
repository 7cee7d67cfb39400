"""The repository's zstd dictionary (archive/dictionary.py): chunks round-trip with and without
one, a chunk naming a dictionary the repository lacks is refused clearly, the dictionary is
stored encrypted and authenticated, reopened repositories (and `recover`, `check --read-data`,
the lean `get`) read chunks of every era, and a writer killed right after storing it leaves a
readable repository whose next writer uses it."""
from __future__ import annotations

import json
import random

import pytest

from archive import Repository
from archive import dictionary as dictmod
from archive.codec import FLAG_ZSTD, Codec
from archive.errors import Corrupt
from archive.keys import MasterKey
from archive.packs import T_CHUNK, T_TXN
from archive.packstore import LocalPackStore
from recover_helpers import DIED, FAULT, drop_catalog, snapshot

SAMPLE = 1 << 20
ENV = {"EDGE_ARCHIVE_DICT_SAMPLE": str(SAMPLE)}
WORDS = [("w%x" % i).encode() * (1 + i % 3) for i in range(3000)]


def text(n: int, seed: int) -> bytes:
    """Word soup with a skewed vocabulary: what a dictionary helps (and plain zstd less)."""
    rnd = random.Random(seed)
    out, size = [], 0
    while size < n:
        line = b" ".join(rnd.choices(WORDS, weights=[1 / (i + 1) for i in range(len(WORDS))], k=12)) + b"\n"
        out.append(line)
        size += len(line)
    return b"".join(out)[:n]


CHUNKS = [text(48 * 1024, s) for s in range(40)]          # 1.9 MiB: trains at SAMPLE


@pytest.fixture(autouse=True)
def _small_sample(monkeypatch):
    monkeypatch.setattr(dictmod, "SAMPLE_BYTES", SAMPLE)


def _trained(codec: Codec) -> list[tuple[bytes, int, bytes, bytes]]:
    """Feed CHUNKS through `codec`; returns (id, flags, payload, data) of each."""
    out = []
    for data in CHUNKS:
        cid = codec.chunk_id(data)
        flags, payload = codec.encode(T_CHUNK, cid, data)
        out.append((cid, flags, payload, data))
    return out


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_chunks_round_trip_before_and_after_the_dictionary(tmp_path, encrypted):
    key = MasterKey.generate(encrypted)
    store = LocalPackStore(tmp_path)
    codec = Codec(key, store=store)
    recs = _trained(codec)
    current = (tmp_path / "dict-current").read_text().strip()
    blob = (tmp_path / f"dict-{current}").read_bytes()
    # the sealed dictionary is compressed, and authenticated / encrypted by the master key
    assert dictmod.unseal(key, int(current, 16), blob) == codec.dictionaries._current.as_bytes()
    assert len(blob) < 0.6 * len(codec.dictionaries._current.as_bytes())
    plain = Codec(key)                          # no store: never trains, never uses one
    before = after = 0
    for i, (cid, flags, payload, data) in enumerate(recs):
        assert flags & FLAG_ZSTD
        assert codec.decode(T_CHUNK, cid, flags, payload, len(data)) == data
        fresh = Codec(key, store=store)         # a reopened repository: loads it by id
        assert fresh.decode(T_CHUNK, cid, flags, payload, len(data)) == data
        nf, np_ = plain.encode(T_CHUNK, cid, data)
        if i < 20:                              # the sample: compressed without
            before += 1
            assert len(payload) == len(np_)
        elif i > 21:
            after += 1
            assert len(payload) < 0.97 * len(np_), (i, len(payload), len(np_))
    assert before and after
    # transaction records never use it, and a Codec without a store keeps writing plain frames
    tf, tp = codec.encode(T_TXN, b"t" * 32, CHUNKS[0])
    assert plain.decode(T_TXN, b"t" * 32, tf, tp, len(CHUNKS[0])) == CHUNKS[0]
    cid = codec.chunk_id(CHUNKS[1])
    f2, p2 = plain.encode(T_CHUNK, cid, CHUNKS[1])
    assert codec.decode(T_CHUNK, cid, f2, p2, len(CHUNKS[1])) == CHUNKS[1]


def test_unknown_dictionary_id_is_a_clear_error_and_damage_is_refused(tmp_path):
    key = MasterKey.generate(True)
    codec = Codec(key, store=LocalPackStore(tmp_path / "a"))
    cid, flags, payload, data = _trained(codec)[-1]
    name = (tmp_path / "a" / "dict-current").read_text().strip()
    for other in (Codec(key), Codec(key, store=LocalPackStore(tmp_path / "b"))):
        with pytest.raises(Corrupt, match=f"dictionary {name}.*missing"):
            other.decode(T_CHUNK, cid, flags, payload, len(data))
    # a damaged dictionary is refused, not used
    (tmp_path / "b").mkdir(exist_ok=True)
    blob = bytearray((tmp_path / "a" / f"dict-{name}").read_bytes())
    blob[-5] ^= 1
    (tmp_path / "b" / f"dict-{name}").write_bytes(bytes(blob))
    with pytest.raises(Corrupt, match="failed authentication"):
        Codec(key, store=LocalPackStore(tmp_path / "b")).decode(T_CHUNK, cid, flags, payload, len(data))
    # another repository's dictionary (other key) is refused as well
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / f"dict-{name}").write_bytes((tmp_path / "a" / f"dict-{name}").read_bytes())
    with pytest.raises(Corrupt, match="failed authentication"):
        Codec(MasterKey.generate(True), store=LocalPackStore(tmp_path / "c")).decode(
            T_CHUNK, cid, flags, payload, len(data))


def test_a_reopened_repository_reads_old_chunks_and_keeps_its_dictionary(tmp_path):
    path = tmp_path / "repo"
    old = text(200_000, 99)
    with Repository.init(path, password="pw", encrypt=True) as r:
        r.add_share("s")
        fs = r.share("s")
        with fs.open_write("/old.txt") as w:            # before any dictionary
            w.write(old)
        assert not (path / "dict-current").exists()
        with fs.open_write("/big.txt") as w:            # trains one half-way
            for c in CHUNKS:
                w.write(c)
        name = (path / "dict-current").read_text().strip()
    with Repository.open(path, password="pw") as r:
        fs = r.share("s")
        assert fs.open_read("/old.txt").read() == old
        assert fs.open_read("/big.txt").read() == b"".join(CHUNKS)
        with fs.open_write("/new.txt") as w:
            w.write(text(300_000, 7))
        assert r.codec.dictionaries._current.dict_id() == int(name, 16)
        assert fs.open_read("/new.txt").read() == text(300_000, 7)
    # the second writer used the stored dictionary: no other was trained
    assert sorted(p.name for p in path.glob("dict-*")) == sorted(["dict-current", f"dict-{name}"])


def test_check_recover_and_lean_get_read_dictionary_chunks(cli):
    env = ENV
    cli("init", env=env)
    cli("share", "add", "s", env=env)
    big = b"".join(CHUNKS)
    cli("put", "-", "/s/big.txt", input=big, env=env)
    small = text(20_000, 5)
    cli("put", "-", "/s/small.txt", input=small, env=env)     # one chunk, with the dictionary
    assert (cli.repo_path / "dict-current").exists()
    assert cli("get", "/s/small.txt", "-", env=env).stdout == small       # the lean read path
    assert cli("get", "/s/big.txt", "-", env=env).stdout == big
    cli("check", "--read-data", env=env)
    live = snapshot(cli.repo_path)
    drop_catalog(cli.repo_path)
    p = cli("recover", env=env)
    assert b"LOST" not in p.stderr
    assert snapshot(cli.repo_path) == live
    assert cli("get", "/s/small.txt", "-", env=env).stdout == small
    # without its dictionary a chunk that needs it is reported, not returned wrong
    for f in cli.repo_path.glob("dict-*"):
        f.unlink()
    p = cli("check", "--read-data", ok=False, env=env)
    assert p.returncode != 0 and b"dictionary" in p.stdout + p.stderr


def test_killed_after_storing_the_dictionary_then_more_writes(cli):
    env = ENV
    cli("init", env=env)
    cli("share", "add", "s", env=env)
    cli("put", "-", "/s/a", input=b"a1", env=env)
    p = cli("put", "-", "/s/big.txt", input=b"".join(CHUNKS), ok=False, env={**env, FAULT: "dictionary"})
    assert p.returncode == DIED, p.stderr
    name = (cli.repo_path / "dict-current").read_text().strip()
    cli("check", "--read-data", env=env)
    assert json.loads(cli("ls", "/s", "--json", env=env).stdout)
    assert cli("get", "/s/a", "-", env=env).stdout == b"a1"
    assert cli("get", "/s/big.txt", "-", ok=False, env=env).returncode != 0     # never acknowledged
    big = b"".join(reversed(CHUNKS))
    cli("put", "-", "/s/big.txt", input=big, env=env)
    assert cli("get", "/s/big.txt", "-", env=env).stdout == big
    assert sorted(f.name for f in cli.repo_path.glob("dict-*")) == sorted(["dict-current", f"dict-{name}"])
    live = snapshot(cli.repo_path)
    drop_catalog(cli.repo_path)
    cli("recover", env=env)
    assert snapshot(cli.repo_path) == live
    cli("check", "--read-data", env=env)


def test_nodes_sharing_a_bucket_read_each_others_dictionaries_even_when_both_trained(s3, tmp_path):
    url = s3.url()
    bucket = url.split("/")[2]
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    a = Repository.init(url, catalog_url=catalog, cache=str(tmp_path / "cache-a"))
    a.add_share("s")
    b = Repository.open(url, catalog_url=catalog, cache=str(tmp_path / "cache-b"))
    first = text(30_000, 11)
    with b.share("s").open_write("/b-first.txt") as w:      # b looks for a dictionary: none yet
        w.write(first)
    data_a, data_b = b"".join(CHUNKS), b"".join(reversed(CHUNKS)) + b"b"
    with a.share("s").open_write("/a.txt") as w:            # a trains one
        w.write(data_a)
    with b.share("s").open_write("/b.txt") as w:            # and b, training at the same time, another
        w.write(data_b)
    ids = {r.codec.dictionaries._current.dict_id() for r in (a, b)}
    assert len(ids) == 2
    assert sorted(o for o in s3.objects(bucket) if "/dict-" in o) == \
        sorted([f"repo/dict-{i:08x}" for i in ids] + ["repo/dict-current"])
    for r in (a, b):
        fs = r.share("s")
        assert fs.open_read("/a.txt").read() == data_a
        assert fs.open_read("/b.txt").read() == data_b
        assert fs.open_read("/b-first.txt").read() == first
    a.close()
    b.close()
    # a third node with an empty cache, and recover of the catalog from the bucket alone
    c = Repository.open(url, catalog_url=catalog, cache=str(tmp_path / "cache-c"))
    assert c.share("s").open_read("/b.txt").read() == data_b
    c.close()
    (tmp_path / "catalog.sqlite").unlink()
    from archive.recover import recover
    from archive.packstore import open_store
    from archive.keys import parse_keyfile
    store = open_store(url, cache=str(tmp_path / "cache-d"))
    key = parse_keyfile(store.get_meta("keys.json"), None)
    rep = recover(store, key, Codec(key, store=store), catalog)
    assert not (rep.damaged or rep.unreadable or rep.missing or rep.incomplete_versions) and rep.versions == 3
    with Repository.open(url, catalog_url=catalog, cache=str(tmp_path / "cache-d")) as d:
        assert d.share("s").open_read("/a.txt").read() == data_a
        assert d.share("s").open_read("/b.txt").read() == data_b


def test_dictionary_frames_use_the_tuned_parameters_and_older_frames_still_read(tmp_path):
    """text11: chunks compressed with a dictionary at level 3 use DICT_LEVEL3 (smaller short-hash
    table, 6-byte matches); their frames still name the dictionary and their size, and frames
    the previous codec wrote with the same dictionary (plain level 3) decode as before."""
    import zstandard
    key = MasterKey.generate(False)             # plain: the payload is the zstd frame itself
    store = LocalPackStore(tmp_path)
    codec = Codec(key, store=store)
    recs = _trained(codec)
    d = codec.dictionaries._current
    tuned = zstandard.ZstdCompressor(dict_data=d, compression_params=dictmod.compression_params(3))
    d3 = zstandard.ZstdCompressionDict(d.as_bytes())    # its own tables: zstd takes a precomputed
    d3.precompute_compress(level=3)                     # dictionary's parameters for small frames
    old = zstandard.ZstdCompressor(level=3, dict_data=d3)
    fresh = Codec(key, store=store)
    differ = 0
    for cid, flags, payload, data in recs[22:]:
        fp = zstandard.get_frame_parameters(payload)
        assert (fp.dict_id, fp.content_size) == (d.dict_id(), len(data))
        assert payload == tuned.compress(data)
        prev = old.compress(data)
        differ += prev != payload
        assert fresh.decode(T_CHUNK, cid, FLAG_ZSTD, prev, len(data)) == data
    assert differ                               # the parameters are really not level 3's
    assert dictmod.compression_params(1) is None    # other levels keep their own
