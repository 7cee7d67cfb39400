"""Scale-out benchmark: S3 pack store vs local packs, two nodes, PostgreSQL vs SQLite.

    python -m bench.scaleout [--mib 256] [--small 2000] [--list 100000] [--only store,nodes,catalog]
                             [--peer-ceiling] [--radosgw]

Engines are the test suite's: a throwaway PostgreSQL cluster and `rclone serve s3` on
loopback (tests/pg_helpers.py, tests/s3_helpers.py).  Every figure is the median of 3 runs.
  store    ingest and restore of the corpora (bench/corpora.py: random and text) with the S3
           store vs the local store; restore with a cold cache (new node) and a warm one; CPU
           seconds per MiB of this process and of rclone next to the rates (a busy machine
           makes wall times noisy, CPU time much less)
  nodes    N small files committed concurrently through two nodes (two processes, 16
           threads each) on one bucket and one PostgreSQL: files/s, latency, requests per
           upload, catalog bytes per version
  catalog  per-file commit latency and listing a folder of N entries, PostgreSQL vs SQLite
`--peer-ceiling` adds to the store section, in each run, boto3 alone (the store's own client and
settings) sending the requests the store sent for that run's packs: the same uploads and HEADs
(ingest), the same ranged GETs (cold restore).  Its rates are MiB of the corpus per second, so
"ceiling / local" is the best ratio the peer allows the store on that machine at that moment.
`--radosgw` runs the store section again against single-node Ceph radosgw (tests/ceph_rgw.sh,
as bench/s3.py starts it); the peer CPU column is then radosgw + the OSD + the monitor.
It measures, it does not assert; results go to stdout (markdown) and bench/work/scaleout-*.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from archive import Repository  # noqa: E402
from bench import corpora as C  # noqa: E402
from pg_helpers import PgCluster  # noqa: E402
from s3store_helpers import RcloneS3  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

MiB = 1 << 20
WORK = ROOT / "bench" / "work"


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def ingest(repo: Repository, files: list[Path], base: Path) -> float:
    fs = repo.share("bench")
    t = time.perf_counter()
    for f in files:
        rel = "/" + str(f.relative_to(base))
        parent = rel.rsplit("/", 1)[0]
        if parent and not fs.exists(parent):
            fs.mkdir(parent, parents=True)
        with fs.open_write(rel) as w, open(f, "rb") as src:
            while block := src.read(4 * MiB):
                w.write(block)
    return time.perf_counter() - t


def restore(repo: Repository, files: list[Path], base: Path, sums: dict[str, str]) -> float:
    fs = repo.share("bench")
    t = time.perf_counter()
    for f in files:
        rel = "/" + str(f.relative_to(base))
        h = hashlib.sha256()
        with fs.open_read(rel) as r:
            while block := r.read(4 * MiB):
                h.update(block)
        assert h.hexdigest() == sums[rel], f"restore of {rel} differs"
    return time.perf_counter() - t


def _peer_cpu(s3) -> float:
    """CPU seconds the peer (`rclone serve s3`, or radosgw and its OSD and monitor) has used so
    far (user + system, from /proc)."""
    total = 0.0
    try:
        for pid in s3.pids():
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        return total
    except (OSError, AttributeError, IndexError, ValueError):
        return float("nan")


class Rclone(RcloneS3):
    """The test suite's `rclone serve s3`, with extra flags (--rclone-flag) when asked."""
    name = "rclone"
    flags: list[str] = []

    def pids(self) -> list[int]:
        return [self.proc.pid]


