"""WebDAV GET bodies sent by our cheroot gateway from a reused buffer (protocols/webdav/sendbody.py):
bytes, headers, Range, conditional requests, keep-alive and the download audit, as a client sees
them (http.client on one connection, curl, TLS)."""
from __future__ import annotations

import base64
import email.utils
import hashlib
import http.client
import os
import socket
import time
from dataclasses import dataclass, field

import pytest

from protocols.base import ServeContext
from webdav_helpers import USERS, curl, make_repo, self_signed, start_server

BLOCK = 64 * 1024          # the server's block: bodies below span many blocks
SIZE = 5 * BLOCK + 12345   # not a multiple of anything


@dataclass
class Events(ServeContext):
    seen: list = field(default_factory=list)

    def event(self, protocol, event, **fields):
        self.seen.append((protocol, event, fields))


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("webdav-get")
    repo = make_repo(root)
    ctx = Events()
    server = start_server(repo, root, ctx, block_size=BLOCK)
    server.ctx = ctx
    data = os.urandom(SIZE)
    s = server.session()
    assert s.put(f"{server.url}/docs/big.bin", data=data).status_code == 201
    assert s.put(f"{server.url}/docs/empty.bin", data=b"").status_code == 201
    server.data = data
    yield server
    server.stop()
    repo.close()


def _auth(user: str = "alice") -> str:
    return "Basic " + base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()


def _get(conn: http.client.HTTPConnection, path: str, method: str = "GET", **headers: str):
    conn.request(method, path, headers={"Authorization": _auth(), **headers})
    r = conn.getresponse()
    return r, r.read(), {k.lower(): v for k, v in r.getheaders()}


def _conn(srv) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)


def test_whole_file_bytes_and_headers_then_keepalive(srv):
    entry = srv.admin().stat("/big.bin")
    c = _conn(srv)
    r, body, h = _get(c, "/docs/big.bin")
    assert r.status == 200
    assert body == srv.data
    assert h["content-length"] == str(SIZE)
    assert h["etag"] == f'"{entry.etag}"'
    assert h["accept-ranges"] == "bytes"
    assert email.utils.parsedate_to_datetime(h["last-modified"]).timestamp() == int(entry.mtime)
    sock = c.sock
    # the same connection serves the next requests: the body was exactly Content-Length bytes
    r, body, h = _get(c, "/docs/big.bin", Range="bytes=10-19")
    assert (r.status, body) == (206, srv.data[10:20])
    r, body, h = _get(c, "/docs/big.bin", "HEAD")
    assert (r.status, body, h["content-length"]) == (200, b"", str(SIZE))
    r, body, _ = _get(c, "/docs/empty.bin")
    assert (r.status, body) == (200, b"")
    r, body, _ = _get(c, "/docs/big.bin")
    assert r.status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(srv.data).digest()
    assert c.sock is sock
    c.close()


@pytest.mark.parametrize("rng, start, end", [
    (f"bytes={BLOCK - 5}-{3 * BLOCK + 7}", BLOCK - 5, 3 * BLOCK + 7),   # across blocks
    (f"bytes={SIZE - 100}-", SIZE - 100, SIZE - 1),                     # open end
    ("bytes=-777", SIZE - 777, SIZE - 1),                               # suffix
    (f"bytes=0-{SIZE + 50}", 0, SIZE - 1),                              # past the end: clipped
])
def test_range(srv, rng, start, end):
    c = _conn(srv)
    r, body, h = _get(c, "/docs/big.bin", Range=rng)
    assert r.status == 206
    assert body == srv.data[start:end + 1]
    assert h["content-length"] == str(end + 1 - start)
    assert h["content-range"] == f"bytes {start}-{end}/{SIZE}"
    r, body, _ = _get(c, "/docs/big.bin", Range="bytes=0-0")     # connection still in step
    assert (r.status, body) == (206, srv.data[:1])
    c.close()


def test_range_not_satisfiable(srv):
    c = _conn(srv)
    r, _, _ = _get(c, "/docs/big.bin", Range=f"bytes={SIZE + 10}-")
    assert r.status == 416


def test_conditional_requests(srv):
    entry = srv.admin().stat("/big.bin")
    etag = f'"{entry.etag}"'
    c = _conn(srv)
    r, body, _ = _get(c, "/docs/big.bin", **{"If-None-Match": etag})
    assert (r.status, body) == (304, b"")
    r, body, _ = _get(c, "/docs/big.bin", **{"If-None-Match": '"other"'})
    assert (r.status, body) == (200, srv.data)
    later = email.utils.formatdate(entry.mtime + 3600, usegmt=True)
    r, body, _ = _get(c, "/docs/big.bin", **{"If-Modified-Since": later})
    assert (r.status, body) == (304, b"")
    r, _, _ = _get(c, "/docs/big.bin", **{"If-Match": '"other"'})
    assert r.status == 412
    # If-Range: the range when the ETag still matches, the whole file when it does not
    r, body, _ = _get(c, "/docs/big.bin", Range="bytes=5-9", **{"If-Range": etag})
    assert (r.status, body) == (206, srv.data[5:10])
    r, body, _ = _get(c, "/docs/big.bin", Range="bytes=5-9", **{"If-Range": '"other"'})
    assert (r.status, body) == (200, srv.data)
    c.close()


