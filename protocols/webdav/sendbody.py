"""GET bodies straight from the Reader to the socket, through a reused buffer.

wsgidav's GET handler (kept for everything a GET means: conditional requests, Range, If-Range,
the headers) reads the body with ``fileobj.read(block)`` and asserts that it gets ``bytes``;
cheroot then copies every block twice more (``bytearray.extend`` and ``bytes()`` of it in its
socket writer) and slices what the socket did not take.  For a 1 MiB block that is a fresh
allocation and three copies, on the two cores the Reader's decoding also needs.

Here the file object wsgidav gets (:class:`~.downloads.CountedReader`), when served by our
cheroot gateway, answers the first ``read`` with a :class:`DirectBody`: an *empty* ``bytes``
marker (so wsgidav's loop yields it once and ends) that carries the reader.  Every wsgidav
layer passes it through unchanged; :class:`EdgeGateway` recognises it after the response
headers were set, and sends exactly the announced ``Content-Length`` bytes from the reader's
current position (wsgidav already seeked to the start of the range): the Reader's own views
of its verified chunks gathered by ``socket.sendmsg`` (no copy at all), or over TLS
``readinto`` a per-thread buffer and ``sendall`` (one copy, no allocation per block).  Any other
server (no ``edge.direct_send`` in the environ) gets plain ``bytes`` as before.
"""
from __future__ import annotations

import ssl
import threading
from typing import Any

from cheroot import wsgi

from ..sendviews import send_views as _send_views

#: environ key our gateway sets: the application may answer a GET body with a DirectBody
DIRECT_KEY = "edge.direct_send"

_local = threading.local()


def _buffer(size: int) -> memoryview:
    """This worker thread's send buffer (kept for the life of the thread)."""
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) != size:
        buf = _local.buf = memoryview(bytearray(size))
    return buf


class DirectBody(bytes):
    """Empty ``bytes`` standing for "the rest of this response body comes from ``reader``"."""

    reader: Any

    def __new__(cls, reader: Any) -> "DirectBody":
        obj = super().__new__(cls, b"")
        obj.reader = reader
        return obj


class EdgeGateway(wsgi.Gateway_10):
    """cheroot's WSGI 1.0 gateway, plus :class:`DirectBody` bodies."""

    block_size = 1 << 20

    def get_environ(self) -> dict:
        env = super().get_environ()
        env[DIRECT_KEY] = True
        return env

    def respond(self) -> None:
        response = self.req.server.wsgi_app(self.env, self.start_response)
        try:
            for chunk in response:
                if type(chunk) is DirectBody:
                    self._send_direct(chunk.reader)
                    continue
                if not chunk:
                    continue
                if not isinstance(chunk, bytes):
                    raise ValueError("WSGI Applications must yield bytes")
                self.write(chunk)
        finally:
            self.req.ensure_headers_sent()
            if hasattr(response, "close"):
                response.close()

    def _send_direct(self, reader: Any) -> None:
        left = self.remaining_bytes_out
        block = int(getattr(self.req.server, "edge_block_size", 0) or self.block_size)
        if left is None or self.req.chunked_write:
            # no Content-Length (never from wsgidav's GET): the ordinary path
            while data := reader.read(block):
                self.write(data)
            return
        req = self.req
        req.ensure_headers_sent()
        wfile = req.conn.wfile
        wfile.flush()
        sock = req.conn.socket
        if getattr(reader, "has_views", False) and not isinstance(sock, ssl.SSLSocket):
            # the verified chunks themselves, gathered by sendmsg: no copy at all
            while left > 0:
                views = reader.readviews(min(left, block))
                if not views:
                    break
                n = _send_views(sock, views)
                left -= n
                wfile.bytes_written += n
        else:
            buf = _buffer(block)
            while left > 0:
                n = reader.readinto(buf[:min(left, block)])
                if not n:
                    break
                sock.sendall(buf[:n])
                left -= n
                wfile.bytes_written += n
        self.remaining_bytes_out = left
        if left:
            # the file ended early: the client must not wait for the missing bytes
            req.close_connection = True
