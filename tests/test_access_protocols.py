"""Access over the wire (issue 8, items 6-8, 15, 16): real clients (ftplib, curl, requests)
against the FTP and WebDAV adapters serving one repository, with the runner's Metrics on a
real /metrics endpoint.  Grant changes are made through the core while sessions are open,
as `archivectl` in another process would."""
from __future__ import annotations

import ftplib
import io
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from archive import Origin, Repository
from protocols.base import ServeContext
from protocols.ftp import FTPAdapter
from protocols.metrics import Metrics
from protocols.webdav import WebDAVAdapter

PW = {"alice": "alice-pw", "bob": "bob-pw"}
README = b"anonymous hello\n"


class Servers:
    def __init__(self, root: Path) -> None:
        self.repo = repo = Repository.init(root / "repo")
        repo.add_share("office")
        repo.add_share("pub", anonymous=True)
        for user, pw in PW.items():
            repo.add_user(user, pw)
        repo.grant("alice", "office", "rw")
        repo.grant("bob", "office", "ro")
        with repo.share("pub").open_write("/readme.txt") as w:
            w.write(README)
        self.metrics = Metrics()
        self.metrics_port = self.metrics.serve("127.0.0.1", 0)
        self.ctx = ServeContext(metrics=self.metrics)
        for name in ("ftp", "webdav"):
            self.metrics.add_protocol(name)
        self.ftp = FTPAdapter(repo, {"listen": "127.0.0.1:0", "passive_ports": "", "login_delay": 0.05}, self.ctx)
        self.ftp.start()
        self.dav = WebDAVAdapter(repo, {"listen": "127.0.0.1:0", "require_tls_for_basic": False}, self.ctx)
        self.dav.start()
        self.url = self.dav.urls()[0].rstrip("/")

    def ftp_login(self, user: str = "alice", password: str | None = None) -> ftplib.FTP:
        f = ftplib.FTP()
        f.connect(*self.ftp.address, timeout=30)
        f.login(user, PW.get(user, "") if password is None else password)
        return f

    def web(self, user: str, password: str | None = None) -> requests.Session:
        s = requests.Session()
        s.auth = (user, PW[user] if password is None else password)
        return s

    def metric(self, name: str, protocol: str) -> float:
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30).text
        m = re.search(rf'^{re.escape(name)}\{{protocol="{protocol}"\}} (\S+)$', text, re.M)
        assert m, f"{name}{{{protocol}}} not in /metrics"
        return float(m.group(1))

    def wait_metric(self, name: str, protocol: str, value: float) -> None:
        for _ in range(200):
            if self.metric(name, protocol) == value:
                return
            time.sleep(0.05)
        assert self.metric(name, protocol) == value

    def close(self) -> None:
        self.ftp.stop(1.0)
        self.dav.stop(1.0)
        self.metrics.close()
        self.repo.close()


@pytest.fixture
def srv(tmp_path):
    s = Servers(tmp_path)
    try:
        yield s
    finally:
        s.close()


def stor(f: ftplib.FTP, path: str, data: bytes) -> str:
    return f.storbinary(f"STOR {path}", io.BytesIO(data))


def retr(f: ftplib.FTP, path: str) -> bytes:
    out = bytearray()
    f.retrbinary(f"RETR {path}", out.extend)
    return bytes(out)


def code(exc: BaseException) -> str:
    return str(exc)[:3]


