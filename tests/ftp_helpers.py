"""Helpers for the FTP tests: a running adapter on a fresh repository, a self-signed
certificate, and thin wrappers around the real clients (ftplib, curl, lftp)."""
from __future__ import annotations

import datetime as dt
import ftplib
import ipaddress
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from archive import Origin, Repository
from protocols.base import ServeContext
from protocols.ftp import FTPAdapter

PASSWORD = "s3cret-alice"


def need(tool: str) -> str:
    """Path of a real client; a missing one is a failure, never a skip."""
    path = shutil.which(tool)
    assert path, f"{tool} is not installed (see tests/apt-packages.txt)"
    return path


def make_cert(directory: Path) -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1/localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@dataclass
class RecordingContext(ServeContext):
    """ServeContext that also keeps the events, so tests can check them."""

    events: list[tuple[str, dict]] = field(default_factory=list)

    def event(self, protocol: str, event: str, **fields: Any) -> None:
        self.events.append((event, fields))
        super().event(protocol, event, **fields)

    def count(self, event: str, **match: Any) -> int:
        return sum(1 for e, f in self.events
                   if e == event and all(f.get(k) == v for k, v in match.items()))


class FTPServerFixture:
    """Repository with shares ``office`` (alice rw, bob ro) and ``public`` (alice ro),
    plus a started FTPAdapter on a free loopback port."""

    def __init__(self, tmp: Path, tls: bool = True, **config: Any) -> None:
        self.tmp = tmp
        self.repo = Repository.init(tmp / "repo")
        self.repo.add_share("office")
        self.repo.add_share("public")
        self.repo.add_user("alice", PASSWORD)
        self.repo.add_user("bob", "bob-pw")
        self.repo.grant("alice", "office", "rw")
        self.repo.grant("alice", "public", "ro")
        self.repo.grant("bob", "office", "ro")
        cert = key = None
        if tls:
            cert, key = make_cert(tmp / "tls")
        self.ctx = RecordingContext(tls_cert=cert, tls_key=key, logger=logging.getLogger("test.ftp"))
        cfg = {"listen": "127.0.0.1:0", "passive_ports": "", "login_delay": 0.05}
        cfg.update(config)
        self.adapter = FTPAdapter(self.repo, cfg, self.ctx)
        self.adapter.start()
        self.host, self.port = self.adapter.address

    def admin_fs(self, share: str = "office") -> Any:
        return self.repo.share(share, user=None, origin=Origin("test"))

    def put(self, path: str, data: bytes, share: str = "office") -> None:
        w = self.admin_fs(share).open_write(path)
        w.write(data)
        w.commit()

    def client(self, user: str = "alice", password: str = PASSWORD) -> ftplib.FTP:
        ftp = ftplib.FTP()
        ftp.connect(self.host, self.port, timeout=30)
        ftp.login(user, password)
        return ftp

    def tls_client(self, user: str = "alice", password: str = PASSWORD) -> ftplib.FTP_TLS:
        import ssl
        ctx = ssl.create_default_context(cafile=self.ctx.tls_cert)
        ftp = ftplib.FTP_TLS(context=ctx)
        ftp.connect(self.host, self.port, timeout=30)
        ftp.auth()
        ftp.login(user, password)
        ftp.prot_p()
        return ftp

    @property
    def url(self) -> str:
        return f"ftp://{self.host}:{self.port}"

    def close(self) -> None:
        self.adapter.stop(2.0)
        self.repo.close()


def retr(ftp: ftplib.FTP, path: str, rest: int | None = None) -> bytes:
    out = bytearray()
    ftp.retrbinary(f"RETR {path}", out.extend, rest=rest)
    return bytes(out)


def stor(ftp: ftplib.FTP, path: str, data: bytes, cmd: str = "STOR") -> str:
    import io
    return ftp.storbinary(f"{cmd} {path}", io.BytesIO(data))


def run(cmd: list[str], timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)
