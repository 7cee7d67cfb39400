"""TLS material for FTPS and HTTPS: check a configured pair, or make a self-signed one.

A fresh appliance must offer encrypted endpoints without the operator generating anything,
so when ``[tls]`` names no certificate the runner creates a self-signed one (EC P-256, valid
for localhost, the loopback addresses and the host name) under the state directory, once,
and reuses it on every later start.  A configured pair is checked at start (readable, PEM,
key matches certificate) so that a bad path is a clear message, not a handshake failure on
the first client.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import ipaddress
import os
import socket

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .config import ConfigError

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f"[tls] {what} {path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"[tls] {what} {path}: is a directory, not a PEM file") from None
    except OSError as e:
        raise ConfigError(f"[tls] {what} {path}: cannot read ({e.strerror})") from None


def check_pair(cert_path: str, key_path: str) -> None:
    """Raise ConfigError unless both files are readable PEM and the key belongs to the certificate."""
    cert_pem = _read(cert_path, "cert")
    key_pem = _read(key_path, "key")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ConfigError(f"[tls] cert {cert_path}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(f"[tls] key {key_path}: the key is encrypted; a server key must not need a passphrase") from None
    except ValueError:
        raise ConfigError(f"[tls] key {key_path}: not a PEM private key") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if cert.public_key().public_bytes(enc, pub) != key.public_key().public_bytes(enc, pub):
        raise ConfigError(f"[tls] key {key_path} does not belong to the certificate {cert_path}")


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname() or "localhost"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Edge Archive (self-signed)")])
    dns = sorted({"localhost", host})
    ips = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]
                                                       + [x509.IPAddress(i) for i in ips]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_atomic(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_self_signed(directory: str) -> tuple[str, str, bool]:
    """(cert path, key path, created) for the generated pair in `directory`, making it if absent.

    Several serve processes may start at once on one state directory (one systemd unit per
    protocol); an flock makes exactly one of them generate, so cert and key always match.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    cert_path = os.path.join(directory, CERT_NAME)
    key_path = os.path.join(directory, KEY_NAME)
    with open(os.path.join(directory, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(cert_path) and os.path.exists(key_path):
            return cert_path, key_path, False
        cert_pem, key_pem = _self_signed()
        _write_atomic(key_path, key_pem, 0o600)
        _write_atomic(cert_path, cert_pem, 0o644)
        return cert_path, key_path, True
