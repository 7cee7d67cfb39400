"""Schema migrations of existing repositories: every version reads back byte for byte after it.

Both tests make a history with every shape of chunk list at head (tests/catalog_history.py),
take the catalog down to 0007 with Alembic (chunk rows keyed by their 32-byte id, pack names in
the chunk rows) and bring it back up: the first through `Repository.open`, as a user's upgrade
does, the second with Alembic itself, on SQLite here and on PostgreSQL in test_postgres.py
(the same function).  (No repository written by the old release is kept in git: it would be a
binary archive; the downgrade writes the same 0007 schema.)"""
from __future__ import annotations

from dataclasses import astuple
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
    if repo.catalog.engine.dialect.name == "postgresql":
        # (psycopg's statements prepared on the pooled connections before a column changed its
        # type would refuse to run: "cached plan must not change result type"; a migration on
        # open runs before any)
        repo.catalog.engine.dispose()


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


# -- 0011: dentries.name_fold NULL where a name is its own case fold ---------------------------

#: names in a case-insensitive share: some their own fold (stored NULL from 0011 on), some not
_CI_NAMES = {"/Docs/Report.PDF": b"report", "/Docs/notes.txt": b"notes", "/Docs/Stra\u00dfe.txt": b"street",
             "/Docs/caf\u00e9.txt": b"cafe", "/Docs/MiXeD": b"mixed", "/lower/x.bin": b"x"}


def _ci_history(repo: Repository) -> None:
    repo.add_share("office")
    fs = repo.share("office", case_insensitive=True)
    fs.mkdir("/Docs")
    fs.mkdir("/lower")
    for path, data in _CI_NAMES.items():
        w = fs.open_write(path)
        w.write(data)
        w.commit()
    w = fs.open_write("/DOCS/REPORT.pdf")             # the same file: a second version
    w.write(b"report 2")
    w.commit()
    fs.rename("/Docs/MiXeD", "/Docs/Renamed.Bin")
    fs.remove("/docs/NOTES.TXT")


def _everything(repo: Repository) -> dict:
    """What a user sees: every version's history and bytes (both shares), the folders, the audit."""
    out: dict = {"audit": [astuple(a) for a in repo.audit_events()]}
    for share, ci in (("s", False), ("office", True)):
        fs = repo.share(share, case_insensitive=ci)
        stack = ["/"]
        while stack:
            folder = stack.pop()
            for e in fs.listdir(folder):
                path = folder.rstrip("/") + "/" + e.name
                if e.kind == "dir":
                    stack.append(path)
                    continue
                out[(share, path)] = [(v.number, v.deleted, v.size, v.etag) for v in fs.versions(path)]
                for v in fs.versions(path):
                    if not v.deleted:
                        with fs.open_read(path, version=v.number) as f:
                            out[(share, path, v.number)] = f.read()
        out[(share, "gone")] = [(v.number, v.deleted) for v in fs.versions("/Docs/notes.txt")] if ci else None
    with repo.catalog.session() as s:
        out["rows"] = s.execute(text(
            "SELECT (SELECT count(*) FROM dentries), (SELECT count(*) FROM nodes), (SELECT count(*) FROM versions), "
            "(SELECT count(*) FROM chunks), (SELECT count(*) FROM version_chunks), (SELECT count(*) FROM audit)")).one()
    return out


def _chunk_id_index(repo: Repository) -> tuple[bool, bool]:
    """(unique index on the id's 16-byte prefix (0012), unique constraint on the whole id (before))"""
    sqlite = repo.catalog.engine.dialect.name == "sqlite"
    with repo.catalog.session() as s:           # (SQLAlchemy's SQLite inspector skips expression indexes)
        sql = ("SELECT sql FROM sqlite_master WHERE name = 'uq_chunks_id16'" if sqlite else
               "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_chunks_id16'")
        ddl = s.execute(text(sql)).scalar() or ""
    prefix = "UNIQUE" in ddl.upper() and "substr(id, 1, 16)" in ddl
    return prefix, any(u["column_names"] == ["id"] for u in inspect(repo.catalog.engine).get_unique_constraints("chunks"))


def _folds(repo: Repository) -> tuple[int, int]:
    """(dentries, dentries with a stored fold)"""
    with repo.catalog.session() as s:
        return tuple(s.execute(text("SELECT count(*), count(name_fold) FROM dentries")).one())


