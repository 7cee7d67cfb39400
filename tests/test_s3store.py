"""The S3-compatible pack store against a real S3 server (`rclone serve s3` on loopback).

What a user sees: a repository at s3://BUCKET/PREFIX keeps its identity and packs in the
bucket, any node (own cache folder) reads what another wrote, reads fetch only what is asked
(ranged GETs into a bounded LRU cache), a store that is down gives a clear error and commits
nothing, and `recover` rebuilds a lost catalog from the bucket alone.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import example, given, settings, strategies as st

from archive import Repository, errors
from archive.chunkcache import BlockCache
from archive.packstore import parse_size
from archive.s3store import BLOCK, S3PackStore
from conftest import CLI


def _bytes(n: int, seed: int = 1) -> bytes:
    import random
    return random.Random(seed).randbytes(n)


def _node(url: str, tmp: Path, name: str, catalog: str, **kw) -> Repository:
    return Repository.open(url, catalog_url=catalog, cache=str(tmp / f"cache-{name}"), **kw)


@pytest.fixture
def two_nodes(s3, tmp_path):
    url = s3.url()
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    a = Repository.init(url, catalog_url=catalog, cache=str(tmp_path / "cache-a"))
    a.add_share("office")
    b = _node(url, tmp_path, "b", catalog)
    yield url, catalog, a, b
    a.close()
    b.close()


def put(repo: Repository, path: str, data: bytes):
    with repo.share("office").open_write(path) as w:
        w.write(data)
    return repo.share("office").stat(path)


def _stored_then_cold(s3, tmp: Path, path: str, data: bytes) -> Repository:
    """`data` written at `path` by node a (closed again), and node b with an empty cache."""
    url = s3.url()
    catalog = f"sqlite:///{tmp / 'catalog.sqlite'}"
    a = Repository.init(url, catalog_url=catalog, cache=str(tmp / "cache-a"))
    a.add_share("office")
    put(a, path, data)
    a.close()
    return _node(url, tmp, "b", catalog)


def test_identity_and_packs_live_in_the_bucket(s3, tmp_path):
    url = s3.url(bucket="ident", prefix="site-a/archive")
    r = Repository.init(url, password="pw", encrypt=True, catalog_url=f"sqlite:///{tmp_path}/c.sqlite",
                        cache=str(tmp_path / "cache"))
    r.add_share("office")
    put(r, "/a.bin", _bytes(300_000))
    r.close()
    objs = s3.objects("ident")
    assert "site-a/archive/config.json" in objs and "site-a/archive/keys.json" in objs
    assert any(o.startswith("site-a/archive/packs/") and o.endswith(".pack") for o in objs)
    keys = json.loads((s3.root / "ident/site-a/archive/keys.json").read_text())
    assert keys["encrypted"] and "wrapped" in keys and "key" not in keys     # the bucket never sees the key
    assert not (tmp_path / "cache" / "config.json").exists()
    with pytest.raises(errors.BadPassword):
        Repository.open(url, password="wrong", catalog_url=f"sqlite:///{tmp_path}/c.sqlite", cache=str(tmp_path / "c2"))
    with pytest.raises(errors.Exists):
        Repository.init(url, catalog_url=f"sqlite:///{tmp_path}/d.sqlite", cache=str(tmp_path / "c3"))


def test_a_version_written_on_one_node_is_read_on_another(two_nodes):
    url, catalog, a, b = two_nodes
    data = _bytes(3 * 1024 * 1024 + 17)
    put(a, "/x.bin", data)
    put(a, "/x.bin", data[:1000] + b"changed" + data[1007:])
    fs_b = b.share("office")
    assert [v.number for v in fs_b.versions("/x.bin")] == [1, 2]
    with fs_b.open_read("/x.bin", version=1) as r:
        assert r.read() == data
    with fs_b.open_read("/x.bin") as r:
        r.seek(1000)
        assert r.read(7) == b"changed"


def test_reads_fetch_only_what_is_read_into_a_bounded_cache(s3, tmp_path):
    url = s3.url()
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    a = Repository.init(url, catalog_url=catalog, cache=str(tmp_path / "cache-a"))
    a.add_share("office")
    data = _bytes(12 * 1024 * 1024, seed=2)
    put(a, "/big.bin", data)
    a.close()
    limit = 3 * BLOCK
    b = _node(url, tmp_path, "b", catalog, cache_size=limit)
    store = b.packstore
    assert isinstance(store, S3PackStore)
    before = store.requests
    with b.share("office").open_read("/big.bin") as r:
        r.seek(5 * 1024 * 1024)
        assert r.read(4096) == data[5 * 1024 * 1024:5 * 1024 * 1024 + 4096]
    assert 1 <= store.requests - before <= 4            # a ranged GET or two, not the pack
    assert store.cache.total <= 2 * BLOCK
    with b.share("office").open_read("/big.bin") as r:  # a whole read keeps the cache bounded
        assert r.read() == data
    assert store.cache.total <= limit
    b.close()


def test_small_files_from_many_clients_share_pack_objects(two_nodes, s3):
    url, catalog, a, _ = two_nodes
    bucket = url.split("/")[2]
    before = len([o for o in s3.objects(bucket) if o.endswith(".pack")])

    def client(i: int) -> None:
        for j in range(5):
            put(a, f"/sensor{i}-{j}.csv", f"{i},{j},{'x' * 200}\n".encode())
    with ThreadPoolExecutor(24) as pool:          # 24 sensors at once; an error is raised here
        list(pool.map(client, range(24)))
    packs = len([o for o in s3.objects(bucket) if o.endswith(".pack")]) - before
    assert len(list(a.share("office").listdir("/"))) == 120
    assert 1 <= packs < 120            # group commit: many files share one PUT


def test_store_down_gives_a_clear_error_and_commits_nothing(s3, tmp_path):
    url = s3.url(retries="2")
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    r = Repository.init(url, catalog_url=catalog, cache=str(tmp_path / "cache"))
    r.add_share("office")
    put(r, "/keep.txt", b"v1")
    s3.stop()
    try:
        fs = r.share("office")
        with pytest.raises(errors.Unavailable, match="object store"):
            with fs.open_write("/keep.txt") as w:
                w.write(b"v2 while the store is down")
        assert [v.number for v in fs.versions("/keep.txt")] == [1]
    finally:
        s3.start()
    put(r, "/keep.txt", b"v3 after the store came back")
    fs = r.share("office")
    assert [v.number for v in fs.versions("/keep.txt")] == [1, 2]
    with fs.open_read("/keep.txt", version=1) as rd:
        assert rd.read() == b"v1"
    from archive.check import check
    assert check(r, read_data=True) == []
    r.close()


def test_recover_rebuilds_the_catalog_from_the_bucket_alone(s3, tmp_path):
    url = s3.url()
    cli = CLI(tmp_path / "unused", env={**s3.env(), "EDGE_ARCHIVE_REPO": url, "EDGE_ARCHIVE_PASSWORD": "pw",
                                        "EDGE_ARCHIVE_CACHE": str(tmp_path / "cache"),
                                        "EDGE_ARCHIVE_CATALOG": f"sqlite:///{tmp_path / 'cat.sqlite'}"})
    cli("init", "--encrypt")
    cli("share", "add", "office")
    (tmp_path / "f.bin").write_bytes(_bytes(500_000, 5))
    cli("put", str(tmp_path / "f.bin"), "/office/f.bin")
    (tmp_path / "f.bin").write_bytes(_bytes(400_000, 6))
    cli("put", str(tmp_path / "f.bin"), "/office/f.bin")
    cli("rm", "/office/f.bin")
    before = json.loads(cli("versions", "/office/f.bin", "--json").stdout)
    # a new node: no catalog, no cache; only the bucket
    fresh = {"EDGE_ARCHIVE_CACHE": str(tmp_path / "cache2"), "EDGE_ARCHIVE_CATALOG": f"sqlite:///{tmp_path / 'new.sqlite'}"}
    out = cli("recover", env=fresh).stdout.decode()
    assert "3 versions" in out
    after = json.loads(cli("versions", "/office/f.bin", "--json", env=fresh).stdout)
    assert [(v["version"], v["size"], v["deleted"], v["etag"]) for v in after] == \
           [(v["version"], v["size"], v["deleted"], v["etag"]) for v in before]
    got = cli("get", "/office/f.bin", "-", "--version", "1", env=fresh).stdout
    assert got == _bytes(500_000, 5)
    assert cli("check", "--read-data", env=fresh).returncode == 0


def test_gc_reclaims_packs_in_the_bucket(two_nodes, s3):
    url, catalog, a, _ = two_nodes
    bucket = url.split("/")[2]
    put(a, "/gone.bin", _bytes(2_000_000, 9))
    fs = a.share("office")
    from archive import retention  # noqa: F401
    from archive.events import apply  # noqa: F401
    node = fs.stat("/gone.bin").node_id
    a.mutate(lambda s: [{"op": "purge", "at": 0, "versions": [[node, 1]]}])
    from archive.gc import collect
    before = [o for o in s3.objects(bucket) if o.endswith(".pack")]
    rep = collect(a, grace=0)
    after = [o for o in s3.objects(bucket) if o.endswith(".pack")]
    assert rep.chunks_deleted > 0 and len(after) < len(before) + 1
    assert sum((s3.root / bucket / o).stat().st_size for o in after) < 1_000_000


# -- the parsers: sizes, URLs, the cache -----------------------------------------------------------

@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["", "k", "M", "G", "KiB", "mb", "T"]))
def test_parse_size_accepts_every_unit(n, unit):
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit[:1].lower()]
    assert parse_size(f"{n}{unit}") == n * mult


@given(st.text(max_size=12))
@example(".")
@example("1.2.3M")
def test_parse_size_refuses_garbage_with_a_clear_error(text):
    try:
        assert parse_size(text) >= 0
    except ValueError as e:
        assert "not a size" in str(e)


@settings(max_examples=30, deadline=None)
@given(bucket=st.from_regex(r"[a-z0-9][a-z0-9-]{2,20}", fullmatch=True),
       parts=st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True), max_size=3))
def test_s3_urls_name_bucket_prefix_and_endpoint(tmp_path_factory, bucket, parts):
    cache = tmp_path_factory.mktemp("c")
    s = S3PackStore.from_url(f"s3://{bucket}/{'/'.join(parts)}?endpoint=http://127.0.0.1:9&retries=1", cache, 1 << 20, {})
    assert s.bucket == bucket and s.endpoint == "http://127.0.0.1:9"
    assert s.pack_key("ab" * 16) == "/".join(parts + ["packs", "ab", "ab" * 16 + ".pack"])


def test_s3_url_without_a_bucket_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no bucket"):
        S3PackStore.from_url("s3:///x", tmp_path, 1 << 20, {})


def test_block_cache_is_lru_and_bounded(tmp_path):
    c = BlockCache(tmp_path, limit=300)
    for i in range(5):
        c.put(f"p{i}", bytes([i]) * 100)
    assert c.total == 300
    assert c.read("p0", 0, 10) is None and c.read("p1", 0, 10) is None
    assert c.read("p2", 5, 3) == b"\x02\x02\x02"          # p2 is now the most recent
    c.put("p5", b"x" * 100)
    assert c.read("p3", 0, 1) is None and c.read("p2", 0, 1) == b"\x02"
    again = BlockCache(tmp_path, limit=300)               # the index survives a restart
    assert again.total == 300 and again.read("p5", 0, 2) == b"xx"


# -- scheduled gc: one node at a time (archive/gctimer.py) ------------------------------------------

def test_scheduled_gc_runs_on_one_node_at_a_time_and_reclaims(two_nodes, s3):
    import threading
    from archive.gctimer import GcSchedule, GcTimer
    import time
    from archive.locks import acquire_lease, hold_lease_until, lease
    url, catalog, a, b = two_nodes
    bucket = url.split("/")[2]
    put(a, "/gone.bin", _bytes(2_000_000, 11))
    put(a, "/kept.bin", _bytes(300_000, 12))
    node = a.share("office").stat("/gone.bin").node_id
    a.mutate(lambda s: [{"op": "purge", "at": 0, "versions": [[node, 1]]}])
    stored = lambda: sum((s3.root / bucket / o).stat().st_size for o in s3.objects(bucket) if o.endswith(".pack"))
    before = stored()
    sched = GcSchedule(interval=3600, grace=0)
    timers = [GcTimer(a, sched), GcTimer(b, sched)]
    ran: list[bool] = []
    go = threading.Barrier(2)

    def run(t):
        go.wait()
        ran.append(t.run_once())
    threads = [threading.Thread(target=run, args=(t,)) for t in timers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ran) == [False, True]                 # exactly one node collected
    assert stored() < before - 1_500_000                # the purged 2 MB left the bucket
    with b.share("office").open_read("/kept.bin") as r:
        assert r.read() == _bytes(300_000, 12)
    holder = lease(a, "gc").principal
    assert holder in {t.holder for t in timers}
    # the lease now says when the next run is due: nobody runs before, the holder included
    assert [t.run_once() for t in timers] == [False, False]
    assert [e.action for e in a.audit_events(limit=1)] == ["gc"]
    # a node that died mid-run stops renewing: once its lease expires another node takes over
    assert acquire_lease(a, "gc", "dead-node", ttl=60, now=lease(a, "gc").expires_at + 1)
    assert not timers[1].run_once()
    assert hold_lease_until(a, "gc", "dead-node", time.time() - 1)     # ... and its time ran out
    assert timers[1].run_once()


def test_gc_schedule_parses_durations_and_refuses_bad_ones():
    from archive.gctimer import GcConfigError, GcSchedule
    s = GcSchedule.from_config({"interval": "6h", "grace": "30m"})
    assert (s.interval, s.grace) == (6 * 3600, 1800)
    assert GcSchedule.from_config({"interval": 0}).interval == 0
    assert GcSchedule.from_config(None).interval == 86400
    for bad in ({"interval": "soon"}, {"grace": "-1h"}, {"intervall": "1d"}, {"interval": True}):
        with pytest.raises(GcConfigError, match=r"\[gc\]"):
            GcSchedule.from_config(bad)


# -- multipart uploads while a pack fills, shared block fetches (archive/s3store.py) ----------------

def _watch(client, op: str) -> list:
    """Every `op` request the client sends: (its parameters, how many were in flight at once)."""
    seen, state, lock = [], {"now": 0}, __import__("threading").Lock()

    def before(params, **_):
        with lock:
            state["now"] += 1
            seen.append((dict(params), state["now"]))

    def after(**_):
        with lock:
            state["now"] -= 1
    client.meta.events.register(f"before-parameter-build.s3.{op}", before)
    client.meta.events.register(f"after-call.s3.{op}", after)
    return seen


def _uploads(store: S3PackStore) -> list:
    """The bucket's unfinished multipart uploads (rclone answers NoSuchUpload when it never had one)."""
    try:
        return store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix).get("Uploads", [])
    except store.client.exceptions.NoSuchUpload:
        return []


