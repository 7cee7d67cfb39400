"""`archivectl put` of a tree of N small files into a share with and without a quota.

    python -m bench.quota_usage [--code DIR] [--files 5000,20000] [--runs 3]

Why: before the usage counter (branch catalog14, migration 0015) every upload to a share with a
quota summed the size of every current file of the share when it opened (ShareFS.usage), so a
tree put cost O(N^2).  `--code` runs another checkout's `archive` (the tree before the change)
for the before figure; the ratio quota / no quota is taken in the same run.  Prints one line per
(files, quota) with the median wall time of `--runs` puts, each into a fresh repository.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_tree(root: Path, n: int) -> None:
    """n files of 100-300 random bytes, 100 per folder."""
    if root.exists() and sum(1 for _ in root.rglob("*") if _.is_file()) == n:
        return
    shutil.rmtree(root, ignore_errors=True)
    rnd = random.Random(n)
    for i in range(n):
        d = root / f"d{i // 100:04}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06}.bin").write_bytes(rnd.randbytes(rnd.randint(100, 300)))


def put_once(code: Path, work: Path, tree: Path, quota: bool) -> float:
    repo = work / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(code.resolve()), "EDGE_ARCHIVE_REPO": str(repo.resolve())}
    env.pop("EDGE_ARCHIVE_CONFIG", None)

    def cli(*args: str) -> None:
        # (cwd: `-m` puts the current folder first on sys.path, which would win over PYTHONPATH)
        subprocess.run([sys.executable, "-m", "archive", *args], env=env, check=True, capture_output=True, cwd=work)
    cli("init")
    cli("share", "add", "s", *(["--quota", "10G"] if quota else []))
    t = time.perf_counter()
    cli("put", str(tree.resolve()), "/s/tree")
    secs = time.perf_counter() - t
    shutil.rmtree(repo, ignore_errors=True)
    return secs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", default=str(HERE.parent), help="the checkout whose `archive` runs")
    ap.add_argument("--files", default="5000,20000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=str(HERE / "work" / "quota"))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"code {a.code}; load {os.getloadavg()[0]:.2f}", flush=True)
    for n in map(int, a.files.split(",")):
        tree = work / f"tree-{n}"
        make_tree(tree, n)
        got = {}
        for quota in (False, True):
            times = [put_once(Path(a.code), work, tree, quota) for _ in range(a.runs)]
            got[quota] = statistics.median(times)
            print(f"{n} files quota={quota}: median {got[quota]:.2f} s of {[round(x, 2) for x in times]} "
                  f"({n / got[quota]:.0f} files/s)", flush=True)
        print(f"{n} files: quota / no quota = {got[True] / got[False]:.2f}; load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