def _ci_lookups(repo: Repository) -> None:
    fs = repo.share("office", case_insensitive=True)
    assert sorted(e.name for e in fs.listdir("/docs")) == ["Renamed.Bin", "Report.PDF", "Stra\u00dfe.txt",
                                                          "caf\u00e9.txt"]
    for path, data in (("/docs/report.pdf", b"report 2"), ("/DOCS/STRASSE.TXT", b"street"),
                       ("/Docs/CAF\u00c9.TXT", b"cafe"), ("/docs/renamed.bin", b"mixed"), ("/LOWER/X.BIN", b"x")):
        with fs.open_read(path) as f:
            assert f.read() == data, path
    assert [v.number for v in fs.versions("/docs/REPORT.PDF")] == [1, 2]
    assert [(v.number, v.deleted) for v in fs.versions("/DOCS/Notes.Txt")] == [(1, False), (2, True)]
    assert not repo.share("office").exists("/docs/report.pdf")          # case-sensitive: no


def test_0011_name_fold_migrates_on_existing_data_both_ways(cli):
    r = Repository.init(cli.repo_path, chunk_avg=4096)
    try:
        r.add_share("s")
        catalog_history.build(r.share("s"))
        _ci_history(r)
        at_head = _everything(r)
        names, stored = _folds(r)
        # stored only for the names that differ from their fold: Docs, Report.PDF, Straße.txt, Renamed.Bin
        # (and MiXeD, whose dentry ended at the rename)
        assert stored == 5 and names == 18
        _alembic(r, "downgrade", "0010")
        assert _folds(r) == (names, names)                           # 0010: every name's fold stored
        with r.catalog.session() as s:
            assert s.execute(text("SELECT count(*) FROM dentries WHERE name_fold = name")).scalar() == names - stored
    finally:
        r.close()
    with Repository.open(cli.repo_path) as r:                        # migrates 0010 -> head
        assert _folds(r) == (names, stored)
        assert _chunk_id_index(r) == (True, False)
        fold_ix = [ix for ix in inspect(r.catalog.engine).get_indexes("dentries")
                   if ix["name"] == "ix_dentries_parent_fold"]
        assert len(fold_ix) == 1 and "name_fold IS NOT NULL" in \
            " ".join(str(w) for w in fold_ix[0].get("dialect_options", {}).values())
        assert _everything(r) == at_head
        _ci_lookups(r)
        fs = r.share("office", case_insensitive=True)
        w = fs.open_write("/docs/RENAMED.BIN")                       # a new version, not a second file
        w.write(b"again")
        w.commit()
        assert [e.name for e in fs.listdir("/Docs")].count("Renamed.Bin") == 1
        assert [v.number for v in fs.versions("/Docs/Renamed.Bin")] == [1, 2]
        after = _everything(r)
    cli("check", "--read-data")
    live = snapshot(cli.repo_path)
    drop_catalog(cli.repo_path)
    cli("recover")                                                   # rebuilt by the same events
    assert snapshot(cli.repo_path) == live
    with Repository.open(cli.repo_path) as r:
        assert _folds(r) == (names, stored)
        after["audit"] = [astuple(a) for a in r.audit_events()][:len(after["audit"])]
        got = _everything(r)
        got["audit"] = got["audit"][:len(after["audit"])]
        assert {k: v for k, v in got.items() if k != "rows"} == {k: v for k, v in after.items() if k != "rows"}
        _ci_lookups_after_recover = r.share("office", case_insensitive=True)
        with _ci_lookups_after_recover.open_read("/DOCS/renamed.bin") as f:
            assert f.read() == b"again"