def test_a_large_pack_goes_up_in_parts_and_reads_back_exactly(s3, tmp_path):
    from archive.s3store import UPLOADERS
    url = s3.url(part="5M")
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    a = Repository.init(url, catalog_url=catalog, cache=str(tmp_path / "cache-a"))
    a.add_share("office")
    store = a.packstore
    parts = _watch(store.client, "UploadPart")
    completed = _watch(store.client, "CompleteMultipartUpload")
    data = _bytes(23 * 1024 * 1024 + 12_345, seed=21)
    put(a, "/big.bin", data)
    assert len(completed) == 1 and len(parts) >= 4                  # one pack, in several parts
    assert {p["UploadId"] for p, _ in parts} == {completed[0][0]["UploadId"]}
    assert sorted(p["PartNumber"] for p, _ in parts) == list(range(1, len(parts) + 1))
    assert all(len(p["Body"]) <= 5 << 20 for p, _ in parts)         # memory: a part at a time ...
    assert max(n for _, n in parts) <= UPLOADERS                    # ... per upload worker
    assert _uploads(store) == []
    a.close()
    b = _node(url, tmp_path, "b", catalog)                         # a cold cache: ranged GETs
    with b.share("office").open_read("/big.bin") as r:
        assert r.read() == data
    with b.share("office").open_read("/big.bin") as r:
        r.seek(17 * 1024 * 1024 - 5)
        assert r.read(10) == data[17 * 1024 * 1024 - 5:17 * 1024 * 1024 + 5]
    from archive.check import check
    assert check(b, read_data=True) == []
    b.close()


