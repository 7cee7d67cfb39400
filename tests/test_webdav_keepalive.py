"""Keep-alive connections served in a row by one worker (connections.EdgeConnection): many
requests on one connection, the connection closed after an error answer, and a busy client
never starving another one, even with a single worker thread."""
from __future__ import annotations

import base64
import http.client
import socket
import threading

import pytest

from webdav_helpers import USERS, make_repo, start_server


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    root = tmp_path_factory.mktemp("webdav-keepalive")
    repo = make_repo(root)
    server = start_server(repo, root, threads=1, max_connections_per_address=0)
    assert server.session().put(f"{server.url}/docs/k.txt", data=b"keep").status_code == 201
    yield server
    server.stop()
    repo.close()


def _auth() -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"alice:{USERS['alice']}".encode()).decode()}


def test_many_requests_on_one_connection(one_worker):
    c = http.client.HTTPConnection("127.0.0.1", one_worker.port, timeout=30)
    c.request("MKCOL", "/docs/ka/", headers=_auth())
    r = c.getresponse()
    assert (r.status, r.read()[:0]) == (201, b"")
    sock = c.sock
    for i in range(50):
        c.request("PUT", f"/docs/ka/{i}.txt", body=b"x%d" % i, headers=_auth())
        r = c.getresponse()
        r.read()
        assert r.status == 201, (i, r.status)
        assert c.sock is sock                  # no reconnect
    c.request("GET", "/docs/ka/49.txt", headers=_auth())
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"x49")
    assert one_worker.admin().stat("/ka/17.txt").size == 3


def test_error_answer_closes_the_connection(one_worker):
    s = socket.create_connection(("127.0.0.1", one_worker.port), timeout=10)
    s.sendall(b"GET /docs/k.txt#frag HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while chunk := s.recv(65536):              # ends: the server closed its side
        got += chunk
    assert got.startswith(b"HTTP/1.1 400")
    # and the single worker is free for the next client
    c = http.client.HTTPConnection("127.0.0.1", one_worker.port, timeout=10)
    c.request("GET", "/docs/k.txt", headers=_auth())
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"keep")


def test_busy_client_does_not_starve_another(one_worker):
    """One worker; client A sends 300 requests back to back; client B's requests are answered
    while A is still busy (A hands its worker back when another connection waits)."""
    a_done = threading.Event()
    errors: list = []

    def client_a() -> None:
        try:
            c = http.client.HTTPConnection("127.0.0.1", one_worker.port, timeout=30)
            for _ in range(300):
                c.request("GET", "/docs/k.txt", headers=_auth())
                r = c.getresponse()
                assert (r.status, r.read()) == (200, b"keep")
        except Exception as exc:               # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            a_done.set()

    t = threading.Thread(target=client_a)
    t.start()
    try:
        b = http.client.HTTPConnection("127.0.0.1", one_worker.port, timeout=30)
        for _ in range(3):
            b.request("GET", "/docs/k.txt", headers=_auth())
            r = b.getresponse()
            assert (r.status, r.read()) == (200, b"keep")
        assert not a_done.is_set(), "B was served only after A finished"
    finally:
        t.join(60)
    assert not errors, errors
