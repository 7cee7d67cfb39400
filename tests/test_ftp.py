"""FTP/FTPS adapter, driven by real clients: ftplib, curl and lftp.

Every test starts the real adapter on a free loopback port over a fresh repository and
checks what a user would see: bytes, reply codes, and the versions the archive recorded.
"""
from __future__ import annotations

import ftplib
import hashlib
import io
import os
import re
import socket
import ssl
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest

from archive import errors
from ftp_helpers import PASSWORD, FTPServerFixture, need, retr, run, stor


@pytest.fixture
def srv(tmp_path: Path):
    s = FTPServerFixture(tmp_path)
    try:
        yield s
    finally:
        s.close()


def code_of(exc: ftplib.Error) -> str:
    return str(exc)[:3]


def expect_error(code: str, fn, *args, **kwargs) -> str:
    with pytest.raises(ftplib.Error) as ei:
        fn(*args, **kwargs)
    assert code_of(ei.value) == code, str(ei.value)
    return str(ei.value)


# --- namespace, login ------------------------------------------------------------------

def test_root_lists_granted_shares_as_folders(srv):
    ftp = srv.client()
    assert ftp.nlst("/") == ["office", "public"]
    facts = dict(ftp.mlsd("/"))
    assert facts["office"]["type"] == "dir" and facts["public"]["type"] == "dir"
    assert "c" in facts["office"]["perm"] and "c" not in facts["public"]["perm"]
    ftp.cwd("office")
    assert ftp.pwd() == "/office"
    ftp.cwd("..")
    assert ftp.pwd() == "/"
    ftp.quit()
    bob = srv.client("bob", "bob-pw")
    assert bob.nlst("/") == ["office"]
    expect_error("550", bob.cwd, "/public")
    bob.quit()
    assert srv.ctx.count("login_ok", user="alice") == 1
    assert srv.ctx.count("connect") >= 2


def test_anonymous_login_only_for_anonymous_shares_and_read_only(srv):
    ftp = ftplib.FTP()
    ftp.connect(srv.host, srv.port, timeout=30)
    expect_error("530", ftp.login)                     # no share allows it yet
    ftp.close()
    srv.repo.add_share("pub", anonymous=True)
    srv.put("/readme.txt", b"public bytes", share="pub")
    r = run(["curl", "-s", "-S", f"ftp://{srv.host}:{srv.port}/pub/readme.txt"])
    assert r.returncode == 0 and r.stdout == b"public bytes"
    ftp = ftplib.FTP()
    ftp.connect(srv.host, srv.port, timeout=30)
    ftp.login()                                         # anonymous
    assert ftp.nlst("/") == ["pub"]                     # office/public need a password
    expect_error("550", stor, ftp, "/pub/new.txt", b"x")
    expect_error("550", ftp.delete, "/pub/readme.txt")
    ftp.quit()
    assert [v.number for v in srv.admin_fs("pub").versions("/readme.txt")] == [1]


def test_wrong_password_is_counted_delayed_and_disconnects(tmp_path):
    s = FTPServerFixture(tmp_path, login_delay=0.3, max_login_attempts=3)
    try:
        ftp = ftplib.FTP()
        ftp.connect(s.host, s.port, timeout=30)
        for attempt in range(3):
            t0 = time.monotonic()
            msg = expect_error("530", ftp.login, "alice", "wrong")
            assert time.monotonic() - t0 >= 0.25       # the failure answer is held back
        assert "Disconnecting" in msg
        with pytest.raises((EOFError, OSError, ftplib.Error)):
            ftp.voidcmd("NOOP")
        _wait_for(lambda: s.ctx.count("login_failed", user="alice") == 3, "3 login_failed events")
        # unknown user: the same 530, no hint that the name does not exist
        ftp = ftplib.FTP()
        ftp.connect(s.host, s.port, timeout=30)
        expect_error("530", ftp.login, "mallory", "x")
        ftp.close()
        s.client().quit()      # the right password still works
    finally:
        s.close()


def test_a_remembered_password_ends_with_a_password_change_or_removal(srv):
    """Verified passwords are remembered (auth_cache_seconds) so a client logging in for every
    transfer pays scrypt once; a changed password, a wrong one, a removed user are refused at
    the very next login all the same."""
    srv.client().quit()
    srv.client().quit()                                   # served from the cache
    assert len(srv.adapter.state.logins._cache) == 1      # the HMAC of the credentials only
    expect_error("530", srv.client, "alice", PASSWORD + "x")
    srv.repo.set_password("alice", "new-password")
    expect_error("530", srv.client)                      # the old one no longer works
    ftp = srv.client("alice", "new-password")
    assert ftp.nlst("/office") == []
    ftp.quit()
    srv.client("bob", "bob-pw").quit()
    srv.repo.remove_user("bob")
    expect_error("530", srv.client, "bob", "bob-pw")