class Radosgw:
    """Single-node Ceph radosgw (one monitor, one memstore OSD) on loopback, started by
    tests/ceph_rgw.sh as the test suite and bench/s3.py start it.  Deleted objects come back
    to the memstore only hours later, so it is sized for everything a bench run writes."""
    name = "radosgw"
    KEY, SECRET = "SCALEOUTKEY000000000", "scaleoutsecretscaleoutsecret000000000000"

    def __init__(self, work: Path, memstore_bytes: int) -> None:
        from s3store_helpers import free_port
        for tool in ("ceph-mon", "ceph-osd", "radosgw"):
            if shutil.which(tool) is None:
                raise SystemExit(f"{tool} is not installed (Debian radosgw ceph-mon ceph-osd)")
        self.dir = Path(tempfile.mkdtemp(prefix="rgw-"))      # short: its sockets' paths must fit
        port = free_port()
        p = subprocess.run(["bash", str(ROOT / "tests" / "ceph_rgw.sh"), str(self.dir), str(free_port()), str(port),
                            self.KEY, self.SECRET], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "EDGE_RGW_MEMSTORE_BYTES": str(memstore_bytes)})
        if "ready" not in p.stdout:
            self.close()
            raise SystemExit(f"radosgw did not start: {p.stdout}{p.stderr}")
        self.endpoint = f"http://127.0.0.1:{port}"

    def start(self) -> "Radosgw":
        return self

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET, "AWS_DEFAULT_REGION": "us-east-1"}

    def url(self, bucket: str | None = None, prefix: str = "repo") -> str:
        import uuid
        return f"s3://{bucket or 'b' + uuid.uuid4().hex[:12]}/{prefix}?endpoint={self.endpoint}"

    def pids(self) -> list[int]:
        return [int(p.read_text().strip()) for p in sorted(self.dir.glob("*.pid"))]

    def close(self) -> None:
        for pid in self.dir.glob("*.pid"):
            subprocess.run(["kill", "-9", pid.read_text().strip()], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def _timed(s3: RcloneS3, cpu: dict, key: str, fn, *args) -> float:
    """Run fn (which returns its wall time) and note the CPU it cost: this process and the peer."""
    c, p = time.process_time(), _peer_cpu(s3)
    wall = fn(*args)
    cpu.setdefault(key, []).append((time.process_time() - c, _peer_cpu(s3) - p))
    return wall


def peer_ceiling(s3, url: str, size: int, tmp: Path, before: set[str], read: set[str]) -> dict:
    """boto3 alone, with the store's own client and settings, sending the requests the store
    sends for the packs of `url` (see the module docstring); MiB of the corpus (`size` bytes) per
    second.  ingest: each pack uploaded again under ceiling/ as the store uploads it (one PUT
    below a part, else PART-size parts, UPLOADERS in flight across packs as the store's pool
    has them, then the completion) and the commit's check (one GET of the gc fence; a HEAD per
    pack with a store from before the fence); cold: each pack read as
    a cold reader reads it (its first block alone, then RUN-block GETs, READERS in flight), from
    the copies uploaded under ceiling/ (not read before, as the store's packs are to a cold node).
    Packs in `before` (written by init and add_share, before the timed ingest) are left out;
    only the packs in `read` (those the cold restore fetched: the packs holding chunks) get the
    HEAD and the GETs, as in the store (the small pack of the commit's transaction holds no chunk)."""
    from archive import s3store as S3
    from archive.packstore import PackStore
    head = not hasattr(PackStore, "gc_fence")       # the store before the gc fence HEADs each pack
    store = S3.S3PackStore.from_url(url, tmp / "ceiling-cache", 1 << 30, {})
    c, b = store.client, store.bucket
    try:
        packs = [(p, store.size(p)) for p in store.list() if p not in before]
        body = os.urandom(max((n for _, n in packs), default=0))
        out: dict = {"packs": len(packs), "pack_MiB": round(sum(n for _, n in packs) / MiB, 2)}
        requests, heads = 0, []
        t, c0, p0 = time.perf_counter(), time.process_time(), _peer_cpu(s3)
        with ThreadPoolExecutor(S3.UPLOADERS) as pool:
            jobs = []
            for p, n in packs:
                key = f"{store.prefix}ceiling/{p}.pack"
                if store.part and n >= store.part:
                    uid = c.create_multipart_upload(Bucket=b, Key=key)["UploadId"]
                    parts = [(i + 1, lo, min(lo + store.part, n)) for i, lo in enumerate(range(0, n, store.part))]
                    futs = [pool.submit(lambda k=k, lo=lo, hi=hi, uid=uid, key=key: c.upload_part(
                        Bucket=b, Key=key, UploadId=uid, PartNumber=k, Body=body[lo:hi])["ETag"]) for k, lo, hi in parts]
                    jobs.append((key, uid, parts, futs))
                    requests += 2 + len(parts)
                else:
                    jobs.append((key, None, None, [pool.submit(lambda key=key, n=n: c.put_object(
                        Bucket=b, Key=key, Body=body[:n]))]))
                    requests += 1
            for key, uid, parts, futs in jobs:
                etags = [f.result() for f in futs]
                if uid is not None:
                    c.complete_multipart_upload(Bucket=b, Key=key, UploadId=uid, MultipartUpload={
                        "Parts": [{"PartNumber": k, "ETag": e} for (k, _, _), e in zip(parts, etags)]})
                if head and key.rsplit("/", 1)[1][:-5] in read:
                    h = time.perf_counter()
                    c.head_object(Bucket=b, Key=key)       # rclone hashes a fresh object on its first HEAD
                    heads.append(time.perf_counter() - h)
                    requests += 1
            if not head:                    # the commit's one GET of the gc fence instead
                h = time.perf_counter()
                try:
                    c.get_object(Bucket=b, Key=f"{store.prefix}gc-fence")["Body"].read()
                except c.exceptions.NoSuchKey:
                    pass
                heads.append(time.perf_counter() - h)
                requests += 1
        out["ingest_MiB/s"] = size / MiB / (time.perf_counter() - t)
        out["ingest_requests_per_MiB"] = requests / (size / MiB)
        out["head_s"] = sum(heads)                  # of which: the commit's check after the uploads
        out["ingest_cpu_ms_per_MiB"] = {"archive": 1000 * (time.process_time() - c0) / (size / MiB),
                                        "peer": 1000 * (_peer_cpu(s3) - p0) / (size / MiB)}
        requests = 0
        t, c0, p0 = time.perf_counter(), time.process_time(), _peer_cpu(s3)
        with ThreadPoolExecutor(S3.READERS) as pool:
            for p, n in packs:
                if p not in read:
                    continue
                # the copies uploaded above: as fresh to the peer as the store's packs are to a
                # cold restore (the store's own packs were read twice already, and rclone keeps
                # the MD5 it computes on an object's first request: reading them again measured
                # a ceiling no cold reader can reach)
                key = f"{store.prefix}ceiling/{p}.pack"
                first = min(S3.BLOCK, n)
                assert len(c.get_object(Bucket=b, Key=key, Range=f"bytes=0-{first - 1}")["Body"].read()) == first
                step = S3.RUN * S3.BLOCK
                ranges = [(first, min(step, n))] + [(lo, min(lo + step, n)) for lo in range(step, n, step)] \
                    if n > first else []
                got = list(pool.map(lambda r, key=key: len(c.get_object(
                    Bucket=b, Key=key, Range=f"bytes={r[0]}-{r[1] - 1}")["Body"].read()), ranges))
                assert sum(got) + first == n
                requests += 1 + len(ranges)
        out["cold_MiB/s"] = size / MiB / (time.perf_counter() - t)
        out["cold_requests_per_MiB"] = requests / (size / MiB)
        out["cold_cpu_ms_per_MiB"] = {"archive": 1000 * (time.process_time() - c0) / (size / MiB),
                                      "peer": 1000 * (_peer_cpu(s3) - p0) / (size / MiB)}
        return out
    finally:
        store.close()


def _first_reads(store) -> dict:
    """(start, end) of the first read_range of each pack a cold reader reads (wraps the store's)."""
    firsts, real = {}, store.read_range

    def read_range(pack_id, offset, length):
        t = time.perf_counter()
        out = real(pack_id, offset, length)
        firsts.setdefault(pack_id, (t, time.perf_counter()))
        return out
    store.read_range = read_range
    return firsts


def bench_store(tmp: Path, s3, mib: int, ceiling: bool = False) -> dict:
    corpora = [C.SingleFile("random", mib * MiB, "random", 1), C.SingleFile("text", mib * MiB // 2, "text", 2)]
    os.environ.update(s3.env())
    out = {}
    for corpus in corpora:
        tree = WORK / f"scaleout-{corpus.name}"
        tree.mkdir(parents=True, exist_ok=True)
        corpus.apply(0, tree)
        files = sorted(p for p in tree.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in files)
        sums = {"/" + str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
        res: dict[str, list[float]] = {k: [] for k in ("local_ingest", "local_restore", "s3_ingest",
                                                       "s3_restore_cold", "s3_restore_warm")}
        cpu: dict[str, list[tuple[float, float]]] = {}
        reqs: dict[str, list[int]] = {}
        peer: list[dict] = []
        stalls: list[float] = []
        for run in range(3):
            d = tmp / f"{corpus.name}-{run}"
            local = Repository.init(d / "local")
            local.add_share("bench")
            res["local_ingest"].append(_timed(s3, cpu, "local_ingest", ingest, local, files, tree))
            res["local_restore"].append(_timed(s3, cpu, "local_restore", restore, local, files, tree, sums))
            local.close()
            url = s3.url()
            cat = f"sqlite:///{d / 's3cat.sqlite'}"
            node = Repository.init(url, catalog_url=cat, cache=str(d / "cache-a"), cache_size=4 << 30)
            node.add_share("bench")
            before = set(node.packstore.list())
            n0 = node.packstore.requests
            res["s3_ingest"].append(_timed(s3, cpu, "s3_ingest", ingest, node, files, tree))
            reqs.setdefault("s3_ingest", []).append(node.packstore.requests - n0)
            node.close()
            other = Repository.open(url, catalog_url=cat, cache=str(d / "cache-b"), cache_size=4 << 30)
            n0 = other.packstore.requests
            firsts = _first_reads(other.packstore)
            res["s3_restore_cold"].append(_timed(s3, cpu, "s3_restore_cold", restore, other, files, tree, sums))
            # the reader's wait on its first read of each pack after the first (the first GET's
            # per-object work, when nothing started it early: see S3PackStore.prefetch_hint)
            stalls.append(sum(b - a for a, b in sorted(firsts.values())[1:]))
            reqs.setdefault("s3_restore_cold", []).append(other.packstore.requests - n0)
            read = {name.split(".")[0] for name in list(other.packstore.cache._index)}   # packs fetched
            res["s3_restore_warm"].append(_timed(s3, cpu, "s3_restore_warm", restore, other, files, tree, sums))
            other.close()
            if ceiling:
                peer.append(peer_ceiling(s3, url, size, d, before, read))
            shutil.rmtree(d, ignore_errors=True)
        m = {k: size / MiB / med(v) for k, v in res.items()}
        out[corpus.name] = {"bytes": size, "MiB/s": m, "ratios": {
            "ingest s3/local": m["s3_ingest"] / m["local_ingest"],
            "restore cold s3/local": m["s3_restore_cold"] / m["local_restore"],
            "restore warm s3/local": m["s3_restore_warm"] / m["local_restore"]},
            # medians, CPU milliseconds per MiB: this process (the archive, boto3) and the peer
            "cpu_ms_per_MiB": {k: {"archive": round(1000 * med([c for c, _ in v]) / (size / MiB), 2),
                                   "peer": round(1000 * med([p for _, p in v]) / (size / MiB), 2)}
                               for k, v in cpu.items()},
            "requests_per_MiB": {k: round(med(v) / (size / MiB), 3) for k, v in reqs.items()},
            "cold_wait_at_later_packs_s": round(med(stalls), 3)}
        if peer:
            pm = {k: med([x[k] for x in peer]) for k in ("ingest_MiB/s", "cold_MiB/s", "ingest_requests_per_MiB",
                                                         "cold_requests_per_MiB", "packs", "pack_MiB", "head_s")}
            for op in ("ingest", "cold"):
                pm[f"{op}_cpu_ms_per_MiB"] = {k: round(med([x[f"{op}_cpu_ms_per_MiB"][k] for x in peer]), 2)
                                              for k in ("archive", "peer")}
            pm["runs"] = [{k: round(v, 1) for k, v in x.items() if isinstance(v, float)} for x in peer]
            out[corpus.name]["peer_ceiling"] = pm
            out[corpus.name]["ratios"].update({
                "ceiling ingest peer/local": pm["ingest_MiB/s"] / m["local_ingest"],
                "ceiling cold peer/local": pm["cold_MiB/s"] / m["local_restore"],
                "ingest s3/peer": m["s3_ingest"] / pm["ingest_MiB/s"],
                "restore cold s3/peer": m["s3_restore_cold"] / pm["cold_MiB/s"]})
    return out


def _node_worker(url: str, catalog: str, cache: str, name: str, files: int, threads: int, q) -> None:
    repo = Repository.open(url, catalog_url=catalog, cache=cache)
    fs = repo.share("bench")
    lat: list[float] = []
    lock = threading.Lock()
    per = files // threads

    def client(i: int) -> None:
        for j in range(per):
            t = time.perf_counter()
            with fs.open_write(f"/{name}-{i}-{j}.csv") as w:
                w.write(os.urandom(1024) + f"{name},{i},{j}\n".encode() * 20)
            with lock:
                lat.append(time.perf_counter() - t)
    ts = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put({"wall": time.perf_counter() - t0, "lat": lat, "requests": repo.packstore.requests})
    repo.close()


def bench_nodes(tmp: Path, s3: RcloneS3, pg: PgCluster, n: int) -> dict:
    runs = []
    for run in range(3):
        url, cat = s3.url(), pg.new_url("nodes")
        r = Repository.init(url, catalog_url=cat, cache=str(tmp / f"n{run}-init"))
        r.add_share("bench")
        r.close()
        dbsize0 = _pg_size(pg, cat)
        packs0 = len(list((s3.root / url.split("/")[2]).rglob("*.pack")))
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        procs = [ctx.Process(target=_node_worker, args=(url, cat, str(tmp / f"n{run}-{x}"), x, n // 2, 16, q))
                 for x in ("a", "b")]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        got = [q.get(timeout=1800) for _ in procs]
        wall = time.perf_counter() - t0
        for p in procs:
            p.join()
        lat = sorted(x for g in got for x in g["lat"])
        packs = len(list((s3.root / url.split("/")[2]).rglob("*.pack"))) - packs0
        runs.append({"wall": max(g["wall"] for g in got), "files_per_s": n / max(g["wall"] for g in got),
                     "p50_ms": lat[len(lat) // 2] * 1000, "p95_ms": lat[int(len(lat) * 0.95)] * 1000,
                     "requests_per_file": sum(g["requests"] for g in got) / n, "pack_objects": packs,
                     "catalog_bytes_per_version": (_pg_size(pg, cat) - dbsize0) / n, "total_wall": wall})
    return {k: med([r[k] for r in runs]) for k in runs[0]}


def _pg_size(pg: PgCluster, url: str) -> int:
    import psycopg
    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname={url.rsplit('/', 1)[1]}") as c:
        return c.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def _fill_folder(repo: Repository, n: int) -> None:
    """A folder of n files, inserted as catalog rows in bulk (this measures listing, not ingest)."""
    # names are their own case fold: name_fold is NULL (schema 0011), as the core writes it
    from sqlalchemy import insert, select
    from archive.catalog import models as m
    fs = repo.share("bench")
    fs.mkdir("/big")
    folder = fs.stat("/big").node_id
    with repo.catalog.write() as s:
        base = (s.scalar(select(m.Node.id).order_by(m.Node.id.desc()).limit(1)) or 0) + 1
        sid = s.scalar(select(m.Share.id).where(m.Share.name == "bench"))
        now = int(time.time() * 1e6)
        for a in range(0, n, 10000):
            ids = range(base + a, base + min(n, a + 10000))
            s.execute(insert(m.Node), [{"id": i, "share_id": sid, "kind": "file", "created_at": now, "mtime": now}
                                       for i in ids])
            s.execute(insert(m.Dentry), [{"parent_id": folder, "name": f"f{i:08d}", "name_fold": None,
                                          "node_id": i, "valid_from": now, "valid_to": None} for i in ids])
            s.execute(insert(m.Version), [{"node_id": i, "number": 1, "size": 0, "mtime": now, "created_at": now,
                                           "deleted": False, "etag": "0" * 32} for i in ids])


def bench_catalog(tmp: Path, pg: PgCluster, n_list: int) -> dict:
    out = {}
    for engine in ("sqlite", "postgresql"):
        commit, listing = [], []
        for run in range(3):
            cat = f"sqlite:///{tmp / f'cat-{run}.sqlite'}" if engine == "sqlite" else pg.new_url("cat")
            r = Repository.init(tmp / f"c-{engine}-{run}", catalog_url=cat)
            r.add_share("bench")
            fs = r.share("bench")
            lat = []
            for i in range(200):
                t = time.perf_counter()
                with fs.open_write(f"/f{i}.txt") as w:
                    w.write(b"x" * 100)
                lat.append(time.perf_counter() - t)
            commit.append(med(lat) * 1000)
            _fill_folder(r, n_list)
            t = time.perf_counter()
            count = sum(1 for _ in fs.listdir("/big"))
            listing.append(time.perf_counter() - t)
            assert count == n_list
            r.close()
        out[engine] = {"commit_ms": med(commit), "list_s": med(listing)}
    out["ratios"] = {"commit pg/sqlite": out["postgresql"]["commit_ms"] / out["sqlite"]["commit_ms"],
                     "list pg/sqlite": out["postgresql"]["list_s"] / out["sqlite"]["list_s"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--list", type=int, default=100000)
    ap.add_argument("--only", default="store,nodes,catalog")
    ap.add_argument("--peer-ceiling", action="store_true",
                    help="store: also time boto3 alone sending the store's requests (the peer's ceiling)")
    ap.add_argument("--radosgw", action="store_true", help="store: also against single-node Ceph radosgw")
    ap.add_argument("--rclone-flag", action="append", default=[],
                    help="extra flag for `rclone serve s3` (e.g. --rclone-flag=--etag-hash= : no MD5 per HEAD)")
    a = ap.parse_args()
    Rclone.flags = a.rclone_flag
    only = a.only.split(",")
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scaleout-", dir=WORK))
    # PostgreSQL only for the sections that use it (its initdb takes minutes on a loaded machine)
    pg = PgCluster().start() if {"nodes", "catalog"} & set(only) else None
    s3 = Rclone().start()
    os.environ.update(s3.env())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    res: dict = {"commit": commit, "rclone_flags": a.rclone_flag, "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
                 "load": os.getloadavg()}
    try:
        if "store" in only:
            res["store"] = bench_store(tmp, s3, a.mib, a.peer_ceiling)
            if a.radosgw:       # everything a run writes stays in the memstore (packs, ceiling copies)
                try:
                    rgw = Radosgw(tmp, max(2 << 30, (10 * a.mib + 1024) * MiB))
                except SystemExit as e:
                    res["store_radosgw"] = {"error": str(e)}
                else:
                    try:
                        res["store_radosgw"] = bench_store(tmp, rgw, a.mib, a.peer_ceiling)
                    finally:
                        rgw.close()
                        os.environ.update(s3.env())
        if "nodes" in only:
            res["nodes"] = bench_nodes(tmp, s3, pg, a.small)
        if "catalog" in only:
            res["catalog"] = bench_catalog(tmp, pg, a.list)
    finally:
        s3.close()
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    path = WORK / f"scaleout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
