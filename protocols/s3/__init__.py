"""S3 adapter: the archive as a versioned object store (cheroot/WSGI, like WebDAV), over ShareFS.

A bucket is a share, a key a path ("/" builds folders every protocol sees), every PUT a version
(VersionId = the archive's version number), DELETE a tombstone (a delete marker).  See README's
S3 section for the mapping and :mod:`.app` for the request flow.

Config keys (section ``[s3]``; defaults in brackets):

``listen`` ["127.0.0.1:9000"]
``tls`` [false]             serve HTTPS with the appliance certificate (ctx.tls_cert / tls_key)
``region`` ["us-east-1"]     what GetBucketLocation reports (any signing region is accepted)
``threads`` [16]             cheroot worker threads
``timeout`` [60]             seconds a connection may stall (a slow reader of a big GET is not cut
                             off after cheroot's default 10 s)
``multipart_expiry`` [604800]  seconds after which an unfinished multipart upload is reclaimed
``min_part_size`` [5242880]  smallest part but the last one Complete accepts (S3's 5 MiB)
``new_buckets`` [{}]         options of shares CreateBucket makes: allow_purge, worm_days, retention,
                             versioning ("Enabled", the default, or "unset": S3's unversioned new
                             bucket, see :mod:`.versioning`)
"""
from __future__ import annotations

import logging
import select
import threading
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi

from .app import S3App

DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1:9000",
    "tls": False,
    "region": "us-east-1",
    "threads": 16,
    "timeout": 60,
    "multipart_expiry": 7 * 86400,
    "min_part_size": 5 << 20,
    "new_buckets": {},
}


class _HeldContinue:
    """The connection's writer while cheroot reads a request's headers: it holds back the
    "100 Continue" cheroot sends at once, everything else goes out."""

    def __init__(self, wfile) -> None:
        self.wfile, self.held = wfile, None

    def write(self, data) -> int:
        if self.held is None and bytes(data[:5]) == b"HTTP/" and bytes(data).endswith(b" 100 Continue\r\n\r\n"):
            self.held = bytes(data)
            return len(data)
        return self.wfile.write(data)

    def __getattr__(self, name: str):
        return getattr(self.wfile, name)


class _ContinueOnRead:
    """The connection's reader as a request body sees it: the held "100 Continue" goes out
    before the first read (PEP 3333's second way), so a client that waits for it (boto3 sends
    `Expect: 100-continue` with every PUT) gets it when the handler wants the body, after the
    signature, key and folder checks; cheroot's own draining of an unread body reads through
    here too, so the body is never awaited without the 100 having been sent."""

    def __init__(self, rfile, req: "_Request") -> None:
        self.rfile, self.req = rfile, req

    def _go(self) -> None:
        msg, self.req.held_continue = self.req.held_continue, None
        if msg:
            self.req.conn.wfile.write(msg)

    def read(self, *a):
        self._go()
        return self.rfile.read(*a)

    def readline(self, *a):
        self._go()
        return self.rfile.readline(*a)

    def __getattr__(self, name: str):
        return getattr(self.rfile, name)


class _Request(cheroot_server.HTTPRequest):
    """cheroot's request with "100 Continue" sent on the body's first read, not as soon as the
    headers are read: the client's reaction to it and the handler's checks before the body
    (signature, bucket, key, folders) no longer compete for one GIL (about half the context
    switches of a small PUT; docs/benchmarks.md, branch s3small).  A request refused before its
    body still gets the 100 and has its body drained, as before, so the connection stays usable."""
    held_continue: bytes | None = None

    def read_request_headers(self):
        real = self.conn.wfile
        hold = self.conn.wfile = _HeldContinue(real)
        try:
            return super().read_request_headers()
        finally:
            self.conn.wfile = real
            self.held_continue = hold.held

    def respond(self):
        if self.held_continue is None:
            return super().respond()
        real = self.conn.rfile
        self.conn.rfile = _ContinueOnRead(real, self)
        try:
            return super().respond()
        finally:
            self.conn.rfile = real


class _Connection(cheroot_server.HTTPConnection):
    """cheroot's connection, serving a keep-alive client's next request in the same worker when
    it arrives within LINGER seconds (a client PUTting objects one after another sends the next
    one about a millisecond after its reply).  cheroot alone hands every request of a kept-alive
    connection from its selector thread through a queue to a worker: two more thread wake-ups,
    each waiting for the GIL, per request (docs/benchmarks.md, S3, branch s3small).  A worker
    lingers only when no other connection waits for one, at most LINGER (one poll: waking up
    in between costs GIL hand-offs), then gives the connection back to the selector as cheroot
    does (shutdown, timeouts, limits unchanged).  16 workers by default, so a 17th client
    waits at most LINGER for one."""
    LINGER = 0.005
    RequestHandlerClass = _Request

    def communicate(self) -> bool:
        while True:
            keep = super().communicate()
            if not keep:
                return False
            if not self.rfile.has_data() and not self._next_request_soon():
                return True

    def _next_request_soon(self) -> bool:
        server = self.server
        try:
            if not server.ready or server.requests.qsize:
                return False            # shutting down, or another connection waits for a worker
            poller = select.poll()
            poller.register(self.socket.fileno(), select.POLLIN)
            return bool(poller.poll(self.LINGER * 1000))
        except (OSError, ValueError, AttributeError):
            return False


def _parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = str(listen).rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


class S3Adapter:
    """The ``s3`` protocol adapter."""

    name = "s3"
    default_listen = DEFAULTS["listen"]
    config_keys = {k: v for k, v in DEFAULTS.items() if k != "listen"}

    def __init__(self, repo, config: dict[str, Any], ctx) -> None:
        self.repo = repo
        self.ctx = ctx
        self.config = {**DEFAULTS, **{k: v for k, v in (config or {}).items() if v is not None}}
        nb = self.config["new_buckets"]
        if not isinstance(nb, dict) or not set(nb) <= {"allow_purge", "worm_days", "retention", "versioning"}:
            raise ValueError("s3 new_buckets must be a table with allow_purge, worm_days, retention, versioning")
        if nb.get("versioning", "Enabled") not in ("Enabled", "unset"):
            raise ValueError('s3 new_buckets.versioning must be "Enabled" or "unset"')
        self.log = getattr(ctx, "logger", None) or logging.getLogger("edge_archive")
        self.host, self.port = _parse_listen(self.config["listen"])
        self.app = S3App(repo, self.config, ctx)
        self._server: wsgi.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server = wsgi.Server((self.host, self.port), self.app, numthreads=int(self.config["threads"]),
                             server_name="edge-archive-s3", shutdown_timeout=5,
                             timeout=int(self.config["timeout"]))
        server.ConnectionClass = _Connection
        if self.config["tls"]:
            from cheroot.ssl.builtin import BuiltinSSLAdapter
            if not (self.ctx.tls_cert and self.ctx.tls_key):
                raise OSError("s3: tls requested but no certificate/key in the context")
            server.ssl_adapter = BuiltinSSLAdapter(self.ctx.tls_cert, self.ctx.tls_key)
        server.prepare()
        self.port = server.socket.getsockname()[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve, name="s3", daemon=True)
        self._thread.start()
        self.log.info("s3: serving %s", ", ".join(self.urls()))

    def stop(self, grace: float = 5.0) -> None:
        server = self._server
        if server is None:
            return
        server.shutdown_timeout = max(0.1, float(grace))
        server.stop()
        if self._thread is not None:
            self._thread.join(timeout=float(grace) + 5)
        self._server = None

    def urls(self) -> list[str]:
        scheme = "https" if self.config["tls"] else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [f"{scheme}://{host}:{self.port}"]