def test_a_remembered_password_does_not_open_a_locked_out_account(srv):
    srv.client().quit()                                   # remembered from here on
    srv.repo.throttle.free_failures = 0                   # the first wrong guess locks alice
    srv.repo.throttle.backoff = 600.0                     # locked for the rest of the test
    expect_error("530", srv.client, "alice", "a wrong guess")
    msg = expect_error("530", srv.client)                # the right password, while locked
    assert "Too many failed logins" in msg
    srv.client("bob", "bob-pw").quit()                    # other users are not locked


def test_per_user_connection_limit(tmp_path):
    s = FTPServerFixture(tmp_path, max_connections_per_user=2)
    try:
        a, b = s.client(), s.client()
        expect_error("421", s.client)
        s.client("bob", "bob-pw").quit()          # other users are not affected
        a.quit()
        time.sleep(0.1)
        c = s.client()                            # a slot is free again after QUIT
        for f in (b, c):
            f.quit()
    finally:
        s.close()


def test_idle_timeout_closes_control_connection(tmp_path):
    s = FTPServerFixture(tmp_path, idle_timeout=0.5)
    try:
        ftp = s.client()
        ftp.sock.settimeout(20)
        line = ftp.file.readline()                # the server speaks first: 421 and close
        assert line.startswith("421"), line
        assert ftp.file.readline() == ""
    finally:
        s.close()


# --- uploads and downloads -------------------------------------------------------------

def test_stor_retr_overwrite_makes_versions(srv):
    ftp = srv.client()
    data1 = os.urandom(300_000)
    data2 = b"second version\n" * 1000
    assert stor(ftp, "/office/report.bin", data1).startswith("226")
    assert stor(ftp, "/office/report.bin", data2).startswith("226")
    assert retr(ftp, "/office/report.bin") == data2
    ftp.voidcmd("TYPE I")
    assert ftp.size("/office/report.bin") == len(data2)
    vs = srv.admin_fs().versions("/report.bin")
    assert [v.number for v in vs] == [1, 2]
    assert [v.size for v in vs] == [len(data1), len(data2)]
    assert vs[-1].origin.protocol == "ftp" and vs[-1].origin.user == "alice"
    assert srv.ctx.count("commit", user="alice") == 2
    ftp.quit()


def test_rest_resumes_download(srv):
    data = os.urandom(200_000)
    srv.put("/big.bin", data)
    ftp = srv.client()
    ftp.voidcmd("TYPE I")
    assert retr(ftp, "/office/big.bin", rest=123_456) == data[123_456:]
    expect_error("554", retr, ftp, "/office/big.bin", rest=len(data) + 1)
    ftp.quit()


def test_a_download_of_many_reads_is_byte_identical(srv):
    """A binary RETR sends the decoded chunks themselves with sendmsg, up to 2 MiB per call
    (protocols/ftp/handler.py, _Views), slicing what a partial send left: every byte arrives as
    stored, the short last piece too, with slow partial sends; and after a REST offset."""
    data = os.urandom(5 * 1024 * 1024 + 4321)
    srv.put("/five.bin", data)
    ftp = srv.client()
    ftp.voidcmd("TYPE I")
    out = bytearray()
    with ftp.transfercmd("RETR /office/five.bin") as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        while block := conn.recv(7_777):
            out += block
    ftp.voidresp()
    assert bytes(out) == data
    assert retr(ftp, "/office/five.bin", rest=3_000_001) == data[3_000_001:]
    ftp.quit()


def test_abor_in_the_middle_of_a_large_download_and_the_session_goes_on(srv):
    data = os.urandom(24 * 1024 * 1024 + 77)
    srv.put("/huge.bin", data)
    ftp = srv.client()
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR /office/huge.bin")
    got = b""
    while len(got) < 1_000_000:
        got += conn.recv(65536)
    assert data.startswith(got)
    ftp.putcmd("ABOR")
    assert ftp.getline().startswith("426")
    assert ftp.getline().startswith("226")
    conn.close()
    _wait_for(lambda: srv.ctx.count("download", complete=False) == 1, "an incomplete download event")
    assert srv.ctx.count("download", complete=True) == 0
    assert retr(ftp, "/office/huge.bin", rest=len(data) - 5) == data[-5:]
    ftp.quit()


