"""`archivectl put` of a small file without SQLAlchemy (branch startup3, issue 9): for a local
SQLite catalog at this release's schema, the commit path runs on stdlib sqlite3 connections set
up as the engine's (catalog/db.py, "native mode"); anything else (an old schema that Alembic
must upgrade first) takes the engine, as before, and still works."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from archive import Repository
from archive.catalog import db
from conftest import CLI

PW = {"EDGE_ARCHIVE_PASSWORD": "pw"}


def _run(cli: CLI, *args: str, input: bytes | None = None) -> tuple[int, bytes, bytes, set[str]]:
    """archivectl in a fresh interpreter: exit code, stdout, stderr, and the top-level packages
    it had imported at exit, with the catalog's models as "models" (written by an exit hook)."""
    out = cli.repo_path.parent / "modules.json"
    code = ("import atexit, json, sys\n"
            f"atexit.register(lambda: open({str(out)!r}, 'w').write(json.dumps(sorted("
            "{m.split('.')[0] for m in sys.modules} | ({'models'} if 'archive.catalog.models' in sys.modules else set())))))\n"
            "sys.argv = ['archivectl', *sys.argv[1:]]\nfrom archive.cli.main import main\nmain()\n")
    p = subprocess.run([sys.executable, "-c", code, *args], input=input, capture_output=True, env=cli.env,
                       timeout=120)
    return p.returncode, p.stdout, p.stderr, set(json.loads(out.read_text()))


@pytest.fixture
def made(tmp_path):
    cli = CLI(tmp_path / "repo", env=PW)
    cli("init", "--encrypt")
    cli("share", "add", "s")
    return cli


def _versions(cli: CLI, path: str) -> list[dict]:
    return json.loads(cli("versions", path, "--json").stdout)


def test_put_imports_no_sqlalchemy_and_versions_shows_it(made, tmp_path):
    cli = made
    src = tmp_path / "one.txt"
    src.write_bytes(b"first bytes\n")
    rc, out, err, mods = _run(cli, "put", str(src), "/s/new/deep/one.txt")     # new folders, new file
    assert rc == 0, err
    assert out == b"/s/new/deep/one.txt: version 1 (12 bytes)\n"
    assert not {"sqlalchemy", "alembic", "models"} & mods, sorted(mods)
    src.write_bytes(b"second, longer bytes\n")
    rc, out, err, mods = _run(cli, "put", str(src), "/s/new/deep/one.txt")     # a new version
    assert rc == 0 and out == b"/s/new/deep/one.txt: version 2 (21 bytes)\n" and "sqlalchemy" not in mods, err
    rc, out, err, mods = _run(cli, "put", "-", "/s/new/stdin.bin", input=b"\x00" * 5000)
    assert rc == 0 and b"version 1 (5000 bytes)" in out and "sqlalchemy" not in mods, err
    vs = _versions(cli, "/s/new/deep/one.txt")
    assert [(v["version"], v["size"], v["deleted"]) for v in vs] == [(1, 12, False), (2, 21, False)]
    assert cli("get", "/s/new/deep/one.txt", "-").stdout == b"second, longer bytes\n"
    assert cli("get", "/s/new/deep/one.txt", "-", "--version", "1").stdout == b"first bytes\n"
    # every guarantee of the full path: the audit rows, the events in the packs (check, recover)
    writes = [(r["action"], r["share"], r["path"], r["version"], r["protocol"])
              for r in json.loads(cli("audit", "--json").stdout) if r["action"] == "write"]
    assert writes == [("write", "s", "/new/deep/one.txt", 1, "cli"), ("write", "s", "/new/deep/one.txt", 2, "cli"),
                      ("write", "s", "/new/stdin.bin", 1, "cli")]
    assert cli("check", "--read-data").returncode == 0
    # a folder: listing and batch commit are plain SQL as well
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"a")
    (tree / "sub" / "b.txt").write_bytes(b"bb")
    rc, out, err, mods = _run(cli, "put", str(tree), "/s/tree")
    assert rc == 0 and b"2 files stored" in out and not {"sqlalchemy", "models"} & mods, (err, sorted(mods))
    assert cli("get", "/s/tree/sub/b.txt", "-").stdout == b"bb"
    # a share with a quota: its usage is read with plain SQL too, and the quota still refuses
    cli("share", "add", "q", "--quota", "1K")
    rc, out, err, mods = _run(cli, "put", "-", "/q/small", input=b"x" * 600)
    assert rc == 0 and b"version 1 (600 bytes)" in out and "sqlalchemy" not in mods, err
    rc, out, err, mods = _run(cli, "put", "-", "/q/more", input=b"y" * 600)
    assert rc == 1 and b"over its quota" in err and not out, err
    assert [e["name"] for e in json.loads(cli("ls", "/q", "--json").stdout)] == ["small"]
    # a share that is not there: the same error as before, exit code 3
    p = cli("put", str(src), "/nosuch/x", ok=False)
    assert p.returncode == 3 and b"no share 'nosuch'" in p.stderr