# -- item 6: revocation on the next command / request --------------------------------------------
def test_ftp_session_loses_access_at_its_next_command(srv):
    repo = srv.repo
    alice = srv.ftp_login("alice")
    assert stor(alice, "/office/a.txt", b"v1").startswith("226")
    # an upload in flight when the grant drops to read-only is not committed
    conn = alice.transfercmd("STOR /office/flight.txt")
    conn.sendall(b"x" * 5000)
    repo.grant("alice", "office", "ro")
    conn.close()
    with pytest.raises(ftplib.error_perm) as ei:
        alice.voidresp()
    assert code(ei.value) == "550"
    assert not repo.share("office").exists("/flight.txt")
    with pytest.raises(ftplib.error_perm) as ei:
        stor(alice, "/office/a.txt", b"v2")                       # rw -> ro: no more writes
    assert code(ei.value) == "550"
    assert retr(alice, "/office/a.txt") == b"v1"                  # ...but reads
    repo.revoke("alice", "office")
    with pytest.raises(ftplib.error_perm) as ei:
        retr(alice, "/office/a.txt")                              # revoked: nothing
    assert code(ei.value) == "550"
    assert alice.nlst("/") == ["pub"]                             # only the anonymous share is left
    repo.grant("alice", "office", "rw")
    assert stor(alice, "/office/a.txt", b"v2").startswith("226")  # and back
    repo.remove_user("alice")
    with pytest.raises(ftplib.error_temp) as ei:
        alice.pwd()                                               # user rm: the session ends
    assert code(ei.value) == "421"
    assert [v.number for v in repo.share("office").versions("/a.txt")] == [1, 2]

    bob = srv.ftp_login("bob")
    assert retr(bob, "/office/a.txt") == b"v2"
    repo.set_password("bob", "changed")
    with pytest.raises(ftplib.error_temp) as ei:
        bob.nlst("/office")                                       # a password change ends sessions
    assert code(ei.value) == "421"
    assert srv.ftp_login("bob", "changed").nlst("/office") == ["a.txt"]


def test_webdav_revocation_takes_effect_on_the_next_request(srv):
    repo = srv.repo
    alice = srv.web("alice")
    assert alice.put(f"{srv.url}/office/w.txt", data=b"one").status_code == 201

    def body():                        # a chunked upload in flight while write access is withdrawn
        yield b"a" * 4096
        repo.grant("alice", "office", "ro")
        yield b"b" * 4096
    assert alice.put(f"{srv.url}/office/flight.txt", data=body()).status_code == 403
    assert not repo.share("office").exists("/flight.txt")
    assert alice.put(f"{srv.url}/office/w.txt", data=b"two").status_code == 403
    assert alice.get(f"{srv.url}/office/w.txt").content == b"one"
    repo.revoke("alice", "office")
    assert alice.get(f"{srv.url}/office/w.txt").status_code == 404
    assert alice.put(f"{srv.url}/office/w.txt", data=b"two").status_code in (403, 404)
    repo.remove_user("alice")
    assert alice.get(f"{srv.url}/office/w.txt").status_code == 401
    assert alice.get(f"{srv.url}/pub/readme.txt").status_code == 401   # credentials are dead
    bob = srv.web("bob")
    assert bob.get(f"{srv.url}/office/w.txt").status_code == 200
    repo.set_password("bob", "changed")
    assert bob.get(f"{srv.url}/office/w.txt").status_code == 401
    assert srv.web("bob", "changed").get(f"{srv.url}/office/w.txt").content == b"one"
    assert [v.number for v in repo.share("office").versions("/w.txt")] == [1]


# -- item 7: anonymous shares over WebDAV ---------------------------------------------------------
def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True, timeout=60)


def test_anonymous_share_is_readable_without_login_over_webdav(srv, tmp_path):
    got = curl("-w", "%{http_code}", f"{srv.url}/pub/readme.txt")
    assert got.stdout == README + b"200", got
    listing = curl("-X", "PROPFIND", "-H", "Depth: 1", "-w", "%{http_code}", f"{srv.url}/pub/")
    assert listing.stdout.endswith(b"207") and b"readme.txt" in listing.stdout
    src = tmp_path / "x.txt"
    src.write_bytes(b"intruder")
    for args in (["-T", str(src), f"{srv.url}/pub/x.txt"],              # no anonymous writes
                 ["-X", "DELETE", f"{srv.url}/pub/readme.txt"],
                 [f"{srv.url}/office/"],                                  # nor other shares
                 [f"{srv.url}/"]):
        res = curl("-o", "/dev/null", "-w", "%{http_code}", *args)
        assert res.stdout == b"401", (args, res)
    res = curl("-u", "alice:alice-pw", "-T", str(src), "-o", "/dev/null", "-w", "%{http_code}",
               f"{srv.url}/pub/x.txt")
    assert res.stdout == b"403"                       # a user sees an anonymous share read-only too
    assert [e.name for e in srv.repo.share("pub").listdir("/")] == ["readme.txt"]
    srv.repo.set_share("pub", anonymous=False)
    res = curl("-o", "/dev/null", "-w", "%{http_code}", f"{srv.url}/pub/readme.txt")
    assert res.stdout == b"401"                       # withdrawn: on the next request