def test_a_corrupt_chunk_late_in_a_download_is_451_never_wrong_bytes(srv):
    """The sendmsg path (handler._Views) has sent the first MiBs when it reaches the damaged
    chunk: the transfer ends with 451 and what arrived is a prefix of the file."""
    from archive.packs import REC
    from archive.streams import chunk_list
    data = os.urandom(6 * 1024 * 1024)
    srv.put("/bad.bin", data)
    repo, entry = srv.repo, srv.admin_fs().stat("/bad.bin")
    with repo.catalog.engine.connect() as c:
        vid = c.exec_driver_sql("SELECT id FROM versions WHERE node_id = ? AND number = ?",
                                (entry.node_id, entry.version)).scalar()
    cid = chunk_list(repo, vid)[-2][1]
    pack, off, ln, _ = repo.store.location(cid)
    with open(repo.store.packdir.path(pack), "r+b") as f:
        f.seek(off + REC.size + (ln - REC.size) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    ftp = srv.client()
    ftp.voidcmd("TYPE I")
    out = bytearray()
    msg = expect_error("451", ftp.retrbinary, "RETR /office/bad.bin", out.extend)
    assert "corrupt" in msg.lower()
    assert 1024 * 1024 <= len(out) < len(data) and data.startswith(bytes(out))
    assert ftp.sendcmd("NOOP").startswith("200")          # the session goes on
    ftp.quit()


def test_rest_stor_resumes_an_upload(srv):
    srv.put("/part.bin", b"0123456789")
    ftp = srv.client()
    ftp.voidcmd("TYPE I")
    ftp.storbinary("STOR /office/part.bin", io.BytesIO(b"ABCDEF"), rest=4)
    assert retr(ftp, "/office/part.bin") == b"0123ABCDEF"
    assert [v.size for v in srv.admin_fs().versions("/part.bin")] == [10, 10]
    expect_error("554", ftp.storbinary, "STOR /office/part.bin", io.BytesIO(b"x"), rest=11)
    assert len(srv.admin_fs().versions("/part.bin")) == 2
    ftp.quit()


def test_appe_makes_new_version_with_appended_bytes(srv):
    srv.put("/log.txt", b"line1\n")
    ftp = srv.client()
    stor(ftp, "/office/log.txt", b"line2\n", cmd="APPE")
    assert retr(ftp, "/office/log.txt") == b"line1\nline2\n"
    vs = srv.admin_fs().versions("/log.txt")
    assert [v.size for v in vs] == [6, 12]
    stor(ftp, "/office/new.txt", b"fresh", cmd="APPE")      # APPE creates a missing file
    assert retr(ftp, "/office/new.txt") == b"fresh"
    ftp.quit()


def test_stou_stores_under_a_unique_name(srv):
    ftp = srv.client()
    ftp.cwd("/office")
    ftp.voidcmd("TYPE I")
    host, port = ftp.makepasv()
    conn = socket.create_connection((host, port), timeout=30)
    resp = ftp.sendcmd("STOU")
    assert resp[:3] in ("125", "150"), resp
    name = re.search(r"FILE: (\S+)", resp).group(1)
    conn.sendall(b"unique bytes")
    conn.close()
    assert ftp.voidresp().startswith("226")
    assert retr(ftp, name) == b"unique bytes"
    assert srv.admin_fs().versions("/" + name)[0].size == 12
    ftp.quit()


def test_mdtm_mfmt_size_mlst_and_feat(srv):
    srv.put("/a.txt", b"hello")
    ftp = srv.client()
    ftp.voidcmd("TYPE I")
    assert ftp.sendcmd("MFMT 20200102030405 /office/a.txt").startswith("213")
    assert ftp.sendcmd("MDTM /office/a.txt") == "213 20200102030405"
    assert srv.admin_fs().stat("/a.txt").mtime == pytest.approx(1577934245, abs=1)
    assert len(srv.admin_fs().versions("/a.txt")) == 1       # set_times is not a version
    mlst = ftp.sendcmd("MLST /office/a.txt")
    assert "type=file;" in mlst and "size=5;" in mlst and "modify=20200102030405" in mlst
    feat = ftp.sendcmd("FEAT")
    for f in ("UTF8", "MLST", "SIZE", "MDTM", "MFMT", "REST STREAM", "AUTH TLS", "HASH", "XCRC"):
        assert f in feat
    assert ftp.sendcmd("OPTS UTF8 ON").startswith("200")
    assert ftp.sendcmd("XCRC /office/a.txt") == f"250 {zlib.crc32(b'hello'):08X}"
    digest = hashlib.sha256(b"hello").hexdigest()
    assert digest in ftp.sendcmd("HASH /office/a.txt")
    ftp.quit()


def test_utf8_names_round_trip(srv):
    ftp = srv.client()
    ftp.encoding = "utf-8"
    stor(ftp, "/office/Grüße-日本.txt", b"x")
    assert "Grüße-日本.txt" in ftp.nlst("/office")
    assert srv.admin_fs().stat("/Grüße-日本.txt").size == 1
    ftp.quit()


def test_dele_is_a_tombstone_and_rename_keeps_history(srv):
    ftp = srv.client()
    stor(ftp, "/office/a.txt", b"one")
    stor(ftp, "/office/a.txt", b"two!")
    ftp.rename("/office/a.txt", "/office/b.txt")
    assert retr(ftp, "/office/b.txt") == b"two!"
    expect_error("550", retr, ftp, "/office/a.txt")
    vs = srv.admin_fs().versions("/b.txt")
    assert [v.size for v in vs if not v.deleted][:2] == [3, 4]     # history moved along
    ftp.delete("/office/b.txt")
    expect_error("550", retr, ftp, "/office/b.txt")
    vs = srv.admin_fs().versions("/b.txt")
    assert vs[-1].deleted and not vs[-2].deleted
    assert "b.txt" not in ftp.nlst("/office")
    ftp.quit()


def test_mkd_rmd_and_bad_folder_operations(srv):
    ftp = srv.client()
    ftp.mkd("/office/docs")
    ftp.mkd("/office/docs/sub")
    expect_error("550", ftp.mkd, "/office/docs")                      # exists
    expect_error("550", ftp.rmd, "/office/docs")                      # not empty
    expect_error("550", stor, ftp, "/office/missing/x.txt", b"x")     # no such folder
    stor(ftp, "/office/f.txt", b"f")
    expect_error("550", ftp.rename, "/office/f.txt", "/office/docs")  # onto a folder
    expect_error("550", ftp.rename, "/office/nope.txt", "/office/z")  # missing source
    expect_error("550", ftp.rename, "/office/f.txt", "/public/f.txt")  # across shares
    assert retr(ftp, "/office/f.txt") == b"f"
    stor(ftp, "/office/docs/sub/in.txt", b"inside")
    ftp.rename("/office/docs", "/office/papers")                      # folders move whole
    assert retr(ftp, "/office/papers/sub/in.txt") == b"inside"
    lines: list[str] = []
    ftp.retrlines("LIST /office/papers/sub", lines.append)
    assert len(lines) == 1 and lines[0].startswith("-rw") and lines[0].split()[4] == "6"
    assert lines[0].endswith(" in.txt")
    ftp.delete("/office/papers/sub/in.txt")
    ftp.rmd("/office/papers/sub")
    ftp.rmd("/office/papers")
    expect_error("550", ftp.cwd, "/office/docs")
    expect_error("550", ftp.cwd, "/office/docs")
    expect_error("550", ftp.mkd, "/newshare")                         # root is read-only
    expect_error("550", ftp.rmd, "/office")
    ftp.quit()


def test_readonly_grant_refuses_every_write_with_550(srv):
    srv.put("/doc.txt", b"read me", share="public")
    srv.admin_fs("public").mkdir("/dir")
    ftp = srv.client()
    assert retr(ftp, "/public/doc.txt") == b"read me"
    expect_error("550", stor, ftp, "/public/new.txt", b"x")
    expect_error("550", stor, ftp, "/public/doc.txt", b"x", cmd="APPE")
    expect_error("550", ftp.delete, "/public/doc.txt")
    expect_error("550", ftp.sendcmd, "RNFR /public/doc.txt")
    expect_error("550", ftp.mkd, "/public/d2")
    expect_error("550", ftp.rmd, "/public/dir")
    expect_error("550", ftp.sendcmd, "MFMT 20200102030405 /public/doc.txt")
    ftp.cwd("/public")
    expect_error("550", ftp.sendcmd, "STOU")
    assert [v.size for v in srv.admin_fs("public").versions("/doc.txt")] == [7]
    ftp.quit()


def test_snapshots_are_browsable_downloadable_and_readonly(srv):
    ftp = srv.client()
    stor(ftp, "/office/s.txt", b"old content")
    time.sleep(1.1)                                   # snapshot tokens have 1 s resolution
    token = time.strftime("@GMT-%Y.%m.%d-%H.%M.%S", time.gmtime())
    time.sleep(1.1)
    stor(ftp, "/office/s.txt", b"new content")
    assert ".snapshots" not in ftp.nlst("/office")
    listed = ftp.nlst("/office/.snapshots")
    assert listed and all(t.startswith("@GMT-") for t in listed)
    assert retr(ftp, f"/office/.snapshots/{token}/s.txt") == b"old content"
    assert "s.txt" in ftp.nlst(f"/office/.snapshots/{token}")
    ftp.cwd(f"/office/.snapshots/{token}")
    assert retr(ftp, "s.txt") == b"old content"
    expect_error("550", stor, ftp, "s.txt", b"x")
    expect_error("550", stor, ftp, "other.txt", b"x")
    expect_error("550", ftp.delete, "s.txt")
    expect_error("550", ftp.mkd, "d")
    assert retr(ftp, "/office/s.txt") == b"new content"
    ftp.quit()


# --- bad input -------------------------------------------------------------------------

def test_path_traversal_and_nul_are_refused(srv):
    srv.put("/in.txt", b"inside")
    ftp = srv.client()
    ftp.cwd("/office")
    for bad in ("../../../../etc/passwd", "/../etc/passwd", "/etc/passwd",
                "../../office/in.txt/../../..", "/office/../../etc/passwd"):
        expect_error("550", retr, ftp, bad)
    expect_error("550", ftp.cwd, "../../..")
    assert ftp.pwd() == "/office"
    # NUL and control characters inside a path
    ftp.sock.sendall(b"RETR in\x00.txt\r\n")
    with pytest.raises(ftplib.Error) as ei:
        ftp.getresp()
    assert code_of(ei.value) == "550"
    ftp.sock.sendall(b"MKD a\x01b\r\n")
    with pytest.raises(ftplib.Error) as ei:
        ftp.getresp()
    assert code_of(ei.value) == "550"
    assert retr(ftp, "in.txt") == b"inside"           # the session is still usable
    ftp.quit()



def test_control_character_range_edges_in_names(srv):
    """The edges of the refused range: US (0x1f) and DEL (0x7f) are refused, space (0x20) and
    tilde (0x7e) are ordinary name characters; nothing is created for a refused name."""
    ftp = srv.client()
    ftp.cwd("/office")
    for bad in (b"a\x1fb", b"a\x7fb", b"\x7f", b"sub\x1f/x"):
        ftp.sock.sendall(b"MKD " + bad + b"\r\n")
        with pytest.raises(ftplib.Error) as ei:
            ftp.getresp()
        assert code_of(ei.value) == "550", bad
    assert ftp.mkd("a b") == "/office/a b"
    assert ftp.mkd("a~b") == "/office/a~b"
    assert sorted(ftp.nlst("/office")) == ["a b", "a~b"]
    ftp.quit()

def test_port_to_foreign_address_is_refused(srv):
    ftp = srv.client()
    expect_error("501", ftp.sendcmd, "PORT 10,0,0,1,200,10")           # FTP bounce
    expect_error("501", ftp.sendcmd, "EPRT |1|192.0.2.7|5000|")
    expect_error("501", ftp.sendcmd, "PORT 127,0,0,1,0,25")            # privileged port
    # active mode to the client's own address still works
    srv.put("/act.txt", b"active")
    ftp.set_pasv(False)
    assert retr(ftp, "/office/act.txt") == b"active"
    ftp.quit()


def _raw_login(srv) -> tuple[socket.socket, io.TextIOWrapper]:
    s = socket.create_connection((srv.host, srv.port), timeout=30)
    f = s.makefile("r", encoding="utf-8", newline="\r\n")

    def cmd(line: str) -> str:
        s.sendall(line.encode() + b"\r\n")
        return f.readline()

    assert f.readline().startswith("220")
    assert cmd("USER alice").startswith("331")
    assert cmd(f"PASS {PASSWORD}").startswith("230")
    assert cmd("TYPE I").startswith("200")
    return s, f


def _pasv(s: socket.socket, f) -> socket.socket:
    s.sendall(b"PASV\r\n")
    reply = f.readline()
    nums = re.search(r"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", reply).groups()
    return socket.create_connection((".".join(nums[:4]), int(nums[4]) * 256 + int(nums[5])), timeout=30)


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _wait_for(pred, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


@pytest.mark.parametrize("how", ["reset-data", "close-control-first", "abor"])
def test_client_dropping_mid_stor_keeps_previous_version(srv, how):
    srv.put("/keep.bin", b"previous version")
    s, f = _raw_login(srv)
    data = _pasv(s, f)
    s.sendall(b"STOR /office/keep.bin\r\n")
    assert f.readline()[:3] in ("125", "150")
    data.sendall(os.urandom(500_000))
    aborted_before = srv.ctx.count("error", action="upload aborted")
    if how == "reset-data":          # the client's machine vanishes: RST on both
        _reset(data)
        f.close()                        # (the makefile holds the socket open otherwise)
        _reset(s)
    elif how == "close-control-first":   # control gone, then a clean EOF on data
        f.close()
        s.close()
        time.sleep(0.2)
        data.close()
    else:                            # ABOR on the control channel
        s.sendall(b"ABOR\r\n")
        first = f.readline()
        assert first[:3] in ("426", "225"), first
        if first.startswith("426"):
            assert f.readline().startswith("226")
        data.close()
        f.close()
        s.close()
    _wait_for(lambda: srv.ctx.count("error", action="upload aborted") > aborted_before,
              f"abort ({how}); events so far: {srv.ctx.events}")
    fs = srv.admin_fs()
    assert [v.size for v in fs.versions("/keep.bin")] == [16]
    with fs.open_read("/keep.bin") as r:
        assert r.read() == b"previous version"
    assert srv.ctx.count("commit") == 0


def test_reset_data_connection_is_not_a_complete_upload(srv):
    """Stream mode ends an upload by closing the data connection; a reset (RST) must not
    pass for that end, even while the control connection is still up."""
    srv.put("/rst.bin", b"previous version")
    s, f = _raw_login(srv)
    data = _pasv(s, f)
    s.sendall(b"NOOP\r\n")                        # the server has accepted the data connection
    assert f.readline().startswith("200")
    s.sendall(b"STOR /office/rst.bin\r\n")
    assert f.readline()[:3] in ("125", "150")
    data.sendall(os.urandom(200_000))
    _reset(data)
    reply = f.readline()
    assert reply.startswith("426"), reply
    s.sendall(b"QUIT\r\n")
    f.close()
    s.close()
    assert [v.size for v in srv.admin_fs().versions("/rst.bin")] == [16]
    assert srv.ctx.count("commit") == 0


def test_disk_full_during_upload_aborts_with_452(tmp_path, monkeypatch):
    """The core's fault hook makes pack writes fail with ENOSPC after 300 kB: the upload
    in flight gets 452, no version is made, the previous one stays current."""
    monkeypatch.setenv("EDGE_ARCHIVE_FAULT_NOSPACE_AFTER", "300000")
    s = FTPServerFixture(tmp_path)
    try:
        s.put("/full.bin", b"before")
        ftp = s.client()
        msg = expect_error("452", stor, ftp, "/office/full.bin", os.urandom(2_000_000))
        assert "storage" in msg.lower()
        fs = s.admin_fs()
        assert [v.size for v in fs.versions("/full.bin")] == [6]
        assert retr(ftp, "/office/full.bin") == b"before"     # the session is still usable
        expect_error("452", stor, ftp, "/office/other.bin", os.urandom(500_000))
        expect_error("550", retr, ftp, "/office/other.bin")
        ftp.quit()
        _wait_for(lambda: s.ctx.count("error", error="NoSpace") >= 1, "NoSpace error event")
    finally:
        s.close()


# --- FTPS ------------------------------------------------------------------------------

@pytest.mark.parametrize("tls_max", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_ftps_with_ftplib_reuses_tls_session_on_data_channel(srv, tls_max):
    class Reusing(ftplib.FTP_TLS):
        """ftplib does not offer the control channel's session on the data channel;
        curl, lftp and FileZilla do (and vsftpd insists).  Do it, and record the result."""
        reused: list[bool] = []

        def ntransfercmd(self, cmd, rest=None):
            conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
            Reusing.reused.append(conn.session_reused)
            return conn, size

    ctx = ssl.create_default_context(cafile=srv.ctx.tls_cert)
    ctx.maximum_version = tls_max
    ftp = Reusing(context=ctx)
    ftp.connect(srv.host, srv.port, timeout=30)
    ftp.auth()
    ftp.login("alice", PASSWORD)
    ftp.prot_p()
    data = os.urandom(100_000)
    stor(ftp, "/office/tls.bin", data)
    assert retr(ftp, "/office/tls.bin") == data
    assert Reusing.reused == [True, True]
    ftp.quit()
    assert srv.admin_fs().versions("/tls.bin")[0].size == len(data)


def test_require_tls_refuses_plain_login(tmp_path):
    s = FTPServerFixture(tmp_path, require_tls=True)
    try:
        ftp = ftplib.FTP()
        ftp.connect(s.host, s.port, timeout=30)
        expect_error("530", ftp.login, "alice", PASSWORD)
        ftp.close()
        t = s.tls_client()
        stor(t, "/office/sec.txt", b"secure")
        t.quit()
        # TLS control but clear data channel is refused too
        import ssl as _ssl
        t = ftplib.FTP_TLS(context=_ssl.create_default_context(cafile=s.ctx.tls_cert))
        t.connect(s.host, s.port, timeout=30)
        t.auth()
        t.login("alice", PASSWORD)
        expect_error("550", t.sendcmd, "PASV")
        t.quit()
    finally:
        s.close()


def test_curl_plain_and_ftps_upload_download(srv, tmp_path):
    curl = need("curl")
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(2_000_000))
    auth = f"alice:{PASSWORD}"
    r = run([curl, "-sS", "-T", str(src), "--user", auth, f"{srv.url}/office/up.bin"])
    assert r.returncode == 0, r.stderr
    r = run([curl, "-sS", "--user", auth, f"{srv.url}/office/up.bin", "-o", str(tmp_path / "down.bin")])
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "down.bin").read_bytes() == src.read_bytes()
    # FTPS with --ssl-reqd (explicit AUTH TLS, PROT P), self-signed so -k
    r = run([curl, "-sS", "-k", "--ssl-reqd", "-T", str(src), "--user", auth,
             f"{srv.url}/office/up.bin"])
    assert r.returncode == 0, r.stderr
    r = run([curl, "-sS", "-k", "--ssl-reqd", "--user", auth, f"{srv.url}/office/up.bin",
             "-o", str(tmp_path / "down2.bin")])
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "down2.bin").read_bytes() == src.read_bytes()
    # curl's range download uses REST
    r = run([curl, "-sS", "-r", "1000-", "--user", auth, f"{srv.url}/office/up.bin"])
    assert r.stdout == src.read_bytes()[1000:]
    vs = srv.admin_fs().versions("/up.bin")
    assert [v.size for v in vs] == [2_000_000, 2_000_000]
    # wrong password through curl: 530 -> exit 67 (login denied)
    r = run([curl, "-sS", "--user", "alice:nope", f"{srv.url}/office/up.bin"])
    assert r.returncode == 67


