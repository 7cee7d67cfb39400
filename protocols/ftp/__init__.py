"""FTP and explicit FTPS (AUTH TLS) in front of the archive, on pyftpdlib.

Layout: ``filesystem.py`` maps pyftpdlib's AbstractedFS onto ShareFS, ``files.py`` holds the
data-channel file objects (commit only when a transfer completed), ``authorizer.py`` logs
users in against the catalog, ``handler.py`` extends pyftpdlib's handlers, ``errors.py`` is
the one archive-error -> FTP-reply table and ``state.py`` what the sessions share.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.handlers.ftp.data import DTPHandler
from pyftpdlib.handlers.ftps.data import TLS_DTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.log import debug as _pyftpdlib_debug
from pyftpdlib.log import logger as _PYFTPDLIB_LOG
from pyftpdlib.servers import ThreadedFTPServer

from .authorizer import CatalogAuthorizer
from .handler import build_handler
from .state import ServerState

__all__ = ["FTPAdapter", "parse_listen", "parse_port_range"]

#: pyftpdlib modules that call ``pyftpdlib.log.debug`` on every connection and transfer
_PYFTPDLIB_DEBUG_USERS = ("pyftpdlib.ioloop", "pyftpdlib.servers", "pyftpdlib.handlers.ftp.control",
                          "pyftpdlib.handlers.ftp.data", "pyftpdlib.handlers.ftp.dispatchers",
                          "pyftpdlib.handlers.ftps.ssl")

DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1:2121",
    "passive_ports": "60000-60100",
    "masquerade_address": None,
    "tls": None,                      # None: on when the runner gave a certificate
    "require_tls": False,
    "max_login_attempts": 3,
    "login_delay": 1.0,
    "max_connections": 512,
    "max_connections_per_user": 50,
    "idle_timeout": 300,
    "data_timeout": None,             # None: same as idle_timeout
    "banner": "Edge Archive FTP ready.",
    "fair_commits": False,
    "auth_cache_seconds": 300.0,
}


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    value = str(value).strip()
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
    else:
        host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"ftp listen must be host:port, not {value!r}")
    return host or "0.0.0.0", int(port)


def parse_port_range(value: Any) -> list[int] | None:
    """``"60000-60100"`` -> that inclusive range; empty/None -> None (any free port)."""
    if value in (None, "", [], ()):
        return None
    if isinstance(value, (list, tuple, range)):
        return [int(p) for p in value]
    lo, _, hi = str(value).partition("-")
    lo_i, hi_i = int(lo), int(hi or lo)
    if not (0 < lo_i <= hi_i < 65536):
        raise ValueError(f"bad passive port range {value!r}")
    return list(range(lo_i, hi_i + 1))


class _Server(ThreadedFTPServer):
    """One thread per session (ShareFS calls block), with per-instance stop state:
    pyftpdlib keeps ``_exit``/``_lock`` on the class, which would tie all servers of a
    process together."""

    poll_timeout = 0.2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._exit = threading.Event()
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)


class FTPAdapter:
    """FTP/FTPS adapter (entry point ``ftp``).

    Config keys (defaults in brackets):

    * ``listen`` ["127.0.0.1:2121"]: control address; port 0 picks a free one.
    * ``passive_ports`` ["60000-60100"]: inclusive range for PASV/EPSV data sockets;
      empty means any free port.  pyftpdlib falls back to a random port when all are busy.
    * ``masquerade_address`` [none]: address announced in PASV replies (behind NAT).
    * ``tls`` [true when the runner has a certificate]: offer explicit FTPS (AUTH TLS,
      PBSZ, PROT P) with ``ctx.tls_cert``/``ctx.tls_key``.  The data channel accepts TLS
      session resumption from the control channel (session id context + server cache).
    * ``require_tls`` [false]: refuse USER/PASS (530) before AUTH TLS and data
      connections (PASV/PORT, 550) before PROT P.
    * ``max_login_attempts`` [3]: wrong passwords per connection before it is closed.
    * ``login_delay`` [1.0]: seconds before answering a failed login (slows guessing;
      the session is paused, other sessions are not).
    * ``max_connections`` [512], ``max_connections_per_user`` [50, 0 = unlimited]:
      the latter is checked after the password, answering 421.
    * ``idle_timeout`` [300]: seconds without a command before the control connection is
      closed (421); ``data_timeout`` [same]: seconds a data transfer may stall.
    * ``banner`` ["Edge Archive FTP ready."].
    * ``fair_commits`` [false]: FTP uploads enter the core's commit one at a time, in
      arrival order, instead of sharing the core's group-commit transactions.  The core's
      group commit hands leadership on after each batch, so batching no longer starves a
      session; the option remains for setups that prefer strict arrival order.

    * ``auth_cache_seconds`` [300]: how long a verified password is remembered (under an
      HMAC keyed per process, never the password), so a client that logs in for every
      transfer pays the catalog's slow hash once; a changed password, a removed or disabled
      user is seen at the next login all the same (state.LoginCache).  0: off.

    Active mode (PORT/EPRT) is allowed only to the client's own address (no FTP bounce)
    and to unprivileged ports.
    """

    name = "ftp"
    config_keys = DEFAULTS                # names the runner checks; values are checked here
    default_listen = DEFAULTS["listen"]

    def __init__(self, repo: Any, config: dict[str, Any], ctx: Any) -> None:
        cfg = dict(DEFAULTS)
        cfg.update({k: v for k, v in (config or {}).items() if v is not None or k == "tls"})
        if cfg.get("tls") is None:
            cfg["tls"] = bool(getattr(ctx, "tls_cert", None))
        if cfg["tls"] and not getattr(ctx, "tls_cert", None):
            raise ValueError("ftp: tls is on but no certificate was configured")
        if cfg["require_tls"] and not cfg["tls"]:
            raise ValueError("ftp: require_tls needs tls")
        self.repo = repo
        self.config = cfg
        self.ctx = ctx
        self.host, self.port = parse_listen(cfg["listen"])
        self.passive_ports = parse_port_range(cfg["passive_ports"])
        self.state = ServerState(repo, ctx, require_tls=bool(cfg["require_tls"]),
                                 max_connections_per_user=int(cfg["max_connections_per_user"] or 0),
                                 fair_commits=bool(cfg["fair_commits"]),
                                 auth_cache_seconds=float(cfg["auth_cache_seconds"] or 0))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._accept_stop = threading.Event()

    # --- Adapter contract ---------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        _quiet_pyftpdlib_logging()
        idle = float(cfg["idle_timeout"] or 0)
        attrs: dict[str, Any] = {
            "authorizer": CatalogAuthorizer(self.repo),
            "timeout": idle,
            "banner": str(cfg["banner"]),
            "max_login_attempts": int(cfg["max_login_attempts"]),
            "auth_failed_timeout": float(cfg["login_delay"]),
            "passive_ports": self.passive_ports,
            "masquerade_address": cfg["masquerade_address"] or None,
            "permit_foreign_addresses": False,
            "permit_privileged_ports": False,
            "use_sendfile": False,
        }
        if cfg["tls"]:
            attrs.update({
                "certfile": self.ctx.tls_cert,
                "keyfile": self.ctx.tls_key or self.ctx.tls_cert,
                "ssl_context": _tls_context(self.ctx.tls_cert, self.ctx.tls_key),
                "tls_control_required": False,        # our own 530 (handler.process_command)
                "tls_data_required": bool(cfg["require_tls"]),
            })
            handler = build_handler(self.state, TLS_FTPHandler, TLS_DTPHandler, **attrs)
        else:
            handler = build_handler(self.state, FTPHandler, DTPHandler, **attrs)
        data_timeout = cfg["data_timeout"] if cfg["data_timeout"] is not None else idle
        handler.dtp_handler.timeout = float(data_timeout or 0)
        server = _Server((self.host, self.port), handler, ioloop=IOLoop(), backlog=128)
        server.max_cons = int(cfg["max_connections"])
        self._server = server
        self._accept_stop.clear()
        self._thread = threading.Thread(target=self._accept_loop, name=f"ftp-accept-{self.port}",
                                        daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        server = self._server
        assert server is not None
        while not self._accept_stop.is_set():
            try:
                server.ioloop.loop(timeout=0.2, blocking=False)
            except Exception:
                self.ctx.logger.exception("ftp: accept loop error")
                time.sleep(0.2)

    def stop(self, grace: float = 5.0) -> None:
        server = self._server
        if server is None:
            return
        self.state.stopping = True
        self._accept_stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            server.close()                       # stop accepting: the listening socket goes
        except OSError:
            pass
        self.state.tracker.wait_idle(grace)      # transfers in flight may finish
        server.close_all()                       # then every session thread ends: aborts
        self._server = None

    def urls(self) -> list[str]:
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return [f"ftp://{host}:{port}"]

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (port 0 resolved)."""
        if self._server is not None:
            host, port = self._server.address[:2]
            return host, port
        return self.host, self.port