def test_native_mode_has_the_engines_settings_and_ends_with_the_engine(made):
    repo = Repository.open(made.repo_path, password="pw")
    try:
        cat = repo.catalog
        assert cat.native == made.repo_path / "catalog.sqlite" and cat._engine is None
        fs = repo.share("s")
        with fs.open_write("/a.txt") as w:
            w.write(b"native")
        assert fs.stat("/a.txt").size == 6 and cat._engine is None       # no SQLAlchemy was needed
        conn = cat.dbapi_connect()
        try:
            assert isinstance(conn, sqlite3.Connection) and conn.isolation_level is None
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2          # FULL
            assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 60000
        finally:
            conn.close()
        assert [v.number for v in fs.versions("/a.txt")] == [1]      # an ORM query: the engine is made
        assert cat._engine is not None and cat.native is None
        with fs.open_write("/a.txt") as w:                         # the commit path now on the engine
            w.write(b"engine")
        assert [v.size for v in fs.versions("/a.txt")] == [6, 6]
        assert fs.open_read("/a.txt").read() == b"engine"
    finally:
        repo.close()


def _downgrade(repo_path, to: str) -> None:
    """The catalog as an older release left it (Alembic's downgrade of the newest migration)."""
    from alembic import command
    from alembic.config import Config
    cat = db.Catalog(db.sqlite_url(repo_path / "catalog.sqlite"))
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(db.Path(db.__file__).parent / "migrations"))
        with cat.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, to)
    finally:
        cat.close()


def _revision(repo_path) -> str:
    c = sqlite3.connect(repo_path / "catalog.sqlite")
    try:
        return c.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    finally:
        c.close()


def test_an_old_schema_takes_the_engine_migrates_and_the_put_still_works(made, tmp_path):
    cli = made
    cli("put", "-", "/s/f.txt", input=b"before the downgrade")
    _downgrade(cli.repo_path, "0004")
    assert _revision(cli.repo_path) == "0004"
    repo_cat = db.Catalog(db.sqlite_url(cli.repo_path / "catalog.sqlite"))
    try:
        assert repo_cat.native_file() is not None
        c = sqlite3.connect(repo_cat.native_file())
        assert db.schema_revision(c.cursor()) != db.SCHEMA_HEAD      # what makes migrate refuse native mode
        c.close()
    finally:
        repo_cat.close()
    src = tmp_path / "f.txt"
    src.write_bytes(b"after the downgrade")
    rc, out, err, mods = _run(cli, "put", str(src), "/s/f.txt")
    assert rc == 0 and out == b"/s/f.txt: version 2 (19 bytes)\n", err
    assert "sqlalchemy" in mods and "alembic" in mods              # the full path: Alembic upgraded it
    assert _revision(cli.repo_path) == db.SCHEMA_HEAD
    assert [(v["version"], v["size"]) for v in _versions(cli, "/s/f.txt")] == [(1, 20), (2, 19)]
    assert cli("get", "/s/f.txt", "-").stdout == b"after the downgrade"
    rc, out, err, mods = _run(cli, "put", str(src), "/s/g.txt")     # at head again: native once more
    assert rc == 0 and "sqlalchemy" not in mods, err


def test_a_catalog_url_with_options_or_postgres_never_goes_native():
    assert db.Catalog("sqlite:////tmp/x/catalog.sqlite?timeout=5").native_file() is None
    assert db.Catalog("sqlite://").native_file() is None
    assert db.Catalog("sqlite:///:memory:").native_file() is None
    assert db.Catalog("postgresql+psycopg://u@h/db").native_file() is None
    assert str(db.Catalog("sqlite:////tmp/x/catalog.sqlite").native_file()) == "/tmp/x/catalog.sqlite"


def test_version_row_columns_are_the_models():
    from archive.catalog import models as m
    from archive.sharefs import VersionRow
    assert list(VersionRow._fields) == [c.name for c in m.Version.__table__.columns]


def test_concurrent_puts_on_the_native_path_queue_for_the_lock(made):
    """Several CLI puts at once (each on its own stdlib connection, BEGIN IMMEDIATE, the busy
    timeout): every one is acknowledged and becomes exactly one version, none is lost."""
    procs = [subprocess.Popen([sys.executable, "-m", "archive", "put", "-", "/s/same.txt"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=made.env) for _ in range(4)]
    outs = [p.communicate(f"writer {i}".encode(), timeout=120) for i, p in enumerate(procs)]
    assert [p.returncode for p in procs] == [0] * 4, outs
    numbers = sorted(int(o.split(b"version ")[1].split()[0]) for o, _ in outs)
    assert numbers == [1, 2, 3, 4]
    vs = _versions(made, "/s/same.txt")
    assert [v["version"] for v in vs] == [1, 2, 3, 4] and {v["size"] for v in vs} == {8}
    assert made("get", "/s/same.txt", "-").stdout in {f"writer {i}".encode() for i in range(4)}