def test_0011_downgrade_and_upgrade_with_alembic_keep_every_name_and_version(tmp_path):
    """0011 and 0012 with Alembic itself: on SQLite here, on PostgreSQL in test_postgres.py."""
    repo = Repository.init(tmp_path / "repo", chunk_avg=4096)
    try:
        repo.add_share("s")
        catalog_history.build(repo.share("s"))
        _ci_history(repo)
        at_head = _everything(repo)
        names, stored = _folds(repo)
        assert (names, stored) == (18, 5)
        assert _chunk_id_index(repo) == (True, False)
        _alembic(repo, "downgrade", "0010")
        assert _folds(repo) == (names, names)
        assert _chunk_id_index(repo) == (False, True)
        _alembic(repo, "upgrade", "head")
        assert _folds(repo) == (names, stored)
        assert _chunk_id_index(repo) == (True, False)
        assert _everything(repo) == at_head
        _ci_lookups(repo)
        with repo.catalog.session() as s:
            chunks = s.execute(text("SELECT count(*) FROM chunks")).scalar()
        w = repo.share("s").open_write("/b/dedup.bin")                # found by id again: no new row
        w.write(catalog_history.BIG3)
        w.commit()
        with repo.catalog.session() as s:
            assert s.execute(text("SELECT count(*) FROM chunks")).scalar() == chunks
        fs = repo.share("office", case_insensitive=True)
        w = fs.open_write("/DOCS/straSSe.TXT")                     # the stored fold finds it
        w.write(b"street 2")
        w.commit()
        assert [v.number for v in fs.versions("/Docs/Stra\u00dfe.txt")] == [1, 2]
        assert _folds(repo) == (names + 1, stored)                   # dedup.bin's, no other
    finally:
        repo.close()


# -- 0013: no index on audit.at; `audit --since` reads the trail ----------------------------------

def _audit_at_index(repo: Repository) -> bool:
    return "ix_audit_at" in {ix["name"] for ix in inspect(repo.catalog.engine).get_indexes("audit")}


def _since(repo: Repository, t: float) -> list[tuple]:
    return [astuple(a) for a in repo.audit_events(since=t)]


