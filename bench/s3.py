"""S3 benchmark: Edge Archive's S3 adapter vs `rclone serve s3` on a plain folder, with boto3.

Not a test: prints medians and ratios (Edge / rclone; >1 means Edge is faster).

    python3 bench/s3.py                                   # 1 GiB, 10,000 small PUTs, 3 runs
    python3 bench/s3.py --big-mib 256 --small 2000 --runs 3   # while the machine is busy
    python3 bench/s3.py --radosgw                         # also single-node Ceph radosgw

`--radosgw` adds Ceph's RADOS gateway (Debian `radosgw ceph-mon ceph-osd`, one monitor and one
memstore OSD on loopback, started by tests/ceph_rgw.sh as the test suite does): an object store
sites really run, next to rclone's plain folder. Its in-memory OSD is sized for every run's two
large objects plus 1 GiB (radosgw reclaims deleted objects only hours later; a full memstore
stalls PUTs until the client times out).

Workloads (one boto3 client, loopback; both servers check SigV4):
  big PUT single      put_object of one incompressible file (one request, streamed)
  big PUT multipart   upload_file with 64 MiB parts, 4 threads
  big GET             download_fileobj (boto3's ranged parallel GETs)
  small PUTs          --small objects of 1-4 KiB (distinct random content), sequential
  listing             list_objects_v2 pages over the --small keys
Targets (issue 12): GET and listing >= 0.8x rclone, PUT and small PUTs >= 0.5x.

    python3 bench/s3.py --profile 500     # where one small PUT's time goes, inside the server

`--profile N` serves Edge only, wraps the WSGI app in cProfile (one sequential client, so one
request at a time), PUTs N small objects and prints the top functions and the adapter's share:
the request's wall time in the app minus the time inside the core (ShareFS/catalog/streams
calls the handlers make), which is what the adapter itself spends (SigV4, header parsing, key
checks, XML, the auth and grant lookups it could avoid).
"""
from __future__ import annotations

import argparse
import io
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

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.webdav import free_port, wait_port   # noqa: E402 (one copy of the port helpers)

KEY, SECRET = "BENCHKEY000000000000", "benchsecretbenchsecretbenchsecret0000000"
MiB = 1 << 20


class Edge:
    name = "edge"

    def __init__(self, work: Path):
        from archive import Repository, accesskeys
        from protocols.base import ServeContext
        from protocols.s3 import S3Adapter
        self.repo = Repository.init(work / "repo")
        self.repo.add_share("bench")
        self.repo.add_user("bench", "bench-password")
        self.repo.grant("bench", "bench", "rw")
        accesskeys.create_key(self.repo, "bench", key_id=KEY, secret=SECRET)
        self.adapter = S3Adapter(self.repo, {"listen": "127.0.0.1:0"}, ServeContext())
        self.adapter.start()
        self.url = self.adapter.urls()[0]

    def stop(self) -> None:
        self.adapter.stop(1.0)
        self.repo.close()


