"""cheroot request/connection classes: strict framing, slow-client deadlines, per-address limit.

cheroot serves each request on one of a fixed pool of worker threads, and a worker stays
with its connection while the request line, headers and body arrive.  Its socket timeout
applies per ``recv()``, so a client that trickles one header line every two seconds holds a
worker for ever: twenty such clients starved every other request.  Here:

* :class:`ConnectionGuard` counts, per client address, the connections a worker is
  currently serving; over ``max_per_address`` the next one gets ``503`` at once (idle
  keep-alive connections wait in cheroot's selector, not in a worker, and do not count; a
  worker keeps a connection whose next request comes within 5 ms, see :class:`EdgeConnection`);
* a watchdog thread gives the request line + headers ``header_timeout`` seconds in all,
  and a body ``body_timeout`` seconds plus one second per ``body_min_rate`` bytes received;
  past that it shuts the socket down, which ends the blocked read and frees the worker
  (the upload in flight is aborted like any dropped body);
* :class:`EdgeRequest` reads header fields and chunked bodies with :mod:`.framing`
  (``400`` and a closed connection for ambiguous or malformed framing).
"""
from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

from cheroot import server as cheroot_server

from .framing import (MAX_HEADER_LINE, MAX_HEADERS, ChunkedReader, FramingError, parse_header_line,
                      request_framing)


DRAIN_LIMIT = 64 << 20      #: body bytes read and dropped after an early answer
MAX_REQUEST_HEAD = 256 * 1024   #: request line + headers (cheroot answers 413/414 beyond)


class _EdgeHeaderReader(cheroot_server.HeaderReader):
    """cheroot's header reader with the strict line and framing rules of :mod:`.framing`."""

    def __call__(self, rfile: Any, hdict: dict | None = None) -> dict:
        if hdict is None:
            hdict = {}
        fields: list[tuple[bytes, bytes]] = []
        while True:
            line = rfile.readline(MAX_HEADER_LINE + 1)
            if not line:
                raise ValueError("Illegal end of headers.")
            if line == b"\r\n":
                break
            name, value = parse_header_line(line)
            fields.append((name, value))
            if len(fields) > MAX_HEADERS:
                raise FramingError("too many header fields")
        request_framing(fields)
        for name, value in fields:
            key = name.title()
            if key in cheroot_server.comma_separated_headers and hdict.get(key):
                value = hdict[key] + b", " + value
            hdict[key] = value
        return hdict


class EdgeRequest(cheroot_server.HTTPRequest):
    """One request: strict framing, deadlines registered with the guard."""

    header_reader = _EdgeHeaderReader()

    def parse_request(self) -> None:
        guard: ConnectionGuard = self.server.edge_guard
        guard.phase(self.conn, "headers")
        try:
            super().parse_request()
        finally:
            guard.phase(self.conn, "body", self)
        if not self.ready:
            self.close_connection = True

    def respond(self) -> None:
        if not self.chunked_read:
            return super().respond()
        # Same as cheroot's respond(), with the strict streaming chunk decoder.
        self.rfile = ChunkedReader(self.conn.rfile, self.server.max_request_body_size,
                                   on_error=self._framing_failed)
        self.server.gateway(self).respond()
        self.ready and self.ensure_headers_sent()
        if self.chunked_write:
            self.conn.wfile.write(b"0\r\n\r\n")
        self._drain(self.rfile)

    def send_headers(self) -> None:
        # An answer given before a chunked body ended (507, 403...) ends the connection after
        # the drain: say so in the answer, or the client reuses the socket for its next request
        # and meets the close instead of an answer.
        if isinstance(getattr(self, "rfile", None), ChunkedReader) and not self.rfile.done:
            self.close_connection = True
        super().send_headers()

    def _drain(self, body: ChunkedReader) -> None:
        """After an early answer (507, 403...) read the rest of the body, up to DRAIN_LIMIT
        bytes, before the connection closes: closing a socket with unread data sends a
        reset, and the client would report "connection reset" instead of our answer.
        Slow drains are cut by the body deadline like any other body."""
        if body.done:
            return
        self.close_connection = True
        try:
            self.conn.wfile.flush()
            left = DRAIN_LIMIT
            while left > 0 and (got := body.read(min(left, 1 << 16))):
                left -= len(got)
        except (OSError, ValueError):
            pass

    def _framing_failed(self, exc: FramingError) -> None:
        self.close_connection = True            # the rest of the stream is not trustworthy

    def body_done(self) -> bool:
        rfile = getattr(self, "rfile", None)
        if isinstance(rfile, ChunkedReader):
            return rfile.done
        return getattr(rfile, "remaining", 0) <= 0


