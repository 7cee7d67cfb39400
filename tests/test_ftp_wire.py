"""FTP on the wire: truncated uploads (FTPS close_notify, ALLO), RNFR state, names that are
not UTF-8, disk full / quota seen by curl, PASV port clashes.  Real clients (ftplib in a
subprocess killed with SIGKILL, curl, lftp) and raw sockets against the real adapter."""
from __future__ import annotations

import errno
import ftplib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ftp_helpers import PASSWORD, FTPServerFixture, need, retr, run, stor
from test_ftp import _pasv, _raw_login, _wait_for, srv  # noqa: F401 - srv is a fixture


def sizes(srv, path: str, share: str = "office") -> list[int]:
    try:
        return [v.size for v in srv.admin_fs(share).versions(path)]
    except Exception:
        return []


# --- FTPS: commit only after close_notify ------------------------------------------------

def test_ftps_data_close_without_close_notify_is_not_a_version(srv):
    srv.put("/tls.bin", b"previous")
    ftp = srv.tls_client()
    conn = ftp.transfercmd("STOR /office/tls.bin")
    conn.sendall(os.urandom(300_000))
    conn.close()                            # TCP FIN, no TLS close_notify: a truncation
    with pytest.raises(ftplib.Error) as ei:
        ftp.voidresp()
    assert str(ei.value).startswith("426"), ei.value
    assert sizes(srv, "/tls.bin") == [8]
    conn = ftp.transfercmd("STOR /office/tls.bin")
    conn.sendall(b"x" * 300_000)
    conn.unwrap()                           # close_notify, then FIN: a finished upload
    conn.close()
    assert ftp.voidresp().startswith("226")
    assert sizes(srv, "/tls.bin") == [8, 300_000]
    ftp.quit()


CLIENT = textwrap.dedent("""
    import ftplib, ssl, sys, time
    host, port, cafile, path, tls, allo = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1", int(sys.argv[6])
    if tls:
        ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=cafile))
        ftp.connect(host, port, timeout=30); ftp.auth(); ftp.login("alice", "%s"); ftp.prot_p()
    else:
        ftp = ftplib.FTP(); ftp.connect(host, port, timeout=30); ftp.login("alice", "%s")
    if allo:
        ftp.voidcmd(f"ALLO {allo}")
    class Slow:
        sent = 0
        def read(self, n):
            if self.sent >= 200_000:
                print("halfway", flush=True)
                time.sleep(60)            # killed here, mid-upload
            self.sent += 8192
            return b"y" * 8192
    ftp.storbinary(f"STOR {path}", Slow(), blocksize=8192)
""" % (PASSWORD, PASSWORD))


