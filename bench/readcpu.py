"""CPU and wall time per MiB of a sequential in-process read of a 256 MiB file (branch readcpu,
issues 9 and 11).

    PYTHONPATH=<tree> python bench/readcpu.py setup DIR
    PYTHONPATH=<tree> python bench/readcpu.py run DIR plain|enc /f|/r readinto|readviews [--tune] [--threads N]

`setup` makes two repositories under DIR (plain and encrypted), each with /f (256 MiB, every
other MiB text: zstd chunks, the rest random: raw chunks) and /r (256 MiB random).  `run` reads
the file 5 times in 1 MiB readinto or readviews calls and prints the median (and min) CPU
(process_time, the read-ahead threads included) and wall time per MiB; --tune first sets the
allocator as `archivectl serve` does (protocols/memory.py: mmap threshold 128 KiB); --threads N
reads the file N times at once, each in its own thread (concurrent downloads: CPU per MiB read in
all; read11).  For an A/B, run a base tree and this one alternately on the same DIR."""
from __future__ import annotations

import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from archive import Origin, Repository

MiB = 1 << 20
N = 256


def setup(d: str) -> None:
    for kind in ("plain", "enc"):
        enc = kind == "enc"
        r = Repository.init(f"{d}/{kind}", password="pw" if enc else None, encrypt=enc)
        r.add_share("s")
        fs = r.share("s", origin=Origin("bench"))
        rnd = random.Random(1)
        with fs.open_write("/f") as w:
            for i in range(N):
                if i % 2:
                    w.write(rnd.randbytes(MiB))
                else:
                    line = b"line %d of some text with words and numbers %d\n" % (i, rnd.random() * 1e9)
                    w.write((line * (MiB // len(line) + 1))[:MiB])
        rnd = random.Random(7)
        with fs.open_write("/r") as w:
            for i in range(N):
                w.write(rnd.randbytes(MiB))
        r.close()


def _read(fs, path: str, mode: str, buf: bytearray) -> int:
    f = fs.open_read(path)
    n = 0
    if mode == "readinto":
        while k := f.readinto(buf):
            n += k
    else:
        while v := f.readviews(MiB):
            n += sum(len(x) for x in v)
    f.close()
    assert n == f.size, n
    return n


def run(d: str, kind: str, path: str, mode: str, tune: bool, threads: int = 1) -> None:
    if tune:
        from protocols.memory import tune_allocator
        tune_allocator()
    r = Repository.open(f"{d}/{kind}", password="pw" if kind == "enc" else None)
    fs = r.share("s", origin=Origin("bench"))
    cpu, wall = [], []
    bufs = [bytearray(MiB) for _ in range(threads)]
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        if threads == 1:
            n = _read(fs, path, mode, bufs[0])
        else:
            with ThreadPoolExecutor(threads) as ex:
                n = sum(ex.map(lambda b: _read(fs, path, mode, b), bufs))
        c1, t1 = time.process_time(), time.perf_counter()
        cpu.append((c1 - c0) * 1000 / (n / MiB))
        wall.append((t1 - t0) * 1000 / (n / MiB))
    r.close()
    print(f"{kind} {path} {mode}{f' x{threads}' if threads > 1 else ''}: cpu {statistics.median(cpu):.3f} ms/MiB (min {min(cpu):.3f}), "
          f"wall {statistics.median(wall):.3f} ms/MiB")


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(sys.argv[2])
    else:
        rest = sys.argv[6:]
        run(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], "--tune" in rest,
            int(rest[rest.index("--threads") + 1]) if "--threads" in rest else 1)
