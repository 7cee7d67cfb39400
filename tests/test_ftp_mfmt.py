"""MFMT right after STOR (lftp, FileZilla and WinSCP keep the local modification time that
way): what it means for versions (docs/architecture.md, "FTP: a time set right after an
upload"), that it survives a restart and a server killed right after the 213 reply.
Real clients: lftp, ftplib; the killed server is a real process."""
from __future__ import annotations

import calendar
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from archive import Repository
from ftp_helpers import PASSWORD, FTPServerFixture, need, run, stor
from test_ftp import srv  # noqa: F401 - srv is a fixture

T2020 = calendar.timegm((2020, 1, 2, 3, 4, 5))
T2021 = calendar.timegm((2021, 6, 7, 8, 9, 10))


def test_lftp_mirror_keeps_the_local_times_one_version_per_file_after_a_restart(tmp_path):
    need("lftp")
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    files = {f"d/f{i}.bin": os.urandom(3000 + i) for i in range(5)}
    for i, (name, data) in enumerate(files.items()):
        (src / name).write_bytes(data)
        os.utime(src / name, (T2020 + i, T2020 + i))
    s = FTPServerFixture(tmp_path / "srv", tls=False)
    try:
        r = run(["lftp", "-c", f"set net:max-retries 1; open -u alice,{PASSWORD} -p {s.port} {s.host}; "
                 f"mirror -R --no-perms {src} /office/tree"], timeout=120)
        assert r.returncode == 0, r.stderr
        assert b"MFMT" not in r.stderr                  # no error about it
    finally:
        s.close()
    repo = Repository.open(tmp_path / "srv" / "repo")  # a restart: what the catalog kept
    try:
        fs = repo.share("office")
        for i, (name, data) in enumerate(files.items()):
            vs = fs.versions(f"/tree/{name}")
            assert [v.number for v in vs] == [1]         # the time is no version of its own
            assert vs[0].mtime == T2020 + i
            assert fs.stat(f"/tree/{name}").mtime == T2020 + i
            with fs.open_read(f"/tree/{name}") as f:
                assert f.read() == data
    finally:
        repo.close()


def test_mfmt_right_after_stor_dates_that_upload_not_another_clients_newer_one(srv):
    a, b = srv.client(), srv.client()
    assert stor(a, "/office/r.txt", b"from a").startswith("226")
    assert stor(b, "/office/r.txt", b"from b, later").startswith("226")   # meanwhile: v2
    b_time = srv.admin_fs().stat("/r.txt").mtime
    assert a.sendcmd("MFMT 20200102030405 /office/r.txt").startswith("213")
    vs = srv.admin_fs().versions("/r.txt")
    assert [(v.number, v.size) for v in vs] == [(1, 6), (2, 13)]
    assert vs[0].mtime == T2020                       # a's upload got a's time
    assert vs[1].mtime == b_time                      # b's keeps its own
    assert a.sendcmd("MDTM /office/r.txt") != "213 20200102030405"
    # Not right after a STOR (another command came between): the file's current version.
    a.voidcmd("NOOP")
    assert a.sendcmd("MFMT 20210607080910 /office/r.txt").startswith("213")
    vs = srv.admin_fs().versions("/r.txt")
    assert [v.mtime for v in vs] == [T2020, T2021]
    assert a.sendcmd("MDTM /office/r.txt") == "213 20210607080910"
    # Right after a STOR of another path: that path's current version, as any MFMT.
    assert stor(a, "/office/other.txt", b"x").startswith("226")
    assert a.sendcmd("MFMT 20200102030405 /office/r.txt").startswith("213")
    assert [v.mtime for v in srv.admin_fs().versions("/r.txt")] == [T2020, T2020]
    a.quit()
    b.quit()


SERVER = textwrap.dedent("""
    import logging, sys, time
    from archive import Repository
    from protocols.base import ServeContext
    from protocols.ftp import FTPAdapter
    repo = Repository.open(sys.argv[1])
    a = FTPAdapter(repo, {"listen": "127.0.0.1:0", "passive_ports": ""},
                   ServeContext(logger=logging.getLogger("t")))
    a.start()
    print(a.address[1], flush=True)
    while True:
        time.sleep(1)
""")


def test_a_server_killed_right_after_the_mfmt_reply_keeps_the_time(tmp_path):
    import ftplib
    path = tmp_path / "repo"
    repo = Repository.init(path)
    repo.add_share("office")
    repo.add_user("alice", PASSWORD)
    repo.grant("alice", "office", "rw")
    repo.close()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    p = subprocess.Popen([sys.executable, "-c", SERVER, str(path)], stdout=subprocess.PIPE, env=env)
    try:
        port = int(p.stdout.readline())
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", port, timeout=30)
        ftp.login("alice", PASSWORD)
        ftp.voidcmd("TYPE I")
        for i in range(3):
            ftp.storbinary(f"STOR /office/k{i}.bin", io.BytesIO(b"k" * (100 + i)))
            reply = ftp.sendcmd(f"MFMT {time.strftime('%Y%m%d%H%M%S', time.gmtime(T2020 + i))} /office/k{i}.bin")
            assert reply.startswith("213")
        p.send_signal(signal.SIGKILL)                 # right after the last 213
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)
    repo = Repository.open(path)
    try:
        fs = repo.share("office")
        for i in range(3):
            vs = fs.versions(f"/k{i}.bin")
            assert [(v.number, v.size, v.mtime) for v in vs] == [(1, 100 + i, T2020 + i)]
    finally:
        repo.close()


def test_mfmt_refuses_times_that_are_not_a_date(srv):
    srv.put("/d.txt", b"d")
    ftp = srv.client()
    for bad in ("20201302030405", "20200230030405", "2020010203040x", "202001020304", "２０２００１０２０３０４０５"):
        reply = ""
        try:
            ftp.sendcmd(f"MFMT {bad} /office/d.txt")
        except Exception as exc:                      # ftplib.error_perm
            reply = str(exc)
        assert reply.startswith("550"), (bad, reply)
    assert ftp.sendcmd("MFMT 20211231235959 /office/d.txt").startswith("213")
    assert srv.admin_fs().stat("/d.txt").mtime == calendar.timegm((2021, 12, 31, 23, 59, 59))
    ftp.quit()
