"""SMB adapter driven by Samba's `smbclient` (a client nobody here wrote): every dialect,
signing and encryption, share lists, Previous Versions, and the login holes of stock
impacket.  Results are cross-checked in the archive (bytes, versions, origins)."""
from __future__ import annotations

import os
import time

import pytest

from smb_helpers import PASSWORD, SMBServerFixture, srv  # noqa: F401  (srv is a fixture)



def ok(r) -> str:
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    assert r.returncode == 0 and "NT_STATUS" not in out, out
    return out


def fails(r, status: str) -> str:
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    assert status in out, out
    return out


@pytest.mark.parametrize("proto,protection", [
    ("SMB2_02", "sign"), ("SMB2_10", "sign"), ("SMB3_00", "sign"), ("SMB3_02", "sign"), ("SMB3_11", "sign"),
    ("SMB3_00", "encrypt"), ("SMB3_11", "encrypt"),
])
def test_put_get_ls_mkdir_rename_rm_every_dialect(srv, proto, protection):
    data = os.urandom(3 * 1024 * 1024 + 17)
    (srv.tmp / "up.bin").write_bytes(data)
    (srv.tmp / "small.txt").write_bytes(b"small bytes\n")
    out = ok(srv.smbclient("mkdir docs; put up.bin docs/up.bin; put small.txt docs/s.txt; "
                           "rename docs/s.txt docs/renamed.txt; get docs/up.bin down.bin; ls docs/*; "
                           "put small.txt gone.txt; rm gone.txt",
                           "office", "alice", PASSWORD, "-m", proto, f"--client-protection={protection}"))
    assert (srv.tmp / "down.bin").read_bytes() == data
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert {"renamed.txt", "up.bin"} <= listed and "s.txt" not in listed
    assert srv.read("/docs/up.bin") == data
    v = srv.versions("/docs/up.bin")
    assert len(v) == 1 and v[0].size == len(data) and v[0].origin.protocol == "smb" and v[0].origin.user == "alice"
    assert srv.read("/docs/renamed.txt") == b"small bytes\n"
    assert [x.deleted for x in srv.versions("/gone.txt")] == [False, True]      # rm is a tombstone


def test_put_overwrite_makes_a_second_version_and_get_sees_it(srv):
    srv.put("/a.txt", b"first")
    (srv.tmp / "a.txt").write_bytes(b"second version")
    ok(srv.smbclient("put a.txt a.txt; get a.txt back.txt", "office", "alice", PASSWORD, "-m", "SMB3"))
    assert (srv.tmp / "back.txt").read_bytes() == b"second version"
    assert [v.size for v in srv.versions("/a.txt")] == [5, 14]


def test_share_list_shows_only_granted_shares(srv):
    out = ok(srv.smbclient("", "IPC$", "alice", PASSWORD, "-m", "SMB3", "-L", srv.host))
    assert "office" in out and "public" in out
    out = ok(srv.smbclient("", "IPC$", "bob", "bob-pw", "-m", "SMB3", "-L", srv.host))
    assert "office" in out and "public" not in out


def test_read_only_grant_refuses_writes_and_keeps_versions(srv):
    srv.put("/r.txt", b"keep")
    (srv.tmp / "w.txt").write_bytes(b"nope")
    out = srv.smbclient("put w.txt r.txt; put w.txt new.txt; mkdir d; rm r.txt", "office", "bob", "bob-pw", "-m", "SMB3")
    fails(out, "NT_STATUS_ACCESS_DENIED")
    assert srv.read("/r.txt") == b"keep" and len(srv.versions("/r.txt")) == 1
    assert not srv.admin_fs().exists("/new.txt") and not srv.admin_fs().exists("/d")
    ok(srv.smbclient("get r.txt got.txt", "office", "bob", "bob-pw", "-m", "SMB3"))
    assert (srv.tmp / "got.txt").read_bytes() == b"keep"


def test_wrong_password_unknown_user_and_non_smb_user_fail(srv):
    fails(srv.smbclient("ls", "office", "alice", "wrong", "-m", "SMB3"), "NT_STATUS_LOGON_FAILURE")
    fails(srv.smbclient("ls", "office", "nobody", "x", "-m", "SMB3"), "NT_STATUS_LOGON_FAILURE")
    # carol has a password but was never enabled for SMB: no NT hash, no SMB login
    fails(srv.smbclient("ls", "office", "carol", "carol-pw", "-m", "SMB3"), "NT_STATUS_LOGON_FAILURE")
    assert srv.ctx.count("login_failed") >= 3 and srv.ctx.count("login_ok") == 0


def test_anonymous_and_empty_user_are_refused_without_an_anonymous_share(srv):
    fails(srv.smbclient("ls", "office", None, "", "-m", "SMB3"), "NT_STATUS")
    fails(srv.smbclient("ls", "office", "", "something", "-m", "SMB3"), "NT_STATUS")
    assert srv.ctx.count("login_ok") == 0


def test_anonymous_share_is_read_only_and_the_only_one_listed(srv):
    srv.repo.add_share("pub", anonymous=True)
    srv.put("/readme.txt", b"public bytes", share="pub")
    ok(srv.smbclient("get readme.txt r.txt", "pub", None, "", "-m", "SMB3"))
    assert (srv.tmp / "r.txt").read_bytes() == b"public bytes"
    (srv.tmp / "x.txt").write_bytes(b"x")
    fails(srv.smbclient("put x.txt x.txt", "pub", None, "", "-m", "SMB3"), "NT_STATUS_ACCESS_DENIED")
    fails(srv.smbclient("ls", "office", None, "", "-m", "SMB3"), "NT_STATUS_BAD_NETWORK_NAME")
    assert [v.number for v in srv.versions("/readme.txt", share="pub")] == [1]


