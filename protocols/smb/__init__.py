"""SMB 2/3 adapter (entry point ``smb``): desktops mount the archive as a network drive.

Layout: ``server.py`` (impacket's server with every SMB2 command hooked), ``connection.py``
(framing, NEGOTIATE/SESSION_SETUP/TREE_CONNECT, signing and encryption at the seam),
``files.py`` (file commands onto ShareFS), ``info.py`` (FILE_*_INFORMATION encoders),
``ipc.py`` (the srvsvc pipe for share lists), ``auth.py`` (NTLMv2), ``crypto.py`` (keys,
signing, transform headers), ``wire.py`` (packet parsers), ``errors.py`` (the NTSTATUS table).
"""
from __future__ import annotations

import threading
import time
from typing import Any

from protocols.config import parse_listen

from .server import CIPHER_NAMES, DIALECT_NAMES, Settings, SMBServer

__all__ = ["SMBAdapter"]

DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1:4445",
    "signing_required": True,
    "encryption": "desired",
    "encrypt_shares": [],
    "dialects": ["2.0.2", "2.1", "3.0", "3.0.2", "3.1.1"],
    "server_name": "EDGE-ARCHIVE",
    "domain": "WORKGROUP",
    "login_delay": 1.0,
    "max_login_attempts": 3,
    "ciphers": ["AES-128-GCM", "AES-128-CCM", "AES-256-GCM", "AES-256-CCM"],
}


def settings_from(cfg: dict[str, Any]) -> Settings:
    """Check the [smb] section and turn it into Settings (ValueError names the key)."""
    enc = str(cfg["encryption"]).lower()
    if enc not in ("off", "desired", "required"):
        raise ValueError(f"smb: encryption must be off, desired or required, got {cfg['encryption']!r}")
    shares = cfg["encrypt_shares"]
    if isinstance(shares, str):
        shares = [s.strip() for s in shares.split(",") if s.strip()]
    dialects = cfg["dialects"]
    if isinstance(dialects, str):
        dialects = [d.strip() for d in dialects.split(",") if d.strip()]
    bad = [d for d in dialects if d not in DIALECT_NAMES]
    if bad or not dialects:
        raise ValueError(f"smb: dialects must be among {', '.join(DIALECT_NAMES)}, got {cfg['dialects']!r}")
    ciphers = cfg["ciphers"]
    if isinstance(ciphers, str):
        ciphers = [c.strip() for c in ciphers.split(",") if c.strip()]
    badc = [c for c in ciphers if str(c).upper() not in CIPHER_NAMES]
    if badc or not ciphers:
        raise ValueError(f"smb: ciphers must be among {', '.join(CIPHER_NAMES)}, got {cfg['ciphers']!r}")
    if enc != "off" and shares and not {"3.0", "3.0.2", "3.1.1"} & set(dialects):
        raise ValueError("smb: encrypt_shares needs an SMB 3 dialect")
    return Settings(signing_required=bool(cfg["signing_required"]), encryption=enc,
                    encrypt_shares=list(shares), dialects=tuple(DIALECT_NAMES[d] for d in dialects),
                    server_name=str(cfg["server_name"]), domain=str(cfg["domain"]),
                    login_delay=float(cfg["login_delay"]), max_login_attempts=int(cfg["max_login_attempts"]),
                    ciphers=tuple(CIPHER_NAMES[str(c).upper()] for c in ciphers))


class SMBAdapter:
    """SMB 2.0.2-3.1.1 adapter.  Config keys (defaults): ``listen`` ("127.0.0.1:4445"),
    ``signing_required`` (true), ``encryption`` ("desired": encrypt when the client asks;
    "required": every session; "off"), ``encrypt_shares`` ([] names that always encrypt),
    ``dialects`` (all five), ``server_name``, ``domain``, ``login_delay`` (1.0 s after a
    failed login), ``max_login_attempts`` (3 per connection, then it is closed), ``ciphers``
    (SMB 3.1.1 encryption: AES-128-GCM, AES-128-CCM, AES-256-GCM, AES-256-CCM; the client's
    order among them decides, as a client asking for AES-256 first wants it)."""

    name = "smb"
    config_keys = DEFAULTS
    default_listen = DEFAULTS["listen"]

    def __init__(self, repo: Any, config: dict[str, Any], ctx: Any) -> None:
        cfg = dict(DEFAULTS)
        cfg.update({k: v for k, v in (config or {}).items() if v is not None})
        self.repo, self.ctx = repo, ctx
        self.settings = settings_from(cfg)
        self.host, self.port = parse_listen(cfg["listen"])
        self._server: SMBServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server = SMBServer((self.host, self.port), self.repo, self.settings, self.ctx)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"smb-accept-{self.port}", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 5.0) -> None:
        srv = self._server
        if srv is None:
            return
        srv.shutdown()
        srv.server_close()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and srv.shared.dirty():
            time.sleep(0.1)                      # handles that wrote may still be closed
        srv.close_connections()                  # the rest are aborted: no partial versions
        self._server = None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is not None:
            return self._server.server_address[:2]
        return self.host, self.port

    def urls(self) -> list[str]:
        host, port = self.address
        return [f"smb://{host}:{port}/"]
