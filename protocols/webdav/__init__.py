"""WebDAV (class 1 and 2) adapter: wsgidav 4.4 on cheroot, over ShareFS.

URL space: ``/`` lists the shares granted to the authenticated user; ``/<share>/<path>`` is
the share.  Every share also shows its read-only ``/<share>/.snapshots/@GMT-…/`` tree
(403 on writes), and any file's history is reachable as ``/<share>/<path>?versions``
(JSON; ``?versions=html`` for a table) and ``/<share>/<path>?version=N`` (the bytes of
version N).  A browser GET on a folder renders an HTML listing (wsgidav's dir_browser).

Config keys (section ``[webdav]``; defaults in brackets):

``listen`` ["127.0.0.1:8080"]
    host:port to bind; port 0 picks a free one (see :meth:`WebDAVAdapter.urls`).
``tls`` [false]
    serve HTTPS with ``ctx.tls_cert`` / ``ctx.tls_key``.
``require_tls_for_basic`` ["remote"]
    refuse HTTP Basic over plain HTTP, where the password would travel in clear text:
    ``true`` always, ``"remote"`` only for clients that are not on the loopback interface
    (so the default loopback-only appliance works out of the box, and opening it to the
    LAN without TLS fails closed), ``false`` never (trusted LANs).  Digest, when enabled,
    stays available.
``auth`` ["basic"]
    "basic", "digest" or "basic,digest" (both).  Digest needs the repository to expose
    ``digest_ha1(user, realm)``; without it only Basic is offered.
``junk_policy`` ["store"]
    "store" keeps macOS ``._*`` / ``.DS_Store`` files like any other; "ignore" accepts
    their PUT (201/204) but stores nothing, and they read as 404.
``placeholder_window`` [10]
    seconds.  Windows (Mini-Redirector, Office) saves with a 0-byte PUT, LOCK, PUT of the
    content, PROPPATCH.  Every completed PUT is one version, so the 0-byte version is
    kept; the history listing flags a 0-byte version followed within this window by
    non-empty content as ``"placeholder": true``.  A LOCK on an unmapped URL creates no
    version at all (lock-null resource), so LOCK-then-PUT clients produce one version.
``threads`` [16]
    cheroot worker threads (each serves one connection at a time).
``block_size`` [1048576]
    read/write block for GET and PUT bodies.
``max_xml_bytes`` [1048576], ``max_xml_depth`` [64]
    limits for PROPFIND/PROPPATCH/LOCK bodies (see :mod:`.xmlguard`).
``auth_cache_seconds`` [300]
    how long a verified Basic password is reused before the slow hash is checked again;
    revocations, removed users and changed passwords take effect on the next request
    regardless (see :mod:`.auth`).
``propfind_infinity`` [false]
    allow ``Depth: infinity`` PROPFIND (off: 403 propfind-finite-depth, per RFC 4918).
``max_connections_per_address`` [threads // 2]
    requests one client address may have in service at once (0 = no limit); more get
    ``503`` with ``Retry-After``, so one client cannot take every worker thread.
``header_timeout`` [10], ``body_timeout`` [30], ``body_min_rate`` [1024]
    seconds for the request line and headers in all; seconds a request body may take
    plus one second per ``body_min_rate`` bytes received.  Past them the connection is
    closed (an upload in flight is aborted), so trickling clients cannot hold workers.
``socket_timeout`` [10]
    seconds one read or write on a connection may block (cheroot's ``timeout``; also how
    long an idle keep-alive connection is kept).

Locks live in the catalog (:mod:`archive.locks`), so several processes serving the same
repository agree on them.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from cheroot import wsgi
from wsgidav.error_printer import ErrorPrinter
from wsgidav.http_authenticator import HTTPAuthenticator
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from .auth import CatalogDomainController
from .browser import EdgeDirBrowser
from .connections import MAX_REQUEST_HEAD, ConnectionGuard, EdgeConnection
from .counting import connected
from .locks import CatalogLockStorage
from .provider import EdgeProvider
from .requestguard import RequestGuard
from .sendbody import EdgeGateway
from .xmlguard import XMLGuard

DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1:8080",
    "tls": False,
    "require_tls_for_basic": "remote",
    "auth": "basic",
    "junk_policy": "store",
    "placeholder_window": 10.0,
    "threads": 16,
    "block_size": 1 << 20,
    "max_xml_bytes": 1 << 20,
    "max_xml_depth": 64,
    "auth_cache_seconds": 300.0,
    "propfind_infinity": False,
    "max_connections_per_address": None,     # None: threads // 2
    "header_timeout": 10.0,
    "body_timeout": 30.0,
    "body_min_rate": 1024.0,
    "socket_timeout": 10.0,
}


def _parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = str(listen).rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


class _RequestScope:
    """Outermost WSGI layer: per-request lock cache, and no leaks across requests."""

    def __init__(self, app, storage: CatalogLockStorage) -> None:
        self.app = app
        self.storage = storage

    def __call__(self, environ, start_response):
        self.storage._drop_cache()
        it = self.app(environ, start_response)
        try:
            yield from it
        finally:
            if hasattr(it, "close"):
                it.close()
            self.storage._drop_cache()


class WebDAVAdapter:
    """The ``webdav`` protocol adapter (see module docstring for config keys)."""

    name = "webdav"
    default_listen = DEFAULTS["listen"]
    #: adapter keys (and defaults) for `archivectl serve`'s config check
    config_keys = {k: v for k, v in DEFAULTS.items() if k != "listen"}

    def __init__(self, repo, config: dict[str, Any], ctx) -> None:
        self.repo = repo
        self.ctx = ctx
        self.config = {**DEFAULTS, **{k: v for k, v in (config or {}).items() if v is not None}}
        if self.config["junk_policy"] not in ("store", "ignore"):
            raise ValueError("webdav junk_policy must be 'store' or 'ignore'")
        self.log = getattr(ctx, "logger", None) or logging.getLogger("edge_archive")
        self.host, self.port = _parse_listen(self.config["listen"])
        self._server: wsgi.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build_app()

    # -- wiring ----------------------------------------------------------------------
    def _auth_modes(self) -> tuple[bool, bool]:
        modes = {m.strip().lower() for m in str(self.config["auth"]).replace("+", ",").split(",")}
        if "both" in modes:
            modes = {"basic", "digest"}
        if not modes <= {"basic", "digest"} or not modes:
            raise ValueError(f"webdav auth must be basic, digest or both, not {self.config['auth']!r}")
        basic = "basic" in modes
        digest = "digest" in modes and hasattr(self.repo, "digest_ha1")
        if basic and self._basic_policy() is True and not self.config["tls"]:
            # Do not even offer Basic when Digest can take over; otherwise keep the Basic
            # challenge (wsgidav needs one scheme) and let the domain controller refuse it.
            basic = not digest
            self.log.warning("webdav: Basic auth refused over plain HTTP "
                             "(require_tls_for_basic); enable tls or Digest")
        if not (basic or digest):
            raise ValueError("webdav auth = digest needs a repository that can give Digest "
                             "hashes (repo.digest_ha1), which this core does not; use basic")
        return basic, digest

    def _basic_policy(self) -> bool | str:
        v = self.config["require_tls_for_basic"]
        if isinstance(v, str):
            low = v.strip().lower()
            if low in ("true", "yes", "1", "always"):
                return True
            if low in ("false", "no", "0", "never"):
                return False
            if low == "remote":
                return "remote"
            raise ValueError(f"webdav require_tls_for_basic must be true, false or 'remote', not {v!r}")
        return bool(v)

    def _build_app(self):
        cfg = self.config
        self.lock_storage = CatalogLockStorage(self.repo)
        self.provider = EdgeProvider(self.repo, junk_policy=cfg["junk_policy"],
                                     placeholder_window=float(cfg["placeholder_window"]),
                                     lock_storage=self.lock_storage, ctx=self.ctx)
        basic, digest = self._auth_modes()
        conf = {
            "provider_mapping": {"/": self.provider},
            "http_authenticator": {
                "domain_controller": CatalogDomainController,
                "accept_basic": basic,
                "accept_digest": digest,
                "default_to_digest": digest,
                "trusted_auth_header": None,
            },
            "edge_archive": {
                "repo": self.repo, "ctx": self.ctx,
                "auth_cache_seconds": cfg["auth_cache_seconds"],
                "require_tls_for_basic": False if cfg["tls"] else self._basic_policy(),
            },
            "lock_storage": self.lock_storage,
            "property_manager": None,
            "middleware_stack": [ErrorPrinter, HTTPAuthenticator, EdgeDirBrowser,
                                 RequestResolver],
            "verbose": 1,
            "logging": {"enable": False},
            "block_size": int(cfg["block_size"]),
            "suppress_version_info": True,
            "dir_browser": {"enable": True, "icon": False, "response_trailer": "Edge Archive",
                            "show_user": True, "davmount": True,
                            "ms_sharepoint_support": False, "libre_office_support": False,
                            "ignore": [".DS_Store", "._*"]
                            if cfg["junk_policy"] == "ignore" else []},
            "hotfixes": {"emulate_win32_lastmod": False, "re_encode_path_info": True},
        }
        self.provider.allow_propfind_infinity = bool(cfg["propfind_infinity"])
        dav = WsgiDAVApp(conf)
        return _RequestScope(RequestGuard(XMLGuard(dav, max_bytes=int(cfg["max_xml_bytes"]),
                                      max_depth=int(cfg["max_xml_depth"]))), self.lock_storage)

    # -- Adapter contract ------------------------------------------------------------
    def _guard(self) -> ConnectionGuard:
        cfg = self.config
        per_address = cfg["max_connections_per_address"]
        if per_address is None:
            per_address = max(1, int(cfg["threads"]) // 2)
        return ConnectionGuard(max_per_address=int(per_address),
                               header_timeout=float(cfg["header_timeout"] or 0),
                               body_timeout=float(cfg["body_timeout"] or 0),
                               body_min_rate=float(cfg["body_min_rate"] or 0))

    def start(self) -> None:
        server = wsgi.Server((self.host, self.port), self.app,
                             numthreads=int(self.config["threads"]),
                             server_name="edge-archive-webdav", shutdown_timeout=5,
                             timeout=float(self.config["socket_timeout"]))
        server.ConnectionClass = EdgeConnection
        server.gateway = EdgeGateway          # GET bodies sent from a reused buffer (.sendbody)
        server.edge_block_size = int(self.config["block_size"])
        server.max_request_header_size = MAX_REQUEST_HEAD
        self.guard = server.edge_guard = self._guard()
        if self.config["tls"]:
            from cheroot.ssl.builtin import BuiltinSSLAdapter
            if not (self.ctx.tls_cert and self.ctx.tls_key):
                raise OSError("webdav: tls requested but no certificate/key in the context")
            server.ssl_adapter = BuiltinSSLAdapter(self.ctx.tls_cert, self.ctx.tls_key)
        server.ConnectionClass = connected(server.ConnectionClass, self._connection_event)
        server.prepare()   # binds; raises OSError on failure
        self.port = server.socket.getsockname()[1]
        self._server = server
        self.guard.start()
        self._thread = threading.Thread(target=server.serve, name="webdav", daemon=True)
        self._thread.start()
        self.log.info("webdav: serving %s", ", ".join(self.urls()))

    def _connection_event(self, event: str, **fields: Any) -> None:
        if self.ctx is not None:
            self.ctx.event("webdav", event, **fields)

    def stop(self, grace: float = 5.0) -> None:
        server = self._server
        if server is None:
            return
        server.shutdown_timeout = max(0.1, float(grace))
        server.stop()
        if self._thread is not None:
            self._thread.join(timeout=float(grace) + 5)
        self.guard.stop()
        self._server = None

    def urls(self) -> list[str]:
        scheme = "https" if self.config["tls"] else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [f"{scheme}://{host}:{self.port}/"]