def test_curl_download_and_audit(srv, tmp_path):
    # a file of its own: another test's download may still report while this one runs
    assert srv.session().put(f"{srv.url}/docs/audit.bin", data=srv.data).status_code == 201
    out = tmp_path / "got.bin"
    p = curl("-o", str(out), f"{srv.url}/docs/audit.bin")
    assert p.returncode == 0 and out.read_bytes() == srv.data
    part = curl("-r", "100-299", f"{srv.url}/docs/audit.bin").stdout
    assert part == srv.data[100:300]
    deadline = time.time() + 10
    while time.time() < deadline:
        downloads = [f for proto, ev, f in srv.ctx.seen
                     if ev == "download" and f["path"] == "/docs/audit.bin"]
        if len(downloads) >= 2:
            break
        time.sleep(0.05)
    assert [(d["size"], d["complete"]) for d in downloads] == [(SIZE, True), (200, True)]


def test_client_gone_mid_body_is_an_incomplete_download(srv):
    huge = os.urandom(24 << 20)           # far more than the socket buffers hold
    assert srv.session().put(f"{srv.url}/docs/huge.bin", data=huge).status_code == 201
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(f"GET /docs/huge.bin HTTP/1.1\r\nHost: x\r\nAuthorization: {_auth()}\r\n\r\n".encode())
    got = s.recv(1000)
    assert got.startswith(b"HTTP/1.1 200")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()                                  # reset: the server's send fails
    deadline = time.time() + 10
    downloads = []
    while time.time() < deadline and not downloads:
        downloads = [f for proto, ev, f in srv.ctx.seen
                     if ev == "download" and f["path"] == "/docs/huge.bin"]
        time.sleep(0.05)
    assert downloads and downloads[0]["complete"] is False
    assert 0 < downloads[0]["size"] < len(huge)
    # the server still serves others
    c = _conn(srv)
    r, body, _ = _get(c, "/docs/big.bin")
    assert (r.status, body) == (200, srv.data)


def test_https_get_and_range(srv, tmp_path):
    cert, key = self_signed(tmp_path)
    server = start_server(srv.repo, srv.root, ServeContext(tls_cert=cert, tls_key=key),
                          tls=True, block_size=BLOCK)
    try:
        p = curl("--cacert", cert, f"{server.url}/docs/big.bin")
        assert p.stdout == srv.data
        p = curl("--cacert", cert, "-r", f"{BLOCK - 1}-{2 * BLOCK}", f"{server.url}/docs/big.bin")
        assert p.stdout == srv.data[BLOCK - 1:2 * BLOCK + 1]
    finally:
        server.stop()


def test_slow_reader_gets_every_byte(srv):
    """A client that reads slowly through a small receive window: the server's sends are
    partial many times over (sendmsg resumes mid-view); every byte arrives, in order."""
    data = os.urandom(6 << 20)
    assert srv.session().put(f"{srv.url}/docs/slow.bin", data=data).status_code == 201
    server = start_server(srv.repo, srv.root, block_size=4 << 20)   # sends larger than the buffers
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    s.connect(("127.0.0.1", server.port))
    s.settimeout(30)
    s.sendall(f"GET /docs/slow.bin HTTP/1.1\r\nHost: x\r\nAuthorization: {_auth()}\r\n\r\n".encode())
    got = bytearray()
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    head, _, body = bytes(got).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % len(data) in head
    body = bytearray(body)
    while len(body) < len(data):
        chunk = s.recv(7000)
        assert chunk, "connection closed early"
        body += chunk
    s.close()
    server.stop()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_past_version_url_sends_that_versions_bytes(srv, tmp_path):
    """`?version=N` bodies go out the same way as GET's (the Reader's chunk views): the old
    bytes, the announced length, the download counted, and the connection still usable."""
    url = f"{srv.url}/docs/history.bin"
    old, new = os.urandom(SIZE), os.urandom(SIZE // 3)
    s = srv.session()
    assert s.put(url, data=old).status_code == 201
    assert s.put(url, data=new).status_code == 204
    numbers = [v["version"] for v in s.get(url + "?versions").json()["versions"]]
    assert len(numbers) == 2
    out = tmp_path / "old.bin"
    p = curl("-D", str(tmp_path / "h.txt"), "-o", str(out), f"{url}?version={numbers[0]}")
    assert p.returncode == 0 and out.read_bytes() == old
    headers = (tmp_path / "h.txt").read_text().lower()
    assert f"content-length: {SIZE}" in headers and f"x-archive-version: {numbers[0]}" in headers
    c = _conn(srv)                                     # one connection: body, then the next request
    r, body, h = _get(c, f"/docs/history.bin?version={numbers[1]}")
    assert (r.status, body, h["content-length"]) == (200, new, str(len(new)))
    r, body, _ = _get(c, f"/docs/history.bin?version={numbers[0]}", method="HEAD")
    assert (r.status, body) == (200, b"")
    r, body, _ = _get(c, "/docs/big.bin")
    assert (r.status, body) == (200, srv.data)
    deadline = time.time() + 10
    while time.time() < deadline:
        got = sorted((f["size"], f["complete"]) for proto, ev, f in srv.ctx.seen
                     if ev == "download" and f["path"] == "/docs/history.bin")
        if len(got) >= 2:
            break
        time.sleep(0.05)
    assert (SIZE, True) in got and (len(new), True) in got
