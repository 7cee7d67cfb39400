"""The lean read path of `archivectl ls` / `get` (archive/cli/lean.py): the same answers as the
full path (ShareFS), without SQLAlchemy, and the full path whenever it is not the plain case."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from archive import Repository
from archive.cli import lean
from conftest import CLI

PW = {"EDGE_ARCHIVE_PASSWORD": "pw"}


def _modules_after(cli, *args: str) -> tuple[int, bytes, set[str]]:
    """Run archivectl in a fresh interpreter: exit code, stdout, and the top-level packages
    it imported (written to a file by an exit hook, so stdout stays the command's own)."""
    out = cli.repo_path.parent / "modules.json"
    code = ("import atexit, json, sys\n"
            f"atexit.register(lambda: open({str(out)!r}, 'w').write(json.dumps(sorted("
            "{m.split('.')[0] for m in sys.modules}))))\n"
            "sys.argv = ['archivectl', *sys.argv[1:]]\nfrom archive.cli.main import main\nmain()\n")
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=cli.env, timeout=120)
    return p.returncode, p.stdout, set(json.loads(out.read_text()))


@pytest.fixture(scope="module")
def _built(tmp_path_factory):
    """An encrypted repository: folders, an empty file, a multi-chunk file, a file with two
    versions, a deleted one, a renamed one (built once; each test gets a copy)."""
    cli = CLI(tmp_path_factory.mktemp("lean") / "repo", env=PW)
    cli("init", "--encrypt")
    cli("share", "add", "s")
    cli("share", "add", "b")
    big = os.urandom(700_000)
    cli("put", "-", "/s/a/big.bin", input=big)
    cli("put", "-", "/s/a/x.txt", input=b"first")
    cli("put", "-", "/s/a/x.txt", input=b"second, longer")
    cli("put", "-", "/s/empty", input=b"")
    cli("put", "-", "/s/gone", input=b"soon deleted")
    cli("rm", "/s/gone")
    cli("put", "-", "/s/old", input=b"moved")
    cli("mkdir", "/s/c")
    cli("mv", "/s/old", "/s/c/new")
    cli("mkdir", "/s/d")
    return cli, big


@pytest.fixture
def tree(_built, tmp_path):
    cli, big = _built
    shutil.copytree(cli.repo_path, tmp_path / "repo")
    return CLI(tmp_path / "repo", env=PW), big


def test_lean_entries_equal_sharefs_entries(tree):
    cli, _ = tree
    repo = Repository.open(cli.repo_path, password="pw")
    try:
        fs = repo.share("s")
        lr = lean.LeanRepo(cli.repo_path, None, lambda: "pw")
        try:
            ls = lr.share("s")
            assert lr.list_shares() == [s.name for s in repo.list_shares()] == ["b", "s"]
            for path in ("/", "/a", "/a/big.bin", "/a/x.txt", "/empty", "/c", "/c/new", "/d"):
                parts = tuple(p for p in path.split("/") if p)
                e = ls.stat(parts)
                assert e == fs.stat(path), path
                if e.is_dir:
                    assert list(ls.listdir(parts, e.node_id)) == list(fs.listdir(path)), path
            assert [e.name for e in ls.listdir((), ls.stat(()).node_id)] == ["a", "c", "d", "empty"]
            for path in ("/a/big.bin", "/a/x.txt", "/empty", "/c/new"):
                entry, data = ls.read(tuple(p for p in path.split("/") if p))
                assert entry == fs.stat(path) and data == fs.open_read(path).read(), path
            for missing in (("gone",), ("nope",), ("a", "x.txt", "below"), (".snapshots",)):
                with pytest.raises(lean.Fallback):
                    ls.stat(missing)
            with pytest.raises(lean.Fallback):
                ls.read(("a",))                      # a folder: the full path's tree download
            with pytest.raises(lean.Fallback):
                lr.share("nosuch")
        finally:
            lr.close()
    finally:
        repo.close()