def _kill_mid_upload(srv, tmp_path: Path, path: str, tls: bool, allo: int = 0) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    before = srv.ctx.count("error", action="upload aborted")
    p = subprocess.Popen([sys.executable, str(script), srv.host, str(srv.port), srv.ctx.tls_cert or "",
                          path, "1" if tls else "0", str(allo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = p.stdout.readline()
        assert line.startswith(b"halfway"), (line, p.stderr.read() if p.poll() is not None else b"")
        time.sleep(0.3)                          # the bytes reach the server
        p.send_signal(signal.SIGKILL)           # the client dies: the kernel closes its sockets
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    _wait_for(lambda: srv.ctx.count("error", action="upload aborted") > before,
              lambda: f"abort event; events: {srv.ctx.events[-5:]}")


def test_killed_ftps_client_leaves_no_version(srv, tmp_path):
    srv.put("/killed.bin", b"previous")
    _kill_mid_upload(srv, tmp_path, "/office/killed.bin", tls=True)
    assert sizes(srv, "/killed.bin") == [8]
    assert srv.ctx.count("commit") == 0


def test_killed_plain_client_after_allo_leaves_no_version(srv, tmp_path):
    """Plain FTP stream mode cannot tell a killed client from EOF, unless the client
    announced the size with ALLO (see the README)."""
    srv.put("/allo-killed.bin", b"previous")
    _kill_mid_upload(srv, tmp_path, "/office/allo-killed.bin", tls=False, allo=10_000_000)
    assert sizes(srv, "/allo-killed.bin") == [8]


# --- ALLO ----------------------------------------------------------------------------------

def _stor_raw(srv, path: str, data: bytes, allo: int | None) -> tuple[str, str]:
    s, f = _raw_login(srv)
    if allo is not None:
        s.sendall(f"ALLO {allo}\r\n".encode())
        assert f.readline().startswith("200")
    d = _pasv(s, f)
    s.sendall(f"STOR {path}\r\n".encode())
    first = f.readline()
    d.sendall(data)
    d.close()
    final = f.readline()
    s.sendall(b"QUIT\r\n")
    f.close()
    s.close()
    return first, final


def test_allo_announced_length_is_enforced(srv):
    srv.put("/a.bin", b"previous")
    first, final = _stor_raw(srv, "/office/a.bin", b"x" * 1000, allo=5000)     # short
    assert first[:3] in ("125", "150") and final.startswith("426"), final
    assert "5000" in final
    first, final = _stor_raw(srv, "/office/a.bin", b"x" * 6000, allo=5000)     # long
    assert final.startswith("552"), final
    assert sizes(srv, "/a.bin") == [8]
    first, final = _stor_raw(srv, "/office/a.bin", b"x" * 5000, allo=5000)     # exact
    assert final.startswith("226"), final
    _, final = _stor_raw(srv, "/office/a.bin", b"z" * 10, allo=None)           # ALLO is per upload
    assert final.startswith("226"), final
    assert sizes(srv, "/a.bin") == [8, 5000, 10]
    ftp = srv.client()
    for bad in ("ALLO x", "ALLO -5", "ALLO 1 R"):
        with pytest.raises(ftplib.error_perm) as ei:
            ftp.voidcmd(bad)
        assert str(ei.value).startswith("501")
    ftp.quit()


def test_lftp_sends_allo_and_its_uploads_commit(srv, tmp_path):
    need("lftp")
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(700_000))
    r = run(["lftp", "-d", "-u", f"alice,{PASSWORD}", "-e",
             f"set ssl:verify-certificate no; set ftp:ssl-allow no; set ftp:use-allo yes; put {src} -o /office/up.bin; bye",
             f"{srv.host}:{srv.port}"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert b"ALLO 700000" in r.stderr + r.stdout
    assert sizes(srv, "/up.bin") == [700_000]


# --- RNFR state and names that are not UTF-8 ------------------------------------------------

def test_stale_rnfr_is_forgotten(srv):
    srv.put("/a.txt", b"a")
    ftp = srv.client()
    assert ftp.sendcmd("RNFR /office/a.txt").startswith("350")
    with pytest.raises(ftplib.error_perm) as ei:
        ftp.sendcmd("RNTO /public/a.txt")               # refused (read-only share)
    assert str(ei.value).startswith("550")
    with pytest.raises(ftplib.error_perm):
        ftp.sendcmd("RNFR /office/b-missing.txt")       # refused (missing)
    with pytest.raises(ftplib.error_perm) as ei:
        ftp.sendcmd("RNTO /office/c.txt")               # must not rename a.txt
    assert str(ei.value).startswith("503"), ei.value
    assert ftp.sendcmd("RNFR /office/a.txt").startswith("350")
    ftp.voidcmd("NOOP")                                  # any other command ends RNFR
    with pytest.raises(ftplib.error_perm) as ei:
        ftp.sendcmd("RNTO /office/c.txt")
    assert str(ei.value).startswith("503")
    assert sorted(ftp.nlst("/office")) == ["a.txt"]
    assert ftp.sendcmd("RNFR /office/a.txt").startswith("350")      # the normal case works
    assert ftp.sendcmd("RNTO /office/c.txt").startswith("250")
    assert sorted(ftp.nlst("/office")) == ["c.txt"]
    ftp.quit()


def test_names_that_are_not_utf8_are_refused_with_553(srv):
    s, f = _raw_login(srv)

    def cmd(raw: bytes) -> str:
        s.sendall(raw + b"\r\n")
        return f.readline()

    for name in (b"\xff.txt", b"\xfe.txt", b"ok-\xc3.txt"):
        d = _pasv(s, f)
        reply = cmd(b"STOR /office/" + name)
        assert reply.startswith("553"), reply
        d.close()
        assert cmd(b"MKD /office/" + name).startswith("553")
    srv.put("/real.txt", b"r")
    assert cmd(b"RNFR /office/real.txt").startswith("350")
    assert cmd(b"RNTO /office/\xff.txt").startswith("553")
    assert cmd(b"RNTO /office/renamed.txt").startswith("503")     # the failure ended RNFR
    assert cmd(b"NOOP").startswith("200")                           # session still fine
    s.sendall(b"QUIT\r\n")
    f.close()
    s.close()
    assert sorted(e.name for e in srv.admin_fs().listdir("/")) == ["real.txt"]


# --- disk full and quota as curl sees them ---------------------------------------------------

def test_disk_full_and_quota_reach_curl_as_452_and_552(tmp_path, monkeypatch):
    """The server keeps reading (and dropping) the rest of a refused upload, so curl
    finishes sending and reports our reply instead of "connection reset"."""
    need("curl")
    monkeypatch.setenv("EDGE_ARCHIVE_FAULT_NOSPACE_AFTER", "300000")
    s = FTPServerFixture(tmp_path)
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(12_000_000))
        r = run(["curl", "-sS", "-T", str(big), f"ftp://alice:{PASSWORD}@{s.host}:{s.port}/office/big.bin"])
        assert r.returncode != 0
        assert b"452" in r.stderr, r.stderr
        assert b"reset" not in r.stderr.lower()
        assert sizes(s, "/big.bin") == []
    finally:
        s.close()
    monkeypatch.delenv("EDGE_ARCHIVE_FAULT_NOSPACE_AFTER")
    s = FTPServerFixture(tmp_path / "q")
    try:
        s.repo.add_share("small", quota=500_000)
        s.repo.grant("alice", "small", "rw")
        r = run(["curl", "-sS", "-T", str(big), f"ftp://alice:{PASSWORD}@{s.host}:{s.port}/small/big.bin"])
        assert r.returncode == 70, r.stderr         # curl's name for 552
        assert b"exceeded storage allocation" in r.stderr.lower(), r.stderr
        assert sizes(s, "/big.bin", "small") == []
    finally:
        s.close()


# --- PASV when the chosen port is taken ------------------------------------------------------

def test_pasv_retries_another_port_on_address_in_use(tmp_path, monkeypatch):
    from pyftpdlib.handlers.ftp import dispatchers

    real_listen = dispatchers.PassiveDTP.listen
    failures = {"left": 3}

    def flaky_listen(self, num):
        if failures["left"] > 0:                # another socket won the race for this port
            failures["left"] -= 1
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return real_listen(self, num)

    monkeypatch.setattr(dispatchers.PassiveDTP, "listen", flaky_listen)
    s = FTPServerFixture(tmp_path, passive_ports="40000-40100")
    try:
        s.put("/p.txt", b"pasv")
        ftp = s.client()
        assert retr(ftp, "/office/p.txt") == b"pasv"
        assert failures["left"] == 0
        stor(ftp, "/office/q.txt", b"q")
        ftp.quit()
    finally:
        s.close()


def test_allo_with_rest_counts_the_final_size_or_the_bytes_sent(srv):
    srv.put("/r.bin", b"0123456789")
    ftp = srv.client()
    ftp.voidcmd("TYPE I")
    ftp.voidcmd("ALLO 10")                                   # final size after REST 4 + 6 bytes
    ftp.storbinary("STOR /office/r.bin", io.BytesIO(b"ABCDEF"), rest=4)
    ftp.voidcmd("ALLO 6")                                    # or the bytes of this transfer
    ftp.storbinary("STOR /office/r.bin", io.BytesIO(b"ghijkl"), rest=4)
    ftp.voidcmd("ALLO 10")
    with pytest.raises(ftplib.error_temp) as ei:             # 3 bytes: neither
        ftp.storbinary("STOR /office/r.bin", io.BytesIO(b"xyz"), rest=4)
    assert str(ei.value).startswith("426")
    assert retr(ftp, "/office/r.bin") == b"0123ghijkl"
    assert sizes(srv, "/r.bin") == [10, 10, 10]
    ftp.quit()


# --- pyftpdlib's debug lines: formatted only when asked for ----------------------------------

def test_pyftpdlib_debug_lines_appear_only_at_debug_level(srv, caplog):
    """The adapter routes pyftpdlib's ``debug()`` through a level check (it formatted a repr of
    every handler for lines nobody logs): at DEBUG the lines are still there, at the adapter's
    default (WARNING) none is formatted."""
    import logging

    from pyftpdlib.handlers.ftp import data as ftp_data

    def upload_and_read(name: str) -> None:
        ftp = srv.client()
        stor(ftp, f"/office/{name}", b"payload")
        assert retr(ftp, f"/office/{name}") == b"payload"
        ftp.quit()

    seen: list[str] = []
    real_repr = ftp_data.DTPHandler.__repr__

    def counting_repr(self):
        seen.append("repr")
        return real_repr(self)
    ftp_data.DTPHandler.__repr__ = counting_repr
    try:
        upload_and_read("quiet.txt")                  # pyftpdlib's logger at WARNING
        assert seen == []
        assert not [r for r in caplog.records if r.name == "pyftpdlib" and "[debug]" in r.getMessage()]
        with caplog.at_level(logging.DEBUG, logger="pyftpdlib"):
            upload_and_read("loud.txt")
            _wait_for(lambda: any("[debug]" in r.getMessage() and "DTPHandler" in r.getMessage()
                                  for r in caplog.records if r.name == "pyftpdlib"),
                      "a pyftpdlib debug line naming a data handler")
        assert seen
    finally:
        ftp_data.DTPHandler.__repr__ = real_repr
