"""Multi-chunk frames, measured before they are built (issue 9): would compressing several
consecutive new chunks as one zstd frame meet "text ingest >= 1.5x borg AND stored <= 1.0x
restic" where one frame per 64 KiB chunk cannot (docs/benchmarks.md, "text11" and "frames")?

Offline and single-threaded, so the figures are CPU time of this thread, not wall time:
  1. each corpus state is cut exactly as Edge cuts it (archive/chunker.py, the repository
     default chunk size, one fixed gear seed) and deduplicated; only new chunks are stored;
  2. each new chunk is classified by Codec's own 4 KiB probe: chunks that compress little stay
     single-chunk level-1 records in every option (frames would only cost their reads);
  3. consecutive compressible new chunks of one file (`--span file`) or of one state's whole
     tree upload (`--span tree`, as prepare_many stores a tree's small files) form frames of
     N chunks or of up to B bytes of input;
  4. every frame is compressed at each level, with and without Edge's dictionary (trained as
     archive/dictionary.py trains it, from the first 4 MiB of compressible chunks): CPU-s per
     GiB of input is the median of `--repeat` passes (passes interleaved across options);
  5. stored bytes = payload + AES-GCM (28 B) + record header (50 B) per frame, + a chunk index
     of 36 B (id, length) per chunk in frames of more than one chunk, so `recover` can still
     rebuild the chunk rows from packs alone;
  6. the random-access cost: AES-GCM open plus zstd decode of the frame holding a chunk picked
     at random (whole frame, and only up to the chunk's end), thread CPU per read.
`--peers` also runs restic (stored size), borg (ingest CPU and wall) and today's `archivectl
put` (CPU, wall, stored) on the same states, as bench/peers.py does (all encrypted); the
summary then estimates Edge's ingest CPU per option as today's put minus today's zstd plus the
option's zstd.

    PYTHONPATH=$PWD PATH=.venv/bin:$PATH python -m bench.frames --corpora text --peers
    python -m bench.frames --corpora sdists,versions --scale 0.25 --span file,tree
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from archive import codec as K
from archive import dictionary as D
from archive.chunker import DEFAULT_AVG, StreamChunker
from archive.packs import REC

from . import corpora as C
from . import peers as P

GiB = 1024 ** 3
AEAD = 28                   # nonce + tag per sealed record (archive/codec.py)
INDEX = 36                  # chunk id + length per chunk of a multi-chunk frame
SEED = 0x5EED5EED           # the FastCDC gear seed (a repository's is random)


def log(*a) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def med(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------- chunks

@dataclass
class Corpus:
    """The new (deduplicated) chunks of every state in put order, as one buffer: chunk i is
    blob[starts[i]:starts[i] + lengths[i]]; a group is one file (or one state's tree)."""
    name: str
    logical: int = 0
    blob: bytearray = field(default_factory=bytearray)
    starts: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    comp: list[bool] = field(default_factory=list)      # compressible (Codec's probe)
    file: list[int] = field(default_factory=list)       # file group of each chunk
    state: list[int] = field(default_factory=list)      # state of each chunk


def compressible(chunk: bytes, probe: zstandard.ZstdCompressor) -> bool:
    """Codec._compress's rule: a chunk over 16 KiB whose 4 KiB head zstd-1 shrinks by less
    than 10 % goes at FAST_LEVEL without the dictionary."""
    return not (len(chunk) > 4 * K.PROBE and len(probe.compress(chunk[:K.PROBE])) > K.PROBE * K.FAST_ABOVE)


def cut(corpus: C.Corpus, tree: Path, work: Path) -> Corpus:
    """Bring the tree through every state and keep each file's new chunks (as a put would)."""
    corpus.prepare(work / "cache")
    out = Corpus(corpus.name)
    seen: set[bytes] = set()
    probe = zstandard.ZstdCompressor(level=1)
    nfile = 0
    for i in range(corpus.n_states):
        corpus.apply(i, tree)
        for rel in C.tree_files(tree):
            ch = StreamChunker(SEED, DEFAULT_AVG)
            cs = []
            with open(tree / rel, "rb") as f:
                while b := f.read(C.BLOCK):
                    out.logical += len(b)
                    cs += ch.push(b, C.BLOCK)
            for c in cs + ch.finish():
                h = blake3.blake3(c).digest()
                if h in seen:
                    continue
                seen.add(h)
                out.starts.append(len(out.blob))
                out.lengths.append(len(c))
                out.blob += c
                out.comp.append(compressible(c, probe))
                out.file.append(nfile)
                out.state.append(i)
            nfile += 1
    return out


def train(corpus: Corpus) -> zstandard.ZstdCompressionDict:
    """Edge's dictionary: fastcover with archive/dictionary.py's parameters on the first
    SAMPLE_BYTES of compressible chunks."""
    samples, n = [], 0
    for s, ln, comp in zip(corpus.starts, corpus.lengths, corpus.comp):
        if comp:
            samples.append(bytes(corpus.blob[s:s + ln]))
            n += ln
            if n >= D.SAMPLE_BYTES and len(samples) >= D.MIN_SAMPLES:
                break
    size = min(D.DICT_SIZE, n // 8)
    return zstandard.train_dictionary(size, samples, dict_id=4242, threads=1, **D.TRAIN)


# --------------------------------------------------------------------------- frames

@dataclass
class Frame:
    start: int              # of its first chunk in Corpus.blob (the chunks are consecutive)
    lengths: list[int]
    comp: bool              # compressible (else: one chunk, level 1, no dictionary)

    @property
    def size(self) -> int:
        return sum(self.lengths)


def frames_of(corpus: Corpus, spec: str, span: str) -> list[Frame]:
    """Group consecutive compressible new chunks: spec 'N' = N chunks, 'NK' = up to N KiB of
    input (at least one chunk).  span 'tree' lets a frame run on into the next file of a state."""
    limit_n, limit_b = (10 ** 9, int(spec[:-1]) * 1024) if spec.endswith("K") else (int(spec), 1 << 62)
    group = corpus.state if span == "tree" else corpus.file
    out: list[Frame] = []
    cur: Frame | None = None
    cur_g = None
    for s, ln, comp, g in zip(corpus.starts, corpus.lengths, corpus.comp, group):
        if cur is not None and (not comp or g != cur_g or len(cur.lengths) >= limit_n
                                or cur.size + ln > limit_b):
            out.append(cur)
            cur = None
        if not comp:
            out.append(Frame(s, [ln], False))
            continue
        if cur is None:
            cur, cur_g = Frame(s, [], True), g
        cur.lengths.append(ln)
    if cur is not None:
        out.append(cur)
    return out


def compressor(level: str, d: zstandard.ZstdCompressionDict | None) -> zstandard.ZstdCompressor:
    """'3' with a dictionary is Edge's rule (DICT_LEVEL3 parameters); '3p' is level 3's own
    parameters with the dictionary; other levels are the level itself.  The dictionary is
    copied and its tables precomputed for this level, as Dictionaries._precompute does (zstd
    takes a precomputed dictionary's parameters for small frames, whatever level is asked)."""
    lv = int(level.rstrip("p"))
    if d is None:
        return zstandard.ZstdCompressor(level=lv)
    d = zstandard.ZstdCompressionDict(d.as_bytes())
    params = None if level.endswith("p") else D.compression_params(lv)
    if params is None:
        d.precompute_compress(level=lv)
        return zstandard.ZstdCompressor(level=lv, dict_data=d)
    d.precompute_compress(compression_params=params)
    return zstandard.ZstdCompressor(dict_data=d, compression_params=params)


def stored(frames: list[Frame], sizes: list[int]) -> int:
    """Pack bytes of the chunk records: payload (raw when zstd does not shrink it) + AEAD + header,
    + the chunk index of multi-chunk frames."""
    total = 0
    for f, n in zip(frames, sizes):
        total += min(n, f.size) + AEAD + REC.size + (INDEX * len(f.lengths) if len(f.lengths) > 1 else 0)
    return total


def compress_pass(frames: list[Frame], views: list[memoryview], zc, fast) -> tuple[float, list[bytes]]:
    """Thread CPU of compressing every frame (its bytes in `views`) once; the outputs."""
    outs = []
    t0 = time.thread_time()
    for f, v in zip(frames, views):
        outs.append((zc if f.comp else fast).compress(v))
    return time.thread_time() - t0, outs


def reads(frames: list[Frame], outs: list[bytes], d, n: int, rng: random.Random) -> dict:
    """Thread CPU per read of one chunk picked at random (by chunk, not by byte): AES-GCM open
    of its record, then zstd of the whole frame or only up to the chunk's end; and the CPU of
    decoding every frame once (a sequential restore)."""
    idx = [(fi, ci) for fi, f in enumerate(frames) if f.comp for ci in range(len(f.lengths))]
    picks = [idx[rng.randrange(len(idx))] for _ in range(n)]
    aead = AESGCM(os.urandom(32))
    nonce = os.urandom(12)
    sealed = {fi: aead.encrypt(nonce, outs[fi], b"x") for fi, _ in picks}
    dctx = zstandard.ZstdDecompressor(dict_data=d) if d is not None else zstandard.ZstdDecompressor()
    whole, prefix = [], []
    for fi, ci in picks:
        f = frames[fi]
        end = sum(f.lengths[:ci + 1])
        t0 = time.thread_time()
        p = aead.decrypt(nonce, sealed[fi], b"x")
        if len(p) < f.size:
            dctx.decompress(p, max_output_size=f.size)
        t1 = time.thread_time()
        p = aead.decrypt(nonce, sealed[fi], b"x")
        if len(p) < f.size:
            with dctx.stream_reader(p) as r:
                got = r.read(end)
                while len(got) < end:
                    got += r.read(end - len(got))
        t2 = time.thread_time()
        whole.append(t1 - t0)
        prefix.append(t2 - t1)
    t0 = time.thread_time()
    fast = zstandard.ZstdDecompressor()
    for f, o in zip(frames, outs):
        if len(o) < f.size:
            (dctx if f.comp else fast).decompress(o, max_output_size=f.size)
    seq = time.thread_time() - t0
    return {"read_whole_us": 1e6 * statistics.fmean(whole), "read_prefix_us": 1e6 * statistics.fmean(prefix),
            "decode_seq_s": seq}


def measure(corpus: Corpus, specs: list[str], levels: list[str], spans: list[str], repeat: int,
            nreads: int) -> list[dict]:
    d = train(corpus)
    raw = len(corpus.blob)
    log(f"{corpus.name}: {corpus.logical:,} logical, {raw:,} new bytes in {len(corpus.lengths):,} chunks "
        f"({sum(corpus.comp):,} compressible), "
        f"dictionary {len(d.as_bytes()):,} B")
    fast = zstandard.ZstdCompressor(level=K.FAST_LEVEL)
    rows: list[dict] = []
    frame_sets = {}
    for span in spans:
        for spec in specs:
            frame_sets[(span, spec)] = frames_of(corpus, spec, span)
    configs = [(span, spec, lv, dd) for (span, spec) in frame_sets for lv in levels for dd in (True, False)
               if not (lv.endswith("p") and not dd)]
    res = {c: {"cpu": []} for c in configs}
    mv = memoryview(corpus.blob)
    for rep in range(repeat):
        order = configs if rep % 2 == 0 else configs[::-1]
        for c in order:
            span, spec, lv, dd = c
            frames = frame_sets[(span, spec)]
            zc = compressor(lv, d if dd else None)
            views = [mv[f.start:f.start + f.size] for f in frames]
            cpu, outs = compress_pass(frames, views, zc, fast)
            r = res[c]
            r["cpu"].append(cpu)
            if rep == 0:
                r["stored"] = stored(frames, [len(o) for o in outs])
                r["payload"] = sum(min(len(o), f.size) for f, o in zip(frames, outs))
                r["frames"] = len(frames)
                r.update(reads(frames, outs, d if dd else None, nreads, random.Random(7)))
            del outs, views
        log(f"{corpus.name}: pass {rep + 1}/{repeat} done")
    for c in configs:
        span, spec, lv, dd = c
        r = res[c]
        rows.append({"corpus": corpus.name, "span": span, "frame": spec, "level": lv, "dict": dd,
                     "raw": raw, "logical": corpus.logical, "chunks": len(corpus.lengths),
                     "frames": r["frames"], "payload": r["payload"], "stored": r["stored"],
                     "cpu_s": med(r["cpu"]), "cpu_runs": r["cpu"], "cpu_s_per_gib": med(r["cpu"]) * GiB / raw,
                     "read_whole_us": r["read_whole_us"], "read_prefix_us": r["read_prefix_us"],
                     "decode_s_per_gib": r["decode_seq_s"] * GiB / raw,
                     "dict_bytes": len(d.as_bytes())})
    return rows


# --------------------------------------------------------------------------- peers

def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def peers(corpus: C.Corpus, tree: Path, work: Path, repeat: int) -> dict:
    """Every state through edge (today's put), restic and borg, interleaved per state; `repeat`
    fresh repositories; CPU (user+sys of the command, via GNU time's reaping), wall, stored."""
    out: dict = {t: {"cpu": [], "wall": [], "stored": []} for t in ("edge", "restic", "borg")}
    corpus.prepare(work / "cache")
    for rep in range(repeat):
        tools = {n: P.TOOLS[n](work / "repos" / n, work / "scratch" / n) for n in out}
        for t in tools.values():
            t.reset()
            t.init()
        cpu = dict.fromkeys(tools, 0.0)
        wall = dict.fromkeys(tools, 0.0)
        for i in range(corpus.n_states):
            corpus.apply(i, tree)
            for n, t in tools.items():
                c0 = children_cpu()
                r = t.ingest(tree, corpus.name)
                cpu[n] += children_cpu() - c0
                wall[n] += r.seconds
        for n, t in tools.items():
            out[n]["cpu"].append(cpu[n])
            out[n]["wall"].append(wall[n])
            out[n]["stored"].append(t.stored())
            shutil.rmtree(t.repo, ignore_errors=True)
        log(f"{corpus.name} peers rep {rep + 1}: " + ", ".join(
            f"{n} cpu {cpu[n]:.2f}s wall {wall[n]:.2f}s stored {out[n]['stored'][-1]:,}" for n in out))
    return out


def profile_put(corpus: C.Corpus, tree: Path, work: Path, repeat: int) -> dict:
    """In-process `archivectl put` of state 0 into a fresh encrypted repository, with
    Codec._compress (probe + zstd) and Dictionaries._train wrapped to sum their thread CPU over
    every thread: zstd's own share of today's put, beside the process's CPU (RUSAGE_SELF)."""
    from archive import codec as codec_mod
    from archive import dictionary as dict_mod
    from archive.cli.main import _load_commands, cli
    corpus.prepare(work / "cache")
    corpus.apply(0, tree)
    _load_commands()
    os.environ["EDGE_ARCHIVE_PASSWORD"] = P.PASSWORD
    out: dict = {"cpu": [], "zstd": [], "train": []}
    orig_c, orig_t = codec_mod.Codec._compress, dict_mod.Dictionaries._train
    import threading
    lock = threading.Lock()
    acc = {"zstd": 0.0, "train": 0.0}

    def timed(key, fn):
        def wrapper(*a, **kw):
            t0 = time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                with lock:
                    acc[key] += time.thread_time() - t0
        return wrapper
    codec_mod.Codec._compress = timed("zstd", orig_c)
    dict_mod.Dictionaries._train = timed("train", orig_t)
    try:
        for rep in range(repeat):
            repo = work / "repos" / "edge-prof"
            shutil.rmtree(repo, ignore_errors=True)
            cli.main(["--repo", str(repo), "init", "--encrypt"], standalone_mode=False)
            cli.main(["--repo", str(repo), "share", "add", "bench"], standalone_mode=False)
            acc.update(zstd=0.0, train=0.0)
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            cli.main(["--repo", str(repo), "put", str(tree), "/bench/prof"], standalone_mode=False)
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
            out["cpu"].append(cpu)
            out["zstd"].append(acc["zstd"] - acc["train"])
            out["train"].append(acc["train"])
            shutil.rmtree(repo, ignore_errors=True)
            log(f"{corpus.name} in-process put {rep + 1}: CPU {cpu:.2f} s, zstd (probe + compress) "
                f"{acc['zstd'] - acc['train']:.2f} s, dictionary training {acc['train']:.2f} s")
    finally:
        codec_mod.Codec._compress, dict_mod.Dictionaries._train = orig_c, orig_t
    return out


# --------------------------------------------------------------------------- report

def report(rows: list[dict], peer: dict | None, prof: dict | None = None) -> str:
    lines = []
    for (name, span) in dict.fromkeys((r["corpus"], r["span"]) for r in rows):
        rs = [r for r in rows if r["corpus"] == name and r["span"] == span]
        lines.append(f"\n{name} (span {span}): {rs[0]['logical']:,} logical bytes, {rs[0]['raw']:,} new in "
                     f"{rs[0]['chunks']:,} chunks")
        p = peer.get(name) if peer else None
        restic = med(p["restic"]["stored"]) if p else None
        lines.append("| frame | level | dict | frames | stored / new | " + ("stored / restic* | " if p else "")
                     + "zstd CPU-s/GiB | read one chunk us (whole / prefix) | decode CPU-s/GiB |")
        lines.append("|---|---|---|---:|---:|" + ("---:|" if p else "") + "---:|---:|---:|")
        for r in rs:
            extra = ""
            if p:
                extra = f" {(r['stored'] + over(p, rows, name)) / restic:.4f} |"
            lines.append(f"| {r['frame']} | {r['level']} | {'yes' if r['dict'] else 'no'} | {r['frames']:,} | "
                         f"{r['stored'] / r['raw']:.4f} |{extra} {r['cpu_s_per_gib']:.2f} | "
                         f"{r['read_whole_us']:.0f} / {r['read_prefix_us']:.0f} | {r['decode_s_per_gib']:.2f} |")
    if peer:
        lines.append("\n* today's Edge repository minus its modelled chunk records (1 chunk, level 3, "
                     "dictionary) is added to every option: catalog, transaction records, dictionary, keys")
        for name, p in peer.items():
            lines.append(f"\n{name} peers (median of {len(p['edge']['cpu'])}): " + "; ".join(
                f"{n} CPU {med(p[n]['cpu']):.2f} s wall {med(p[n]['wall']):.2f} s stored {med(p[n]['stored']):,.0f}"
                for n in p))
            lines.append(estimate(p, [r for r in rows if r["corpus"] == name], (prof or {}).get(name)))
    return "\n".join(lines)


def base_row(rows: list[dict]) -> dict:
    return next(r for r in rows if r["frame"] == "1" and r["level"] == "3" and r["dict"] and r["span"] == "file")


def over(p: dict, rows: list[dict], name: str) -> float:
    """Bytes of today's repository that are not chunk records (modelled)."""
    return med(p["edge"]["stored"]) - base_row([r for r in rows if r["corpus"] == name])["stored"]


#: CPU-s per wall-s of `archivectl put` of the 1 GiB text on a quiet machine (the lead's runs of
#: 2026-12-07 18:30-19:02: 10.5 CPU-s at 176 MB/s, 13.0 at 144 MB/s): on a loaded machine the
#: measured wall is other processes' time, so the estimate uses this, not the run's own
PARALLELISM = 1.73


def estimate(p: dict, rows: list[dict], prof: dict | None = None, par: float = PARALLELISM) -> str:
    """Edge's ingest CPU per option: today's put CPU - today's zstd + the option's zstd; its
    wall = CPU / `par`; borg (one thread) needs a wall of about its CPU.  Today's zstd is the
    in-process profile's (zstd inside put, both pool threads) when there is one, scaled per
    option by the offline ratio option / base; else the offline base row itself."""
    base = base_row(rows)
    z_put = med(prof["zstd"]) if prof else base["cpu_s"]
    e_cpu, e_wall = med(p["edge"]["cpu"]), med(p["edge"]["wall"])
    b_cpu, b_wall = med(p["borg"]["cpu"]), med(p["borg"]["wall"])
    restic = med(p["restic"]["stored"])
    ov = med(p["edge"]["stored"]) - base["stored"]
    out = [f"today: Edge put {e_cpu:.2f} CPU-s (wall {e_wall:.2f} s), of which zstd {z_put:.2f} s "
           f"({'in-process profile' if prof else 'offline model'}; offline one thread: {base['cpu_s']:.2f} s), "
           f"the rest {e_cpu - z_put:.2f} s; borg {b_cpu:.2f} CPU-s (wall {b_wall:.2f} s). "
           f"1.5x borg needs Edge <= {par * b_cpu / 1.5:.2f} CPU-s at parallelism {par} "
           f"(<= {2 * b_cpu / 1.5:.2f} at a perfect 2)",
           "| frame | level | dict | est. put CPU-s | ingest / borg (par. %s) | (par. 2) | stored / restic |" % par,
           "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["span"] != "file":
            continue
        cpu = e_cpu - z_put + z_put * r["cpu_s"] / base["cpu_s"]
        out.append(f"| {r['frame']} | {r['level']} | {'yes' if r['dict'] else 'no'} | {cpu:.2f} | "
                   f"{b_cpu * par / cpu:.2f}x | {b_cpu * 2 / cpu:.2f}x | {(r['stored'] + ov) / restic:.4f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", default="text")
    ap.add_argument("--scale", type=float, default=1.0, help="corpus size factor (text: 1 GiB at 1)")
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "work")
    ap.add_argument("--frames", default="1,4,8,16,256K,512K,1024K", help="N chunks or N KiB of input per frame")
    ap.add_argument("--levels", default="-1,1,2,3,3p", help="zstd levels; 3p = level 3's own parameters with the dictionary")
    ap.add_argument("--span", default="file", help="file,tree: may a frame run on into the next file of a state")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reads", type=int, default=200, help="random chunk reads per option")
    ap.add_argument("--peers", action="store_true", help="also run edge (today), restic and borg")
    ap.add_argument("--peer-repeat", type=int, default=3)
    ap.add_argument("--profile-put", type=int, default=0, help="in-process puts of state 0 with zstd's CPU summed")
    ap.add_argument("--report", nargs="*", type=Path, help="only print the tables of these results files, merged")
    a = ap.parse_args(argv)
    if a.report:
        merged: dict = {"rows": [], "peers": {}, "profile": {}}
        for f in a.report:
            r = json.loads(f.read_text())
            merged["rows"] += r.get("rows", [])
            merged["peers"].update(r.get("peers", {}))
            merged["profile"].update(r.get("profile", {}))
        print(report(merged["rows"], merged["peers"] or None, merged["profile"] or None))
        return 0
    work = a.work.resolve()
    corp = C.make_corpora(a.scale)
    results: dict = {"argv": sys.argv, "loadavg": os.getloadavg(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "zstd": zstandard.ZSTD_VERSION, "rows": [], "peers": {}}
    path = work / f"frames-{time.strftime('%Y%m%d-%H%M%S')}.json"
    for name in a.corpora.split(","):
        tree = work / "corpora" / name / "tree"
        if a.peers:
            results["peers"][name] = peers(corp[name], tree, work, a.peer_repeat)
            path.write_text(json.dumps(results, indent=1))
        if a.profile_put:
            results.setdefault("profile", {})[name] = profile_put(corp[name], tree, work, a.profile_put)
            path.write_text(json.dumps(results, indent=1))
        if a.frames:        # --frames "": peers and profile only
            c = cut(corp[name], tree, work)
            results["rows"] += measure(c, a.frames.split(","), a.levels.split(","), a.span.split(","), a.repeat, a.reads)
            del c
        results["loadavg_end"] = os.getloadavg()
        path.write_text(json.dumps(results, indent=1))
    if results["rows"]:
        print(report(results["rows"], results["peers"] or None, results.get("profile")))
    log(f"results in {path}; load {results['loadavg']} -> {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
