"""Helpers for the SMB tests: a running adapter on a fresh repository, and thin wrappers
around the real clients (Samba's `smbclient` and the `smbprotocol` library)."""
from __future__ import annotations

import logging
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from archive import Repository
from ftp_helpers import FTPServerFixture, RecordingContext, need
from protocols.smb import SMBAdapter

PASSWORD = "s3cret-alice"


class SMBServerFixture:
    """Shares ``office`` (alice rw, bob ro) and ``public`` (alice ro); alice and bob are SMB
    users, carol is not; the adapter listens on a free loopback port."""

    def __init__(self, tmp: Path, **config: Any) -> None:
        self.tmp = tmp
        self.repo = Repository.init(tmp / "repo")
        self.repo.add_share("office")
        self.repo.add_share("public")
        self.repo.add_user("alice", PASSWORD, smb=True)
        self.repo.add_user("bob", "bob-pw", smb=True)
        self.repo.add_user("carol", "carol-pw")
        self.repo.grant("alice", "office", "rw")
        self.repo.grant("alice", "public", "ro")
        self.repo.grant("bob", "office", "ro")
        self.repo.grant("carol", "office", "rw")
        self.ctx = RecordingContext(logger=logging.getLogger("test.smb"))
        cfg = {"listen": "127.0.0.1:0", "login_delay": 0}
        cfg.update(config)
        self.adapter = SMBAdapter(self.repo, cfg, self.ctx)
        self.adapter.start()
        self.host, self.port = self.adapter.address
        self.cache: dict = {}                   # smbprotocol connection cache of this server only

    admin_fs = FTPServerFixture.admin_fs           # the same administrator view and upload helper
    put = FTPServerFixture.put

    def versions(self, path: str, share: str = "office") -> list:
        return self.admin_fs(share).versions(path)

    def read(self, path: str, share: str = "office") -> bytes:
        with self.admin_fs(share).open_read(path) as r:
            return r.read()

    # -- Samba's smbclient -------------------------------------------------------------------
    def smbclient(self, commands: str, share: str = "office", user: str = "alice", password: str = PASSWORD,
                  *extra: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [need("smbclient"), f"//{self.host}/{share}", "-p", str(self.port)]
        cmd += ["-N"] if user is None else ["-U", f"{user}%{password}"]
        cmd += list(extra) + ["-c", commands]
        return subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=cwd or self.tmp)

    # -- smbprotocol -------------------------------------------------------------------------
    def unc(self, path: str = "", share: str = "office") -> str:
        return f"\\\\{self.host}\\{share}" + ("\\" + path.strip("\\/").replace("/", "\\") if path.strip("\\/") else "")

    def sp(self, user: str = "alice", password: str = PASSWORD, **kw: Any) -> dict:
        """kwargs for smbclient.* calls: this server, this user, signing required."""
        import smbclient
        kw.setdefault("require_signing", True)
        smbclient.register_session(self.host, username=user, password=password, port=self.port,
                                   connection_cache=self.cache, **kw)
        return {"port": self.port, "connection_cache": self.cache}

    def low_level(self, user: str = "alice", password: str = PASSWORD, dialect: int | None = None,
                  encrypt: bool = False, share: str = "office") -> tuple:
        """(connection, session, tree) from smbprotocol's low-level API."""
        from smbprotocol.connection import Connection
        from smbprotocol.session import Session
        from smbprotocol.tree import TreeConnect
        conn = Connection(uuid.uuid4(), self.host, self.port, require_signing=True)
        conn.connect(dialect)
        sess = Session(conn, user, password, require_encryption=encrypt)
        sess.connect()
        tree = TreeConnect(sess, f"\\\\{self.host}\\{share}")
        tree.connect()
        return conn, sess, tree

    def close(self) -> None:
        import smbclient
        try:
            smbclient.reset_connection_cache(connection_cache=self.cache)
        except Exception:
            pass
        self.adapter.stop(2.0)
        self.repo.close()


@pytest.fixture
def srv(tmp_path: Path):
    """A started SMBServerFixture, stopped after the test."""
    s = SMBServerFixture(tmp_path)
    try:
        yield s
    finally:
        s.close()
