"""The S3 adapter's HTTP connections: a keep-alive client's next request is served by the worker
that just answered it (protocols.s3._Connection), without starving other clients of workers."""
from __future__ import annotations

import hashlib
import os
import threading

import pytest

from tests.s3_helpers import make_server


@pytest.fixture
def small_server(tmp_path):
    s = make_server(tmp_path, threads=2)          # fewer workers than clients below
    yield s
    s.adapter.stop(1.0)
    s.repo.close()


def test_sequential_requests_on_one_connection(small_server):
    s3 = small_server.client(max_pool_connections=1)
    sent = {}
    for i in range(40):
        data = os.urandom(100 + i * 37)
        key = f"seq/k{i % 7}"
        r = s3.put_object(Bucket="data", Key=key, Body=data)
        sent.setdefault(key, []).append((r["VersionId"], data))
        assert s3.get_object(Bucket="data", Key=key)["Body"].read() == data
    for key, puts in sent.items():
        assert [v for v, _ in puts] == [str(n) for n in range(1, len(puts) + 1)]
        for vid, data in puts:
            got = s3.get_object(Bucket="data", Key=key, VersionId=vid)["Body"].read()
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_more_keepalive_clients_than_workers(small_server):
    """Six clients on their own kept-alive connections, two workers: a worker that waits for
    its connection's next request must give way, so every client finishes (each keeps its
    connection open and idle until all are done)."""
    errors: list[BaseException] = []
    done: dict[int, int] = {}
    all_done = threading.Barrier(6, timeout=90)

    def client(n: int) -> None:
        try:
            s3 = small_server.client(max_pool_connections=1, read_timeout=30, connect_timeout=30)
            for i in range(15):
                body = f"client {n} put {i}".encode()
                s3.put_object(Bucket="data", Key=f"many/c{n}", Body=body)
                assert s3.get_object(Bucket="data", Key=f"many/c{n}")["Body"].read() == body
            done[n] = 15
            all_done.wait()
            s3.close()
        except BaseException as e:      # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert not errors, errors
    assert done == {n: 15 for n in range(6)}
    admin = small_server.admin("data")
    assert sorted(e.name for e in admin.listdir("/many")) == [f"c{n}" for n in range(6)]
    assert all(len(admin.versions(f"/many/c{n}")) == 15 for n in range(6))


def test_stop_with_an_idle_keepalive_client(tmp_path):
    s = make_server(tmp_path)
    try:
        s3 = s.client()
        s3.put_object(Bucket="data", Key="idle", Body=b"x")     # the connection stays open, idle
        s.adapter.stop(1.0)
        assert s.adapter._server is None
        assert not s.adapter._thread.is_alive()
    finally:
        s.repo.close()


def _raw_put(server, sock, path: str, body: bytes, expect: bool = True) -> tuple[bytes, bytes]:
    """One signed PUT on an open socket; returns (what came before the body was sent, reply)."""
    from tests.test_s3 import _signed
    h = _signed(server, "PUT", path, body)
    host = server.url.split("//", 1)[1]
    head = f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in h.items())
    head += "Expect: 100-continue\r\n\r\n" if expect else "\r\n"
    sock.sendall(head.encode())
    interim = b""
    if expect:
        while b"\r\n\r\n" not in interim:          # the client waits for the 100, as botocore does
            got = sock.recv(4096)
            assert got, "connection closed before 100 Continue"
            interim += got
    sock.sendall(body)
    reply = b""
    while b"\r\n\r\n" not in reply:
        got = sock.recv(4096)
        assert got, "connection closed before the reply"
        reply += got
    head_end = reply.index(b"\r\n\r\n") + 4
    length = next(int(line.split(b":", 1)[1]) for line in reply[:head_end].split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(reply) < head_end + length:             # the whole reply, so the next one starts clean
        got = sock.recv(4096)
        assert got, "connection closed in the reply's body"
        reply += got
    assert len(reply) == head_end + length
    return interim, reply


def test_expect_100_continue_on_a_kept_alive_connection(small_server):
    import socket
    host, port = small_server.url.split("//", 1)[1].split(":")
    admin = small_server.admin("data")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        for i in range(3):
            body = os.urandom(5000 + i)
            interim, reply = _raw_put(small_server, sock, f"/data/cont/k{i}", body, expect=i != 1)
            if i != 1:
                assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            assert reply.startswith(b"HTTP/1.1 200 "), reply
            with admin.open_read(f"/cont/k{i}") as r:
                assert r.read() == body
        # refused before its body (ungranted bucket): the 100 still comes, the body is drained
        # and the connection serves the next request
        interim, reply = _raw_put(small_server, sock, "/secret/x", b"y" * 3000)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert reply.startswith(b"HTTP/1.1 403 "), reply
        interim, reply = _raw_put(small_server, sock, "/data/cont/after", b"z" * 10)
        assert reply.startswith(b"HTTP/1.1 200 "), reply
    with admin.open_read("/cont/after") as r:
        assert r.read() == b"z" * 10


def test_expect_100_continue_with_an_empty_body(small_server):
    """Nothing to read, so no 100 goes out: the final reply comes without the client sending
    anything more (a client that waits for the 100 or the reply is not left waiting)."""
    import socket
    from tests.test_s3 import _signed
    host, port = small_server.url.split("//", 1)[1].split(":")
    h = _signed(small_server, "PUT", "/data/cont/empty", b"")
    head = f"PUT /data/cont/empty HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "Expect: 100-continue\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head.encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            got = sock.recv(4096)
            assert got, "connection closed before the reply"
            reply += got
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    assert small_server.admin("data").stat("/cont/empty").size == 0
    import io
    s3 = small_server.client()                     # boto3 sends Expect with a file-like body
    r = s3.put_object(Bucket="data", Key="cont/empty", Body=io.BytesIO(b""))
    assert r["VersionId"] == "2"
    assert s3.get_object(Bucket="data", Key="cont/empty")["Body"].read() == b""