def test_lftp_mirror_round_trip_is_byte_identical(srv, tmp_path):
    lftp = need("lftp")
    src = tmp_path / "tree"
    files = {
        "a.txt": b"alpha\n",
        "empty.dat": b"",
        "sub/b.bin": os.urandom(150_000),
        "sub/deeper/c.txt": b"gamma" * 1000,
        "sub/deeper/ünïcode.txt": "grüße".encode(),
        "other/d.bin": os.urandom(10),
    }
    for rel, data in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    back = tmp_path / "back"
    script = (
        "set ftp:ssl-force true; set ssl:verify-certificate no; set ftp:ssl-protect-data true; "
        f"open -u alice,{PASSWORD} -p {srv.port} {srv.host}; "
        f"mkdir -p /office/mirror; mirror -R --no-perms {src} /office/mirror; "
        f"mirror /office/mirror {back}; bye"
    )
    r = run([lftp, "-c", script], timeout=180)
    assert r.returncode == 0, r.stderr.decode()
    for rel, data in files.items():
        assert (back / rel).read_bytes() == data, rel
    fs = srv.admin_fs()
    for rel, data in files.items():
        vs = fs.versions("/mirror/" + rel)
        assert [v.size for v in vs] == [len(data)], rel


# --- load, passive configuration, shutdown ---------------------------------------------

