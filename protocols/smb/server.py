"""impacket's SMB server (its threaded TCP server, connection registry and command-hook
table) with our connection loop and handlers plugged in.

impacket's ``SMBSERVER`` stays the listening socket, the one-thread-per-connection server
and the SMB2 command table (``hookSmb2Command``); each connection runs
:class:`~protocols.smb.connection.Connection`, which verifies, dispatches through that
table and answers.  impacket's own file handlers (``os.*`` on a local folder) and its
SMB1 code are never reachable: every SMB2 command is hooked, SMB1 frames drop the
connection.
"""
from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from impacket import smbserver

from archive import ANONYMOUS, Origin

from . import files, wire
from .connection import Connection

log = logging.getLogger("edge_archive.smb")

DIALECT_NAMES = {"2.0.2": 0x0202, "2.1": 0x0210, "3.0": 0x0300, "3.0.2": 0x0302, "3.1.1": 0x0311}
CIPHER_NAMES = {"AES-128-GCM": 2, "AES-128-CCM": 1, "AES-256-GCM": 4, "AES-256-CCM": 3}


@dataclass
class Settings:
    signing_required: bool = True
    encryption: str = "desired"               # off | desired | required
    encrypt_shares: list[str] = field(default_factory=list)
    dialects: tuple[int, ...] = tuple(DIALECT_NAMES.values())
    server_name: str = "EDGE-ARCHIVE"
    domain: str = "WORKGROUP"
    login_delay: float = 1.0
    max_login_attempts: int = 3
    ciphers: tuple[int, ...] = tuple(CIPHER_NAMES.values())    # 3.1.1 ciphers the server accepts


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        srv: SMBServer = self.server            # type: ignore[assignment]
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        addr = self.client_address[0]
        conn = Connection(srv, sock, addr)
        with srv.conn_lock:
            srv.connections.add(conn)
        srv.event("connect", address=addr)
        try:
            conn.serve()
        finally:
            with srv.conn_lock:
                srv.connections.discard(conn)


class SMBServer(smbserver.SMBSERVER):
    """impacket's server with every SMB2 command hooked onto the archive."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], repo: Any, settings: Settings, ctx: Any) -> None:
        super().__init__(address, handler_class=_Handler)
        self.repo = repo
        self.settings = settings
        self.ctx = ctx
        self.guid = os.urandom(16)
        self.conn_lock = threading.Lock()
        self.connections: set[Connection] = set()
        self.shared = files.SharedTable()
        C = Connection
        for cmd, fn in {
            wire.NEGOTIATE: C.negotiate, wire.SESSION_SETUP: C.session_setup, wire.LOGOFF: C.logoff,
            wire.TREE_CONNECT: C.tree_connect, wire.TREE_DISCONNECT: C.tree_disconnect, wire.ECHO: C.echo,
            wire.CREATE: files.create, wire.CLOSE: files.close, wire.FLUSH: files.flush,
            wire.READ: files.read, wire.WRITE: files.write, wire.LOCK: files.lock,
            wire.IOCTL: files.ioctl, wire.QUERY_DIRECTORY: files.query_directory,
            wire.CHANGE_NOTIFY: files.change_notify, wire.QUERY_INFO: files.query_info,
            wire.SET_INFO: files.set_info, wire.OPLOCK_BREAK: files.oplock_break,
        }.items():
            self.hookSmb2Command(cmd, fn)
        self._table: dict[int, Callable] = self._SMBSERVER__smb2Commands   # the hooked table
        self._table.pop(0xFF, None)                  # impacket's catch-all would answer as impacket

    def handler_for(self, command: int) -> Callable | None:
        return self._table.get(command)

    # -- services for connections --------------------------------------------------------
    def event(self, event: str, **fields: Any) -> None:
        self.ctx.event("smb", event, **fields)

    def log_error(self, command: int, exc: BaseException) -> None:
        log.error("smb command 0x%x failed: %r", command, exc, exc_info=exc)
        self.event("error", command=command, error=type(exc).__name__)

    def audit_failed_login(self, user: str, address: str) -> None:
        try:
            self.repo.audit("login_failed", Origin("smb", address, user or None))
        except Exception:                          # auditing must never break a reply
            log.exception("audit of a failed login")

    def anonymous_shares(self) -> list[str]:
        return [n for n, _ in self.repo.shares_for(ANONYMOUS)]

    def resolve_share(self, user: Any, name: str) -> str | None:
        """The catalog name of a share the user may see, matched case-insensitively."""
        low = name.lower()
        for real, _mode in self.repo.shares_for(user):
            if real.lower() == low:
                return real
        return None

    def share_encrypted(self, share: str) -> bool:
        return share.lower() in {s.lower() for s in self.settings.encrypt_shares}

    def close_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