def test_0013_audit_without_its_time_index_lists_the_same_both_ways(tmp_path):
    """On SQLite here, on PostgreSQL in test_postgres.py.  The trail's time is not its id order
    (a batched record written after later writes): `since` must still find exactly the records
    at or after the time, before and after the migration."""
    from archive.types import Origin
    repo = Repository.init(tmp_path / "repo", chunk_avg=4096)
    try:
        repo.add_share("s")
        catalog_history.build(repo.share("s"))
        _ci_history(repo)
        records = list(repo.audit_events())
        mid = records[len(records) // 2].at                  # (seconds, as the listing shows them)
        late = Origin("ftp", "10.0.0.9", "alice")
        # queued with an old time, written after everything else: the newest id, an early `at`
        repo.audit_log.add(repo.audit_row("login_failed", late, at=int((mid - 3600) * 1e6)))
        repo.audit_log.add(repo.audit_row("download", late, "s", "/a/small.txt", version=2,
                                          at=int((mid + 0.5) * 1e6)))
        at_head = _everything(repo)
        since = _since(repo, mid)
        assert [a[4] for a in since][-1:] == ["download"] and "login_failed" not in [a[4] for a in since]
        assert since == [a for a in at_head["audit"] if a[0] >= mid]
        assert not _audit_at_index(repo)
        _alembic(repo, "downgrade", "0012")
        assert _audit_at_index(repo)
        assert _since(repo, mid) == since and _everything(repo) == at_head
        _alembic(repo, "upgrade", "head")
        assert not _audit_at_index(repo)
        assert _since(repo, mid) == since and _everything(repo) == at_head
        assert [a.action for a in repo.audit_events(limit=2)] == ["login_failed", "download"]
    finally:
        repo.close()


# -- 0014: versions.etag as the digest's 16 bytes --------------------------------------------------

def _etag_lengths(repo: Repository) -> dict[int, int]:
    """{stored length of a version's etag: versions}"""
    with repo.catalog.session() as s:
        return dict(s.execute(text("SELECT length(etag), count(*) FROM versions GROUP BY length(etag)")).all())


def test_0014_etags_as_bytes_show_the_same_hex_everywhere_both_ways(tmp_path):
    """On SQLite here, on PostgreSQL in test_postgres.py: every reader (versions, listing, the
    S3 listing, an entry's reader) shows the same hex etag as before, on existing data."""
    from archive import objects
    repo = Repository.init(tmp_path / "repo", chunk_avg=4096)
    try:
        repo.add_share("s")
        catalog_history.build(repo.share("s"))
        _ci_history(repo)
        fs = repo.share("s")

        def shown() -> dict:
            out = _everything(repo)
            out["list"] = [(e.name, e.etag) for e in fs.listdir("/a")]
            out["stat"] = fs.stat("/a/small.txt").etag
            out["s3"] = [(v.number, v.etag) for v in objects.versions_of(fs, fs.stat("/a/small.txt").node_id, "k")]
            with fs.open_entry(fs.stat("/a/small.txt")) as r:
                out["reader"] = r.etag
            out["current"] = fs.current_files([("a",)])
            return out

        at_head = shown()
        hexes = {v.etag for v in fs.versions("/a/small.txt")}
        assert at_head["stat"] in hexes and all(len(h) == 32 and int(h, 16) >= 0 for h in hexes)
        with repo.catalog.session() as s:
            deletions = s.execute(text("SELECT count(*) FROM versions WHERE deleted")).scalar()
        lengths = _etag_lengths(repo)
        assert set(lengths) <= {0, 16} and lengths[16] > 10 and lengths.get(0, 0) == deletions > 0
        _alembic(repo, "downgrade", "0013")
        assert _etag_lengths(repo) == {{16: 32}.get(k, k): n for k, n in lengths.items()}
        assert shown() == at_head
        _alembic(repo, "upgrade", "head")
        assert _etag_lengths(repo) == lengths
        assert shown() == at_head
        # an etag that is not a digest (the core writes none) keeps its text both ways
        odd = {"/a/small.txt": 'W/"weird" \u00e9', "/a/same.txt": "=abcdefghijklmn", "/a/big.bin": "AB" * 16}
        _alembic(repo, "downgrade", "0013")
        with repo.catalog.session() as s:
            for path, etag in odd.items():
                s.execute(text("UPDATE versions SET etag = :e WHERE number = 1 AND node_id = :n"),
                          {"e": etag, "n": fs.stat(path).node_id})
            s.commit()
        _alembic(repo, "upgrade", "head")
        assert {p: fs.versions(p)[0].etag for p in odd} == odd
        assert _etag_lengths(repo)[16] == lengths[16] - 3
        _alembic(repo, "downgrade", "0013")
        assert {p: fs.versions(p)[0].etag for p in odd} == odd
        _alembic(repo, "upgrade", "head")
        assert {p: fs.versions(p)[0].etag for p in odd} == odd
        w = fs.open_write("/a/small.txt")                      # the same bytes again: the same etag
        w.write(b"hello world")
        w.commit()
        assert fs.versions("/a/small.txt")[-1].etag == at_head[("s", "/a/small.txt")][-1][3]
    finally:
        repo.close()


# -- 0015: shares.used, the usage counter -----------------------------------------------------------

def _used(repo: Repository) -> dict[str, int] | None:
    """{share: its counter} (None: no column, before 0015)"""
    if "used" not in _columns(repo, "shares"):
        return None
    with repo.catalog.session() as s:
        return dict(s.execute(text("SELECT name, used FROM shares")).all())


def test_0015_usage_counter_is_computed_for_existing_data_both_ways(tmp_path):
    """On SQLite here, on PostgreSQL in test_postgres.py: the upgrade computes each share's
    counter from the data already there (the SUM it replaces), the downgrade drops it, and
    writes after either keep it exact."""
    from archive import usage
    repo = Repository.init(tmp_path / "repo", chunk_avg=4096)
    try:
        repo.add_share("s")
        catalog_history.build(repo.share("s"))
        _ci_history(repo)
        repo.add_share("empty", quota=10)
        expected = {"s": sum(len(v[-1][2]) for v in catalog_history.expected().values() if not v[-1][1]),
                    "office": len(b"report 2" b"street" b"cafe" b"mixed" b"x"), "empty": 0}
        assert _used(repo) == expected
        _alembic(repo, "downgrade", "0014")
        assert _used(repo) is None                        # (the code at head needs the column: no writes here)
        _alembic(repo, "upgrade", "head")
        assert _used(repo) == expected
        fs = repo.share("s")
        w = fs.open_write("/a/more.txt")
        w.write(b"12345")
        w.commit()
        expected["s"] += 5
        with repo.catalog.session() as s:
            assert {n: u for n, u in s.execute(text("SELECT name, used FROM shares")).all()} == expected
            assert not usage.mismatches(s)
        assert repo.share("s").usage() == (expected["s"], None)
        fs.remove("/a/more.txt")
        expected["s"] -= 5
        assert _used(repo) == expected
        _reads_back(repo)
    finally:
        repo.close()


# -- 0016: mtime NULL when equal to created_at ------------------------------------------------------

def _stored_mtimes(repo: Repository) -> tuple[int, int, int, int]:
    """(versions, versions storing an mtime, nodes, nodes storing one)"""
    with repo.catalog.session() as s:
        return tuple(s.execute(text("SELECT (SELECT count(*) FROM versions), (SELECT count(mtime) FROM versions), "
                                    "(SELECT count(*) FROM nodes), (SELECT count(mtime) FROM nodes)")).one())


def test_0016_times_read_the_same_everywhere_both_ways(tmp_path):
    """On SQLite here, on PostgreSQL in test_postgres.py: a version's and a node's mtime equal to
    its creation instant is stored as NULL, and every reader (stat, listdir, versions, the S3
    listing and version lookup, the lean CLI's statements) shows the same times as before."""
    from archive import objects
    from archive.cli import lean
    repo = Repository.init(tmp_path / "repo", chunk_avg=4096)
    try:
        repo.add_share("s")
        catalog_history.build(repo.share("s"))
        fs = repo.share("s")
        w = fs.open_write("/a/client-time.txt", mtime=1_500_000_000.25)      # a time a client set
        w.write(b"t")
        w.commit()
        fs.create_file("/b/no-version-yet")
        fs.set_times("/b", 1_400_000_000)

        def shown() -> dict:
            out: dict = {}
            for folder in ("/", "/a", "/b"):
                out[folder] = [(e.name, e.kind, e.mtime, e.ctime, e.version) for e in fs.listdir(folder)]
                for e in fs.listdir(folder):
                    out[(folder, e.name)] = fs.stat(f"{folder.rstrip('/')}/{e.name}")
                    if e.kind == "file" and e.version:
                        out[(folder, e.name, "v")] = [(v.number, v.mtime, v.created_at)
                                                      for v in fs.versions(f"{folder.rstrip('/')}/{e.name}")]
            node = fs.stat("/a/small.txt").node_id
            out["s3"] = [(v.number, v.mtime) for v in objects.versions_of(fs, node, "a/small.txt")]
            out["s3v"] = objects.version(fs, "a/small.txt", node, 1).mtime
            out["s3list"] = [(k, getattr(v, "mtime", None)) for k, v in objects.iter_keys(fs, "a/")]
            with repo.catalog.session() as s:
                cur = s.connection().connection.dbapi_connection.cursor()
                q = (lambda sql: sql) if repo.catalog.engine.dialect.name == "sqlite" else \
                    (lambda sql: sql.replace("?", "%s"))
                cur.execute(q(lean.NODE_TIMES_SQL), (node,))
                out["lean_node"] = tuple(cur.fetchone())
                cur.execute(q(lean._CURRENT_SQL), (node,))
                out["lean_current"] = tuple(cur.fetchone())[:3]
            return out

        at_head = shown()
        assert at_head[("/a", "client-time.txt")].mtime == 1_500_000_000.25
        assert at_head[("/", "b")].mtime == 1_400_000_000
        versions, stored_v, nodes, stored_n = _stored_mtimes(repo)
        # stored: the client's time, and the copy and the restore (they keep their source's time)
        assert stored_v == 3 and versions > 10
        assert 0 < stored_n < nodes                          # folders that changed after their creation
        _alembic(repo, "downgrade", "0015")
        assert _stored_mtimes(repo) == (versions, versions, nodes, nodes)
        assert shown() == at_head                            # (reads only: a write at 0015 needs the times)
        _alembic(repo, "upgrade", "head")
        assert _stored_mtimes(repo) == (versions, stored_v, nodes, stored_n)
        assert shown() == at_head
        _reads_back(repo, {"/a/client-time.txt": [(1, False, b"t")]})
    finally:
        repo.close()


# -- 0017: the audit's repeated strings as keys of audit_names; 0018: no index on chunks.pack ----

def _audit_kind(repo: Repository) -> tuple[str, bool, bool]:
    """(what `audit` is: table or view, audit_names exists, ix_chunks_pack exists)"""
    insp = inspect(repo.catalog.engine)
    kind = "view" if "audit" in insp.get_view_names() else "table" if "audit" in insp.get_table_names() else "-"
    return kind, "audit_names" in insp.get_table_names(), \
        "ix_chunks_pack" in {ix["name"] for ix in insp.get_indexes("chunks")}


def _audit_sql(repo: Repository) -> list[tuple]:
    """What ad-hoc SQL on `audit` reads (as tests/test_scaleout.py and an administrator do)."""
    with repo.catalog.session() as s:
        return [tuple(r) for r in s.execute(text(
            'SELECT id, at, "user", protocol, address, action, share, path, version, detail FROM audit '
            "ORDER BY id")).all()]


def test_0017_0018_audit_and_chunks_read_the_same_both_ways(tmp_path):
    """On SQLite here, on PostgreSQL in test_postgres.py: every audit record (strings, NULLs, the
    odd address and a user name with a quote) reads back the same through `audit_events`, the
    `audit` view and a downgraded table; new records after either step get new ids; gc and check
    find the same packs without ix_chunks_pack."""
    from archive import check, gc
    from archive.auditlog import AuditNames
    from archive.types import Origin
    repo = Repository.init(tmp_path / "repo", chunk_avg=4096)
    try:
        repo.add_share("s")
        catalog_history.build(repo.share("s"))
        _ci_history(repo)
        odd = Origin("webdav", "2001:db8::7", "o'brien")
        repo.audit("login_failed", odd, detail="bad password")
        repo.audit_log.add(repo.audit_row("download", odd, "s", "/a/small.txt", version=2))
        repo.audit("login_failed", Origin("ftp", None, None))
        repo.audit("download", odd, "s", "/ü/ça va/ß.txt")             # folders are names too
        repo.audit("odd_path", odd, "s", "no-slash")
        deep = "/" + "d" * 300 + "/deep.txt"            # a folder too long to be a name (VARCHAR(255))
        repo.audit("download", odd, "s", deep)
        at_head, rows = _everything(repo), _audit_sql(repo)
        assert ("login_failed", "o'brien", "2001:db8::7") in [(a[4], a[1], a[3]) for a in at_head["audit"]]
        assert (None, "ftp", None, "login_failed", None, None, None) in [r[2:9] for r in rows]
        assert ("o'brien", "webdav", "2001:db8::7", "download", "s", "/a/small.txt", 2) in [r[2:9] for r in rows]
        assert {"/ü/ça va/ß.txt", "no-slash", deep} <= {r[7] for r in rows}
        assert _audit_kind(repo) == ("view", True, False)
        assert not check.check(repo)
        _alembic(repo, "downgrade", "0016")
        assert _audit_kind(repo) == ("table", False, True)
        assert _audit_sql(repo) == rows and _everything(repo) == at_head
        with repo.catalog.write() as s:          # the table's own ids go on (SQL: the code is at head)
            s.execute(text("INSERT INTO audit (at, \"user\", protocol, address, action) "
                           "VALUES (1, 'u', 'cli', 'h', 'at_0016')"))
            s.execute(text("INSERT INTO audit (at, \"user\", protocol, address, action, share, path) "
                           "VALUES (2, 'u', 'cli', 'h', 'deep_0016', 's', :p)"), {"p": "/e" * 200 + "/x.txt"})
        assert [r[0] for r in _audit_sql(repo)][-2] == rows[-1][0] + 1
        rows = _audit_sql(repo)
        _alembic(repo, "upgrade", "head")
        # (the upgrade made new keys: a process keeps its names' keys for the catalog's life, and a
        # migration runs when a process opens the catalog, before its first write)
        repo.audit_log.names = AuditNames()
        assert _audit_kind(repo) == ("view", True, False)
        assert _audit_sql(repo) == rows
        repo.audit("at_head", Origin("cli", "h", "u"))
        after = _audit_sql(repo)
        assert after[:-1] == rows and after[-1][0] == rows[-1][0] + 1 and after[-1][2:6] == ("u", "cli", "h", "at_head")
        assert not check.check(repo)
        assert gc.collect(repo, grace=0).chunks_deleted == 0
        _reads_back(repo)
    finally:
        repo.close()