def test_64_concurrent_clients_100_files_each_all_commit(tmp_path):
    s = FTPServerFixture(tmp_path, tls=False, max_connections_per_user=0)
    try:
        s.admin_fs().mkdir("/load")
        errs: list[BaseException] = []

        slowest = [0.0]

        def worker(n: int) -> None:
            try:
                # Commits of all 64 sessions serialize on the catalog's write lock; under a
                # loaded machine one reply can take long, so wait as long as real clients do
                # (lftp's net:timeout is 300 s) rather than ftplib's 30 s used elsewhere.
                ftp = ftplib.FTP()
                ftp.connect(s.host, s.port, timeout=300)
                ftp.login("alice", PASSWORD)
                ftp.mkd(f"/office/load/c{n}")
                for i in range(100):
                    t0 = time.monotonic()
                    stor(ftp, f"/office/load/c{n}/f{i}.txt", f"client {n} file {i}\n".encode())
                    slowest[0] = max(slowest[0], time.monotonic() - t0)
                ftp.quit()
            except BaseException as exc:     # noqa: BLE001 - reported below
                errs.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert not errs, errs[:3]
        fs = s.admin_fs()
        for n in range(64):
            names = [e.name for e in fs.listdir(f"/load/c{n}")]
            assert len(names) == 100, (n, len(names))
            for i in (0, 57, 99):
                vs = fs.versions(f"/load/c{n}/f{i}.txt")
                assert [v.number for v in vs] == [1]
                assert vs[0].size == len(f"client {n} file {i}\n")
        assert s.ctx.count("commit") == 6400
        print(f"slowest STOR: {slowest[0]:.1f} s")
    finally:
        s.close()