def test_part_size_below_s3s_minimum_is_refused(tmp_path):
    with pytest.raises(ValueError, match="5M"):
        S3PackStore.from_url("s3://bkt/x?endpoint=http://127.0.0.1:9&part=1M", tmp_path, 1 << 20, {})
    assert S3PackStore.from_url("s3://bkt/x?endpoint=http://127.0.0.1:9&part=0", tmp_path, 1 << 20, {}).part == 0


CHILD = r"""
import sys, time, random
from archive import Repository
url, catalog, cache = sys.argv[1:4]
r = Repository.open(url, catalog_url=catalog, cache=cache)
w = r.share("office").open_write("/half.bin")
w.write(random.Random(31).randbytes(16 * 1024 * 1024))
deadline = time.monotonic() + 60
done = lambda sink: sink is not None and len(sink._parts) >= 2 and all(f.done() for *_, f in sink._parts)
while not done(sink := r.store.writer._f):          # chunks are stored in the background
    assert time.monotonic() < deadline, "the parts never went up"
    time.sleep(0.05)
print("parts", len(sink._parts), flush=True)
time.sleep(600)
"""


def kill_an_uploader_after_two_parts(url: str, catalog: str, cache: str) -> None:
    """A node writing /half.bin dies (SIGKILL) once two parts of its pack are in the bucket."""
    import subprocess
    import sys
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, catalog, cache], stdout=subprocess.PIPE, env=env)
    try:
        line = child.stdout.readline().decode()
        assert line.startswith("parts"), line
    finally:
        child.kill()
        child.wait(10)