def test_lean_statements_are_sharefs_statements():
    from archive import repository, sharefs
    assert lean.CHILD_SQL == sharefs._CHILD_SQL[(False, True)]
    assert lean.LIST_SQL == sharefs._LIST_SQL[True]
    assert lean.NODE_TIMES_SQL == sharefs._NODE_TIMES_SQL
    assert lean.FORMAT == repository.FORMAT


def test_ls_and_get_import_no_sqlalchemy_and_answer_right(tree):
    cli, big = tree
    rc, out, mods = _modules_after(cli, "ls", "/s/a")
    assert rc == 0 and "sqlalchemy" not in mods, sorted(mods)
    assert [ln.split()[-1] for ln in out.decode().splitlines()] == ["big.bin", "x.txt"]
    assert " v2 x.txt" in out.decode() and "       14 " in out.decode()
    rc, out, mods = _modules_after(cli, "get", "/s/a/big.bin", "-")
    assert rc == 0 and out == big and "sqlalchemy" not in mods
    rc, out, mods = _modules_after(cli, "ls", "/", "--json")
    assert rc == 0 and json.loads(out) == [{"kind": "share", "name": "b"}, {"kind": "share", "name": "s"}]
    assert "sqlalchemy" not in mods
    dest = cli.repo_path.parent / "got.txt"
    rc, _, mods = _modules_after(cli, "get", "/s/a/x.txt", str(dest))
    assert rc == 0 and dest.read_bytes() == b"second, longer" and "sqlalchemy" not in mods
    # ... and what the lean path does not answer goes the full way, with the full path's errors
    rc, out, mods = _modules_after(cli, "get", "/s/a/x.txt", "-", "--version", "1")
    assert rc == 0 and out == b"first" and "sqlalchemy" in mods
    p = cli("ls", "/s/gone", ok=False)
    assert p.returncode == 3 and b"/s/gone: no such file or folder" in p.stderr and not p.stdout
    p = cli("get", "/s/gone", "-", ok=False)
    assert p.returncode == 3 and not p.stdout
    p = cli("ls", "/nosuch", ok=False)
    assert p.returncode == 3 and b"no share 'nosuch'" in p.stderr
    p = cli("ls", "/s", ok=False, env={"EDGE_ARCHIVE_PASSWORD": "wrong"})
    assert p.returncode == 5 and b"wrong passphrase" in p.stderr and not p.stdout
    assert b"@GMT-" in cli("ls", "/s/.snapshots").stdout
    back = cli.repo_path.parent / "back"
    cli("get", "/s/a", str(back))
    assert (back / "big.bin").read_bytes() == big


def test_json_listing_is_the_full_paths(tree):
    """The same JSON through the lean path (current state) and the full one (--at a later instant
    lists the same entries through ShareFS)."""
    cli, _ = tree
    for path in ("/s", "/s/a", "/s/a/x.txt", "/s/c"):
        now = json.loads(cli("ls", path, "--json").stdout)
        later = json.loads(cli("ls", path, "--json", "--at", "2999-01-01T00:00:00Z").stdout)
        assert now == later and now, path


