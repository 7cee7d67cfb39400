"""Helpers for tests/test_serve.py: a third-party adapter and process plumbing.

`UploadAdapter` is a deliberately tiny protocol ("upload") that a third party could ship:
tests install it the way a package would, by writing a ``*.dist-info`` directory with an
``entry_points.txt`` onto PYTHONPATH, so `archivectl serve` discovers it through the real
entry-point group.  It speaks a line protocol over TCP, streams uploads into ShareFS and,
like the real adapters, honours stop(grace): stop accepting, let transfers finish, abort
the rest (never committing a partial version).

    server: HELLO <banner>
    client: LOGIN <user> <password>          -> OK | ERR auth
    client: PUT <share> <path> <size>  + data -> OK version=<n> size=<size> | ERR <why>
    client: GET <share> <path>               -> OK <size> + data | ERR <why>
"""
from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from typing import Any

from archive import Origin, errors
from protocols.config import parse_listen

CHUNK = 64 * 1024


class _Handler(socketserver.BaseRequestHandler):
    """One session.  Reads with a short socket timeout (raw recv: a socket file object is
    unusable after a timeout) so that it notices shutdown while a client is idle or stalled."""

    def setup(self) -> None:
        self.request.settimeout(0.2)
        self.buf = b""

    def _recv(self) -> bytes | None:
        """Some bytes, b"" at EOF, None when shutting down."""
        a = self.server.adapter
        while True:
            if a.aborting.is_set():
                return None
            try:
                return self.request.recv(CHUNK)
            except (socket.timeout, TimeoutError):
                if a.aborting.is_set() or (a.stopping.is_set() and not self.in_transfer):
                    return None

    in_transfer = False

    def _line(self) -> str | None:
        while b"\n" not in self.buf:
            data = self._recv()
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().strip()

    def _read_some(self, n: int) -> bytes | None:
        if not self.buf:
            data = self._recv()
            if not data:
                return data
            self.buf = data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, text: str) -> None:
        self.request.sendall(text.encode() + b"\n")

    def handle(self) -> None:
        a = self.server.adapter
        ctx = a.ctx
        addr = self.client_address[0]
        ctx.event("upload", "connect", address=addr)
        user = None
        try:
            self._send(f"HELLO {a.config.get('banner', 'upload')}")
            while True:
                line = self._line()
                if not line:
                    return
                cmd, *args = line.split(" ")
                if cmd == "LOGIN":
                    try:
                        user = a.repo.authenticate(args[0], args[1])
                        ctx.event("upload", "login_ok", user=args[0], address=addr)
                        self._send("OK")
                    except errors.AuthFailed:
                        ctx.event("upload", "login_failed", user=args[0], address=addr)
                        self._send("ERR auth")
                elif cmd == "PUT" and user is not None:
                    self._put(user, args[0], args[1], int(args[2]), addr)
                elif cmd == "GET" and user is not None:
                    self._get(user, args[0], args[1], addr)
                elif cmd == "QUIT":
                    return
                else:
                    self._send("ERR command")
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            ctx.event("upload", "disconnect", address=addr)

    def _put(self, user: Any, share: str, path: str, size: int, addr: str) -> None:
        a = self.server.adapter
        fs = a.repo.share(share, user=user, origin=Origin("upload", addr))
        writer = fs.open_write(path)
        with a.lock:
            a.active += 1
        self.in_transfer = True
        try:
            left = size
            while left:
                data = self._read_some(min(CHUNK, left))
                if not data:          # client gone, or aborted at the end of the grace period
                    writer.abort()
                    if data is None:
                        a.ctx.event("upload", "error", reason="aborted at shutdown", path=path)
                    return
                writer.write(data)
                left -= len(data)
            version = writer.commit()
            a.ctx.event("upload", "commit", path=path, size=size, user=user.name)
            self._send(f"OK version={version.number} size={size}")
        except BaseException:
            try:
                writer.abort()
            except Exception:
                pass
            raise
        finally:
            self.in_transfer = False
            with a.lock:
                a.active -= 1

    def _get(self, user: Any, share: str, path: str, addr: str) -> None:
        a = self.server.adapter
        fs = a.repo.share(share, user=user, origin=Origin("upload", addr))
        try:
            reader = fs.open_read(path)
        except errors.NotFound:
            self._send("ERR not found")
            return
        with reader:
            self._send(f"OK {reader.size}")
            while True:
                data = reader.read(CHUNK)
                if not data:
                    break
                self.request.sendall(data)
        a.ctx.event("upload", "download", path=path, size=reader.size)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class UploadAdapter:
    """A minimal third-party adapter implementing protocols/base.py's contract."""

    name = "upload"
    config_keys = {"banner": "upload"}
    default_listen = "127.0.0.1:0"

    def __init__(self, repo: Any, config: dict[str, Any], ctx: Any) -> None:
        self.repo, self.config, self.ctx = repo, config, ctx
        self.host, self.port = parse_listen(config["listen"])
        self.stopping = threading.Event()
        self.aborting = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.server: _Server | None = None

    def start(self) -> None:
        self.server = _Server((self.host, self.port), _Handler)  # OSError on bind failure
        self.server.adapter = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="upload-accept", daemon=True).start()

    def stop(self, grace: float) -> None:
        assert self.server is not None
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        deadline = time.monotonic() + grace
        while self.active and time.monotonic() < deadline:
            time.sleep(0.05)
        self.aborting.set()
        while self.active:
            time.sleep(0.05)

    def reload(self, config: dict[str, Any]) -> None:
        self.config = config

    def urls(self) -> list[str]:
        return [f"upload://{self.host}:{self.port}"]