def test_user_enabled_with_archivectl_smb_logs_in(srv):
    import subprocess, sys
    env = {**os.environ, "EDGE_ARCHIVE_REPO": str(srv.tmp / "repo")}
    run = lambda *a, inp=None: subprocess.run([sys.executable, "-m", "archive", *a], input=inp,
                                              capture_output=True, env=env, timeout=60)
    r = run("user", "smb", "carol", "on", "--password-stdin", inp=b"wrong\n")
    assert r.returncode != 0                                        # the password is checked
    r = run("user", "smb", "carol", "on", "--password-stdin", inp=b"carol-pw\n")
    assert r.returncode == 0, r.stderr
    ok(srv.smbclient("ls", "office", "carol", "carol-pw", "-m", "SMB3"))
    assert run("user", "smb", "carol", "off").returncode == 0
    fails(srv.smbclient("ls", "office", "carol", "carol-pw", "-m", "SMB3"), "NT_STATUS_LOGON_FAILURE")
    r = run("user", "add", "dave", "--smb", "--password-stdin", inp=b"dave-pw\n")
    assert r.returncode == 0, r.stderr
    srv.repo.grant("dave", "office", "ro")                          # the API: one CLI process less
    ok(srv.smbclient("ls", "office", "dave", "dave-pw", "-m", "SMB3"))


def test_allinfo_lists_previous_versions_and_gmt_paths_are_read_only(srv):
    srv.put("/doc.txt", b"old content")
    token = srv.admin_fs().snapshot_tokens()[-1]
    time.sleep(1.1)                                  # tokens have one-second resolution
    srv.put("/doc.txt", b"new content, longer")
    out = ok(srv.smbclient("allinfo doc.txt", "office", "alice", PASSWORD, "-m", "SMB3"))
    listed = srv.admin_fs().snapshot_tokens()           # one per hour: the hour's last state
    assert listed and all(t in out for t in listed)
    ok(srv.smbclient(f"get {token}/doc.txt past.txt", "office", "alice", PASSWORD, "-m", "SMB3"))
    assert (srv.tmp / "past.txt").read_bytes() == b"old content"
    (srv.tmp / "w.txt").write_bytes(b"w")
    fails(srv.smbclient(f"put w.txt {token}/doc.txt", "office", "alice", PASSWORD, "-m", "SMB3"),
          "NT_STATUS_MEDIA_WRITE_PROTECTED")
    fails(srv.smbclient("put w.txt .snapshots/x.txt", "office", "alice", PASSWORD, "-m", "SMB3"),
          "NT_STATUS_MEDIA_WRITE_PROTECTED")
    assert srv.read("/doc.txt") == b"new content, longer"



def test_encrypt_shares_refuses_clients_that_do_not_encrypt(tmp_path):
    s = SMBServerFixture(tmp_path, encrypt_shares=["office"])
    try:
        (tmp_path / "a.txt").write_bytes(b"secret")
        fails(s.smbclient("ls", "office", "alice", PASSWORD, "-m", "SMB2_10"), "NT_STATUS_ACCESS_DENIED")
        ok(s.smbclient("put a.txt a.txt", "office", "alice", PASSWORD, "-m", "SMB3"))   # client follows the share flag
        assert s.read("/a.txt") == b"secret"
    finally:
        s.close()


def test_signing_not_required_serves_unsigned_clients(tmp_path):
    s = SMBServerFixture(tmp_path, signing_required=False, encryption="off")
    try:
        (tmp_path / "a.txt").write_bytes(b"plain")
        ok(s.smbclient("put a.txt a.txt; get a.txt b.txt", "office", "alice", PASSWORD, "-m", "SMB3",
                       "--client-protection=off"))
        assert (tmp_path / "b.txt").read_bytes() == b"plain"
    finally:
        s.close()


@pytest.mark.parametrize("cipher", ["AES-256-GCM", "AES-256-CCM"])
def test_aes_256_encryption_when_the_client_asks_for_it(srv, cipher):
    """The client allows only this cipher: a server that did not offer it, or derived 128-bit
    keys (MS-SMB2 3.3.5.5.3 wants L = 256 from the full session key), fails the session."""
    data = os.urandom(300 * 1024 + 5)
    (srv.tmp / "enc.bin").write_bytes(data)
    ok(srv.smbclient("put enc.bin enc.bin; get enc.bin back.bin", "office", "alice", PASSWORD, "-m", "SMB3_11",
                     "--client-protection=encrypt", f"--option=client smb3 encryption algorithms={cipher}"))
    assert (srv.tmp / "back.bin").read_bytes() == data and srv.read("/enc.bin") == data


def test_ciphers_config_limits_what_is_negotiated(tmp_path):
    s = SMBServerFixture(tmp_path, ciphers=["AES-128-GCM"])
    try:
        r = s.smbclient("ls", "office", "alice", PASSWORD, "-m", "SMB3_11", "--client-protection=encrypt",
                        "--option=client smb3 encryption algorithms=AES-256-GCM")
        assert r.returncode != 0
        ok(s.smbclient("ls", "office", "alice", PASSWORD, "-m", "SMB3_11", "--client-protection=encrypt"))
    finally:
        s.close()
