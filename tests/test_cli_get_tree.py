"""`archivectl get` of a folder, or of a file above the lean path's 8 MiB, through the lean
path (archive/cli/files.py `_lean_restore`, archive/readpath.py `restore`): the same files, bytes and mtimes as the full path (ShareFS),
without SQLAlchemy; whatever it does not answer (a damaged chunk) goes the full way, which
reports the error and leaves no file with wrong bytes."""
from __future__ import annotations

import random

from archive import Repository, readpath
from archive.cli import lean

from test_cli_lean import _built, _modules_after, tree  # noqa: F401  (fixtures)


def _files(root) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _dirs(root) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


def test_lean_tree_get_writes_what_the_full_path_writes_without_sqlalchemy(tree):
    cli, big = tree
    text = b"".join(b"line %d of a text file\n" % i for i in range(30_000))
    cli("put", "-", "/s/a/deep/er/t.txt", input=text)
    lean_out, full_out = cli.repo_path.parent / "lean", cli.repo_path.parent / "full"
    rc, _, mods = _modules_after(cli, "get", "/s", str(lean_out))
    assert rc == 0 and "sqlalchemy" not in mods, sorted(mods)
    cli("get", "/s", str(full_out), "--at", "2999-01-01T00:00:00Z")     # ShareFS's restore_tree
    got = _files(lean_out)
    assert got == _files(full_out)
    assert _dirs(lean_out) == _dirs(full_out) == ["a", "a/deep", "a/deep/er", "c", "d"]
    assert got["a/big.bin"][0] == big and got["a/x.txt"][0] == b"second, longer"
    assert got["a/deep/er/t.txt"][0] == text and got["empty"][0] == b"" and got["c/new"][0] == b"moved"
    assert "gone" not in got
    repo = Repository.open(cli.repo_path, password="pw")
    try:
        fs = repo.share("s")
        assert {name: fs.stat("/" + name).mtime for name in got} == {name: m for name, (_, m) in got.items()}
    finally:
        repo.close()
    rc, _, mods = _modules_after(cli, "get", "/s/a/deep", str(cli.repo_path.parent / "sub"))
    assert rc == 0 and "sqlalchemy" not in mods
    assert (cli.repo_path.parent / "sub" / "er" / "t.txt").read_bytes() == text


def test_lean_restore_streams_a_file_above_the_batch_limit(tree, monkeypatch, tmp_path):
    """A file above BATCH_FILE_MAX is a batch of its own, its chunks written as they come."""
    cli, big = tree
    data = random.Random(5).randbytes(3 << 20)
    cli("put", "-", "/s/b3.bin", input=data)
    from archive import keys
    monkeypatch.setattr(keys, "_handed", type(keys._handed)())   # LeanRepo hands its key over: not to later tests
    monkeypatch.setattr(readpath, "BATCH_FILE_MAX", 100_000)
    monkeypatch.setattr(readpath, "RUNS_AHEAD", 1)
    from archive.cli.files import _lean_restore
    lr = lean.LeanRepo(cli.repo_path, None, lambda: "pw")
    try:
        fs = lr.share("s")
        _lean_restore(fs, None, lambda src: src.restore("/", tmp_path / "out", fs.stat(())))
    finally:
        lr.close()
    assert (tmp_path / "out" / "b3.bin").read_bytes() == data
    assert (tmp_path / "out" / "a" / "big.bin").read_bytes() == big
    assert not list((tmp_path / "out").rglob(".*partial"))


def test_a_file_above_the_small_file_limit_streams_on_the_lean_path(tree):
    cli, _ = tree
    data = random.Random(9).randbytes(lean.GET_MAX + 300_000)
    cli("put", "-", "/s/a/large.bin", input=data)
    out = cli.repo_path.parent / "got"
    out.mkdir()
    rc, _, mods = _modules_after(cli, "get", "/s/a/large.bin", str(out))
    assert rc == 0 and "sqlalchemy" not in mods, sorted(mods)
    assert (out / "large.bin").read_bytes() == data
    repo = Repository.open(cli.repo_path, password="pw")
    try:
        assert (out / "large.bin").stat().st_mtime == repo.share("s").stat("/a/large.bin").mtime
    finally:
        repo.close()
    rc, piped, mods = _modules_after(cli, "get", "/s/a/large.bin", "-")     # stdout: the Reader,
    assert rc == 0 and piped == data and "sqlalchemy" not in mods             # SQLAlchemy-free too


def test_a_damaged_chunk_in_a_tree_get_is_an_error_and_no_file(tree):
    cli, big = tree
    packs = sorted((cli.repo_path / "packs").rglob("*.pack"), key=lambda p: p.stat().st_size)
    raw = bytearray(packs[-1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF                              # inside big.bin's chunks
    packs[-1].write_bytes(bytes(raw))
    out = cli.repo_path.parent / "out"
    p = cli("get", "/s", str(out), ok=False)
    assert p.returncode != 0 and b"Traceback" not in p.stderr
    assert not (out / "a" / "big.bin").exists()
    assert not list(out.rglob(".*partial"))
    for name, want in (("a/x.txt", b"second, longer"), ("c/new", b"moved"), ("empty", b"")):
        if (out / name).exists():                           # written before the damage was met
            assert (out / name).read_bytes() == want
