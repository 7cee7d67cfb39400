"""Hostile HTTP against the real WebDAV server over raw sockets (and curl): every shape gets
a clear 4xx, nothing is stored, the server keeps serving; slow clients cannot starve it."""
from __future__ import annotations

import base64
import os
import socket
import threading
import time

import pytest

from test_webdav import dav  # noqa: F401 - a module-scoped server fixture
from webdav_helpers import QUOTA, USERS, curl, make_repo, start_server

AUTH = "Basic " + base64.b64encode(f"alice:{USERS['alice']}".encode()).decode()


def exchange(port: int, data: bytes, source: str = "127.0.0.1", timeout: float = 20) -> bytes:
    """Send raw bytes, return everything the server answers until it closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            out += got
        return out
    finally:
        s.close()


def request(method: str, path: bytes | str, headers: list[str] = (), body: bytes = b"",
            auth: str | None = AUTH) -> bytes:
    if isinstance(path, str):
        path = path.encode()
    head = [f"Host: 127.0.0.1", "Connection: close"] + ([f"Authorization: {auth}"] if auth else [])
    head += list(headers)
    return method.encode() + b" " + path + b" HTTP/1.1\r\n" + "".join(h + "\r\n" for h in head).encode() \
        + b"\r\n" + body


def status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def names(dav, share: str = "docs") -> list[str]:
    return sorted(e.name for e in dav.admin(share).listdir("/"))


SMUGGLING = {
    "negative chunk size": (["Transfer-Encoding: chunked"], b"-3\r\nabc\r\n0\r\n\r\n"),
    "content-length with chunked": (["Content-Length: 3", "Transfer-Encoding: chunked"],
                                    b"3\r\nabc\r\n0\r\n\r\n"),
    "two content-lengths": (["Content-Length: 3", "Content-Length: 5"], b"abcde"),
    "content-length -1": (["Content-Length: -1"], b"abc"),
    "invalid chunk size": (["Transfer-Encoding: chunked"], b"zz\r\nabc\r\n0\r\n\r\n"),
    "huge chunk size": (["Transfer-Encoding: chunked"], b"f" * 40 + b"\r\nabc\r\n0\r\n\r\n"),
    "over-long chunk line": (["Transfer-Encoding: chunked"], b"3;" + b"x" * 70000 + b"\r\nabc\r\n0\r\n\r\n"),
    "chunk without CRLF": (["Transfer-Encoding: chunked"], b"3\r\nabcXY0\r\n\r\n"),
    "space before colon": (["Content-Length : 3"], b"abc"),
    "over-long header line": (["Content-Length: 3", "X-Long: " + "a" * 20000], b"abc"),
    "too many header fields": (["Content-Length: 3"] + [f"X-H{i}: v" for i in range(300)], b"abc"),
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_ambiguous_or_broken_framing_is_400_and_stores_nothing(dav, case):
    headers, body = SMUGGLING[case]
    path = f"/docs/smuggle-{case.replace(' ', '-')}.txt"
    # a second request pipelined behind the first: it must never be executed
    follow = request("PUT", "/docs/smuggled-second.txt", ["Content-Length: 1"], b"z")
    answer = exchange(dav.port, request("PUT", path, headers, body) + follow)
    assert status(answer) == 400, answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1            # connection closed after the 400
    assert names(dav) == [] or all(not n.startswith("smuggl") for n in names(dav))


def test_valid_chunked_put_still_commits(dav):
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    answer = exchange(dav.port, request("PUT", "/docs/chunked-ok.txt", ["Transfer-Encoding: chunked"], body))
    assert status(answer) == 201, answer[:300]
    with dav.admin().open_read("/chunked-ok.txt") as r:
        assert r.read() == b"hello world"


@pytest.mark.parametrize("method,path,headers,expect", [
    ("PUT", "/docs/%2e%2e/escape.txt", ["Content-Length: 1"], 400),
    ("PUT", "/docs/a/%2E%2e/%2e%2e/%2e%2e/escape.txt", ["Content-Length: 1"], 400),
    ("DELETE", "/docs/%2e%2e/", [], 400),
    ("DELETE", "/docs/./keep.txt", [], 400),
    ("DELETE", "/", [], 403),
    ("MOVE", "/", ["Destination: /x/"], 403),
    ("COPY", "/docs/keep.txt", ["Destination: "], 400),
    ("COPY", "/docs/keep.txt", ["Destination: http://127.0.0.1"], 400),
    ("COPY", "/docs/keep.txt", ["Destination: http://[::1/docs/x.txt"], 400),
    ("COPY", "/docs/keep.txt", ["Destination: http://127.0.0.1:99999/docs/x.txt"], 400),
    ("MOVE", "/docs/keep.txt", ["Destination: ftp://127.0.0.1/docs/x.txt"], 400),
    ("MOVE", "/docs/keep.txt", ["Destination: docs/x.txt"], 400),
    ("COPY", "/docs/keep.txt", [], 400),
    ("MOVE", "/docs/keep.txt", ["Destination: /docs/%2e%2e/x.txt"], 400),
    ("GET", "/docs/%ff%fe.txt", [], 400),
    ("PUT", b"/docs/\xff\xfe.txt", ["Content-Length: 1"], 400),
])
def test_bad_paths_and_destinations_are_4xx(dav, method, path, headers, expect):
    w = dav.admin().open_write("/keep.txt")
    w.write(b"keep")
    w.commit()
    before = [v.number for v in dav.admin().versions("/keep.txt")]
    body = b"x" if any(h.startswith("Content-Length") for h in headers) else b""
    answer = exchange(dav.port, request(method, path, headers, body))
    assert status(answer) == expect, answer[:300]
    assert [v.number for v in dav.admin().versions("/keep.txt")] == before
    assert "escape.txt" not in names(dav) and "x.txt" not in names(dav)


def test_propfind_with_unknown_encoding_and_doctype_gets_400(dav):
    xml = b'<?xml version="1.0" encoding="x-bogus"?><!DOCTYPE a><propfind xmlns="DAV:"><allprop/></propfind>'
    answer = exchange(dav.port, request("PROPFIND", "/docs/", ["Depth: 0", "Content-Type: text/xml",
                                                               f"Content-Length: {len(xml)}"], xml))
    assert status(answer) == 400, answer[:300]


@pytest.mark.parametrize("token", ["!!!garbage", base64.b64encode(b"no-colon").decode(),
                                   base64.b64encode(b"\xff\xfe:\xff").decode(), "", "YQ"])
def test_garbage_basic_credentials_get_400_or_401(dav, token):
    answer = exchange(dav.port, request("GET", "/docs/", auth=f"Basic {token}"))
    assert status(answer) in (400, 401), answer[:300]


def test_server_still_serves_after_all_of_it(dav):
    answer = exchange(dav.port, request("PUT", "/docs/after.txt", ["Content-Length: 2"], b"ok"))
    assert status(answer) in (201, 204)
    assert status(exchange(dav.port, request("GET", "/docs/after.txt"))) == 200


def test_quota_over_curl_put_is_a_clear_507(dav, tmp_path):
    """curl sees our 507 and its message, whether the size is announced or not: the server
    reads (and drops) the rest of the body instead of resetting the connection."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(QUOTA * 40))
    for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
        p = curl("-T", str(big), *extra, "-w", "\n%{http_code}", f"http://127.0.0.1:{dav.port}/small/big.bin")
        assert p.returncode == 0, p.stderr
        assert p.stdout.endswith(b"\n507"), p.stdout[-300:]
        assert b"quota" in p.stdout.lower()
    assert "big.bin" not in names(dav, "small")


