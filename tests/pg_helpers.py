"""A throwaway PostgreSQL cluster for the tests (Debian's `postgresql` package).

`initdb` refuses to run as root, so as root the cluster belongs to the `postgres` user
(`runuser -u postgres -- ...`); it listens on a free loopback port with its socket in its own
temporary folder, `fsync=off` (nothing here must survive a power cut).  One cluster serves
the whole session; each test gets a fresh database from `new_url()`.
A missing PostgreSQL is a failure, never a skip: the catalog must be tested on both engines.
"""
from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (Debian package `postgresql`, see tests/apt-packages.txt)")
    return Path(found[-1]).parent


class PgCluster:
    """Start with `start()`, stop with `stop()`; `new_url()` creates an empty database."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="edge-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._n = itertools.count()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> "PgCluster":
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        p = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start",
                      check=False)
        if p.returncode != 0:
            log = (self.root / "log").read_text(errors="replace") if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {p.stdout}{p.stderr}{log}")
        return self

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str, db: str = "postgres") -> None:
        import psycopg
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname={db}", autocommit=True) as c:
            c.execute(statement)

    def new_url(self, prefix: str = "t") -> str:
        name = f"{prefix}{os.getpid()}_{next(self._n)}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def writer_process(path: str, catalog: str, tag: str, n: int) -> None:
    """A second appliance process (spawned): n versions of one shared file and n own files."""
    from archive import Repository
    r = Repository.open(path, catalog_url=catalog)
    fs = r.share("office")
    for i in range(n):
        with fs.open_write("/shared.txt") as w:
            w.write(f"{tag}-{i}".encode())
        with fs.open_write(f"/{tag}-{i}.txt") as w:
            w.write(tag.encode())
    r.close()
