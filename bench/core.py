"""Core benchmark: Edge Archive vs restic vs borg on the same data, all encrypted.

    python -m bench.core [--scale 0.25] [--only ingest,chunks,file1000,rss,catalog,profile]

Prints markdown tables (throughput MB/s, stored bytes, ratios vs the faster / smaller peer)
and writes every number to <work>/results-<time>.json.  It measures, it does not assert:
the targets are printed next to the numbers so a reader sees what is met.

Sections:
  ingest    the four corpora (bench/corpora.py) through all three tools, then restore of the
            newest and the oldest snapshot (verified byte for byte)
  chunks    the versions corpus through Edge Archive at several average chunk sizes
  file1000  one small file with 1,000 versions (Python API): read v1 vs v1000
  rss       peak RSS of `archivectl put` / `get` of a 4 GiB file (x scale)
  catalog   1,000,000 files (x scale) via the Python API: build time, stat/open_read latency,
            listing a 100,000-entry folder and the whole tree, catalog bytes per version
  profile   cProfile of `archivectl put` of the random and text corpora (in-process)
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import corpora as C          # noqa: E402
from bench.peers import PASSWORD, TOOLS, Edge, Run, du, run, versions_info   # noqa: E402

MB = 1e6
MiB = C.MiB
GiB = C.GiB
SECTIONS = ["ingest", "chunks", "file1000", "rss", "catalog", "profile"]


def log(*a) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt_bytes(n: float) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f} B"


def table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def machine() -> dict:
    model = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) * 1024
    return {"nproc": os.cpu_count(), "cpu": model, "ram": mem, "python": platform.python_version(),
            "loadavg": os.getloadavg(), **versions_info()}


# --------------------------------------------------------------------------- ingest + restore

def bench_corpus(corpus: C.Corpus, tools: list[str], work: Path, repeat: int) -> dict:
    """All states through every tool (interleaved per state), then restores; `repeat` times."""
    tree = work / "corpora" / corpus.name / "tree"
    corpus.prepare(work / "cache")
    res: dict = {"corpus": corpus.name, "description": corpus.description, "notes": corpus.notes,
                 "states": corpus.n_states, "runs": []}
    for rep in range(repeat):
        insts = {t: TOOLS[t](work / "repos" / t, work / "scratch" / t) for t in tools}
        for t in insts.values():
            t.reset()
            t.init()
        if rep == 0:
            res["fixed_s"] = fixed_costs(insts)
        per = {t: {"ingest_s": [], "rss": [], "cpu": []} for t in tools}
        logical = 0
        manifests: dict[int, dict] = {}
        gen_s = 0.0
        for i in range(corpus.n_states):
            t0 = time.perf_counter()
            corpus.apply(i, tree)
            gen_s += time.perf_counter() - t0
            logical += C.tree_bytes(tree)
            if i in (0, corpus.n_states - 1):
                manifests[i] = C.manifest(tree)
            for name, tool in insts.items():
                c0 = _children_cpu()
                r = tool.ingest(tree, corpus.name)
                per[name]["cpu"].append(_children_cpu() - c0)
                per[name]["ingest_s"].append(r.seconds)
                per[name]["rss"].append(r.max_rss)
            log(f"{corpus.name} rep {rep} state {i + 1}/{corpus.n_states}: " +
                ", ".join(f"{n} {per[n]['ingest_s'][-1]:.2f}s" for n in tools))
        run_res = {"logical": logical, "gen_s": gen_s, "tools": {}}
        for name, tool in insts.items():
            d = {"ingest_s": sum(per[name]["ingest_s"]), "per_state_s": per[name]["ingest_s"],
                 "ingest_cpu_s": sum(per[name]["cpu"]),
                 "max_rss": max(per[name]["rss"]), "stored": tool.stored()}
            if name == "edge":
                try:
                    d["stats"] = tool.stats()
                except Exception as e:   # stats is informative only
                    d["stats"] = {"error": str(e)[:300]}
            # restores: newest, and oldest when there is more than one state
            which = [("newest", -1, corpus.n_states - 1)]
            if corpus.n_states > 1:
                which.append(("oldest", 0, 0))
            for label, idx, state in which:
                dest = work / "restore" / name
                if dest.exists():
                    shutil.rmtree(dest)
                try:
                    r = tool.restore(idx, dest)
                    got = dest
                    nbytes = C.tree_bytes(got)
                    # Edge keeps renamed-away paths (put does not delete): allow extras for it
                    ok = C.verify(got, manifests[state], allow_extra=(name == "edge"))
                    d[f"restore_{label}_s"] = r.seconds
                    d[f"restore_{label}_bytes"] = nbytes
                    d[f"restore_{label}_rss"] = r.max_rss
                    d[f"restore_{label}_verify"] = ok
                except Exception as e:
                    d[f"restore_{label}_error"] = str(e)[-500:]
                    log(f"restore {name} {label} failed: {e}")
                finally:
                    if dest.exists():
                        shutil.rmtree(dest)
            run_res["tools"][name] = d
            log(f"{corpus.name} rep {rep} {name}: ingest {d['ingest_s']:.1f}s stored {fmt_bytes(d['stored'])} "
                f"restore newest {d.get('restore_newest_s', float('nan')):.1f}s "
                f"{d.get('restore_newest_verify', d.get('restore_newest_error', ''))[:80]}")
        res["runs"].append(run_res)
        for t in insts.values():
            shutil.rmtree(t.repo, ignore_errors=True)
    return res


def _children_cpu() -> float:
    """User + system seconds of every reaped child so far (GNU time reaps the tool, so its
    ingest's CPU lands here): on a shared machine the firmer figure than wall time."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def fixed_costs(insts: dict) -> dict[str, float]:
    """Median wall time of a do-nothing command per tool (process start, key derivation, catalog
    open): every ingest and restore pays it once, so it dominates tiny --scale runs."""
    cmds = {"edge": lambda t: t.ctl("ls", "/"),
            "restic": lambda t: run(["restic", "snapshots", "-q"], env=t.env()),
            "borg": lambda t: run(["borg", "list", str(t.repo)], env=t.env())}
    out = {}
    for name, tool in insts.items():
        out[name] = med([cmds[name](tool).seconds for _ in range(3)])
    return out


def summarize_ingest(results: list[dict], tools: list[str]) -> str:
    """One row per (corpus, tool): medians over repeats; ratios of edge vs the best peer."""
    rows = []
    ratio_rows = []
    targets = {"versions": (1.0, 0.6), "sdists": (1.0, 1.0), "random": (1.5, 1.0), "text": (1.5, 1.0)}
    for res in results:
        runs = res["runs"]
        logical = med([r["logical"] for r in runs])
        agg = {}
        for t in tools:
            ds = [r["tools"][t] for r in runs]
            a = {
                "mbps": logical / med([d["ingest_s"] for d in ds]) / MB,
                "stored": med([d["stored"] for d in ds]),
                "rss": max(d["max_rss"] for d in ds),
                "cpu": med([d.get("ingest_cpu_s", float("nan")) for d in ds]),
            }
            for lab in ("newest", "oldest"):
                secs = [d[f"restore_{lab}_s"] for d in ds if f"restore_{lab}_s" in d]
                if secs:
                    a[f"r_{lab}"] = med([d[f"restore_{lab}_bytes"] for d in ds if f"restore_{lab}_s" in d]) / med(secs) / MB
                    a[f"r_{lab}_s"] = med(secs)
                    a[f"v_{lab}"] = ds[0].get(f"restore_{lab}_verify", "?")
                elif any(f"restore_{lab}_error" in d for d in ds):
                    a[f"v_{lab}"] = "ERROR"
            agg[t] = a
            rows.append([res["corpus"], t, f"{a['mbps']:.1f}", f"{a['cpu']:.2f}", f"{a['stored']:,}",
                         f"{a['stored'] / logical:.3f}", fmt_bytes(a["rss"]),
                         f"{a.get('r_newest', float('nan')):.1f} ({a.get('v_newest', '-')})",
                         f"{a.get('r_oldest', float('nan')):.1f} ({a.get('v_oldest', '-')})" if "v_oldest" in a else "-"])
        peers = [t for t in tools if t != "edge"]
        if "edge" in agg and peers:
            e = agg["edge"]
            fast = max(peers, key=lambda t: agg[t]["mbps"])
            small = min(peers, key=lambda t: agg[t]["stored"])
            rfast = max(peers, key=lambda t: agg[t].get("r_newest", 0))
            ti, ts = targets.get(res["corpus"], (1.0, 1.0))
            ing = e["mbps"] / agg[fast]["mbps"]
            sto = e["stored"] / agg[small]["stored"]
            rr = e.get("r_newest", 0) / agg[rfast].get("r_newest", float("nan"))
            ratio_rows.append([res["corpus"], f"{ing:.2f}x vs {fast} (target >= {ti}x: {'MET' if ing >= ti else 'not met'})",
                               f"{sto:.2f}x vs {small} (target <= {ts}x: {'MET' if sto <= ts else 'not met'})",
                               f"{rr:.2f}x vs {rfast} (target >= 1x: {'MET' if rr >= 1 else 'not met'})"])
        res["summary"] = agg
        res["logical_median"] = logical
    out = table(["corpus", "tool", "ingest MB/s", "ingest CPU s", "stored bytes", "stored/logical", "peak RSS",
                 "restore newest MB/s (verify)", "restore oldest MB/s (verify)"], rows)
    fixed = [f"{t} {res['fixed_s'][t]:.2f}s" for res in results[:1] if "fixed_s" in res for t in tools]
    if fixed:
        out += "\n\nfixed cost per invocation (a do-nothing command): " + ", ".join(fixed)
    if ratio_rows:
        out += "\n\n" + table(["corpus", "ingest edge/faster peer", "stored edge/smaller peer",
                               "restore newest edge/faster peer"], ratio_rows)
    return out


# --------------------------------------------------------------------------- chunk sizes

def bench_chunks(corpus: C.Corpus, sizes: list[int], work: Path) -> tuple[str, list[dict]]:
    """The versions corpus through Edge only, per average chunk size."""
    tree = work / "corpora" / corpus.name / "tree"
    rows, out = [], []
    for avg in sizes:
        repo, scratch = work / "repos" / f"edge-{avg}", work / "scratch" / f"edge-{avg}"
        tool = Edge(repo, scratch, init_args=["--chunk-avg", str(avg)])
        tool.reset()
        try:
            tool.init()
        except RuntimeError:
            # no --chunk-avg on the CLI: create through the Python API, shares via the CLI
            from archive import Repository
            shutil.rmtree(repo, ignore_errors=True)
            Repository.init(repo, password=PASSWORD, encrypt=True, chunk_avg=avg).close()
            tool.ctl("share", "add", tool.share)
        secs, logical = 0.0, 0
        for i in range(corpus.n_states):
            corpus.apply(i, tree)
            logical += C.tree_bytes(tree)
            secs += tool.ingest(tree, corpus.name).seconds
        stored = tool.stored()
        cat = sum(du(p) for p in repo.glob("catalog.sqlite*"))
        st = {}
        try:
            st = tool.stats()
        except Exception:
            pass
        r = {"avg": avg, "ingest_s": secs, "logical": logical, "stored": stored, "catalog": cat,
             "chunks": st.get("chunks"), "versions": st.get("versions"), "stats": st}
        restore = tool.restore(-1, work / "restore" / "edge-chunks")
        r["restore_newest_s"] = restore.seconds
        shutil.rmtree(work / "restore" / "edge-chunks", ignore_errors=True)
        out.append(r)
        rows.append([fmt_bytes(avg), f"{logical / secs / MB:.1f}", f"{stored:,}", f"{stored / logical:.3f}",
                     f"{cat:,}", f"{(stored - cat) / logical:.3f}", r["chunks"], f"{r['restore_newest_s']:.2f}"])
        log(f"chunks avg {avg}: {secs:.1f}s stored {fmt_bytes(stored)} catalog {fmt_bytes(cat)}")
        shutil.rmtree(repo, ignore_errors=True)
    return table(["chunk avg", "ingest MB/s", "stored bytes", "stored/logical", "catalog bytes",
                  "packs/logical", "chunks", "restore newest s"], rows), out


# --------------------------------------------------------------------------- 1000 versions

def bench_file1000(work: Path, count: int, reads: int) -> tuple[str, dict]:
    from archive import Repository
    import numpy as np
    repo_dir = work / "repos" / "file1000"
    shutil.rmtree(repo_dir, ignore_errors=True)
    repo = Repository.init(repo_dir, password=PASSWORD, encrypt=True)
    repo.add_share("bench")
    fs = repo.share("bench")
    tm = C.TextMaker(5)
    rng = np.random.default_rng(5)
    content = bytearray(tm.make(rng, 32 * 1024))
    first = bytes(content)
    t0 = time.perf_counter()
    for v in range(count):
        if v:
            off = int(rng.integers(0, len(content) - 100))
            content[off:off + 100] = tm.make(rng, 100)        # an in-place edit
            content += tm.make(rng, 200)                      # and an append (log-like)
        w = fs.open_write("/f.txt")
        w.write(bytes(content))
        w.commit()
    build_s = time.perf_counter() - t0
    newest = bytes(content)
    vers = fs.versions("/f.txt")
    n_first, n_last = vers[0].number, vers[-1].number

    bad: list[int] = []

    def timed_read(version: int, expect: bytes) -> float:
        ts = []
        for _ in range(reads):
            t = time.perf_counter()
            with fs.open_read("/f.txt", version=version) as r:
                data = r.read()
            ts.append(time.perf_counter() - t)
            if data != expect:      # a wrong read invalidates the timing: say so in the table
                bad.append(version)
        return med(ts)

    timed_read(n_last, newest)   # warm
    t_first = timed_read(n_first, first)
    t_last = timed_read(n_last, newest)
    repo.close()
    # the same through the CLI (process start included)
    cli = {}
    for label, ver in (("first", n_first), ("last", n_last)):
        ts = []
        try:
            for _ in range(5):
                ts.append(run(["archivectl", "--repo", str(repo_dir), "get", "/bench/f.txt", "-", "--version", str(ver)],
                              env=dict(os.environ, EDGE_ARCHIVE_PASSWORD=PASSWORD)).seconds)
        except RuntimeError as e:
            log(f"CLI get --version failed: {str(e)[-300:]}")
        cli[label] = med(ts)
    res = {"versions": len(vers), "build_s": build_s, "wrong_reads": sorted(set(bad)), "read_v1_s": t_first, "read_vN_s": t_last,
           "v1_size": len(first), "vN_size": len(newest), "cli_v1_s": cli["first"], "cli_vN_s": cli["last"],
           "catalog": sum(du(p) for p in repo_dir.glob("catalog.sqlite*")), "stored": du(repo_dir)}
    shutil.rmtree(repo_dir, ignore_errors=True)
    # per byte, v1 (32 KiB) is smaller than vN: compare time per read and per MB
    ratio = t_first / t_last
    txt = table(["versions", "build (API) s", "read v1 ms", "read newest ms", "v1/newest time",
                 "CLI get v1 ms", "CLI get newest ms", "target"],
                [[len(vers), f"{build_s:.1f}", f"{t_first * 1e3:.2f} ({fmt_bytes(len(first))})",
                  f"{t_last * 1e3:.2f} ({fmt_bytes(len(newest))})", f"{ratio:.2f}",
                  f"{cli['first'] * 1e3:.0f}", f"{cli['last'] * 1e3:.0f}",
                  f"v1 within 20% of newest: {'MET' if ratio <= 1.2 else 'not met'}"]])
    if bad:
        txt += f"\n\nWRONG CONTENT read for versions {sorted(set(bad))}: timings are not valid"
    return txt, res


# --------------------------------------------------------------------------- peak RSS

def bench_rss(work: Path, size: int, peers: bool) -> tuple[str, dict]:
    src = work / "rss" / "big.bin"
    src.parent.mkdir(parents=True, exist_ok=True)
    if not src.exists() or src.stat().st_size != size:
        with open(src, "wb") as f:
            for b in C.random_stream("bench-rss", size):
                f.write(b)
    want = C.blake3_file(src)
    res = {"size": size}
    rows = []
    tool = Edge(work / "repos" / "edge-rss", work / "scratch" / "edge-rss")
    tool.reset()
    tool.init()
    put = tool.ctl("put", str(src), "/bench/big.bin")
    out = work / "rss" / "out.bin"
    get = tool.ctl("get", "/bench/big.bin", str(out))
    ok = "ok" if C.blake3_file(out) == want else "MISMATCH"
    out.unlink()
    res["edge"] = {"put_s": put.seconds, "put_rss": put.max_rss, "get_s": get.seconds, "get_rss": get.max_rss, "verify": ok}
    lim = 128 * MiB
    rows.append(["edge", f"{size / put.seconds / MB:.1f}", fmt_bytes(put.max_rss), f"{size / get.seconds / MB:.1f}",
                 fmt_bytes(get.max_rss), ok,
                 f"<= 128 MiB: {'MET' if max(put.max_rss, get.max_rss) <= lim else 'not met'}"])
    shutil.rmtree(tool.repo, ignore_errors=True)
    if peers:
        for name in ("restic", "borg"):
            t = TOOLS[name](work / "repos" / f"{name}-rss", work / "scratch" / f"{name}-rss")
            t.reset()
            t.init()
            p = t.ingest(src.parent, "rss")
            dest = work / "restore" / f"{name}-rss"
            shutil.rmtree(dest, ignore_errors=True)
            g = t.restore(-1, dest)
            ok = "ok" if C.blake3_file(dest / "big.bin") == want else "MISMATCH"
            shutil.rmtree(dest, ignore_errors=True)
            res[name] = {"put_s": p.seconds, "put_rss": p.max_rss, "get_s": g.seconds, "get_rss": g.max_rss, "verify": ok}
            rows.append([name, f"{size / p.seconds / MB:.1f}", fmt_bytes(p.max_rss), f"{size / g.seconds / MB:.1f}",
                         fmt_bytes(g.max_rss), ok, ""])
            shutil.rmtree(t.repo, ignore_errors=True)
    src.unlink()
    return table([f"tool ({fmt_bytes(size)} file)", "put MB/s", "put peak RSS", "get MB/s", "get peak RSS",
                  "verify", "target"], rows), res


# --------------------------------------------------------------------------- catalog

def _lookup_times(fs, made: int, folder: int, n: int = 300) -> dict:
    """p50/p99 (ms) of stat and of open_read+read of random existing files: wall time, and this
    thread's CPU time (on a shared machine the wall p99 is mostly other processes' time slices)."""
    import random
    rnd = random.Random(made)
    st, rd, stc, rdc = [], [], [], []
    for _ in range(n):
        i = rnd.randrange(made)
        path = f"/big/f{i:07d}.txt" if i < folder else f"/d{(i - folder) // 1000:04d}/f{i:07d}.txt"
        t, c = time.perf_counter(), time.thread_time()
        fs.stat(path)
        st.append(time.perf_counter() - t)
        stc.append(time.thread_time() - c)
        t, c = time.perf_counter(), time.thread_time()
        with fs.open_read(path) as f:
            f.read()
        rd.append(time.perf_counter() - t)
        rdc.append(time.thread_time() - c)
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1e3   # noqa: E731
    return {"stat_p50": q(st, .5), "stat_p99": q(st, .99), "read_p50": q(rd, .5), "read_p99": q(rd, .99),
            "stat_cpu_p50": q(stc, .5), "stat_cpu_p99": q(stc, .99), "read_cpu_p50": q(rdc, .5),
            "read_cpu_p99": q(rdc, .99)}


def bench_catalog(work: Path, total: int, folder: int, budget_s: float, keep: bool = False) -> tuple[str, dict]:
    """Build `total` one-version files (a `folder`-entry folder, then folders of 1,000) with
    tree-put batches of 1,000 files per transaction; stat/open_read latency at 10,000 files and at
    the end, listing speed of the big folder and of the whole tree, catalog bytes per version
    (after a WAL checkpoint).  `keep` leaves the repository in place (for profiling)."""
    from archive import Repository
    from archive.streams import commit_many
    repo_dir = work / "repos" / "catalog"
    shutil.rmtree(repo_dir, ignore_errors=True)
    repo = Repository.init(repo_dir, password=PASSWORD, encrypt=True)
    repo.add_share("bench")
    fs = repo.share("bench")
    fs.mkdir("/big")
    folder = min(folder, total)
    made = 0
    t0, c0 = time.perf_counter(), time.process_time()
    stopped = ""
    early = None
    batch = []
    for i in range(total):
        if i < folder:
            path = f"/big/f{i:07d}.txt"
        else:
            d = (i - folder) // 1000
            if (i - folder) % 1000 == 0:
                commit_many(batch)
                batch = []
                fs.mkdir(f"/d{d:04d}")
            path = f"/d{d:04d}/f{i:07d}.txt"
        w = fs.open_write(path, check=False)
        w.write(f"file {i}\n".encode())
        w.prepare()
        batch.append(w)
        if len(batch) >= 1000:
            commit_many(batch)
            batch = []
        made += 1
        if made == 10_000 and total > 10_000:
            commit_many(batch)
            batch = []
            pause, pause_cpu = time.perf_counter(), time.process_time()
            early = _lookup_times(fs, made, folder)
            t0 += time.perf_counter() - pause
            c0 += time.process_time() - pause_cpu
        if made % 50000 == 0:
            el = time.perf_counter() - t0
            log(f"catalog: {made} files, {made / el:.0f} files/s")
            if el > budget_s and made >= folder:
                stopped = f"stopped at {made} of {total} files after the {budget_s:.0f}s budget"
                break
    commit_many(batch)
    build_s = time.perf_counter() - t0
    build_cpu = time.process_time() - c0
    late = _lookup_times(fs, made, folder)
    listing, first, listing_cpu = [], [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        n = 0
        t_first = None
        for _e in fs.listdir("/big"):
            if t_first is None:
                t_first = time.perf_counter() - t
            n += 1
        listing.append(time.perf_counter() - t)
        listing_cpu.append(time.process_time() - c)
        first.append(t_first or 0.0)
    if n != folder:
        stopped = (stopped + "; " if stopped else "") + f"WRONG: listdir returned {n} entries, expected {folder}"
    # The whole tree, folder by folder (what a recursive client listing or an rsync scan does).
    t, c = time.perf_counter(), time.process_time()
    tree_n = 0
    for top in fs.listdir("/"):
        tree_n += 1
        for _e in fs.listdir("/" + top.name):
            tree_n += 1
    tree_s = time.perf_counter() - t
    tree_cpu = time.process_time() - c
    if tree_n != made + len(range(0, max(0, made - folder), 1000)) + 1:
        stopped = (stopped + "; " if stopped else "") + f"WRONG: tree walk saw {tree_n} entries"
    with repo.catalog.engine.connect() as conn:       # the WAL folded in: the file is the catalog
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    repo.close()
    cat = sum(du(p) for p in repo_dir.glob("catalog.sqlite*"))
    stored = du(repo_dir)
    res = {"files": made, "folder": folder, "build_s": build_s, "build_cpu_s": build_cpu, "list_s": med(listing),
           "first_entry_s": med(first), "tree_entries": tree_n, "tree_s": tree_s,
           "list_cpu_s": med(listing_cpu), "tree_cpu_s": tree_cpu, "catalog_bytes": cat,
           "repo_bytes": stored, "catalog_per_version": cat / made, "note": stopped, "lookup_10k": early,
           "lookup_end": late}
    if keep:
        log(f"catalog repository kept at {repo_dir}")
    else:
        shutil.rmtree(repo_dir, ignore_errors=True)
    rate = folder / res["list_s"] if res["list_s"] else 0
    txt = table(["files (versions)", "build s (CPU s)", "create files/s (API, batches of 1,000)",
                 f"listdir of {folder:,} entries", "first entry ms", f"tree walk ({tree_n:,} entries)",
                 "catalog bytes/version", "repo bytes"],
                [[f"{made:,}", f"{build_s:.0f} ({build_cpu:.0f})", f"{made / build_s:.0f}",
                  f"{res['list_s']:.3f} s = {rate:,.0f} entries/s (CPU: {folder / res['list_cpu_s']:,.0f}/s)", f"{res['first_entry_s'] * 1e3:.1f}",
                  f"{tree_s:.2f} s = {tree_n / tree_s:,.0f} entries/s (CPU: {tree_n / tree_cpu:,.0f}/s)", f"{cat / made:.0f}", f"{stored:,}"]])
    rows = [[label] + [f"{d[k]:.2f} ({d[k.replace('_p', '_cpu_p')]:.2f})"
                       for k in ("stat_p50", "stat_p99", "read_p50", "read_p99")]
            for label, d in (("at 10,000 files", early), (f"at {made:,} files", late)) if d]
    txt += "\n\n" + table(["lookup ms: wall (thread CPU)", "stat p50", "stat p99", "open_read+read p50",
                            "open_read+read p99"], rows)
    if stopped:
        txt += f"\n\n({stopped})"
    return txt, res


# --------------------------------------------------------------------------- profile

def bench_profile(corpus: C.Corpus, work: Path, top: int, op: str = "put") -> tuple[str, dict]:
    """cProfile of an in-process `archivectl put` (or `get`, after an unprofiled put) of state 0."""
    from archive.cli.main import _load_commands, cli
    tree = work / "corpora" / corpus.name / "tree"
    corpus.prepare(work / "cache")
    corpus.apply(0, tree)
    repo = work / "repos" / f"edge-prof-{corpus.name}"
    shutil.rmtree(repo, ignore_errors=True)
    env = dict(os.environ, EDGE_ARCHIVE_PASSWORD=PASSWORD)
    run(["archivectl", "--repo", str(repo), "init", "--encrypt"], env=env)
    run(["archivectl", "--repo", str(repo), "share", "add", "bench"], env=env)
    out_dir = work / "restore" / f"prof-{corpus.name}"
    shutil.rmtree(out_dir, ignore_errors=True)
    if op == "put":
        args = ["--repo", str(repo), "put", str(tree), "/bench/prof"]
    else:
        run(["archivectl", "--repo", str(repo), "put", str(tree), "/bench/prof"], env=env)
        args = ["--repo", str(repo), "get", "/bench/prof", str(out_dir)]
    old = os.environ.get("EDGE_ARCHIVE_PASSWORD")
    os.environ["EDGE_ARCHIVE_PASSWORD"] = PASSWORD
    _load_commands()
    # the core chunks, compresses and seals in a thread pool: give every thread started during
    # the put its own profiler and merge them, or the profile shows only the main thread waiting
    profs: list[cProfile.Profile] = []
    orig_run = threading.Thread.run

    def profiled_run(self_thread):
        p = cProfile.Profile()
        profs.append(p)
        p.enable()
        try:
            orig_run(self_thread)
        finally:
            p.disable()

    threading.Thread.run = profiled_run
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    try:
        prof.enable()
        try:
            cli.main(args, standalone_mode=False)
        except SystemExit:
            pass
        prof.disable()
    finally:
        threading.Thread.run = orig_run
        if old is None:
            os.environ.pop("EDGE_ARCHIVE_PASSWORD", None)
        else:
            os.environ["EDGE_ARCHIVE_PASSWORD"] = old
    wall = time.perf_counter() - t0
    size = C.tree_bytes(tree)
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    st = pstats.Stats(prof)
    for p in profs:
        try:
            st.add(p)
        except TypeError:       # a thread that never ran Python code
            pass
    # idle threads waiting for work or for a result are not where the time goes
    waits = ("<method 'get' of '_queue.SimpleQueue' objects>", "<method 'acquire' of '_thread.lock' objects>")
    wait_tt = sum(v[2] for (fn, _l, name), v in st.stats.items() if name in waits)
    total = st.total_tt - wait_tt
    rows = []
    entries = sorted(((k, v) for k, v in st.stats.items() if k[2] not in waits), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (fn, line, name), (cc, nc, tt, ct, _callers) in entries:
        short = f"{Path(fn).name}:{line}({name})" if fn != "~" else name
        rows.append([short, nc, f"{tt:.2f}", f"{100 * tt / total:.1f}%", f"{ct:.2f}"])
    s = io.StringIO()
    st.stream = s
    st.sort_stats("cumulative").print_stats(25)
    txt = (f"{corpus.name}: {fmt_bytes(size)} in {wall:.1f}s under the profiler = {size / wall / MB:.1f} MB/s; "
           f"{len(profs)} worker threads; busy time summed over all threads = {total:.1f}s "
           f"(+{wait_tt:.1f}s idle in queue/lock waits, left out)\n\n"
           + table(["function (by own time, all threads)", "calls", "own s", "own % of busy", "cumulative s"], rows))
    return txt, {"wall_s": wall, "bytes": size, "top": rows, "cumulative": s.getvalue()}


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every size (0.25 while the machine is busy)")
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "work")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    ap.add_argument("--corpora", default="versions,sdists,random,text")
    ap.add_argument("--tools", default="edge,restic,borg")
    ap.add_argument("--repeat", type=int, default=1, help="ingest+restore repetitions (medians are reported)")
    ap.add_argument("--chunk-sizes", default="16384,65536,262144,1048576")
    ap.add_argument("--versions-count", type=int, default=1000)
    ap.add_argument("--catalog-budget", type=float, default=1800, help="seconds to spend creating catalog files")
    ap.add_argument("--catalog-folder", type=int, default=100_000, help="entries in the catalog run's big folder")
    ap.add_argument("--catalog-keep", action="store_true", help="keep the catalog run's repository")
    ap.add_argument("--rss-peers", action="store_true", help="also measure restic/borg on the RSS file")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", default="put:random,put:text,get:random",
                    help="op:corpus list for the profile section (op put|get; any corpus, state 0)")
    a = ap.parse_args(argv)
    sections = [s for s in a.only.split(",") if s]
    tools = [t for t in a.tools.split(",") if t]
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    corp = C.make_corpora(a.scale, a.seed)
    info = machine()
    results: dict = {"machine": info, "scale": a.scale, "argv": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out: list[str] = [f"## Core benchmark run (scale {a.scale}, repeat {a.repeat})",
                      f"machine: {info['nproc']} CPUs, {info['cpu']}, {fmt_bytes(info['ram'])} RAM, load {info['loadavg']}; "
                      f"{info['restic']}; {info['borg']}"]
    res_path = work / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"

    def emit(title: str, txt: str) -> None:
        block = f"\n### {title}\n\n{txt}\n"
        out.append(block)
        print(block, flush=True)
        res_path.write_text(json.dumps(results, indent=1, default=str))

    print("\n".join(out), flush=True)
    if "ingest" in sections:
        ing = []
        for name in a.corpora.split(","):
            log(f"ingest {name}: {corp[name].description}")
            ing.append(bench_corpus(corp[name], tools, work, a.repeat))
            results["ingest"] = ing
            emit(f"Ingest / restore: {name}", summarize_ingest([ing[-1]], tools) +
                 ("\n\n" + "\n".join(ing[-1]["notes"]) if ing[-1]["notes"] else ""))
    if "chunks" in sections:
        sizes = [int(x) for x in a.chunk_sizes.split(",") if x]
        txt, results["chunks"] = bench_chunks(corp["versions"], sizes, work)
        emit("Chunk size (versions corpus, Edge Archive only)", txt)
    if "file1000" in sections:
        txt, results["file1000"] = bench_file1000(work, a.versions_count, reads=30)
        emit(f"One file with {a.versions_count} versions", txt)
    if "rss" in sections:
        txt, results["rss"] = bench_rss(work, int(4 * GiB * a.scale), a.rss_peers)
        emit("Peak RSS, put/get of one big file", txt)
    if "catalog" in sections:
        total = max(1000, int(1_000_000 * a.scale))
        txt, results["catalog"] = bench_catalog(work, total, a.catalog_folder, a.catalog_budget, a.catalog_keep)
        emit("Catalog: many files", txt)
    if "profile" in sections:
        for spec in a.profile.split(","):
            op, name = spec.split(":")
            txt, results[f"profile_{op}_{name}"] = bench_profile(corp[name], work, top=15, op=op)
            emit(f"Profile of `archivectl {op}` ({name})", txt)
    log(f"results written to {res_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