# -- slow clients ----------------------------------------------------------------------------

def _trickle(port: int, source: str, results: list, stop: threading.Event, every: float) -> None:
    """A client that sends one header line every `every` seconds and never finishes."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    except OSError as exc:
        results.append(("connect-failed", repr(exc)))
        return
    try:
        s.sendall(b"GET /docs/ HTTP/1.1\r\nHost: x\r\n")
        n = 0
        while not stop.is_set():
            s.settimeout(every)
            try:
                got = s.recv(4096)
                results.append(("answered" if got else "closed", got[:40]))
                return
            except (socket.timeout, TimeoutError):
                pass
            try:
                s.sendall(f"X-Slow-{n}: y\r\n".encode())
            except OSError:
                results.append(("closed", b""))
                return
            n += 1
        results.append(("still-open", b""))
    except OSError:
        results.append(("closed", b""))
    finally:
        s.close()


def test_trickling_clients_do_not_starve_a_normal_get(tmp_path):
    """20 connections (from 127.0.0.2) trickle header lines; a normal GET (from 127.0.0.1)
    is still answered, the per-address limit refuses the excess with 503 and the header
    deadline closes the rest.  Bounded in time: every socket has a timeout."""
    repo = make_repo(tmp_path)
    server = start_server(repo, tmp_path, threads=8, header_timeout=3, max_connections_per_address=4)
    stop = threading.Event()
    results: list = []
    threads = [threading.Thread(target=_trickle, args=(server.port, "127.0.0.2", results, stop, 0.5))
               for _ in range(20)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)                          # the tricklers hold what they can get
        answer = exchange(server.port, request("GET", "/docs/"), timeout=15)
        assert status(answer) == 200, answer[:300]
        for t in threads:
            t.join(timeout=20)
        kinds = [k for k, _ in results]
        assert len(kinds) == 20 and "still-open" not in kinds, results
        assert any(got.startswith(b"HTTP/1.1 503") for k, got in results), results
        assert server.adapter.guard.timed_out >= 1
        end = time.monotonic() + 20              # workers finish unwinding the closed ones
        while server.adapter.guard.active() and time.monotonic() < end:
            time.sleep(0.1)
        assert server.adapter.guard.active() == 0
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
        server.stop()
        repo.close()


def test_trickled_body_is_cut_and_not_stored(tmp_path):
    repo = make_repo(tmp_path)
    server = start_server(repo, tmp_path, body_timeout=1.5, body_min_rate=1024)
    try:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        s.sendall(request("PUT", "/docs/slow.bin", ["Content-Length: 100000"], b"x" * 10))
        closed = False
        for _ in range(40):                      # 1 byte every 0.25 s, at most 10 s
            try:
                s.sendall(b"x")
                s.settimeout(0.25)
                if s.recv(4096) == b"":
                    closed = True
                    break
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                closed = True
                break
        s.close()
        assert closed
        assert "slow.bin" not in sorted(e.name for e in repo.share("docs", user=None).listdir("/"))
        assert status(exchange(server.port, request("GET", "/docs/"))) == 200
    finally:
        server.stop()
        repo.close()
