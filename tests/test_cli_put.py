"""`archivectl put` of a tree: the files cache (size + mtime), --checksum, same bytes under a new
mtime, and a put killed between two of its commit batches."""
from __future__ import annotations

import json
import os
import unicodedata

import pytest

from recover_helpers import FAULT


def _versions(cli, path: str) -> list[dict]:
    return json.loads(cli("versions", path, "--json").stdout)


def _put(cli, src, *extra) -> str:
    return cli("put", *extra, str(src), "/s/t").stdout.decode()


def test_files_cache_checksum_and_new_mtimes(cli, tmp_path):
    cli("init")
    cli("share", "add", "s")
    src = tmp_path / "tree"
    (src / "a").mkdir(parents=True)
    small = src / "a" / "small.txt"
    small.write_bytes(b"first content\n")
    big = src / "a" / "big.bin"                      # above files.SMALL: the streaming path
    big_bytes = os.urandom(600_000)
    big.write_bytes(big_bytes)
    same = src / "same.txt"
    same.write_bytes(b"never changes")
    nfd = unicodedata.normalize("NFD", "café.txt")   # stored as NFC; still recognised next time
    (src / nfd).write_bytes(b"decomposed name")
    (src / "link").symlink_to(small)                 # symlinks are not uploaded
    assert "4 files stored, 0 unchanged" in _put(cli, src)
    assert "0 files stored, 4 unchanged" in _put(cli, src)
    assert cli("get", "/s/t/café.txt", "-").stdout == b"decomposed name"
    assert "link" not in cli("ls", "/s/t").stdout.decode()

    # Same size and mtime: the files cache trusts them and does not read the file (documented) ...
    st = small.stat()
    small.write_bytes(b"other content\n")
    os.utime(small, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "0 files stored, 4 unchanged" in _put(cli, src)
    assert cli("get", "/s/t/a/small.txt", "-").stdout == b"first content\n"
    # ... --checksum reads every file: the changed one gets a version, the others nothing at all
    # (same bytes and same mtime: not even a new mtime)
    out = _put(cli, src, "--checksum")
    assert "1 files stored, 3 unchanged" in out and "new mtime" not in out
    assert [v["version"] for v in _versions(cli, "/s/t/a/small.txt")] == [1, 2]
    assert cli("get", "/s/t/a/small.txt", "-").stdout == b"other content\n"
    assert [v["version"] for v in _versions(cli, "/s/t/same.txt")] == [1]

    # New mtimes, same bytes (small and large files): no new version, the new mtime is recorded
    os.utime(same, (1_700_000_000, 1_700_000_000))
    os.utime(big, (1_700_000_100, 1_700_000_100))
    assert "0 files stored, 4 unchanged (2 with a new mtime only)" in _put(cli, src)
    for path, stamp in (("/s/t/same.txt", "2023-11-14T22:13:20"), ("/s/t/a/big.bin", "2023-11-14T22:15:00")):
        vs = _versions(cli, path)
        assert len(vs) == 1 and vs[0]["mtime"].startswith(stamp)

    # Changed bytes of the same size under a new mtime: a new version with exactly those bytes
    changed = bytearray(big_bytes)
    changed[300_000] ^= 0xFF
    big.write_bytes(changed)
    same.write_bytes(b"never CHANGES")
    assert "2 files stored, 2 unchanged" in _put(cli, src)
    assert [v["version"] for v in _versions(cli, "/s/t/a/big.bin")] == [1, 2]
    assert cli("get", "/s/t/a/big.bin", "-").stdout == bytes(changed)
    assert cli("get", "/s/t/a/big.bin", "-", "--version", "1").stdout == big_bytes
    assert cli("get", "/s/t/same.txt", "-").stdout == b"never CHANGES"
    cli("check", "--read-data")


@pytest.mark.parametrize("point", ["synced:2", "committed:2"])
def test_put_killed_between_batches_keeps_whole_batches(cli, tmp_path, point):
    """1,100 files are two commit batches (files.BATCH_FILES = 1,024) after the folders' commit:
    killed in the first batch's commit, before (synced) or after (committed) the catalog commit,
    the archive holds all of that batch or none of it, every byte right; the next put stores
    exactly what is missing."""
    cli("init")
    cli("share", "add", "s")
    src = tmp_path / "tree"
    for d in range(11):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(100):
            (src / f"d{d}" / f"f{i}").write_bytes(f"file {d}/{i}\n".encode())
    p = cli("put", str(src), "/s/t", ok=False, env={FAULT: point})
    assert p.returncode == 86
    listed = {d: json.loads(cli("ls", f"/s/t/d{d}", "--json").stdout) for d in range(11)}
    names = {(d, e["name"]) for d, es in listed.items() for e in es}
    expect = 1024 if point.startswith("committed") else 0
    assert len(names) == expect
    for d, name in sorted(names)[::97]:
        assert cli("get", f"/s/t/d{d}/{name}", "-").stdout == f"file {d}/{name[1:]}\n".encode()
    out = _put(cli, src)
    assert f"{1100 - expect} files stored, {expect} unchanged" in out
    assert cli("get", "/s/t/d10/f99", "-").stdout == b"file 10/99\n"
    cli("check", "--read-data")


def test_many_small_files_stored_in_groups_keep_every_byte(cli, tmp_path):
    """Small files are stored in groups (one store_batch for up to files.GROUP_FILES of them):
    duplicates within and across groups, empty files and a large file in between all come back
    byte for byte, and `check --read-data` finds every chunk."""
    cli("init", "--encrypt", env={"EDGE_ARCHIVE_PASSWORD": "pw"})
    env = {"EDGE_ARCHIVE_PASSWORD": "pw"}
    cli("share", "add", "s", env=env)
    src = tmp_path / "tree"
    src.mkdir()
    want = {}
    for i in range(300):
        data = b"" if i % 50 == 7 else (b"dup\n" * 100 if i % 3 == 0 else os.urandom(100 + i * 37))
        want[f"f{i:03d}"] = data
    want["m150"] = os.urandom(700_000)                  # a streamed file among the groups
    for name, data in want.items():
        (src / name).write_bytes(data)
    out = cli("put", str(src), "/s/t", env=env).stdout.decode()
    assert f"{len(want)} files stored, 0 unchanged" in out
    back = tmp_path / "back"
    cli("get", "/s/t", str(back), env=env)
    assert {p.name: p.read_bytes() for p in back.iterdir()} == want
    cli("check", "--read-data", env=env)