class Rclone:
    name = "rclone"

    def __init__(self, work: Path):
        exe = Path(sys.executable).parent / "rclone"
        exe = str(exe) if exe.exists() else shutil.which("rclone")
        (work / "plain" / "bench").mkdir(parents=True)
        port = free_port()
        self.proc = subprocess.Popen([exe, "serve", "s3", str(work / "plain"), "--addr", f"127.0.0.1:{port}",
                                      "--auth-key", f"{KEY},{SECRET}", "--config", "/dev/null"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Radosgw:
    """Single-node Ceph radosgw (memstore OSD): tests/ceph_rgw.sh, the test suite's script."""
    name = "radosgw"
    memstore_bytes = 2 << 30

    def __init__(self, work: Path):
        for tool in ("ceph-mon", "ceph-osd", "radosgw"):
            if shutil.which(tool) is None:
                raise SystemExit(f"{tool} is not installed (Debian radosgw ceph-mon ceph-osd)")
        self.dir = work / "rgw"
        port = free_port()
        p = subprocess.run(["bash", str(ROOT / "tests" / "ceph_rgw.sh"), str(self.dir), str(free_port()), str(port),
                            KEY, SECRET], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "EDGE_RGW_MEMSTORE_BYTES": str(self.memstore_bytes)})
        if "ready" not in p.stdout:
            self.stop()
            raise SystemExit(f"radosgw did not start: {p.stdout}{p.stderr}")
        self.url = f"http://127.0.0.1:{port}"
        client(self.url).create_bucket(Bucket="bench")

    def stop(self) -> None:
        for pid in self.dir.glob("*.pid"):
            subprocess.run(["kill", "-9", pid.read_text().strip()], capture_output=True)


def client(url: str):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        region_name="us-east-1",
                        config=Config(response_checksum_validation="when_required",
                                      request_checksum_calculation="when_required"))


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_server(srv, big: Path, small: list[bytes], run: int) -> dict[str, float]:
    c = client(srv.url)
    size = big.stat().st_size / MiB
    out = {}
    with open(big, "rb") as f:
        out["big PUT single (MiB/s)"] = size / timed(lambda: c.put_object(Bucket="bench", Key=f"big{run}", Body=f))
    cfg = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB, max_concurrency=4)
    out["big PUT multipart (MiB/s)"] = size / timed(lambda: c.upload_file(str(big), "bench", f"mp{run}", Config=cfg))
    sink = io.BytesIO()

    class Null(io.RawIOBase):
        """A seekable sink: s3transfer 0.19 writes ranges to a seekable output at their offsets; to a
        non-seekable one it buffers out-of-order ranges in a window of 1,000 x 256 KiB and, with
        4 x 64 MiB ranges in flight, deadlocks (a 1 GiB GET never returned)."""
        def writable(self):
            return True

        def seekable(self):
            return True

        def seek(self, offset, whence=0):
            return offset

        def write(self, b):
            return len(b)
    out["big GET (MiB/s)"] = size / timed(lambda: c.download_fileobj("bench", f"mp{run}", Null(), Config=cfg))
    del sink

    def puts():
        for i, data in enumerate(small):
            c.put_object(Bucket="bench", Key=f"small{run}/f{i:05d}", Body=data)
    out["small PUTs (objects/s)"] = len(small) / timed(puts)

    def listing():
        n = 0
        for page in c.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=f"small{run}/"):
            n += len(page.get("Contents", []))
        assert n == len(small), n
    out["listing (keys/s)"] = len(small) / timed(listing)
    c.delete_objects(Bucket="bench", Delete={"Objects": [{"Key": f"big{run}"}, {"Key": f"mp{run}"}]})
    return out