def test_a_node_killed_mid_upload_leaves_nothing_readers_see_and_gc_aborts_it(s3, tmp_path):
    from archive.check import check
    from archive.gc import collect
    url = s3.url(part="5M")
    bucket = url.split("/")[2]
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    a = Repository.init(url, catalog_url=catalog, cache=str(tmp_path / "cache-a"))
    a.add_share("office")
    put(a, "/kept.bin", _bytes(200_000, 30))
    packs = [o for o in s3.objects(bucket) if o.endswith(".pack")]
    kill_an_uploader_after_two_parts(url, catalog, str(tmp_path / "cache-k"))
    store = a.packstore
    assert len(_uploads(store)) == 1                                # the killed node's parts are there
    fs = a.share("office")
    assert not fs.exists("/half.bin") and sorted(e.name for e in fs.listdir("/")) == ["kept.bin"]
    assert [o for o in s3.objects(bucket) if o.endswith(".pack")] == packs    # no pack object
    assert collect(a, grace=3600).uploads_aborted == 0              # young: might be alive
    assert len(_uploads(store)) == 1
    assert collect(a, grace=0).uploads_aborted == 1
    assert _uploads(store) == []
    with fs.open_read("/kept.bin") as r:
        assert r.read() == _bytes(200_000, 30)
    assert check(a, read_data=True) == []
    a.close()