def _tls_context(cert: str, key: str | None) -> Any:
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(cert)
    ctx.use_privatekey_file(key or cert)
    ctx.set_options(SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3 | getattr(SSL, "OP_NO_COMPRESSION", 0))
    # Session resumption for the data channel (what curl, lftp and vsftpd's
    # require_ssl_reuse expect): a session id context and a server-side cache.
    ctx.set_session_id(b"edge-archive-ftp")
    ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    return ctx


def _quiet_pyftpdlib_logging() -> None:
    """pyftpdlib logs every command at INFO and installs its own stderr handler when
    nothing is configured; keep only its warnings, through the application's logging."""
    lg = logging.getLogger("pyftpdlib")
    if not lg.handlers:
        lg.addHandler(logging.NullHandler())
    if lg.level == logging.NOTSET:
        lg.setLevel(logging.WARNING)
    _lazy_pyftpdlib_debug()


def _lazy_debug(s: str, inst: Any = None) -> None:
    """pyftpdlib's ``log.debug`` formats ``repr(inst)`` (its handlers' repr reads the socket's
    address and family) before the logger drops the line: 3% of the server's CPU per small
    upload (docs/benchmarks.md, ftp15).  The same line, formatted only when DEBUG is on."""
    if _PYFTPDLIB_LOG.isEnabledFor(logging.DEBUG):
        _pyftpdlib_debug(s, inst)


def _lazy_pyftpdlib_debug() -> None:
    """Point pyftpdlib's modules (which import ``debug`` by name) at ``_lazy_debug``."""
    import importlib

    for name in _PYFTPDLIB_DEBUG_USERS:
        try:
            mod = importlib.import_module(name)
        except ImportError:                     # pragma: no cover (pyftpdlib without TLS)
            continue
        if getattr(mod, "debug", None) is _pyftpdlib_debug:
            mod.debug = _lazy_debug
