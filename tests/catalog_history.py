"""A small repository history with every shape of chunk list, for schema-migration tests.

`build(fs)` makes it through the ShareFS API; `expected()` is what every version must read back
as.  `python tests/catalog_history.py OUT_DIR` writes it as a repository at OUT_DIR/repo (to
look at one by hand)."""
from __future__ import annotations

import random
import sys


def _rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


BIG1 = _rand(1, 60_000)                                    # ~15 chunks at chunk_avg 4096
BIG2 = BIG1[:20_000] + _rand(2, 3_000) + BIG1[20_000:]     # shares most chunks with BIG1
BIG3 = BIG2 + _rand(3, 9_000)                              # appended


def expected() -> dict[str, list[tuple[int, bool, bytes]]]:
    """path -> [(version number, deleted, content)]."""
    return {
        "/a/small.txt": [(1, False, b"hello"), (2, False, b"hello world")],
        "/a/big.bin": [(1, False, BIG1), (2, False, BIG2), (3, False, BIG3)],
        "/a/gone.txt": [(1, False, b"soon gone"), (2, True, b"")],
        "/a/same.txt": [(1, False, b"hello world")],       # dedup: the same chunk as small.txt v2
        "/b/empty": [(1, False, b"")],
        "/b/copy.bin": [(1, False, BIG2)],                  # a copy: its chunk list copied
        "/b/back.bin": [(1, False, BIG1), (2, False, b"x"), (3, False, BIG1)],   # v3 restores v1
    }


def _put(fs, path: str, data: bytes) -> None:
    w = fs.open_write(path)
    w.write(data)
    w.commit()


def build(fs) -> None:
    fs.mkdir("/a")
    fs.mkdir("/b")
    _put(fs, "/a/small.txt", b"hello")
    _put(fs, "/a/small.txt", b"hello world")
    _put(fs, "/a/big.bin", BIG1)
    _put(fs, "/a/big.bin", BIG2)
    fs.copy("/a/big.bin", "/b/copy.bin")
    _put(fs, "/a/big.bin", BIG3)
    _put(fs, "/a/gone.txt", b"soon gone")
    fs.remove("/a/gone.txt")
    _put(fs, "/a/same.txt", b"hello world")
    _put(fs, "/b/empty", b"")
    _put(fs, "/b/back.bin", BIG1)
    _put(fs, "/b/back.bin", b"x")
    fs.restore("/b/back.bin", version=1)


if __name__ == "__main__":
    from pathlib import Path
    from archive import Repository
    out = Path(sys.argv[1])
    repo = Repository.init(out / "repo", chunk_avg=4096)
    repo.add_share("s")
    build(repo.share("s"))
    repo.close()
