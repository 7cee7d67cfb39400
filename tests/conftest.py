"""Shared fixtures for the core tests: a fresh repository and a way to run the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archive import Origin, Repository


@pytest.fixture(autouse=True)
def _default_repository_in_tmp(tmp_path_factory, monkeypatch):
    """The default repository (no --repo, no EDGE_ARCHIVE_REPO) is $XDG_DATA_HOME/edge-archive,
    and /var/lib/edge-archive for root: point it into a temporary folder so that no test (nor
    the archivectl processes it starts, which inherit the environment) touches the machine's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


@pytest.fixture
def repo(tmp_path: Path):
    """An unencrypted repository with share 'office', users alice (rw) and bob (ro)."""
    r = Repository.init(tmp_path / "repo")
    r.add_share("office")
    r.add_user("alice", "alice-pw")
    r.add_user("bob", "bob-pw")
    r.grant("alice", "office", "rw")
    r.grant("bob", "office", "ro")
    yield r
    r.close()


@pytest.fixture
def fs(repo):
    return repo.share("office", user=repo.authenticate("alice", "alice-pw"), origin=Origin("test", "127.0.0.1"))


def put_bytes(fs, path: str, data: bytes):
    with fs.open_write(path) as w:
        w.write(data)
    return fs.stat(path)


class CLI:
    """Runs the installed `archivectl` as a user would, against one repository."""

    def __init__(self, repo_path: Path, env: dict | None = None):
        self.repo_path = repo_path
        self.env = {**os.environ, "EDGE_ARCHIVE_REPO": str(repo_path), **(env or {})}
        self.env.pop("EDGE_ARCHIVE_CONFIG", None)

    def __call__(self, *args: str, input: bytes | None = None, ok: bool = True, env: dict | None = None):
        p = subprocess.run([sys.executable, "-m", "archive", *args], input=input, capture_output=True,
                           env={**self.env, **(env or {})}, timeout=120)
        if ok and p.returncode != 0:
            raise AssertionError(f"archivectl {' '.join(args)} failed ({p.returncode}):\n"
                                 f"{p.stdout.decode()}\n{p.stderr.decode()}")
        return p


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path / "clirepo")


from scaleout_fixtures import pg, s3  # noqa: E402,F401  (session-scoped engines: PostgreSQL, S3)