class EdgeConnection(cheroot_server.HTTPConnection):
    """One client connection.

    cheroot hands a keep-alive connection back to its selector thread after every request,
    and the next request then travels selector -> queue -> a worker thread: two thread
    hand-offs (each a GIL hand-over, up to the 5 ms switch interval on a busy machine) per
    request, which for small PUTs cost more than the PUT itself.  Here the worker keeps the
    connection while the client sends its next request within ``inline_wait`` seconds (a client
    doing one request after the other answers in well under a millisecond), at most
    ``MAX_INLINE`` requests in a row, and never while other connections wait for a worker.
    """

    RequestHandlerClass = EdgeRequest
    MAX_INLINE = 1000            #: requests served in a row before the selector gets it back
    inline_wait = 0.005          #: seconds a worker waits for the next request of its client

    def communicate(self) -> bool:
        guard: ConnectionGuard = self.server.edge_guard
        served = 0
        while True:
            if not guard.enter(self):
                self._refuse()
                return False
            try:
                keep = super().communicate()
            finally:
                guard.leave(self)
            served += 1
            if not keep or served >= self.MAX_INLINE or not self._next_request_soon():
                return keep

    def _next_request_soon(self) -> bool:
        """True when the client's next request is (about to be) there and no other
        connection waits for a worker."""
        if self.rfile.has_data():
            return True
        wait = self.inline_wait
        if wait <= 0 or not self.server.ready:
            return False
        waiting = getattr(self.server.requests, "qsize", 1)     # a property in cheroot 11
        if waiting() if callable(waiting) else waiting:
            return False
        sock = self.socket
        pending = getattr(sock, "pending", None)          # TLS: decrypted bytes in hand
        if pending is not None and pending():
            return True
        try:
            poller = select.poll()              # not select(): descriptors past 1024 are fine
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(wait * 1000))
        except (OSError, ValueError):
            return False

    def _refuse(self) -> None:
        msg = b"too many connections from your address; retry shortly\n"
        head = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
                b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(msg))
        try:
            self.wfile.write(head + msg)
            self.wfile.flush()
        except OSError:
            pass


class _Active:
    __slots__ = ("address", "phase", "since", "start_bytes", "request")

    def __init__(self, address: str) -> None:
        self.address = address
        self.phase = "headers"
        self.since = time.monotonic()
        self.start_bytes = 0
        self.request: Any = None


class ConnectionGuard:
    """Per-address limit and read deadlines for the connections workers are serving."""

    def __init__(self, *, max_per_address: int, header_timeout: float, body_timeout: float,
                 body_min_rate: float, interval: float = 0.5) -> None:
        self.max_per_address = max_per_address
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.body_min_rate = body_min_rate
        self.interval = interval
        self._lock = threading.Lock()
        self._active: dict[int, tuple[Any, _Active]] = {}
        self._per_address: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refused = 0
        self.timed_out = 0

    # -- bookkeeping (worker threads) --------------------------------------------------
    def enter(self, conn: Any) -> bool:
        address = str(getattr(conn, "remote_addr", None) or "?")
        with self._lock:
            n = self._per_address.get(address, 0)
            if self.max_per_address and n >= self.max_per_address:
                self.refused += 1
                return False
            self._per_address[address] = n + 1
            self._active[id(conn)] = (conn, _Active(address))
        return True

    def leave(self, conn: Any) -> None:
        with self._lock:
            item = self._active.pop(id(conn), None)
            if item is None:
                return
            address = item[1].address
            n = self._per_address.get(address, 1) - 1
            if n <= 0:
                self._per_address.pop(address, None)
            else:
                self._per_address[address] = n

    def phase(self, conn: Any, phase: str, request: Any = None) -> None:
        with self._lock:
            item = self._active.get(id(conn))
            if item is None:
                return
            state = item[1]
            state.phase, state.since, state.request = phase, time.monotonic(), request
            state.start_bytes = getattr(conn.rfile, "bytes_read", 0)

    def active(self) -> int:
        with self._lock:
            return len(self._active)

    # -- watchdog ----------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="webdav-deadlines", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for conn in self.expired(time.monotonic()):
                self.timed_out += 1
                try:
                    conn.socket.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def expired(self, now: float) -> list[Any]:
        """Connections whose headers or body are overdue."""
        out = []
        with self._lock:
            for conn, st in self._active.values():
                if st.phase == "headers":
                    if self.header_timeout and now - st.since > self.header_timeout:
                        out.append(conn)
                elif st.phase == "body" and self.body_timeout and st.request is not None:
                    if st.request.body_done():
                        continue
                    got = getattr(conn.rfile, "bytes_read", 0) - st.start_bytes
                    allowed = self.body_timeout + (got / self.body_min_rate if self.body_min_rate else 1e18)
                    if now - st.since > allowed:
                        out.append(conn)
        return out
