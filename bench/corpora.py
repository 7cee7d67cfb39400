"""Deterministic benchmark corpora: every tool must ingest exactly the same bytes.

A corpus is a sequence of *states* of one directory tree (`tree`).  The benchmark brings
the tree to state 0, lets every tool ingest it, then to state 1, and so on -- the same
directory path each time, as a nightly backup of a changing folder would see it.  States
are built from a seed, so a re-run (another chunk size, another tool) sees identical data.

Corpora (sizes multiplied by --scale):
  versions  20 daily states of a ~64 MiB tree of a few hundred text/binary/record files,
            each day with appends, in-place edits, inserts, renames and new files
  sdists    15 successive Django release sdists, unpacked (many small files); falls back
            to a generated source tree when `pip download` is not possible
  random    1 GiB of incompressible bytes (BLAKE3 XOF of the seed)
  text      1 GiB of compressible text (Zipf-distributed generated words)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import blake3
import numpy as np

MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCK = 4 * MiB


# --------------------------------------------------------------------------- data makers

def random_bytes(seed: str, n: int, offset: int = 0) -> bytes:
    """n incompressible bytes, a pure function of (seed, offset): seekable, ~4 GB/s."""
    return blake3.blake3(seed.encode()).digest(length=n, seek=offset)


def random_stream(seed: str, total: int, block: int = BLOCK) -> Iterator[bytes]:
    off = 0
    while off < total:
        n = min(block, total - off)
        yield random_bytes(seed, n, off)
        off += n


class TextMaker:
    """Zipf-distributed words from a generated vocabulary; compresses like prose (~3x zstd)."""

    WIDTH = 16

    def __init__(self, seed: int = 1, vocab: int = 30000):
        rng = np.random.default_rng(seed)
        letters = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
        lp = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4,
                       2.4, 2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1])
        lp /= lp.sum()
        table = np.zeros((vocab, self.WIDTH), dtype=np.uint8)
        lengths = np.clip(rng.poisson(5.0, vocab) + 1, 1, self.WIDTH - 3)
        for i, ln in enumerate(lengths):
            table[i, :ln] = rng.choice(letters, ln, p=lp)
            # separators live in the word slot: mostly a space, sometimes punctuation/newline
            r = rng.random()
            tail = b" " if r < 0.85 else (b", " if r < 0.93 else (b".\n" if r < 0.98 else b"\n\n"))
            table[i, ln:ln + len(tail)] = np.frombuffer(tail, dtype=np.uint8)
        self.table = table
        ranks = np.arange(1, vocab + 1, dtype=np.float64)
        p = 1.0 / ranks ** 1.05
        cdf = np.cumsum(p / p.sum())
        # sample through a 2^20-entry lookup table: 4x faster than searchsorted per word
        self.lut = np.minimum(np.searchsorted(cdf, (np.arange(1 << 20) + 0.5) / (1 << 20)), vocab - 1)
        self.lut = self.lut.astype(np.uint16 if vocab < 65536 else np.uint32)

    def make(self, rng: np.random.Generator, n: int) -> bytes:
        """About n bytes of text (exactly n: cut or padded)."""
        out = bytearray()
        while len(out) < n:
            words = max(64, (n - len(out)) // 5)
            idx = self.lut[rng.integers(0, 1 << 20, words)]
            flat = self.table[idx].reshape(-1)
            out += flat[flat != 0].tobytes()
        del out[n:]
        return bytes(out)


def records_bytes(rng: np.random.Generator, n: int) -> bytes:
    """Semi-structured binary (fixed 64-byte records, low-entropy fields): compresses ~2-3x."""
    count = n // 64 + 1
    rec = np.zeros((count, 64), dtype=np.uint8)
    rec[:, 0:4] = np.frombuffer(b"REC1", dtype=np.uint8)
    rec[:, 4:8] = np.arange(count, dtype=np.uint32).view(np.uint8).reshape(count, 4)
    rec[:, 8:16] = rng.integers(0, 256, (count, 8), dtype=np.uint8)
    rec[:, 16:24] = rng.integers(0, 4, (count, 8), dtype=np.uint8)
    rec[:, 24:32] = rng.integers(0, 256, (count, 1), dtype=np.uint8)
    return rec.reshape(-1)[:n].tobytes()


# --------------------------------------------------------------------------- helpers

def tree_bytes(tree: Path) -> int:
    return sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())


def tree_files(tree: Path) -> list[str]:
    return sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file() and not p.is_symlink())


def manifest(tree: Path) -> dict[str, str]:
    """relative path -> blake3 hex of the content; used to verify restores byte for byte."""
    out = {}
    for rel in tree_files(tree):
        h = blake3.blake3()
        with open(tree / rel, "rb") as f:
            while b := f.read(BLOCK):
                h.update(b)
        out[rel] = h.hexdigest()
    return out


def verify(restored: Path, expected: dict[str, str], allow_extra: bool = False) -> str:
    """'ok' or a short description of the first mismatches."""
    got = manifest(restored) if restored.exists() else {}
    missing = [p for p in expected if p not in got]
    wrong = [p for p in expected if p in got and got[p] != expected[p]]
    extra = [] if allow_extra else [p for p in got if p not in expected]
    if not (missing or wrong or extra):
        return "ok"
    return f"MISMATCH missing={len(missing)} wrong={len(wrong)} extra={len(extra)} e.g. {(missing + wrong + extra)[:3]}"


def clear(tree: Path) -> None:
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)


# --------------------------------------------------------------------------- corpora

@dataclass
class Corpus:
    name: str
    n_states: int
    description: str = ""
    notes: list[str] = field(default_factory=list)

    def prepare(self, cache: Path) -> None:
        """Download / precompute what the states need (not timed)."""

    def apply(self, i: int, tree: Path) -> None:
        raise NotImplementedError


class SingleFile(Corpus):
    """One big file: random or text."""

    def __init__(self, name: str, size: int, kind: str, seed: int):
        super().__init__(name, 1, f"{size / MiB:.0f} MiB {kind}")
        self.size, self.kind, self.seed = size, kind, seed

    def apply(self, i: int, tree: Path) -> None:
        # generating 1 GiB of text takes ~30 s: keep it between runs, keyed by its parameters
        stamp = tree.parent / f"{tree.name}.stamp"
        key = f"{self.kind}:{self.size}:{self.seed}"
        if stamp.exists() and stamp.read_text() == key and tree.exists():
            return
        clear(tree)
        with open(tree / ("random.bin" if self.kind == "random" else "text.txt"), "wb") as f:
            for b in self.stream():
                f.write(b)
        stamp.write_text(key)

    def stream(self) -> Iterator[bytes]:
        if self.kind == "random":
            yield from random_stream(f"bench-random-{self.seed}", self.size)
        else:
            tm = TextMaker(self.seed)
            rng = np.random.default_rng(self.seed)
            left = self.size
            while left:
                n = min(BLOCK, left)
                yield tm.make(rng, n)
                left -= n


class Versions(Corpus):
    """20 daily states of a mixed tree (appends, edits, inserts, renames, new files)."""

    KINDS = (("txt", 0.5), ("bin", 0.3), ("dat", 0.2))

    def __init__(self, size: int, days: int = 20, files: int = 300, seed: int = 7):
        super().__init__("versions", days, f"{days} daily states of a ~{size / MiB:.0f} MiB tree of ~{files} files")
        self.size, self.files, self.seed = size, files, seed
        self.text = TextMaker(seed)

    def _content(self, rng: np.random.Generator, kind: str, n: int) -> bytes:
        if kind == "txt":
            return self.text.make(rng, n)
        if kind == "bin":
            return random_bytes(f"v{self.seed}-{rng.integers(1 << 62)}", n)
        return records_bytes(rng, n)

    def _kind(self, rel: str) -> str:
        return rel.rsplit(".", 1)[-1]

    def _new_name(self, rng: np.random.Generator, kind: str, existing: set[str]) -> str:
        while True:
            rel = f"d{rng.integers(10)}/s{rng.integers(5)}/f{rng.integers(1 << 30):09x}.{kind}"
            if rel not in existing:
                return rel

    def apply(self, i: int, tree: Path) -> None:
        rng = np.random.default_rng([self.seed, i])
        kinds = [k for k, _ in self.KINDS]
        probs = [p for _, p in self.KINDS]
        if i == 0:
            clear(tree)
            sizes = np.minimum(rng.lognormal(np.log(64 * 1024), 1.5, self.files), 8 * MiB)
            sizes = np.maximum((sizes * self.size / sizes.sum()).astype(int), 512)
            names: set[str] = set()
            for sz in sizes:
                kind = rng.choice(kinds, p=probs)
                rel = self._new_name(rng, kind, names)
                names.add(rel)
                self._write(tree / rel, self._content(rng, kind, int(sz)))
            return
        files = tree_files(tree)
        n = len(files)

        def pick(frac: float) -> list[str]:
            k = max(1, int(round(n * frac)))
            return [files[j] for j in rng.choice(n, k, replace=False)]

        for rel in pick(0.08):                      # appends (logs grow)
            with open(tree / rel, "ab") as f:
                f.write(self._content(rng, self._kind(rel), int(rng.integers(1024, 32 * 1024))))
        for rel in pick(0.04):                      # in-place edits, same size
            p = tree / rel
            size = p.stat().st_size
            ln = int(min(size, rng.integers(64, 16 * 1024)))
            off = int(rng.integers(0, size - ln + 1))
            with open(p, "r+b") as f:
                f.seek(off)
                f.write(self._content(rng, self._kind(rel), ln))
        for rel in pick(0.03):                      # inserts (shift the rest of the file)
            p = tree / rel
            data = p.read_bytes()
            off = int(rng.integers(0, len(data) + 1))
            ins = self._content(rng, self._kind(rel), int(rng.integers(256, 16 * 1024)))
            self._write(p, data[:off] + ins + data[off:])
        existing = set(tree_files(tree))
        for rel in pick(0.015):                     # renames (new path, same content)
            new = self._new_name(rng, self._kind(rel), existing)
            existing.add(new)
            (tree / new).parent.mkdir(parents=True, exist_ok=True)
            os.rename(tree / rel, tree / new)
        for _ in range(max(1, int(round(n * 0.007)))):   # new files
            kind = rng.choice(kinds, p=probs)
            rel = self._new_name(rng, kind, existing)
            existing.add(rel)
            sz = int(min(rng.lognormal(np.log(64 * 1024), 1.2), 2 * MiB) * self.size / (64 * MiB))
            self._write(tree / rel, self._content(rng, kind, max(sz, 512)))

    @staticmethod
    def _write(p: Path, data: bytes) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)


DJANGO_VERSIONS = [f"4.2.{n}" for n in range(1, 16)]


class Sdists(Corpus):
    """Successive Django sdists, unpacked without the versioned top folder (same paths each release)."""

    def __init__(self, count: int = 15, seed: int = 11):
        super().__init__("sdists", count, f"{count} successive Django sdists (4.2.1..), unpacked")
        self.versions = DJANGO_VERSIONS[:count]
        self.seed = seed
        self.tarballs: list[Path] = []
        self.generated = False

    def prepare(self, cache: Path) -> None:
        dl = cache / "sdists"
        dl.mkdir(parents=True, exist_ok=True)
        self.tarballs = []                 # prepare may run twice (bench/frames.py): no duplicates
        for v in self.versions:
            have = [p for p in dl.glob("*.tar.gz") if p.name.lower() == f"django-{v}.tar.gz"]
            if have:
                self.tarballs.append(have[0])
                continue
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                "-q", "-d", str(dl), f"django=={v}"],
                               capture_output=True, text=True, timeout=600)
            have = [p for p in dl.glob("*.tar.gz") if p.name.lower() == f"django-{v}.tar.gz"]
            if r.returncode != 0 and not have:
                self.notes.append(f"pip download django=={v} failed ({r.stderr.strip().splitlines()[-1:]}); "
                                  "using a generated source tree instead")
                self.generated = True
                self.description = f"{self.n_states} states of a generated source tree (download failed)"
                return
            self.tarballs.append(have[0])

    def apply(self, i: int, tree: Path) -> None:
        clear(tree)
        if self.generated:
            self._generated(i, tree)
            return
        with tarfile.open(self.tarballs[i]) as tf:
            for m in tf.getmembers():
                parts = m.name.split("/", 1)
                if len(parts) < 2 or not parts[1]:
                    continue
                m.name = parts[1]
                if m.isfile() or m.isdir():
                    tf.extract(m, tree, filter="data")

    def _generated(self, i: int, tree: Path) -> None:
        """Fallback: 6000 small source-like files; each release edits 5% and adds 1%."""
        tm = TextMaker(self.seed)
        for f in range(6000 + 60 * i):
            rng = np.random.default_rng([self.seed, f, self._last_edit(f, i)])
            p = tree / f"pkg{f % 40}" / f"mod{f}.py"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(tm.make(rng, int(rng.integers(300, 20000))))

    def _last_edit(self, f: int, i: int) -> int:
        for r in range(i, 0, -1):
            if np.random.default_rng([self.seed, f, r, 99]).random() < 0.05:
                return r
        return 0


def make_corpora(scale: float, seed: int = 1) -> dict[str, Corpus]:
    return {
        "versions": Versions(int(64 * MiB * scale), files=max(40, int(300 * min(1.0, scale * 2))), seed=seed + 6),
        "sdists": Sdists(max(3, min(15, int(round(15 * min(1.0, scale * 2)))))),
        "random": SingleFile("random", int(GiB * scale), "random", seed),
        "text": SingleFile("text", int(GiB * scale), "text", seed + 1),
    }


def blake3_file(path: Path) -> str:
    h = blake3.blake3()
    with open(path, "rb") as f:
        while b := f.read(BLOCK):
            h.update(b)
    return h.hexdigest()
