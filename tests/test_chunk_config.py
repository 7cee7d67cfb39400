"""The average chunk size belongs to the repository: chosen at init, kept by every later open, so
a new default never changes how an existing repository cuts (and so deduplicates) its data."""
from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import func, select

from archive import Origin, Repository
from archive.catalog import models as m
from archive.chunker import DEFAULT_AVG, LEGACY_AVG

DATA = os.urandom(2 * 1024 * 1024)


def _put(repo: Repository, path: str, data: bytes) -> None:
    fs = repo.share("s", origin=Origin("test", "127.0.0.1"))
    with fs.open_write(path) as w:
        w.write(data)
    assert fs.open_read(path).read() == data


def _chunks(repo: Repository) -> int:
    with repo.catalog.session() as s:
        return s.execute(select(func.count()).select_from(m.Chunk)).scalar_one()


def test_init_records_the_chunk_size_and_reopen_keeps_it(tmp_path: Path):
    r = Repository.init(tmp_path / "small", chunk_avg=16 * 1024)
    r.add_share("s")
    r.close()
    assert json.loads((tmp_path / "small" / "config.json").read_text())["chunk_avg"] == 16 * 1024
    r = Repository.open(tmp_path / "small")
    try:
        assert r.chunk_avg == 16 * 1024
        _put(r, "/a", DATA)
        assert _chunks(r) > 64          # 2 MiB at 16 KiB average: ~128 chunks (64 KiB: ~32)
    finally:
        r.close()
    r = Repository.init(tmp_path / "default")
    try:
        assert r.chunk_avg == DEFAULT_AVG
        assert json.loads((tmp_path / "default" / "config.json").read_text())["chunk_avg"] == DEFAULT_AVG
    finally:
        r.close()


def test_a_config_without_chunk_size_keeps_cutting_as_before(tmp_path: Path):
    """A repository whose config.json predates the recorded size cuts at 64 KiB whatever
    DEFAULT_AVG says: the same bytes put again add no chunk."""
    path = tmp_path / "old"
    r = Repository.init(path, chunk_avg=64 * 1024)
    r.add_share("s")
    _put(r, "/a", DATA)
    before = _chunks(r)
    r.close()
    cfg = json.loads((path / "config.json").read_text())
    del cfg["chunk_avg"]
    (path / "config.json").write_text(json.dumps(cfg))
    r = Repository.open(path)
    try:
        assert r.chunk_avg == LEGACY_AVG == 64 * 1024
        _put(r, "/b", DATA)
        _put(r, "/c", b"head" + DATA)       # an insert at the start: only the first chunk is new
        assert _chunks(r) <= before + 2
    finally:
        r.close()