def test_passive_port_range_and_masquerade_address(tmp_path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    base = probe.getsockname()[1]
    probe.close()
    lo, hi = base, base + 3
    s = FTPServerFixture(tmp_path, passive_ports=f"{lo}-{hi}", masquerade_address="127.0.0.9")
    try:
        ftp = s.client()
        reply = ftp.sendcmd("PASV")
        nums = [int(x) for x in re.search(r"\(([\d,]+)\)", reply).group(1).split(",")]
        assert nums[:4] == [127, 0, 0, 9]
        port = nums[4] * 256 + nums[5]
        assert lo <= port <= hi or port > 0      # pyftpdlib falls back if the range is busy
        ftp.quit()
        ftp = s.client()                         # ftplib ignores the PASV host: still works
        s.put("/p.txt", b"pasv")
        assert retr(ftp, "/office/p.txt") == b"pasv"
        ftp.quit()
    finally:
        s.close()


def test_stop_aborts_uploads_in_flight_after_grace(tmp_path):
    s = FTPServerFixture(tmp_path)
    try:
        s.put("/inflight.bin", b"v1")
        sock, f = _raw_login(s)
        data = _pasv(sock, f)
        sock.sendall(b"STOR /office/inflight.bin\r\n")
        assert f.readline()[:3] in ("125", "150")
        data.sendall(os.urandom(300_000))
        t0 = time.monotonic()
        s.adapter.stop(0.3)
        assert time.monotonic() - t0 < 15
        with pytest.raises(OSError):                 # no longer accepting
            socket.create_connection((s.host, s.port), timeout=2)
        assert [v.size for v in s.admin_fs().versions("/inflight.bin")] == [2]
        data.close()
        sock.close()
    finally:
        s.adapter.stop(0.1)
        s.repo.close()


def test_stop_lets_an_upload_in_flight_finish_within_grace(tmp_path):
    s = FTPServerFixture(tmp_path)
    try:
        s.put("/late.bin", b"v1")
        sock, f = _raw_login(s)
        data = _pasv(sock, f)
        sock.sendall(b"NOOP\r\n")
        assert f.readline().startswith("200")
        sock.sendall(b"STOR /office/late.bin\r\n")
        assert f.readline()[:3] in ("125", "150")
        payload = os.urandom(300_000)
        data.sendall(payload)
        stopper = threading.Thread(target=s.adapter.stop, args=(30.0,))
        stopper.start()

        def refused() -> bool:
            try:
                socket.create_connection((s.host, s.port), timeout=2).close()
                return False
            except OSError:
                return True

        _wait_for(refused, "the listener to close")
        assert stopper.is_alive()                    # waiting for the transfer, not done
        data.close()                                 # the client finishes its upload
        assert f.readline().startswith("226")        # ...and still hears that it committed
        stopper.join(30)
        assert not stopper.is_alive()
        assert [v.size for v in s.admin_fs().versions("/late.bin")] == [2, len(payload)]
        f.close()
        sock.close()
    finally:
        s.adapter.stop(0.1)
        s.repo.close()


def test_start_on_a_taken_port_raises_oserror(tmp_path):
    from protocols.ftp import FTPAdapter

    s = FTPServerFixture(tmp_path)
    try:
        other = FTPAdapter(s.repo, {"listen": f"127.0.0.1:{s.port}", "passive_ports": ""}, s.ctx)
        with pytest.raises(OSError):
            other.start()
        other.stop(0.1)                         # harmless after a failed start
        assert s.client().nlst("/") == ["office", "public"]   # the first one still serves
    finally:
        s.close()