def profile(n: int) -> None:
    """cProfile of `n` small PUTs inside the server; prints the adapter's share of a request."""
    import cProfile
    import pstats
    work = Path(tempfile.mkdtemp(prefix="s3prof-"))
    try:
        srv = Edge(work)
        app = srv.adapter.app
        core_time = [0.0]
        depth = threading.local()

        per: dict[str, float] = {}

        def timed_core(fn):
            """Count the time in a core entry point once (not again for core calls nested in it)."""
            def inner(*a, **k):
                if getattr(depth, "n", 0):
                    return fn(*a, **k)
                depth.n = 1
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    depth.n = 0
                    dt = time.perf_counter() - t
                    core_time[0] += dt
                    per[fn.__qualname__] = per.get(fn.__qualname__, 0.0) + dt
            return inner
        from archive import accesskeys, objects, repository, sharefs, streams
        for owner, names in ((repository.Repository, ("share", "shares_for")), (sharefs.ShareFS, ("open_write", "ensure_folders")),
                             (streams.Writer, ("write", "commit", "abort")), (objects, ("ensure_folders", "current")),
                             (accesskeys, ("lookup", "can_create_shares"))):
            for name in names:
                setattr(owner, name, timed_core(getattr(owner, name)))
        # The body's reads: the client sends the body when it gets "100 Continue", which the
        # adapter sends on the first read, so the round trip to the client is spent in here.
        from protocols.s3 import body as s3body
        body_time = [0.0]

        def timed_read(self, *a, _read=s3body.Body.read, **k):
            t = time.perf_counter()
            try:
                return _read(self, *a, **k)
            finally:
                body_time[0] += time.perf_counter() - t
        s3body.Body.read = timed_read
        prof = cProfile.Profile()
        total = [0.0]
        profiling = [False]

        def wrapped(environ, start_response, inner=app.__call__):
            t = time.perf_counter()
            if profiling[0]:
                prof.enable()
            try:
                return list(inner(environ, start_response))
            finally:
                if profiling[0]:
                    prof.disable()
                total[0] += time.perf_counter() - t
        srv.adapter._server.wsgi_app = wrapped
        c = client(srv.url)
        data = [os.urandom(1024 + (i * 37) % 3072) for i in range(n)]
        c.put_object(Bucket="bench", Key="warm", Body=b"x")
        total[0] = core_time[0] = body_time[0] = 0.0
        t0 = time.perf_counter()          # 1. timers only (no profiler overhead): the shares
        for i, d in enumerate(data):
            c.put_object(Bucket="bench", Key=f"p/f{i:05d}", Body=d)
        wall = time.perf_counter() - t0
        app_t, core, in_body = total[0], core_time[0], body_time[0]
        per_put = {k: v / n * 1000 for k, v in per.items()}
        per.clear()
        profiling[0] = True               # 2. the same again under cProfile: where the adapter's time goes
        for i, d in enumerate(data):
            c.put_object(Bucket="bench", Key=f"q/f{i:05d}", Body=d)
        srv.stop()
        st = pstats.Stats(prof)
        print(f"{n} small PUTs: client wall {wall / n * 1000:.2f} ms/PUT, in the WSGI app "
              f"{app_t / n * 1000:.2f} ms/PUT, of which core calls {core / n * 1000:.2f} ms, "
              f"adapter {(app_t - core) / n * 1000:.2f} ms ({(app_t - core) / app_t:.0%} of the app's time; "
              f"of which reading the body {in_body / n * 1000:.2f} ms: the client's 100-continue round trip); "
              f"client+HTTP outside the app {(wall - app_t) / n * 1000:.2f} ms; load {os.getloadavg()[0]:.1f}")
        print("core entry points (ms/PUT):", ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_put.items(),
                                                                                     key=lambda kv: -kv[1])))
        adapter = sorted(((v[2], k) for k, v in st.stats.items() if "/protocols/" in k[0]), reverse=True)[:12]
        print("adapter functions by own time (ms/PUT):",
              ", ".join(f"{Path(f).name}:{fn} {t / n * 1000:.2f}" for t, (f, _l, fn) in adapter))
        st.sort_stats("cumulative").print_stats("protocols|socket|cheroot", 30)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", type=int, default=0, help="profile N small PUTs inside the server")
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--radosgw", action="store_true", help="also measure single-node Ceph radosgw")
    args = ap.parse_args()
    if args.profile:
        return profile(args.profile)
    work = Path(tempfile.mkdtemp(prefix="s3bench-"))
    try:
        big = work / "big.bin"
        with open(big, "wb") as f:
            for _ in range(args.big_mib):
                f.write(os.urandom(MiB))
        small = [os.urandom(1024 + (i * 37) % 3072) for i in range(args.small)]
        results: dict[str, dict[str, list[float]]] = {}
        peers = [Rclone, Radosgw] if args.radosgw else [Rclone]
        Radosgw.memstore_bytes = max(2 << 30, (2 * args.big_mib * args.runs + 1024) * MiB)
        for cls in [Edge, *peers]:
            d = work / cls.name
            d.mkdir()
            srv = cls(d)
            try:
                for run in range(args.runs):
                    for k, v in bench_server(srv, big, small, run).items():
                        results.setdefault(k, {}).setdefault(cls.name, []).append(v)
            finally:
                srv.stop()
        print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; "
              f"{args.big_mib} MiB, {args.small} small objects, medians of {args.runs}")
        names = [p.name for p in peers]
        print("| workload | Edge | " + " | ".join(f"{n} | ratio vs {n}" for n in names) + " |")
        print("|---|---:|" + "---:|---:|" * len(names))
        for k, by in results.items():
            e = statistics.median(by["edge"])
            cells = []
            for n in names:
                r = statistics.median(by[n])
                cells += [f"{r:.1f}", f"{e / r:.2f}"]
            print(f"| {k} | {e:.1f} | " + " | ".join(cells) + " |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
