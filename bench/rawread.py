"""CPU and wall time per `open_read` + `read` of a 4 KiB file, in-process (branch rawread, issue 9).

    PYTHONPATH=<tree> python bench/rawread.py [--engine] [--rounds 5] [--reads 2000]

Makes a repository of 200 distinct 4 KiB files in a temporary folder, reopens it (a local SQLite
catalog at head: native mode), optionally makes the SQLAlchemy engine first (--engine: what a
server that has served a login runs on), then times rounds of reads cycling over the files.
Prints one JSON line: the median, min and max per read of each round's CPU (process_time) and
wall time, in microseconds, and whether the engine existed at the end."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from archive import Repository


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reads", type=int, default=2000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "repo"
        r = Repository.init(path)
        r.add_share("s")
        fs = r.share("s")
        names = []
        for i in range(200):
            name = f"/f{i:03d}.bin"
            with fs.open_write(name) as w:
                w.write(os.urandom(4096))
            names.append(name)
        r.close()
        r = Repository.open(path)
        fs = r.share("s")
        if a.engine:
            r.catalog.engine
        for name in names[:20]:                       # warm up: caches, prepared statements
            with fs.open_read(name) as f:
                f.read()
        cpu, wall = [], []
        for _ in range(a.rounds):
            c0, w0 = time.process_time(), time.perf_counter()
            for i in range(a.reads):
                with fs.open_read(names[i % len(names)]) as f:
                    assert len(f.read()) == 4096
            cpu.append((time.process_time() - c0) / a.reads * 1e6)
            wall.append((time.perf_counter() - w0) / a.reads * 1e6)
        engine = r.catalog._engine is not None
        r.close()
    print(json.dumps({"engine_at_end": engine, "cpu_us": [round(statistics.median(cpu), 1), round(min(cpu), 1), round(max(cpu), 1)],
                      "wall_us": [round(statistics.median(wall), 1), round(min(wall), 1), round(max(wall), 1)]}))


if __name__ == "__main__":
    main()
