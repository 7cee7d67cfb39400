"""Per-version cost of the core's catalog write path (issue 9), in-process, no peer.

    python -m bench.core_write [--files 2000] [--singles 300] [--dirs 2000] [--profile]

Prints, for an unencrypted local repository on SQLite:
  single    one durable commit per small file (what one FTP/WebDAV client uploading files one
            after another costs): ms per file and SQL statements per file
  batch     `commit_many` of N small files in one transaction (a tree put): ms and statements per file
  mkdir     `mkdir_many` of N folders (10 x N/10 nested), set_times_many of the same folders
  namespace T threads (clients) each creating and removing files in a folder of its own, one
            change at a time (NFS CREATE/REMOVE): ms per change and durable commits per change
  create    one client creating and removing files one after another (NFS CREATE/REMOVE, SMB
            CLOSE): ms and CPU per namespace change
`single` also prints the CPU time per commit (process time, all threads): the Python part,
apart from fsync latency, which varies with the machine's load.  `--stub-fsync` makes fsync a
no-op and SQLite `synchronous=OFF` (nothing is durable: only to measure the CPU of the code).
The script runs against whichever `archive` package is first on PYTHONPATH (same-run A/B:
`PYTHONPATH=/tmp/base python bench/core_write.py` vs the tree's own).
Statements are counted at the SQLite driver (sqlite3 trace callback), so raw DBAPI
statements count as much as SQLAlchemy ones; BEGIN/COMMIT/SAVEPOINT included.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import event, text

from archive import Repository
from archive.streams import commit_many


class Counter:
    def __init__(self, engine):
        self.n = 0

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _rec):
            dbapi_conn.set_trace_callback(self._hit)
        engine.dispose()          # connections made from now on are traced

    def _hit(self, _sql):
        self.n += 1


def _head_seq(repo) -> int:
    with repo.catalog.session() as s:
        return s.execute(text("SELECT seq FROM chain_head WHERE id = 1")).scalar()


def create_remove(fs, n: int) -> tuple[float, float]:
    """ms and CPU ms per namespace change of one client: create_file then remove, n times."""
    fs.mkdir("/cr")
    t, c = time.perf_counter(), time.process_time()
    for i in range(n):
        fs.create_file(f"/cr/f{i}")
        fs.remove(f"/cr/f{i}")
    return (time.perf_counter() - t) / (2 * n) * 1000, (time.process_time() - c) / (2 * n) * 1000


def namespace(fs, threads: int, per_thread: int) -> tuple[float, float]:
    """ms per namespace change and durable commits per change, `threads` clients at once."""
    for t in range(threads):
        fs.mkdir(f"/ns/t{t}", parents=True)

    def client(t):
        for i in range(per_thread):
            fs.create_file(f"/ns/t{t}/f{i}")
            fs.remove(f"/ns/t{t}/f{i}")
    seq0, t0 = _head_seq(fs.repo), time.perf_counter()
    ts = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    changes = threads * per_thread * 2
    return (time.perf_counter() - t0) / changes * 1000, (_head_seq(fs.repo) - seq0) / changes


def run(files: int, singles: int, dirs: int, profile: bool, ns_threads: int = 8, ns_each: int = 100,
        stub_fsync: bool = False, creates: int = 300) -> dict:
    work = Path(tempfile.mkdtemp(prefix="core-write-"))
    repo = Repository.init(work / "repo")
    repo.add_share("s")
    if stub_fsync:
        os.fsync = lambda fd: None

        @event.listens_for(repo.catalog.engine, "connect")
        def _no_sync(dbapi_conn, _rec):
            dbapi_conn.execute("PRAGMA synchronous=OFF")
    cnt = Counter(repo.catalog.engine)
    fs = repo.share("s")
    payloads = [os.urandom(200) + b"x" * (i % 4000) for i in range(max(files, singles))]
    out = {}
    prof = cProfile.Profile() if profile else None

    # single durable commits
    fs.mkdir("/single")
    n0, t, c = cnt.n, time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    for i in range(singles):
        w = fs.open_write(f"/single/f{i:05d}")
        w.write(payloads[i])
        w.commit()
    if prof:
        prof.disable()
    el = time.perf_counter() - t
    out["single_ms"] = el / singles * 1000
    # CPU time of the process (all threads, kernel time of the fsyncs included): what the Python
    # of a commit costs, apart from waiting for the disk (fsync latency varies with the load).
    out["single_cpu_ms"] = (time.process_time() - c) / singles * 1000
    out["single_stmts"] = (cnt.n - n0) / singles

    # one batch (a tree put)
    fs.mkdir_many([f"/tree/d{i % 20:02d}" for i in range(20)])
    writers = []
    for i in range(files):
        w = fs.open_write(f"/tree/d{i % 20:02d}/f{i:05d}", check=False)
        w.write(payloads[i])
        w.prepare()
        writers.append(w)
    n0, t = cnt.n, time.perf_counter()
    commit_many(writers)
    el = time.perf_counter() - t
    out["batch_ms"] = el / files * 1000
    out["batch_stmts"] = (cnt.n - n0) / files

    # mkdir_many / set_times_many
    paths = [f"/dirs/a{i // 10:04d}/b{i % 10}" for i in range(dirs)]
    n0, t = cnt.n, time.perf_counter()
    made = fs.mkdir_many(paths)
    out["mkdir_s"] = time.perf_counter() - t
    out["mkdir_made"] = made
    out["mkdir_stmts"] = cnt.n - n0
    n0, t = cnt.n, time.perf_counter()
    fs.set_times_many([(p, 1_700_000_000.0) for p in paths])
    out["set_times_s"] = time.perf_counter() - t
    out["set_times_stmts"] = cnt.n - n0
    n0 = cnt.n
    out["create_ms"], out["create_cpu_ms"] = create_remove(fs, creates)
    out["create_stmts"] = (cnt.n - n0) / (2 * creates)
    out["ns_ms"], out["ns_commits"] = namespace(fs, ns_threads, ns_each)
    repo.close()
    if prof:
        pstats.Stats(prof).sort_stats(os.environ.get("SORT", "cumulative")).print_stats(int(os.environ.get("TOP", "25")))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--singles", type=int, default=300)
    ap.add_argument("--dirs", type=int, default=2000)
    ap.add_argument("--ns-threads", type=int, default=8)
    ap.add_argument("--ns-each", type=int, default=100)
    ap.add_argument("--creates", type=int, default=300)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--stub-fsync", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.files, a.singles, a.dirs, a.profile, a.ns_threads, a.ns_each, a.stub_fsync, a.creates)
    print(f"single commit: {r['single_ms']:.3f} ms/file ({r['single_cpu_ms']:.3f} ms CPU), "
          f"{r['single_stmts']:.1f} statements/file")
    print(f"batch of {a.files}: {r['batch_ms']:.3f} ms/file, {r['batch_stmts']:.1f} statements/file")
    print(f"mkdir_many {r['mkdir_made']} folders: {r['mkdir_s']:.2f} s, {r['mkdir_stmts']} statements")
    print(f"set_times_many {a.dirs}: {r['set_times_s']:.2f} s, {r['set_times_stmts']} statements")
    print(f"create+remove, 1 client: {r['create_ms']:.3f} ms/change ({r['create_cpu_ms']:.3f} ms CPU), "
          f"{r['create_stmts']:.1f} statements/change")
    print(f"namespace, {a.ns_threads} clients: {r['ns_ms']:.2f} ms/change, "
          f"{r['ns_commits']:.2f} durable commits/change")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
