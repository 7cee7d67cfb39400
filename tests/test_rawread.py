"""A Reader's window of chunks is read on the catalog's idle sqlite3 connections (branch rawread,
issue 9): in native mode reading a file needs no SQLAlchemy engine, returns the same bytes as
before, keeps no more connections than the idle stack's bound, and a damaged chunk list still
fails as Corrupt.  The engine-backed SQLite path is test_startup_put's last read; PostgreSQL
keeps SQLAlchemy (test_postgres)."""
from __future__ import annotations

import random
import sqlite3

import pytest

from archive import Repository, rawsql
from archive.errors import Corrupt

from conftest import put_bytes


def _reopen(tmp_path):
    """The conftest repository (made with the engine by init), reopened: native mode."""
    r = Repository.open(tmp_path / "repo")
    assert r.catalog.native is not None and r.catalog._engine is None
    return r


def test_small_and_large_reads_in_native_mode_make_no_engine(repo, tmp_path):
    fs = repo.share("office")
    small = b"four KiB? no: " + bytes(range(256)) * 16
    big = random.Random(9).randbytes(700_000)
    put_bytes(fs, "/small.bin", small)
    put_bytes(fs, "/big.bin", big)
    repo.close()
    r = _reopen(tmp_path)
    try:
        fs = r.share("office")
        for _ in range(50):
            with fs.open_read("/small.bin") as f:
                assert f.read() == small
        with fs.open_read("/big.bin") as f:
            assert f.read() == big
            f.seek(123_457)
            assert f.read(70_000) == big[123_457:193_457]
            f.seek(650_000)
            assert f.read() == big[650_000:]
        assert r.catalog._engine is None and r.catalog.native is not None     # no SQLAlchemy engine
        # one reader at a time reuses one connection; never more idle than the stack's bound
        assert 1 <= len(r.catalog._raw_idle.conns) <= rawsql._Idle.MAX
    finally:
        r.close()


@pytest.mark.parametrize("which", ["last", "middle"])
def test_a_damaged_chunk_list_is_corrupt_in_native_mode(repo, tmp_path, which):
    fs = repo.share("office")
    data = random.Random(1007).randbytes(600_000)
    put_bytes(fs, "/gap", data)
    repo.close()
    c = sqlite3.connect(tmp_path / "repo" / "catalog.sqlite")
    vid = c.execute("SELECT max(id) FROM versions WHERE size = 600000").fetchone()[0]
    offs = [o for (o,) in c.execute("SELECT offset FROM chunk_lists WHERE version_id = ? ORDER BY offset", (vid,))]
    assert len(offs) >= 3
    gone = offs[-1] if which == "last" else offs[len(offs) // 2]
    c.execute("DELETE FROM chunk_lists WHERE version_id = ? AND offset = ?", (vid, gone))
    c.commit()
    c.close()
    r = _reopen(tmp_path)
    try:
        fs = r.share("office")
        with fs.open_read("/gap") as f:
            assert f.read(gone) == data[:gone]
            with pytest.raises(Corrupt):
                f.read(1000)
        assert r.catalog._engine is None
    finally:
        r.close()
