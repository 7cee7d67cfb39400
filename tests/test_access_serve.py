"""Access across processes (issue 8, items 6 and 15): two `archivectl serve` processes on one
repository and `archivectl` commands from a third; ftplib, curl and requests as clients."""
from __future__ import annotations

import ftplib
import io
import json
import signal
import subprocess
import sys
import time

import pytest
import requests

from archive import Repository
from serve_helpers import ServeProcess, free_port, python_env

PW = "alice-pw"


def make_repo(path: str) -> str:
    repo = Repository.init(path)
    try:
        repo.add_share("office")
        repo.add_user("alice", PW)
        repo.grant("alice", "office", "rw")
        with repo.share("office").open_write("/seed.txt") as w:
            w.write(b"seed")
    finally:
        repo.close()
    return path


def archivectl(repo: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archive", "--repo", repo, *args], capture_output=True,
                          text=True, timeout=120, env=python_env([]), stdin=subprocess.DEVNULL)


def serve(tmp_path, repo: str, only: str, tag: str, **env: str) -> ServeProcess:
    cfg = tmp_path / f"{tag}.toml"
    cfg.write_text(f'[metrics]\nenabled = false\n[ftp]\nlisten = "127.0.0.1:{free_port()}"\npassive_ports = ""\n'
                   f'[webdav]\nlisten = "127.0.0.1:{free_port()}"\nrequire_tls_for_basic = false\n')
    p = ServeProcess([sys.executable, "-m", "archive", "--repo", repo, "serve", "--config", str(cfg),
                      "--only", only], cwd=str(tmp_path), env=python_env([], **env), tmp=str(tmp_path), tag=tag)
    return p.ready()


def stop(p: ServeProcess) -> int:
    p.proc.send_signal(signal.SIGTERM)
    return p.finish()


def ftp_login(port: int, password: str = PW) -> ftplib.FTP:
    f = ftplib.FTP()
    f.connect("127.0.0.1", port, timeout=30)
    f.login("alice", password)
    return f


def code(exc: BaseException) -> str:
    return str(exc)[:3]


def test_other_processes_see_revocation_on_the_next_request(tmp_path):
    repo = make_repo(str(tmp_path / "repo"))
    dav = serve(tmp_path, repo, "webdav", "dav")
    ftp = serve(tmp_path, repo, "ftp", "ftp")
    try:
        url = dav.urls()["webdav"].rstrip("/")
        web = requests.Session()
        web.auth = ("alice", PW)
        assert web.put(f"{url}/office/a.txt", data=b"web").status_code == 201
        f = ftp_login(ftp.port("ftp"))
        assert f.storbinary("STOR /office/b.txt", io.BytesIO(b"ftp")).startswith("226")

        assert archivectl(repo, "grant", "alice", "office", "ro").returncode == 0
        assert web.put(f"{url}/office/a.txt", data=b"web2").status_code == 403
        with pytest.raises(ftplib.error_perm) as ei:
            f.storbinary("STOR /office/b.txt", io.BytesIO(b"ftp2"))
        assert code(ei.value) == "550"
        assert web.get(f"{url}/office/b.txt").content == b"ftp"        # ro still reads

        assert archivectl(repo, "revoke", "alice", "office").returncode == 0
        assert web.get(f"{url}/office/a.txt").status_code == 404
        with pytest.raises(ftplib.error_perm) as ei:
            f.retrbinary("RETR /office/a.txt", lambda b: None)
        assert code(ei.value) == "550"

        assert archivectl(repo, "grant", "alice", "office", "rw").returncode == 0
        assert web.put(f"{url}/office/a.txt", data=b"web3").status_code == 204
        assert archivectl(repo, "user", "rm", "alice").returncode == 0
        assert web.get(f"{url}/office/a.txt").status_code == 401
        with pytest.raises(ftplib.error_temp) as ei:
            f.nlst("/office")
        assert code(ei.value) == "421"
    finally:
        assert stop(dav) == 0 and stop(ftp) == 0
    r = Repository.open(repo)
    try:
        assert [v.number for v in r.share("office").versions("/a.txt")] == [1, 2]
        assert [v.number for v in r.share("office").versions("/b.txt")] == [1]
    finally:
        r.close()


def audit(repo: str, *args: str) -> list[dict]:
    res = archivectl(repo, "audit", "--json", *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_password_guessing_is_throttled_across_protocols_and_audited(tmp_path):
    repo = make_repo(str(tmp_path / "repo"))
    p = serve(tmp_path, repo, "ftp,webdav", "serve", EDGE_ARCHIVE_LOGIN_FREE_FAILURES="3",
              EDGE_ARCHIVE_LOGIN_FREE_FAILURES_ADDRESS="100", EDGE_ARCHIVE_LOGIN_BACKOFF="4",
              EDGE_ARCHIVE_LOGIN_MAX_BACKOFF="4", EDGE_ARCHIVE_FTP_LOGIN_DELAY="0.1")
    try:
        url = p.urls()["webdav"].rstrip("/")
        port = p.port("ftp")
        for i in range(2):                                   # guesses over both protocols count together
            assert requests.get(f"{url}/office/", auth=("alice", f"guess{i}"), timeout=30).status_code == 401
            with pytest.raises(ftplib.error_perm) as ei:
                ftp_login(port, f"guess-ftp{i}")
            assert code(ei.value) == "530"
        # locked: even the right password is refused, on both protocols
        with pytest.raises(ftplib.error_perm) as ei:
            ftp_login(port)
        assert "Too many failed logins" in str(ei.value)
        assert requests.get(f"{url}/office/seed.txt", auth=("alice", PW), timeout=30).status_code == 401
        # after the backoff the right user gets in (curl, a client nobody here wrote)
        for _ in range(100):
            res = subprocess.run(["curl", "-sS", "-u", f"alice:{PW}", f"{url}/office/seed.txt"],
                                 capture_output=True, timeout=60)
            if res.stdout == b"seed":
                break
            time.sleep(0.2)
        assert res.stdout == b"seed"
        assert ftp_login(port).nlst("/office") == ["seed.txt"]
        for _ in range(50):                                  # the audit is written in batches
            recs = audit(repo, "--user", "alice")
            if sum(r["action"] == "download" for r in recs) >= 1:
                break
            time.sleep(0.2)
        failed = [r for r in recs if r["action"] == "login_failed"]
        assert sorted(r["protocol"] for r in failed) == ["ftp", "ftp", "webdav", "webdav"]
        assert all(r["address"] == "127.0.0.1" for r in failed)
        locked = [r for r in recs if r["action"] == "login_locked"]
        assert locked and "user alice locked" in locked[0]["detail"]
        assert [r["path"] for r in recs if r["action"] == "download"] == ["/seed.txt"]
        everything = audit(repo)
        newest = audit(repo, "--limit", "3")
        assert newest == everything[-3:] and len(newest) == 3
    finally:
        assert stop(p) == 0
