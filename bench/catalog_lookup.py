"""stat / open_read latency on a repository kept by `bench.core --only catalog --catalog-keep`,
with SQLite's memory map of the catalog off and on (EDGE_ARCHIVE_SQLITE_MMAP), alternating.

    python -m bench.catalog_lookup REPO_DIR FILES [--folder 100000] [--runs 3] [--mmap 268435456]

Each run is a fresh process (its own connections and page cache state of SQLite; the kernel's
page cache is shared, so the first run warms it for all).  Prints the medians of the runs'
p50/p99 (ms, wall and thread CPU) and the process's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def one(repo: str, files: int, folder: int) -> dict:
    import resource

    from archive import Repository
    from bench.core import _lookup_times
    from bench.peers import PASSWORD
    with Repository.open(repo, password=PASSWORD) as r:
        fs = r.share("bench")
        _lookup_times(fs, files, folder, n=100)          # (warm-up: connections, first pages)
        got = _lookup_times(fs, files, folder, n=600)
    got["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("files", type=int)
    ap.add_argument("--folder", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mmap", type=int, default=256 * 1024 * 1024)
    ap.add_argument("--child", action="store_true")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(one(a.repo, a.files, a.folder)))
        return
    res: dict[int, list[dict]] = {0: [], a.mmap: []}
    for _ in range(a.runs):
        for mm in res:
            env = {**os.environ, "EDGE_ARCHIVE_SQLITE_MMAP": str(mm)}
            out = subprocess.run([sys.executable, "-m", "bench.catalog_lookup", a.repo, str(a.files), "--folder",
                                  str(a.folder), "--child"], env=env, capture_output=True, text=True, check=True,
                                 cwd=Path(__file__).resolve().parent.parent)
            res[mm].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{a.files:,} files, load {os.getloadavg()[0]:.2f}")
    for mm, runs in res.items():
        m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"mmap {mm >> 20} MiB: stat p50 {m['stat_p50']:.3f} p99 {m['stat_p99']:.3f} (CPU {m['stat_cpu_p50']:.3f}/"
              f"{m['stat_cpu_p99']:.3f}); open_read p50 {m['read_p50']:.3f} p99 {m['read_p99']:.3f} (CPU "
              f"{m['read_cpu_p50']:.3f}/{m['read_cpu_p99']:.3f}) ms; peak RSS {m['rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
