"""archivectl end to end, as an administrator uses it, including the faults it must survive."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def test_quickstart_commands(cli, tmp_path):
    cli("init")
    cli("share", "add", "office", "--retention", "keep-last=10,keep-daily=30,keep-monthly=12", "--worm-days", "30")
    cli("user", "add", "alice", "--password-stdin", input=b"pw\n")
    cli("grant", "alice", "office", "rw")
    users = json.loads(cli("user", "list", "--json").stdout)
    assert users[0]["name"] == "alice" and users[0]["shares"] == {"office": "rw"}
    shares = json.loads(cli("share", "list", "--json").stdout)
    assert shares[0]["retention"] == "keep-last=10,keep-daily=30,keep-monthly=12" and shares[0]["worm_days"] == 30

    report = tmp_path / "report.pdf"
    report.write_bytes(os.urandom(500_000))
    cli("put", str(report), "/office/reports/report.pdf")
    report.write_bytes(b"second version")
    cli("put", str(report), "/office/reports/report.pdf")
    cli("put", "-", "/office/reports/notes.txt", input=b"from stdin")
    used = {s["name"]: s["used"] for s in json.loads(cli("share", "list", "--json").stdout)}
    assert used == {"office": 14 + 10}              # current versions only: 14 + 10 bytes

    vs = json.loads(cli("versions", "/office/reports/report.pdf", "--json").stdout)
    assert [(v["version"], v["size"], v["deleted"]) for v in vs] == [(1, 500_000, False), (2, 14, False)]
    assert set(vs[0]) >= {"version", "size", "created_at", "deleted", "etag", "origin"}
    assert vs[0]["origin"]["protocol"] == "cli"
    assert set(vs[0]["origin"]) == {"protocol", "user", "address"}

    assert cli("get", "/office/reports/report.pdf", "-").stdout == b"second version"
    out = tmp_path / "out.pdf"
    cli("get", "/office/reports/report.pdf", str(out), "--version", "1")
    assert out.read_bytes() != b"second version" and out.stat().st_size == 500_000
    cli("get", "/office/reports/report.pdf", str(out), "--at", vs[0]["created_at"])
    assert out.stat().st_size == 500_000

    ls = json.loads(cli("ls", "/office/reports", "--json").stdout)
    assert {(e["name"], e["kind"], e["size"], e["version"]) for e in ls} == {
        ("report.pdf", "file", 14, 2), ("notes.txt", "file", 10, 1)}
    past = json.loads(cli("ls", "/office/reports", "--at", vs[0]["created_at"], "--json").stdout)
    assert [e["name"] for e in past] == ["report.pdf"] and past[0]["size"] == 500_000

    cli("restore", "/office/reports/report.pdf", "--version", "1")
    vs = json.loads(cli("versions", "/office/reports/report.pdf", "--json").stdout)
    assert [v["size"] for v in vs] == [500_000, 14, 500_000]

    cli("mkdir", "/office/archive")
    cli("mv", "/office/reports/notes.txt", "/office/archive/notes.txt")
    cli("rm", "/office/archive/notes.txt")
    vs = json.loads(cli("versions", "/office/archive/notes.txt", "--json").stdout)
    assert [v["deleted"] for v in vs] == [False, True]
    cli("restore", "/office/archive/notes.txt", "--version", "1")
    assert cli("get", "/office/archive/notes.txt", "-").stdout == b"from stdin"

    st = json.loads(cli("stats", "--json").stdout)
    assert st["files"] == 2 and st["versions"] == 6 and st["chunks"] > 0
    assert set(st) >= {"logical_bytes", "stored_bytes", "ratio", "chunks", "versions", "files", "shares"}
    cli("check", "--read-data")
    audit = json.loads(cli("audit", "--json").stdout)
    assert {"write", "delete", "restore", "rename", "grant"} <= {a["action"] for a in audit}


def test_put_and_get_a_tree_and_restore_it_at_a_time(cli, tmp_path):
    cli("init")
    cli("share", "add", "s")
    src = tmp_path / "tree"
    (src / "a" / "b").mkdir(parents=True)
    for i in range(30):
        (src / "a" / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    (src / "a" / "b" / "big.bin").write_bytes(os.urandom(1_500_000))
    out = cli("put", str(src), "/s/tree").stdout.decode()
    assert "31 files stored, 0 unchanged" in out
    assert "0 files stored, 31 unchanged" in cli("put", str(src), "/s/tree").stdout.decode()
    os.utime(src / "a" / "f1.txt", (1_700_000_000, 1_700_000_000))     # touched, same bytes
    out = cli("put", str(src), "/s/tree").stdout.decode()
    assert "0 files stored, 31 unchanged (1 with a new mtime only)" in out
    f1 = json.loads(cli("versions", "/s/tree/a/f1.txt", "--json").stdout)
    assert len(f1) == 1 and f1[0]["mtime"].startswith("2023-11-14T22:13:20")
    time.sleep(0.05)
    stamp = json.loads(cli("ls", "/s/tree/a", "--json").stdout)[0]
    t0 = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() % 1 * 1e6):06d}Z"
    time.sleep(0.05)
    (src / "a" / "f0.txt").write_text("changed")
    cli("put", str(src), "/s/tree")
    cli("rm", "-r", "/s/tree/a/b")
    back = tmp_path / "back"
    cli("get", "/s/tree", str(back))
    assert (back / "a" / "f0.txt").read_text() == "changed"
    assert not (back / "a" / "b").exists()
    cli("restore", "/s/tree", "--at", t0)
    back2 = tmp_path / "back2"
    cli("get", "/s/tree", str(back2))
    assert (back2 / "a" / "f0.txt").read_text() == "file 0\n"
    assert (back2 / "a" / "b" / "big.bin").read_bytes() == (src / "a" / "b" / "big.bin").read_bytes()
    assert stamp["kind"] in ("file", "dir")


def test_clear_errors_without_tracebacks(cli, tmp_path):
    p = cli("ls", "/x", ok=False)
    assert p.returncode != 0 and b"no repository" in p.stderr and b"Traceback" not in p.stderr
    cli("init")
    cli("share", "add", "s")
    cli("user", "add", "bob", "--password-stdin", input=b"pw\n")
    cases = [
        (("put", "-", "/s/../etc/passwd"), b"invalid name"),
        (("put", "-", "/s/a\x01b"), b"control character"),
        (("put", "-", "/nope/file"), b"no share"),
        (("get", "/s/missing", "-"), b"no such file"),
        (("grant", "mallory", "s", "rw"), b"no user"),
        (("share", "add", "s"), b"exists"),
        (("put", "-", "/s/" + "x" * 300), b"longer than 255"),
        (("restore", "/s/missing", "--version", "1"), b"no such"),
        (("share", "add", "bad", "--retention", "keep-forever=1"), b"bad retention rule"),
        (("ls", "/s", "--at", "yesterday"), b"ISO 8601"),
    ]
    for args, msg in cases:
        p = cli(*args, ok=False, input=b"data")
        assert p.returncode != 0, args
        assert msg in p.stderr, (args, p.stderr)
        assert b"Traceback" not in p.stderr, (args, p.stderr)
    assert json.loads(cli("ls", "/s", "--json").stdout) == []


def test_encrypted_repo_passphrase_and_passwd(tmp_path):
    from conftest import CLI
    cli = CLI(tmp_path / "enc", env={"EDGE_ARCHIVE_PASSWORD": "first"})
    cli("init", "--encrypt")
    cli("share", "add", "s")
    cli("put", "-", "/s/f", input=b"secret bytes")
    p = cli("ls", "/s", ok=False, env={"EDGE_ARCHIVE_PASSWORD": "wrong"})
    assert p.returncode == 5 and b"wrong passphrase" in p.stderr
    cli("passwd", env={"EDGE_ARCHIVE_NEW_PASSWORD": "second"})
    assert cli("ls", "/s", ok=False).returncode == 5
    assert cli("get", "/s/f", "-", env={"EDGE_ARCHIVE_PASSWORD": "second"}).stdout == b"secret bytes"


def _pack_files(repo: Path) -> list[Path]:
    return sorted((repo / "packs").rglob("*.pack"))


def test_corrupt_chunk_is_reported_with_every_version_and_never_served(cli, tmp_path):
    cli("init")
    cli("share", "add", "s")
    shared = os.urandom(200_000)
    cli("put", "-", "/s/one", input=shared)
    cli("put", "-", "/s/two", input=shared)            # same chunks, deduped
    cli("check", "--read-data")
    pack = max(_pack_files(cli.repo_path), key=lambda p: p.stat().st_size)
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    pack.write_bytes(bytes(raw))
    p = cli("check", "--read-data", ok=False)
    assert p.returncode == 1
    err = p.stderr.decode()
    assert "corrupt-chunk" in err and "/s/one@v1" in err and "/s/two@v1" in err
    g = cli("get", "/s/one", "-", ok=False)
    assert g.returncode != 0 and b"checksum" in g.stderr or b"Corrupt" in g.stderr or b"fail" in g.stderr
    assert shared not in g.stdout and len(g.stdout) < len(shared)
    j = json.loads(cli("check", "--read-data", "--json", ok=False).stdout)
    assert j["ok"] is False and j["problems"][0]["affected"]


def test_kill_9_during_put_leaves_no_version_and_gc_reclaims(cli, tmp_path):
    cli("init")
    cli("share", "add", "s")
    cli("put", "-", "/s/big", input=b"previous content")
    proc = subprocess.Popen([sys.executable, "-m", "archive", "put", "-", "/s/big"], stdin=subprocess.PIPE,
                            env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(40):                                   # 40 MiB in, then the plug is pulled
        proc.stdin.write(os.urandom(1 << 20))
    proc.stdin.flush()
    deadline = time.time() + 30
    while sum(p.stat().st_size for p in _pack_files(cli.repo_path)) < 8 << 20 and time.time() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    vs = json.loads(cli("versions", "/s/big", "--json").stdout)
    assert [v["version"] for v in vs] == [1]
    assert cli("get", "/s/big", "-").stdout == b"previous content"
    cli("check", "--read-data")
    before = sum(p.stat().st_size for p in _pack_files(cli.repo_path))
    assert before > 8 << 20                                # orphaned chunks are on disk...
    cli("gc", "--grace", "0")
    after = sum(p.stat().st_size for p in _pack_files(cli.repo_path))
    assert after < 1 << 20                                 # ...and gc reclaimed them
    cli("check", "--read-data")
    assert cli("get", "/s/big", "-").stdout == b"previous content"


def test_disk_full_commits_nothing(cli, tmp_path):
    cli("init")
    cli("share", "add", "s")
    cli("put", "-", "/s/f", input=b"v1")
    p = cli("put", "-", "/s/f", input=os.urandom(3 << 20), ok=False,
            env={"EDGE_ARCHIVE_FAULT_NOSPACE_AFTER": str(1 << 20)})
    assert p.returncode == 1 and b"full" in p.stderr and b"Traceback" not in p.stderr
    assert [v["version"] for v in json.loads(cli("versions", "/s/f", "--json").stdout)] == [1]
    assert cli("get", "/s/f", "-").stdout == b"v1"
    cli("check", "--read-data")
    cli("put", "-", "/s/f", input=b"v2")                  # space back: writes work again
    assert cli("get", "/s/f", "-").stdout == b"v2"


def test_recover_rebuilds_a_deleted_catalog(tmp_path):
    from conftest import CLI
    cli = CLI(tmp_path / "r", env={"EDGE_ARCHIVE_PASSWORD": "pw"})
    cli("init", "--encrypt")
    cli("share", "add", "s", "--retention", "keep-last=5")
    cli("user", "add", "alice", "--password-stdin", input=b"alice-pw\n")
    cli("grant", "alice", "s", "ro")
    for i in range(3):
        cli("put", "-", "/s/dir/f.txt", input=f"version {i}".encode())
    cli("put", "-", "/s/other", input=os.urandom(300_000))
    cli("mv", "/s/other", "/s/dir/moved")
    cli("rm", "/s/dir/f.txt")
    before_ls = json.loads(cli("ls", "/s/dir", "--json").stdout)
    before_v = json.loads(cli("versions", "/s/dir/f.txt", "--json").stdout)
    for suffix in ("", "-wal", "-shm"):
        (cli.repo_path / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    cli("recover")
    assert json.loads(cli("ls", "/s/dir", "--json").stdout) == before_ls
    assert json.loads(cli("versions", "/s/dir/f.txt", "--json").stdout) == before_v
    cli("restore", "/s/dir/f.txt", "--version", "2")
    assert cli("get", "/s/dir/f.txt", "-").stdout == b"version 1"
    users = json.loads(cli("user", "list", "--json").stdout)
    assert users[0]["shares"] == {"s": "ro"}
    from archive import Repository
    with Repository.open(cli.repo_path, password="pw") as r:
        r.authenticate("alice", "alice-pw")
    cli("check", "--read-data")
    p = cli("recover", ok=False)
    assert p.returncode != 0 and b"--force" in p.stderr


def test_prune_applies_retention_and_respects_worm(cli):
    cli("init")
    cli("share", "add", "keep", "--retention", "keep-last=2")
    cli("share", "add", "worm", "--retention", "keep-last=1", "--worm-days", "30")
    for i in range(5):
        cli("put", "-", "/keep/f", input=f"k{i}".encode())
        cli("put", "-", "/worm/f", input=f"w{i}".encode())
    dry = json.loads(cli("prune", "--dry-run", "--json").stdout)
    assert sorted((d["path"], d["version"]) for d in dry["pruned"]) == [("/keep/f", 1), ("/keep/f", 2), ("/keep/f", 3)]
    assert len(json.loads(cli("versions", "/keep/f", "--json").stdout)) == 5
    cli("prune")
    assert [v["version"] for v in json.loads(cli("versions", "/keep/f", "--json").stdout)] == [4, 5]
    assert len(json.loads(cli("versions", "/worm/f", "--json").stdout)) == 5   # WORM holds them all
    p = cli("share", "set", "worm", "--worm-days", "1", ok=False)
    assert p.returncode != 0 and b"can only grow" in p.stderr
    cli("gc", "--grace", "0")
    cli("check", "--read-data")
    assert cli("get", "/keep/f", "-").stdout == b"k4"


def test_two_processes_write_one_repository(cli, tmp_path):
    cli("init")
    cli("share", "add", "s")
    script = (
        "import sys; from archive import Repository\n"
        "r = Repository.open(sys.argv[1]); fs = r.share('s')\n"
        "for i in range(40):\n"
        "    w = fs.open_write('/same'); w.write(f'{sys.argv[2]}-{i}'.encode()*1000); w.commit()\n"
        "r.close()\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(cli.repo_path), tag]) for tag in "ab"]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    vs = json.loads(cli("versions", "/s/same", "--json").stdout)
    assert [v["version"] for v in vs] == list(range(1, 81))
    cli("check", "--read-data")


def test_catalog_schema_migrations(cli):
    import sqlite3
    cli("init")
    cli("share", "add", "s")
    db = cli.repo_path / "catalog.sqlite"
    c = sqlite3.connect(db)
    c.execute("DROP INDEX ix_locks_root")
    c.execute("UPDATE alembic_version SET version_num = '0001'")
    c.commit()
    c.close()
    cli("ls", "/s")                                           # an older catalog is upgraded in place
    c = sqlite3.connect(db)
    from archive.catalog.db import SCHEMA_HEAD
    assert c.execute("SELECT version_num FROM alembic_version").fetchone() == (SCHEMA_HEAD,)
    assert c.execute("SELECT count(*) FROM sqlite_master WHERE name = 'ix_locks_root'").fetchone() == (1,)
    c.execute("UPDATE alembic_version SET version_num = '9999'")
    c.commit()
    c.close()
    p = cli("ls", "/s", ok=False)                              # a newer one is refused, untouched
    assert p.returncode == 1 and b"newer than this edge-archive" in p.stderr and b"Traceback" not in p.stderr


# -- start-up (issue 9): what a command loads, the key handed over, a lost catalog ----------------

_HEAVY = ("protocols", "impacket", "boto3", "botocore", "wsgidav", "pyftpdlib", "cheroot", "alembic")


def _loaded_by(cli, *args: str) -> dict:
    """Run archivectl in a fresh interpreter; which of the heavy packages did it import?"""
    code = ("import json, sys\nsys.argv = ['archivectl', *sys.argv[1:]]\nfrom archive.cli.main import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    rc = e.code\nelse:\n    rc = 0\n"
            f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({_HEAVY!r}) | "
            "({'sqlalchemy'} & {m.split('.')[0] for m in sys.modules}))\n"
            "print(json.dumps({'rc': rc, 'heavy': heavy}), file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=cli.env, timeout=120)
    return json.loads(p.stderr.decode().strip().splitlines()[-1])


def test_a_command_loads_only_what_it_uses(cli):
    cli("init", "--encrypt", env={"EDGE_ARCHIVE_PASSWORD": "pw"})
    cli("share", "add", "s", env={"EDGE_ARCHIVE_PASSWORD": "pw"})
    # the version, help and a typo need neither the catalog nor the core
    assert _loaded_by(cli, "--version") == {"rc": 0, "heavy": []}
    assert _loaded_by(cli, "nosuch")["heavy"] == []
    # ls of an encrypted repository at the current schema: no protocol stack, no Alembic
    env_cli = type(cli)(cli.repo_path, env={"EDGE_ARCHIVE_PASSWORD": "pw"})
    assert _loaded_by(env_cli, "ls", "/s") == {"rc": 0, "heavy": []}          # the lean read path
    # put of a small file: its commit runs plain SQL on stdlib sqlite3 (tests/test_startup_put.py)
    assert _loaded_by(env_cli, "put", "-", "/s/f") == {"rc": 0, "heavy": []}


def test_command_table_lists_every_builtin_command():
    """`_COMMANDS` says which module defines a command (so only that one is imported): it must
    name each command its modules register, and nothing else."""
    from archive.cli import main as m
    m._load_commands()
    builtin = {name for name, cmd in m.cli.commands.items() if not isinstance(cmd, m._PluginCommand)}
    assert builtin == set(m._COMMANDS)
    for name, module in m._COMMANDS.items():
        assert m.cli.commands[name].callback.__module__ == f"archive.cli.{module}", name


def test_prefetched_key_is_the_same_key_and_a_wrong_passphrase_still_fails():
    from archive import keys
    from archive.errors import BadPassword
    key = keys.MasterKey.generate(True)
    data = keys.keyfile_bytes(key, "right")
    keys.prefetch(data, "right")
    assert len(keys._prefetched) == 1                        # a derivation was started
    assert keys.parse_keyfile(data, "right") == key
    assert not keys._prefetched                              # handed over once, nothing kept
    keys.prefetch(data, "wrong")
    with pytest.raises(BadPassword):
        keys.parse_keyfile(data, "wrong")
    assert not keys._prefetched
    keys.prefetch(b"not json", "x")                          # garbage: nothing started
    keys.prefetch(keys.keyfile_bytes(keys.MasterKey.generate(False), None), "x")
    assert not keys._prefetched


def test_missing_catalog_is_reported_not_recreated(cli):
    cli("init")
    cli("share", "add", "s")
    cli("put", "-", "/s/f", input=b"kept in the packs")
    for suffix in ("", "-wal", "-shm"):
        (cli.repo_path / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    p = cli("ls", "/s", ok=False)
    assert p.returncode == 1 and b"catalog" in p.stderr and b"archivectl recover" in p.stderr
    assert b"Traceback" not in p.stderr
    assert not (cli.repo_path / "catalog.sqlite").exists()    # nothing created in its place
    p = cli("check", ok=False)                                # check reports it as a problem
    assert p.returncode == 1 and b"PROBLEM catalog-lost" in p.stderr and b"archivectl recover" in p.stderr
    p = cli("check", "--json", ok=False)
    assert p.returncode == 1 and json.loads(p.stdout)["ok"] is False
    assert [x["kind"] for x in json.loads(p.stdout)["problems"]] == ["catalog-lost"]
    assert not (cli.repo_path / "catalog.sqlite").exists()
    cli("recover")
    assert cli("get", "/s/f", "-").stdout == b"kept in the packs"
