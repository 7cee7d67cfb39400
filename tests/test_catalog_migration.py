"""Schema migrations of existing repositories: every version reads back byte for byte after it.

Both tests make a history with every shape of chunk list at head (tests/catalog_history.py),
take the catalog down to 0007 with Alembic (chunk rows keyed by their 32-byte id, pack names in
the chunk rows) and bring it back up: the first through `Repository.open`, as a user's upgrade
does, the second with Alembic itself, on SQLite here and on PostgreSQL in test_postgres.py
(the same function).  (No repository written by the old release is kept in git: it would be a
binary archive; the downgrade writes the same 0007 schema.)"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

import catalog_history
from archive import Repository
from archive.catalog import db
from recover_helpers import drop_catalog, snapshot

def _reads_back(repo: Repository, more: dict | None = None) -> None:
    fs = repo.share("s")
    for path, versions in {**catalog_history.expected(), **(more or {})}.items():
        assert [(v.number, v.deleted) for v in fs.versions(path)] == [(n, d) for n, d, _ in versions], path
        for number, deleted, data in versions:
            if not deleted:
                with fs.open_read(path, version=number) as f:
                    assert f.read() == data, (path, number)


def _columns(repo: Repository, table: str) -> set[str]:
    return {c["name"] for c in inspect(repo.catalog.engine).get_columns(table)}


def _alembic(repo: Repository, fn, target: str) -> None:
    from alembic import command
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    with repo.catalog.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, fn)(cfg, target)


def _counts(repo: Repository) -> tuple[int, int, int, int]:
    with repo.catalog.session() as s:
        return tuple(s.execute(text(
            "SELECT (SELECT count(*) FROM chunks), (SELECT count(*) FROM version_chunks), "
            "(SELECT count(*) FROM versions WHERE chunk IS NOT NULL), "
            "(SELECT count(*) FROM chunk_lists)")).one())


def test_a_repository_at_0007_migrates_on_open_reads_back_dedups_and_recovers(cli):
    r = Repository.init(cli.repo_path, chunk_avg=4096)
    try:
        r.add_share("s")
        catalog_history.build(r.share("s"))
        chunks, refs, inline, listed = _counts(r)
        assert inline == 5 and refs == inline + listed and chunks < refs     # dedup: shared chunks
        _alembic(r, "downgrade", "0007")
        with r.catalog.session() as s:
            assert s.execute(text("SELECT count(*), count(DISTINCT pack_id) FROM chunks")).one() == (chunks, 1)
            assert s.execute(text("SELECT count(*) FROM version_chunks")).scalar() == refs
    finally:
        r.close()
    with Repository.open(cli.repo_path) as r:                     # migrates
        with r.catalog.session() as s:
            assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == db.SCHEMA_HEAD
            packs, no_pack = s.execute(text(
                "SELECT (SELECT count(*) FROM packs), (SELECT count(*) FROM chunks WHERE pack IS NULL)")).one()
        assert (packs, no_pack) == (1, 0)
        assert _counts(r) == (chunks, refs, inline, listed)          # every row moved, one-chunk
        assert "chunk" in _columns(r, "version_chunks") and "chunk_id" not in _columns(r, "version_chunks")
        assert "pack" in _columns(r, "chunks") and "pack_id" not in _columns(r, "chunks")
        assert "ix_versions_created" not in {ix["name"] for ix in inspect(r.catalog.engine).get_indexes("versions")}
        _reads_back(r)
        from archive.check import check
        assert check(r, read_data=True) == []
        # new versions after the migration: stored content is found again (no new chunk rows)
        fs = r.share("s")
        w = fs.open_write("/b/again.bin")
        w.write(catalog_history.BIG3)
        w.commit()
        w = fs.open_write("/a/small.txt")
        w.write(b"third")
        w.commit()
        with r.catalog.session() as s:
            assert s.execute(text("SELECT count(*) FROM chunks")).scalar() == chunks + 1
        with fs.open_read("/b/again.bin") as f:
            assert f.read() == catalog_history.BIG3
        more = {"/a/small.txt": [(1, False, b"hello"), (2, False, b"hello world"), (3, False, b"third")],
                "/b/again.bin": [(1, False, catalog_history.BIG3)]}
        _reads_back(r, more)
    cli("check", "--read-data")
    live = snapshot(cli.repo_path)
    drop_catalog(cli.repo_path)
    cli("recover")                                                # the packs hold everything
    assert snapshot(cli.repo_path) == live
    with Repository.open(cli.repo_path) as r:
        _reads_back(r, more)


def test_downgrade_to_0007_and_upgrade_again_keep_every_version(tmp_path):
    repo = Repository.init(tmp_path / "repo", chunk_avg=4096)
    try:
        repo.add_share("s")
        catalog_history.build(repo.share("s"))
        _alembic(repo, "downgrade", "0007")
        assert "chunk_id" in _columns(repo, "version_chunks") and "pack_id" in _columns(repo, "chunks")
        assert "ix_versions_created" in {ix["name"] for ix in inspect(repo.catalog.engine).get_indexes("versions")}
        with repo.catalog.session() as s:
            refs, named = s.execute(text(
                "SELECT count(*), count(c.pack_id) FROM version_chunks vc LEFT JOIN chunks c "
                "ON c.id = vc.chunk_id")).one()
        assert refs == named > 40                  # chunk boundaries are keyed: the count varies
        _alembic(repo, "upgrade", "head")
        assert "chunk" in _columns(repo, "version_chunks") and "pack" in _columns(repo, "chunks")
        _reads_back(repo)
        from archive.check import check
        assert check(repo, read_data=True) == []
        w = repo.share("s").open_write("/a/big.bin")              # the key sequences go on
        w.write(catalog_history.BIG1 + b"tail")
        w.commit()
        with repo.share("s").open_read("/a/big.bin") as f:
            assert f.read() == catalog_history.BIG1 + b"tail"
    finally:
        repo.close()