def test_a_damaged_chunk_is_never_served_by_the_lean_path(tree):
    cli, big = tree
    packs = sorted((cli.repo_path / "packs").rglob("*.pack"), key=lambda p: p.stat().st_size)
    raw = bytearray(packs[-1].read_bytes())
    i = raw.find(b"", len(raw) // 2)
    raw[i] ^= 0xFF
    packs[-1].write_bytes(bytes(raw))
    p = cli("get", "/s/a/big.bin", "-", ok=False)
    assert p.returncode != 0 and b"Traceback" not in p.stderr
    assert len(p.stdout) < len(big) and p.stdout != big


def test_large_file_and_old_catalog_take_the_full_path(tree, monkeypatch):
    cli, big = tree
    lr = lean.LeanRepo(cli.repo_path, None, lambda: "pw")
    try:
        monkeypatch.setattr(lean, "GET_MAX", 100_000)
        with pytest.raises(lean.Fallback):
            lr.share("s").read(("a", "big.bin"))
    finally:
        lr.close()
    db = sqlite3.connect(cli.repo_path / "catalog.sqlite")
    head = db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    db.execute("UPDATE alembic_version SET version_num = '9999'")
    db.commit()
    with pytest.raises(lean.Fallback):
        lean.LeanRepo(cli.repo_path, None, lambda: "pw")
    p = cli("ls", "/s", ok=False)                  # refused by the full path, as before
    assert p.returncode == 1 and b"newer than this edge-archive" in p.stderr and not p.stdout
    db.execute("UPDATE alembic_version SET version_num = ?", (head,))
    db.commit()
    db.close()
    with pytest.raises(lean.Fallback):             # a catalog elsewhere: not the lean path's
        lean.LeanRepo(cli.repo_path, "postgresql://x/y", lambda: "pw")
    with pytest.raises(lean.Fallback):
        lean.LeanRepo(Path(cli.repo_path.parent / "nothing"), None, lambda: "pw")


def test_a_fallback_takes_the_unwrapped_key_once(tree, monkeypatch):
    """The key the lean path unwrapped is handed to the full path's Repository.open (no second
    scrypt), once, and only for the same keyfile and passphrase."""
    from archive import keys
    cli, _ = tree
    lr = lean.LeanRepo(cli.repo_path, None, lambda: "pw")
    lr.close()
    data = (cli.repo_path / "keys.json").read_bytes()
    calls = []
    real = keys._scrypt
    monkeypatch.setattr(keys, "_scrypt", lambda *a: calls.append(a) or real(*a))
    with pytest.raises(keys.BadPassword):
        keys.parse_keyfile(data, "wrong")                    # another passphrase: derived, refused
    assert len(calls) == 1
    repo = Repository.open(cli.repo_path, password="pw")     # takes the handed-over key
    try:
        assert repo.key == lr.key and len(calls) == 1
    finally:
        repo.close()
    assert keys.parse_keyfile(data, "pw") == lr.key and len(calls) == 2     # once only
    assert not keys._handed


def test_a_catalog_that_does_not_read_goes_the_full_way(tree):
    """A catalog the lean path cannot read (here: not a database) is the full path's to report;
    the lean path neither crashes nor prints."""
    cli, _ = tree
    db = cli.repo_path / "catalog.sqlite"
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    db.write_bytes(b"not a database at all" * 200)
    with pytest.raises(lean.FALLBACK):
        lean.LeanRepo(cli.repo_path, None, lambda: "pw")
    for args in (("ls", "/s"), ("ls", "/"), ("get", "/s/a/x.txt", "-"), ("put", "-", "/s/new")):
        p = cli(*args, ok=False, input=b"data")
        assert p.returncode == 1 and not p.stdout, args
        assert b"catalog cannot be read (file is not a database)" in p.stderr, (args, p.stderr)
        assert b"archivectl recover" in p.stderr and b"Traceback" not in p.stderr, args
    cli("recover")                                 # what the message points to
    assert cli("get", "/s/a/x.txt", "-").stdout == b"second, longer"


def test_lean_reads_do_not_wait_for_a_writer(tree):
    """A writer holding the catalog's write lock (a long commit of `serve`) does not hold up the
    lean path's reads (WAL snapshot), and they see the last committed state."""
    cli, big = tree
    repo = Repository.open(cli.repo_path, password="pw")
    try:
        with repo.catalog.write() as s:
            s.connection()                                    # BEGIN IMMEDIATE: the write lock
            p = subprocess.run([sys.executable, "-m", "archive", "get", "/s/a/big.bin", "-"],
                               capture_output=True, env=cli.env, timeout=30)
            assert p.returncode == 0 and p.stdout == big, p.stderr
            p = subprocess.run([sys.executable, "-m", "archive", "ls", "/s/a"],
                               capture_output=True, env=cli.env, timeout=30)
            assert p.returncode == 0 and b"big.bin" in p.stdout, p.stderr
    finally:
        repo.close()