# -- items 8 and 16: the HTML listing ---------------------------------------------------------------
def test_html_listing_tells_access_and_links_versions_and_snapshots(srv):
    alice, bob = srv.web("alice"), srv.web("bob")
    html = {"Accept": "text/html"}
    assert alice.put(f"{srv.url}/office/r%201.txt", data=b"a").status_code == 201
    assert alice.put(f"{srv.url}/office/r%201.txt", data=b"ab").status_code == 204
    page = alice.get(f"{srv.url}/office/", headers=html).text
    assert "access: read-write" in page
    assert "href='r%201.txt?versions=html'" in page
    assert "href=\"./.snapshots/\"" in page
    page = bob.get(f"{srv.url}/office/", headers=html).text
    assert "access: read-only" in page and "read-write" not in page
    assert "access: read-only" in alice.get(f"{srv.url}/", headers=html).text
    versions = alice.get(f"{srv.url}/office/r%201.txt?versions=html")
    assert versions.status_code == 200 and versions.text.count("?version=") == 2
    snaps = alice.get(f"{srv.url}/office/.snapshots/", headers=html).text
    assert "access: read-only" in snaps and "@GMT-" in snaps


# -- item 15: metrics and audit -----------------------------------------------------------------------
def test_metrics_and_audit_count_sessions_downloads_and_failed_logins(srv):
    data = bytes(range(256)) * 40
    with srv.repo.share("office").open_write("/big.bin") as w:
        w.write(data)
    f = srv.ftp_login("alice")
    srv.wait_metric("edge_archive_sessions", "ftp", 1)
    assert retr(f, "/office/big.bin") == data
    f.quit()
    srv.wait_metric("edge_archive_sessions", "ftp", 0)           # the gauge goes down again
    assert srv.metric("edge_archive_downloads_total", "ftp") == 1
    assert srv.metric("edge_archive_bytes_out_total", "ftp") == len(data)
    with pytest.raises(ftplib.error_perm):
        srv.ftp_login("alice", "wrong")
    srv.wait_metric("edge_archive_sessions", "ftp", 0)

    s = srv.web("alice")
    assert s.get(f"{srv.url}/office/big.bin").content == data
    assert s.get(f"{srv.url}/office/big.bin", headers={"Range": "bytes=0-99"}).content == data[:100]
    assert srv.metric("edge_archive_sessions", "webdav") >= 1
    assert srv.metric("edge_archive_connections_total", "webdav") >= 1
    s.close()
    srv.wait_metric("edge_archive_sessions", "webdav", 0)
    assert srv.metric("edge_archive_downloads_total", "webdav") == 2
    assert srv.metric("edge_archive_bytes_out_total", "webdav") == len(data) + 100
    assert srv.web("bob", "wrong").get(f"{srv.url}/office/").status_code == 401
    assert srv.metric("edge_archive_login_failures_total", "webdav") == 1

    recs = list(srv.repo.audit_events())
    downloads = [(r.protocol, r.user, r.share, r.path, r.detail) for r in recs if r.action == "download"]
    assert ("ftp", "alice", "office", "/big.bin", f"{len(data)} bytes") in downloads
    assert ("webdav", "alice", "office", "/big.bin", f"{len(data)} bytes") in downloads
    assert ("webdav", "alice", "office", "/big.bin", "100 bytes") in downloads
    failed = {(r.protocol, r.user) for r in recs if r.action == "login_failed"}
    assert failed == {("ftp", "alice"), ("webdav", "bob")}
    assert all(r.address == "127.0.0.1" for r in recs if r.action in ("download", "login_failed"))