# ------------------------------------------------------------------------------- test plumbing

def install_fake_package(root: str, entry_points: dict[str, str], name: str = "edge_archive_testproto") -> str:
    """Write a dist-info directory declaring `entry_points` in group edge_archive.protocols,
    as installing a third-party package would; returns the directory to put on PYTHONPATH."""
    dist = os.path.join(root, f"{name}-0.1.dist-info")
    os.makedirs(dist, exist_ok=True)
    with open(os.path.join(dist, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    with open(os.path.join(dist, "entry_points.txt"), "w") as f:
        f.write("[edge_archive.protocols]\n")
        for k, v in entry_points.items():
            f.write(f"{k} = {v}\n")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UploadClient:
    """Client side of the "upload" protocol (for the third-party adapter)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.f = self.sock.makefile("rwb")
        self.hello = self.f.readline().decode().strip()

    def cmd(self, line: str) -> str:
        self.f.write(line.encode() + b"\n")
        self.f.flush()
        return self.f.readline().decode().strip()

    def put_start(self, share: str, path: str, size: int, first: bytes) -> None:
        self.f.write(f"PUT {share} {path} {size}\n".encode() + first)
        self.f.flush()

    def put(self, share: str, path: str, data: bytes) -> str:
        self.put_start(share, path, len(data), data)
        return self.f.readline().decode().strip()

    def close(self) -> None:
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


class ServeProcess:
    """`archivectl serve` as a real subprocess; stdout/stderr go to files the test reads."""

    def __init__(self, args: list[str], cwd: str, env: dict[str, str], tmp: str, tag: str = "serve") -> None:
        self.out_path = os.path.join(tmp, f"{tag}.out")
        self.err_path = os.path.join(tmp, f"{tag}.err")
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=self.out, stderr=self.err,
                                     stdin=subprocess.DEVNULL)

    def stdout(self) -> str:
        with open(self.out_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stderr(self) -> str:
        with open(self.err_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for(self, text: str, where: str = "stderr", timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.stderr() if where == "stderr" else self.stdout()
            if text in got:
                return got
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited ({self.proc.returncode}) before {text!r}\n"
                                     f"stdout:\n{self.stdout()}\nstderr:\n{self.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"timeout waiting for {text!r}\nstdout:\n{self.stdout()}\nstderr:\n{self.stderr()}")

    def ready(self) -> "ServeProcess":
        self.wait_for("event=ready")
        return self

    def urls(self) -> dict[str, str]:
        out = {}
        for line in self.stdout().splitlines():
            parts = line.split()
            if len(parts) == 2 and "://" in parts[1]:
                out[parts[0]] = parts[1]
        return out

    def port(self, name: str) -> int:
        return int(self.urls()[name].rsplit(":", 1)[1].split("/")[0])

    def finish(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.out.close()
            self.err.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()


def archivectl() -> list[str]:
    """How to run archivectl: the console script of the environment running the tests
    (tests/run.sh installs it into .venv), else the one on PATH."""
    import shutil
    beside = os.path.join(os.path.dirname(sys.executable), "archivectl")
    exe = beside if os.access(beside, os.X_OK) else shutil.which("archivectl")
    if exe is None:
        raise AssertionError("archivectl is not installed: run `pip install -e .` (tests/run.sh does)")
    return [exe]


def python_env(extra_paths: list[str], **env: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_ARCHIVE_") and k != "NOTIFY_SOCKET"}
    here = os.path.dirname(os.path.abspath(__file__))
    e["PYTHONPATH"] = os.pathsep.join(extra_paths + [here] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    e.update(env)
    return e


__all__ = ["UploadAdapter", "UploadClient", "ServeProcess", "install_fake_package", "free_port", "archivectl",
           "python_env", "sys"]
