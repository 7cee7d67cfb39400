"""WebDAV benchmark: Edge Archive's adapter vs `rclone serve webdav` on a plain directory.

Not a test: prints medians and ratios (Edge / rclone; >1 means Edge is faster; for the
server-CPU rows rclone / Edge, so >1 still means Edge does better).

    python3 bench/webdav.py                      # 1 GiB, 10,000 small files, 3 runs
    python3 bench/webdav.py --big-mib 256 --small 2000 --runs 3   # while the machine is busy

Workloads (one client, keep-alive, loopback; both servers use HTTP Basic auth):
  big PUT / big GET   curl -T / curl -o /dev/null of one incompressible file
  small PUTs          --small files of 1-4 KiB (distinct random content), sequential PUTs
  PROPFIND depth 1    the --small-entry folder: a named-props request (what Explorer, Finder,
                      davfs2 and rclone send) and an allprop request
Targets: big PUT >= 0.5x, big GET >= 0.8x, small PUTs >= 0.5x, PROPFIND >= 1.0x.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

USER, PASSWORD = "bench", "bench-password"
NAMED = b"""<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>
<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/><D:getcontenttype/>
</D:prop></D:propfind>"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


class Edge:
    name = "edge"

    def __init__(self, work: Path) -> None:
        from archive import Repository
        from protocols.base import ServeContext
        from protocols.webdav import WebDAVAdapter

        self.repo = Repository.init(str(work / "repo"))
        self.repo.add_share("bench")
        self.repo.add_user(USER, PASSWORD)
        self.repo.grant(USER, "bench", "rw")
        self.adapter = WebDAVAdapter(self.repo, {"listen": "127.0.0.1:0",
                                                 "require_tls_for_basic": False},
                                     ServeContext())
        self.adapter.start()
        self.base = self.adapter.urls()[0] + "bench"

    def cpu(self) -> float:
        """CPU seconds of the server so far (in-process: the bench thread only waits on curl)."""
        return time.process_time()

    def stop(self) -> None:
        self.adapter.stop(1.0)
        self.repo.close()


class Rclone:
    name = "rclone"

    def __init__(self, work: Path) -> None:
        exe = shutil.which("rclone")
        if not exe:
            raise SystemExit("rclone is not installed (apt-get install rclone)")
        self.dir = work / "rclone"
        (self.dir / "bench").mkdir(parents=True)
        port = free_port()
        self.proc = subprocess.Popen(
            [exe, "serve", "webdav", str(self.dir), "--addr", f"127.0.0.1:{port}",
             "--user", USER, "--pass", PASSWORD],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        self.base = f"http://127.0.0.1:{port}/bench"

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def curl(*args: str) -> None:
    subprocess.run(["curl", "-s", "-S", "-f", "-u", f"{USER}:{PASSWORD}", *args], check=True,
                   stdout=subprocess.DEVNULL)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_server(srv, big: Path, small: list[bytes], run: int, gets: int = 1) -> dict[str, float]:
    out: dict[str, float] = {}
    mib = big.stat().st_size / 2**20
    url = f"{srv.base}/big-{run}.bin"
    out["big PUT MiB/s"] = mib / timed(lambda: curl("-T", str(big), url))
    # --gets N: the median of N GETs of the same file (the first is as cold as the peer's)
    c0 = srv.cpu()
    out["big GET MiB/s"] = statistics.median(mib / timed(lambda: curl("-o", "/dev/null", url))
                                             for _ in range(gets))
    # server CPU per MiB sent (lower is better: here the ratio is rclone's share of Edge's)
    out["big GET srv CPU ms/MiB"] = (srv.cpu() - c0) * 1000 / (mib * gets)
    if not small:
        return out
    s = requests.Session()
    s.auth = (USER, PASSWORD)
    folder = f"{srv.base}/small-{run}"
    assert s.request("MKCOL", folder + "/").status_code == 201

    def puts() -> None:
        for i, data in enumerate(small):
            r = s.put(f"{folder}/f{i:05d}.bin", data=data)
            assert r.status_code in (200, 201, 204), r.status_code
    c0 = srv.cpu()
    out["small PUTs files/s"] = len(small) / timed(puts)
    out["small PUT srv CPU ms"] = (srv.cpu() - c0) * 1000 / len(small)

    def pf(body: bytes | None) -> None:
        r = s.request("PROPFIND", folder + "/", data=body, headers={"Depth": "1"})
        n = len(re.findall(rb"</(?:\w+:)?response>", r.content))
        assert r.status_code == 207 and n >= len(small), (r.status_code, n)
    out["PROPFIND named /s"] = 1 / statistics.median(timed(lambda: pf(NAMED)) for _ in range(3))
    out["PROPFIND allprop /s"] = 1 / statistics.median(timed(lambda: pf(None)) for _ in range(3))
    s.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--small", type=int, default=10000, help="0: the big file only")
    ap.add_argument("--gets", type=int, default=1, help="GETs of the big file per run (median)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="webdav-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    big = work / "big.bin"
    with open(big, "wb") as f:
        for _ in range(args.big_mib):
            f.write(os.urandom(1 << 20))
    rnd = os.urandom(4096 + args.small)
    small = [rnd[i:i + 1024 + (i * 37) % 3072] for i in range(args.small)]
    results: dict[str, dict[str, list[float]]] = {"edge": {}, "rclone": {}}
    try:
        for run in range(args.runs):
            for cls in (Edge, Rclone):
                srv = cls(work / f"{cls.name}-{run}")
                try:
                    for k, v in bench_server(srv, big, small, run, args.gets).items():
                        results[cls.name].setdefault(k, []).append(v)
                finally:
                    srv.stop()
                shutil.rmtree(work / f"{cls.name}-{run}", ignore_errors=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"# WebDAV bench: {args.big_mib} MiB file, {args.small} small files, "
          f"{args.runs} runs, medians; {platform.node()} {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"{'workload':24} {'edge':>12} {'rclone':>12} {'ratio':>8}")
    for k in results["edge"]:
        e = statistics.median(results["edge"][k])
        r = statistics.median(results["rclone"][k])
        ratio = (r / e if e else 0) if "CPU" in k else (e / r if r else 0)
        print(f"{k:24} {e:12.2f} {r:12.2f} {ratio:8.2f}")


if __name__ == "__main__":
    main()