def test_concurrent_readers_of_one_block_get_the_same_bytes_from_one_get(s3, tmp_path):
    import threading
    data = _bytes(6 * 1024 * 1024, seed=40)
    b = _stored_then_cold(s3, tmp_path, "/shared.bin", data)
    store = b.packstore
    gets = _watch(store.client, "GetObject")
    pack = max(store.list(), key=store.size)
    off = 3 * BLOCK + 1234
    go = threading.Barrier(16)
    got: list = []

    def reader():
        go.wait()
        got.append(store.read_range(pack, off, 70_000))
    threads = [threading.Thread(target=reader) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = store.read_range(pack, off, 70_000)
    assert len(got) == 16 and len(want) == 70_000 and all(g == want for g in got)
    ranges = [p["Range"] for p, _ in gets]
    assert ranges == [f"bytes={3 * BLOCK}-{4 * BLOCK - 1}"]          # fetched once, for all 16
    with b.share("office").open_read("/shared.bin") as r:
        assert r.read() == data
    b.close()


def test_store_down_mid_multipart_upload_is_unavailable_and_commits_nothing(s3, tmp_path):
    import time
    from archive.check import check
    from archive.gc import collect
    url = s3.url(part="5M", retries="2")
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    r = Repository.init(url, catalog_url=catalog, cache=str(tmp_path / "cache"))
    r.add_share("office")
    put(r, "/keep.bin", b"v1")
    fs = r.share("office")
    w = fs.open_write("/keep.bin")
    w.write(_bytes(12 * 1024 * 1024, 50))
    deadline = time.monotonic() + 60
    while not ((sink := r.store.writer._f) is not None and len(sink._parts) >= 2
               and all(f.done() for *_, f in sink._parts)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    s3.stop()
    try:
        with pytest.raises(errors.Unavailable, match="object store unreachable during upload of pack"):
            w.write(_bytes(4 * 1024 * 1024, 51))
            w.commit()
        assert [v.number for v in fs.versions("/keep.bin")] == [1]
    finally:
        s3.start()
    # its abort failed too, so a real S3 keeps the parts for gc (rclone keeps them in memory only)
    data = _bytes(7 * 1024 * 1024, 52)
    put(r, "/keep.bin", data)
    assert [v.number for v in fs.versions("/keep.bin")] == [1, 2]
    collect(r, grace=0)
    assert _uploads(r.packstore) == []
    with fs.open_read("/keep.bin") as rd:
        assert rd.read() == data
    assert check(r, read_data=True) == []
    r.close()


def test_gc_spares_a_slow_upload_that_still_sends_parts(s3, tmp_path):
    import time
    url = s3.url(part="5M")
    r = Repository.init(url, catalog_url=f"sqlite:///{tmp_path / 'c.sqlite'}", cache=str(tmp_path / "cache"))
    store = r.packstore
    key = store.pack_key("ab" * 16)
    uid = store.client.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]   # another node's
    time.sleep(6)
    store.client.upload_part(Bucket=store.bucket, Key=key, UploadId=uid, PartNumber=1, Body=_bytes(5 << 20, 70))
    assert store.reclaim_uploads(grace=4) == 0          # started 6 s ago, but a part came just now
    assert [u["UploadId"] for u in _uploads(store)] == [uid]
    assert store.reclaim_uploads(grace=0) == 1 and _uploads(store) == []
    r.close()


def test_a_read_ahead_block_reaches_its_reader_before_the_cache_write_and_is_cached_after(s3, tmp_path):
    """A reader waiting for a block that read-ahead is fetching gets the GET's bytes at once,
    not after the read-ahead thread has written them into the cache (that write costs about
    what the GET does); the blocks are in the cache once the write ends, and reading them
    again sends no request."""
    import threading
    data = _bytes(6 * 1024 * 1024, seed=41)
    b = _stored_then_cold(s3, tmp_path, "/cold.bin", data)
    store = b.packstore
    pack = max(store.list(), key=store.size)
    gate, writing = threading.Event(), threading.Event()
    real_put = store.cache.put

    def held_put(name, block):
        if threading.current_thread().name.startswith("s3-read"):    # read-ahead threads only
            writing.set()
            gate.wait(60)
        real_put(name, block)
    store.cache.put = held_put
    got: list = []
    try:
        first = store.read_range(pack, 0, 1000)             # reading from the start: read-ahead
        assert writing.wait(60)                             # a read-ahead GET is back, held in its write
        reader = threading.Thread(target=lambda: got.append(store.read_range(pack, BLOCK + 4321, 100_000)))
        reader.start()
        reader.join(30)
        assert not reader.is_alive(), "the reader waited for the read-ahead's cache write"
    finally:
        gate.set()
    reader.join()
    store.cache.put = real_put
    assert first == data_at(b, 0, 1000) and got[0] == data_at(b, BLOCK + 4321, 100_000)
    for _ in range(600):                                    # the writes end in the read-ahead threads
        if store.cache.has(f"{pack}.1") and not store._inflight:
            break
        threading.Event().wait(0.05)
    before = store.requests
    assert store.read_range(pack, BLOCK + 4321, 100_000) == got[0]
    assert store.requests == before                         # served by the cache
    with b.share("office").open_read("/cold.bin") as r:
        assert r.read() == data
    b.close()


def data_at(repo: Repository, off: int, n: int) -> bytes:
    """The bytes at `off` of the biggest pack, read by a fresh local scan of the whole object."""
    store = repo.packstore
    with store.open_stream(max(store.list(), key=store.size)) as f:
        f.seek(off)
        return f.read(n)


@pytest.mark.parametrize("mib", [0, 6, 21])
def test_a_cold_read_of_a_whole_pack_sends_no_get_past_its_end(s3, tmp_path, mib):
    """A reader going through a pack it never saw reads ahead by whole RUN-block GETs, and stops
    at the pack's end, which the first GET's Content-Range tells (no listing, no HEAD): a
    small pack costs one GET."""
    from archive.s3store import RUN
    data = _bytes(mib * 1024 * 1024 or 300_000, seed=42)
    b = _stored_then_cold(s3, tmp_path, "/whole.bin", data)
    store = b.packstore
    gets = _watch(store.client, "GetObject")
    with b.share("office").open_read("/whole.bin") as r:
        assert r.read() == data
    if not mib:
        assert len(gets) == 1, gets                                        # one pack, one GET
    sizes = {}
    for key in {p["Key"] for p, _ in gets}:
        sizes[key] = store.client.head_object(Bucket=store.bucket, Key=key)["ContentLength"]
    ranges = [(p["Key"], *map(int, p["Range"][6:].split("-"))) for p, _ in gets]
    big = max(sizes, key=sizes.get)
    assert sizes[big] > len(data)
    assert all(lo < sizes[key] for key, lo, _ in ranges), ranges          # nothing past the end
    mine = sorted((lo, hi) for key, lo, hi in ranges if key == big)
    assert sum(hi + 1 - lo for lo, hi in mine) < sizes[big] + RUN * BLOCK   # each byte about once
    assert len(mine) <= sizes[big] // (RUN * BLOCK) + 3                     # by whole runs, not blocks
    b.close()


def test_a_cold_sequential_read_fetches_a_large_pack_by_8_mib_gets(s3, tmp_path):
    """Each GET costs the client (botocore: signing, parsing, ~2 ms of CPU) and rclone (~1.5 ms)
    whatever its size, so a cold read of a large pack goes by 8 MiB GETs after the first block
    (docs/benchmarks.md, s3cold4): 4 MiB ones cost ~12 % more CPU per MiB on both sides.  The
    bytes come back exactly, and nothing is fetched twice."""
    data = _bytes(40 * 1024 * 1024, seed=7)
    b = _stored_then_cold(s3, tmp_path, "/big.bin", data)
    store = b.packstore
    gets = _watch(store.client, "GetObject")
    with b.share("office").open_read("/big.bin") as r:
        assert r.read() == data
    ranges = sorted(tuple(map(int, p["Range"][6:].split("-"))) for p, _ in gets)
    assert sum(hi + 1 - lo for lo, hi in ranges) < len(data) + 2 * 1024 * 1024, ranges   # once each
    # the first block alone, then ~39 MiB in 8 MiB GETs (the hint's or the reader's own first run
    # may add one short GET): 4 MiB GETs would be 11 or more
    assert len(ranges) <= 1 + 5 + 2, ranges
    assert max(hi + 1 - lo for lo, hi in ranges) == 8 * 1024 * 1024, ranges
    b.close()


def test_a_node_restarted_on_its_cache_reads_a_cached_small_pack_with_no_request(s3, tmp_path):
    """The cache folder outlives the process: a small pack read before the restart is read
    again without a request (its one cached block, shorter than a block, tells where the pack
    ends, so no read-ahead goes past it)."""
    url = s3.url()
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    a = Repository.init(url, catalog_url=catalog, cache=str(tmp_path / "cache-a"))
    a.add_share("office")
    data = _bytes(300_000, seed=44)
    put(a, "/small.bin", data)
    a.close()
    for run in range(2):
        b = _node(url, tmp_path, "b", catalog)
        gets = _watch(b.packstore.client, "GetObject")
        with b.share("office").open_read("/small.bin") as r:
            assert r.read() == data
        b.packstore.readers.shutdown(wait=True)                 # read-ahead GETs, if any, done
        assert len(gets) == (1 if run == 0 else 0), gets
        b.close()


def _content_hashes(client) -> list[bytes]:
    """The x-amz-content-sha256 header of every PutObject and UploadPart the client sends."""
    seen: list[bytes] = []
    for op in ("PutObject", "UploadPart"):
        client.meta.events.register(f"before-send.s3.{op}",
                                    lambda request, **_: seen.append(request.headers["x-amz-content-sha256"]))
    return seen


@pytest.mark.parametrize("sign", ["auto", "1"])
def test_uploads_to_a_loopback_store_skip_the_body_hash_unless_asked_and_read_back_exactly(s3, tmp_path, sign):
    import hashlib
    url = s3.url(part="5M", sign=sign)
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    a = Repository.init(url, catalog_url=catalog, cache=str(tmp_path / "cache-a"))
    a.add_share("office")
    hashes = _content_hashes(a.packstore.client)
    big, small = _bytes(11 * 1024 * 1024 + 77, seed=5), b"a small file\n" * 10
    put(a, "/big.bin", big)                   # parts of a multipart upload
    put(a, "/small.txt", small)               # one PUT
    a.close()
    assert len(hashes) >= 3
    if sign == "auto":                       # rclone on 127.0.0.1: no wire, no hash
        assert set(hashes) == {b"UNSIGNED-PAYLOAD"}
    else:
        assert all(len(h) == 64 and h != hashlib.sha256(b"").hexdigest().encode() for h in hashes)
    b = _node(url, tmp_path, "b", catalog)
    assert b.share("office").open_read("/big.bin").read() == big
    assert b.share("office").open_read("/small.txt").read() == small
    from archive.check import check
    assert check(b, read_data=True) == []
    b.close()


@pytest.mark.parametrize("endpoint,signed", [("http://127.0.0.1:9", False), ("http://localhost:9", False),
                                             ("http://[::1]:9", False), ("http://rgw.site-a:7480", True),
                                             ("https://10.0.0.5:7480", True), ("http://127.0.0.1:9&sign=1", True),
                                             ("http://rgw.site-a:7480&sign=0", False)])
def test_only_a_loopback_endpoint_goes_without_the_body_hash_by_default(tmp_path, endpoint, signed):
    assert S3PackStore.from_url(f"s3://bkt/x?endpoint={endpoint}", tmp_path, 1 << 20, {}).sign_payload is signed
    with pytest.raises(ValueError, match="sign"):
        S3PackStore.from_url(f"s3://bkt/x?endpoint={endpoint}&sign=maybe", tmp_path, 1 << 20, {})


# -- gc between an upload's chunks and its commit: the gc fence (archive/packstore.py) -------------

def _purge(repo: Repository, path: str) -> None:
    """`path` and every version of it gone, so its chunks and packs are gc's to take."""
    fs = repo.share("office")
    node = fs.stat(path).node_id
    fs.remove(path)
    repo.mutate(lambda s: [{"op": "purge", "at": 0, "versions": [[node, 1]]}])


def test_gc_between_an_uploads_chunks_and_its_commit_refuses_the_commit(two_nodes, s3):
    """Node b's gc (no grace) takes the pack holding node a's fresh chunks after it reached the
    bucket but before a commits them, and also the chunks a's upload reuses: a's commit is
    refused, never committed with holes, and the next upload works."""
    from archive.check import check
    from archive.gc import collect
    from archive.streams import commit_many
    _, _, a, b = two_nodes
    fs = a.share("office")
    shared = _bytes(300_000, 50)
    put(a, "/old.bin", shared)
    w = fs.open_write("/racy.bin")
    w.write(shared)                          # dedup: these chunks are /old.bin's
    w.write(_bytes(2_500_000, 51))           # fresh chunks, in node a's open pack
    w.prepare()
    _purge(a, "/old.bin")                    # this commit uploads that pack, chunks unregistered
    rep = collect(b, grace=0)
    assert rep.chunks_deleted > 0 and rep.packs_deleted + rep.packs_rewritten > 0
    with pytest.raises(errors.Conflict, match="reclaimed by gc"):
        commit_many([w])
    assert not fs.exists("/racy.bin")
    assert check(a, read_data=True) == []
    put(a, "/racy.bin", _bytes(2_500_000, 51))
    with b.share("office").open_read("/racy.bin") as r:
        assert r.read() == _bytes(2_500_000, 51)


def test_gc_of_an_uploads_fresh_pack_alone_refuses_the_commit(two_nodes, s3):
    """No reused chunk to give it away: only the fence tells the commit its pack was taken."""
    from archive.check import check
    from archive.gc import collect
    from archive.streams import commit_many
    _, _, a, b = two_nodes
    fs = a.share("office")
    w = fs.open_write("/racy.bin")
    w.write(_bytes(2_500_000, 52))
    w.prepare()
    fs.mkdir("/d")                           # a commit of its own: uploads the pack of w's chunks
    rep = collect(b, grace=0)
    assert rep.packs_rewritten + rep.packs_deleted > 0
    with pytest.raises(errors.Conflict, match="reclaimed by gc"):
        commit_many([w])
    assert not fs.exists("/racy.bin") and fs.exists("/d")
    assert check(a, read_data=True) == []


def test_a_commit_asks_about_its_packs_only_when_a_gc_moved_the_fence(two_nodes, s3):
    """rclone hashes a whole pack to answer a HEAD: a commit reads the small fence object instead,
    and asks about each pack (HEAD) only after some gc deleted packs."""
    from archive.gc import collect
    _, _, a, b = two_nodes
    heads = _watch(a.packstore.client, "HeadObject")
    gets = _watch(a.packstore.client, "GetObject")
    put(a, "/one.bin", _bytes(3_000_000, 53))
    assert heads == []
    fence_reads = [p for p, _ in gets if p["Key"].endswith("/gc-fence")]
    assert 1 <= len(fence_reads) <= 2                       # the writer's first pack, the commit
    del gets[:]
    for i in range(3):                                      # small files: their pack is still
        put(a, f"/small-{i}.txt", b"x" * (100 + i))         # being filled at the check
    assert heads == [] and not [p for p, _ in gets if p["Key"].endswith("/gc-fence")]
    put(a, "/gone.bin", _bytes(200_000, 54))
    _purge(a, "/gone.bin")
    assert collect(b, grace=0).chunks_deleted > 0          # moves the fence
    put(a, "/two.bin", _bytes(3_000_000, 55))               # packs created before a saw it moved
    assert len(heads) >= 1
    del heads[:]
    put(a, "/three.bin", _bytes(3_000_000, 56))             # the new value is known now
    assert heads == []
    for name, seed in (("/one.bin", 53), ("/two.bin", 55), ("/three.bin", 56)):
        with b.share("office").open_read(name) as r:
            assert r.read() == _bytes(3_000_000, seed)
    with b.share("office").open_read("/small-2.txt") as r:
        assert r.read() == b"x" * 102


def test_gc_of_a_pack_uploaded_while_its_upload_was_still_open_refuses_the_commit(two_nodes, s3):
    """A pack that filled up goes to the bucket in the background while the upload goes on; a gc
    on another node may take it before the commit (below the size that syncs before the lock):
    the commit must not take "still held by the writer" for "not in the bucket yet"."""
    import time
    from archive.check import check
    from archive.gc import collect
    from archive.streams import commit_many
    url, _, a, b = two_nodes
    bucket = url.split("/")[2]
    before = {o for o in s3.objects(bucket) if o.endswith(".pack")}
    a.store.writer._target = 200_000             # packs roll over (and go up) while w writes
    fs = a.share("office")
    w = fs.open_write("/racy.bin")
    w.write(_bytes(700_000, 57))                 # under the 1 MiB synced before the catalog lock
    w.prepare()
    for _ in range(200):                         # the sealed packs reach the bucket on their own
        if len({o for o in s3.objects(bucket) if o.endswith(".pack")} - before) >= 2:
            break
        time.sleep(0.05)
    rep = collect(b, grace=0)
    # the first pack may also hold the share's catalog events: gc then counts it as rewritten
    assert rep.packs_deleted + rep.packs_rewritten >= 2, rep
    with pytest.raises(errors.Conflict, match="reclaimed by gc"):
        commit_many([w])
    assert not fs.exists("/racy.bin")
    assert check(a, read_data=True) == []


@pytest.mark.parametrize("first_at", [0, 5])
def test_a_cold_read_of_a_pack_sends_its_first_get_alone(s3, tmp_path, first_at):
    """The first GET this node sends for a pack is back before any other GET of that pack
    leaves, read-ahead or a parallel reader's: rclone (like other stores that do per-object
    work on a first request) hashes the whole object on its first request and keeps the hash,
    so parallel first GETs would each pay it.  The first GET is held (up to 2 s) while other
    readers of the pack, mid-pack ones among them, come in; none of them may send a GET then.
    The reads return the pack's bytes."""
    import threading
    data = _bytes(12 * 1024 * 1024, seed=43)
    b = _stored_then_cold(s3, tmp_path, "/cold.bin", data)
    store = b.packstore
    pack = max(store.list(), key=store.size)
    key = store.pack_key(pack)
    events: list[tuple[str, str]] = []
    held, second = threading.Event(), threading.Event()
    real_get = store.client.get_object

    def get_object(**kw):
        if kw.get("Key") == key:
            events.append(("start", kw.get("Range")))
            if len(events) == 1:
                held.set()
                second.wait(2)          # a second GET of the pack arriving meanwhile ends the hold
            else:
                second.set()
        r = real_get(**kw)
        if kw.get("Key") == key:
            events.append(("end", kw.get("Range")))
        return r
    store.client.get_object = get_object
    offsets = [first_at * BLOCK + 100, 3 * BLOCK + 7, 7 * BLOCK + 11, 9 * BLOCK + 13, 100]
    got: dict[int, bytes] = {}
    with ThreadPoolExecutor(len(offsets)) as pool:
        futs = [pool.submit(store.read_range, pack, offsets[0], 200_000)]
        assert held.wait(30)
        futs += [pool.submit(store.read_range, pack, off, 200_000) for off in offsets[1:]]
        for off, f in zip(offsets, futs):
            got[off] = f.result(timeout=60)
    store.client.get_object = real_get
    assert events[0][0] == "start" and events[1][0] == "end", events[:4]     # the first GET alone
    assert len([e for e in events if e[0] == "start"]) >= 2                   # and then the others
    for off in offsets:
        assert got[off] == data_at(b, off, 200_000)
    with b.share("office").open_read("/cold.bin") as r:
        assert r.read() == data
    b.close()


def test_records_appended_while_a_sync_uploads_reach_the_bucket(s3, tmp_path):
    """A record appended while sync() uploads the pack it sealed goes into a new pack; that
    pack is not uploaded by the same sync() (appends would go on into an object already in
    the bucket, and the next seal would find it uploaded: bytes a later commit relies on,
    missing for every other node).  A large upload's early chunk registration syncs while the
    chunk pool appends, which lost the tail of a 192 MiB file this way.  Every record, read
    back by a cold node, is whole."""
    import hashlib
    import threading
    from archive.packs import T_CHUNK
    url = s3.url()
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    a = Repository.init(url, catalog_url=catalog, cache=str(tmp_path / "cache-a"))
    writer = a.store.writer
    refs = []

    def rec(n: int) -> None:
        payload = _bytes(50_000, seed=100 + n)
        refs.append((writer.append(T_CHUNK, hashlib.sha256(payload).digest(), 0, len(payload), payload), payload))
    rec(0)
    sealed = writer._f
    real_sync = sealed.sync

    def sync_with_an_append_meanwhile():
        t = threading.Thread(target=rec, args=(1,))          # another writer's append
        t.start()
        t.join(30)
        real_sync()
    sealed.sync = sync_with_an_append_meanwhile
    writer.sync()                           # seals pack 1 and uploads it; record 1 lands in pack 2
    rec(2)                                  # pack 2 grows after that sync
    writer.sync()
    a.close()
    b = _node(url, tmp_path, "b", catalog)
    for (pack, off, ln), payload in refs:
        assert b.store.packdir.read_record(pack, off, ln).payload == payload
    b.close()


@pytest.mark.parametrize("window, engine", [(1, "sqlite"), (None, "sqlite"), (1, "postgresql")])
def test_a_reader_starts_the_next_packs_first_get_while_it_reads_the_pack_before(s3, tmp_path, monkeypatch,
                                                                                window, engine, request):
    """A cold reader going through a file spread over several packs names each next pack to
    the store (`prefetch_hint`) before it has read the last of the pack before (from its
    window of chunk rows and the next window's), and the store sends that pack's
    first GET on its own: a store's per-object work on a first request (rclone's whole-object
    MD5) then overlaps the reading of the pack before.  The reader's first read of a new pack
    waits (up to 10 s) for that GET to leave: without the hint none would.  window=1: every
    chunk is a window of its own, so each next pack is known only from the next window
    (asked of SQLite or PostgreSQL).  The reads return the file's bytes."""
    import threading
    import time
    import archive.streams
    url = s3.url()
    catalog = (f"sqlite:///{tmp_path / 'catalog.sqlite'}" if engine == "sqlite"
               else request.getfixturevalue("pg").new_url("hint"))
    a = Repository.init(url, catalog_url=catalog, cache=str(tmp_path / "cache-a"))
    a.add_share("office")
    a.store.writer._target = 4 << 20                  # 4 MiB packs: the file spans three
    data = _bytes(10 * 1024 * 1024, seed=45)
    put(a, "/packs.bin", data)
    a.close()
    if window:
        monkeypatch.setattr(archive.streams, "WINDOW", window)
    b = _node(url, tmp_path, "b", catalog)
    store = b.packstore
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    store.client.meta.events.register("before-parameter-build.s3.GetObject",
                                      lambda params, **_: events.append(("get", params["Key"])))
    real_read, real_hint = store.read_range, store.prefetch_hint

    def read_range(pack_id, offset, length):
        key = store.pack_key(pack_id)
        with lock:
            new = any(e[0] == "read" for e in events) and ("read", key) not in events
        until = time.monotonic() + 10
        while new and ("get", key) not in events and time.monotonic() < until:
            time.sleep(0.002)               # a new pack: its hinted first GET is on its way
        events.append(("read", key))
        return real_read(pack_id, offset, length)

    def prefetch_hint(wants):
        events.extend(("hint", store.pack_key(p)) for p, *_ in wants)
        return real_hint(wants)
    store.read_range, store.prefetch_hint = read_range, prefetch_hint
    with b.share("office").open_read("/packs.bin") as r:
        assert r.read() == data
    order = []                                          # packs in the order the reader read them
    for kind, key in events:
        if kind == "read" and key not in order:
            order.append(key)
    assert len(order) >= 3, order
    for before, pack in zip(order, order[1:]):
        last_read_before = max(n for n, e in enumerate(events) if e == ("read", before))
        assert events.index(("hint", pack)) < last_read_before, (pack, events)
        assert events.index(("get", pack)) < events.index(("read", pack)), (pack, events)
    b.close()
