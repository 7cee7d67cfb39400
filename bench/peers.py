"""Runners for the three tools the core benchmark compares: Edge Archive, restic and borg.

All three are driven through their command lines, encrypted, with their defaults otherwise
(restic 0.14: repository v2, compression auto = zstd; borg 1.4: repokey-blake2, lz4;
Edge Archive: zstd + AEAD).  Each tool backs up the *same directory path* every time, so
restic's parent snapshot and borg's files cache work as they would for a nightly job.
Every command runs under GNU time, which reports that command's own peak RSS.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

PASSWORD = "bench-passphrase-not-secret"
TIME = "/usr/bin/time"     # GNU time (Debian package `time`)


@dataclass
class Run:
    seconds: float
    max_rss: int          # bytes, of the child (and the children it reaped)
    stdout: str


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None, stdin=None,
        stdout=subprocess.PIPE, check: bool = True) -> Run:
    """Run a command; wall time and the command's own peak RSS.

    The RSS comes from /usr/bin/time (GNU time), not from wait4 on our own child: Linux keeps
    ru_maxrss across exec, so a child forked from this (large) Python process would report at
    least the parent's RSS.  GNU time is small, so its child's figure is the command's own."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as tf:
        full = [TIME, "-o", tf.name, "-f", "%M", *map(str, cmd)]
        t0 = time.perf_counter()
        p = subprocess.Popen(full, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
        out, err = p.communicate()
        dt = time.perf_counter() - t0
        lines = [ln for ln in open(tf.name).read().splitlines() if ln.strip()]
    rss = int(lines[-1]) * 1024 if lines and lines[-1].strip().isdigit() else 0
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} -> rc {p.returncode}\n{(err or b'').decode(errors='replace')[-2000:]}")
    return Run(dt, rss, (out or b"").decode(errors="replace"))


def du(path: Path) -> int:
    """Bytes on disk of a directory as `du -sb` counts them (apparent sizes)."""
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


class Tool:
    name = "?"

    def __init__(self, repo: Path, scratch: Path):
        self.repo, self.scratch = repo, scratch
        self.snapshots: list[str] = []   # one handle per ingest, oldest first

    def env(self) -> dict:
        return dict(os.environ)

    def init(self) -> None:
        raise NotImplementedError

    def ingest(self, src: Path, label: str) -> Run:
        raise NotImplementedError

    def restore(self, index: int, dest: Path) -> Run:
        """Restore snapshot `index` (0 = oldest, -1 = newest) of the ingested tree into dest."""
        raise NotImplementedError

    def stored(self) -> int:
        return du(self.repo)

    def reset(self) -> None:
        for p in (self.repo, self.scratch):
            if p.exists():
                shutil.rmtree(p)
        self.scratch.mkdir(parents=True)
        self.snapshots = []


class Restic(Tool):
    name = "restic"

    def env(self) -> dict:
        e = dict(os.environ, RESTIC_PASSWORD=PASSWORD, RESTIC_REPOSITORY=str(self.repo),
                 RESTIC_CACHE_DIR=str(self.scratch / "cache"))
        return e

    def init(self) -> None:
        run(["restic", "init", "-q"], env=self.env())

    def ingest(self, src: Path, label: str) -> Run:
        r = run(["restic", "backup", "--json", "-q", "--host", "bench", "--tag", label, "."], cwd=src, env=self.env())
        sid = None
        for line in r.stdout.splitlines():
            if '"snapshot_id"' in line:
                import json
                sid = json.loads(line)["snapshot_id"]
        if not sid:
            raise RuntimeError(f"restic backup printed no snapshot id: {r.stdout[-500:]}")
        self.snapshots.append(sid)
        return r

    def restore(self, index: int, dest: Path) -> Run:
        dest.mkdir(parents=True, exist_ok=True)
        return run(["restic", "restore", "-q", self.snapshots[index], "--target", str(dest)], env=self.env())


class Borg(Tool):
    name = "borg"

    def env(self) -> dict:
        b = self.scratch / "borg"
        return dict(os.environ, BORG_PASSPHRASE=PASSWORD, BORG_BASE_DIR=str(b),
                    BORG_CACHE_DIR=str(b / "cache"), BORG_CONFIG_DIR=str(b / "config"),
                    BORG_SECURITY_DIR=str(b / "security"), BORG_KEYS_DIR=str(b / "keys"),
                    BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")

    def init(self) -> None:
        run(["borg", "init", "-e", "repokey-blake2", str(self.repo)], env=self.env())

    def ingest(self, src: Path, label: str) -> Run:
        name = f"{label}-{len(self.snapshots):03d}"
        r = run(["borg", "create", f"{self.repo}::{name}", "."], cwd=src, env=self.env())
        self.snapshots.append(name)
        return r

    def restore(self, index: int, dest: Path) -> Run:
        dest.mkdir(parents=True, exist_ok=True)
        return run(["borg", "extract", f"{self.repo}::{self.snapshots[index]}"], cwd=dest, env=self.env())


class Edge(Tool):
    """Edge Archive through `archivectl`.  Versions files in place: every ingest puts the tree
    onto the same share path; a snapshot handle is the wall-clock time just after the put,
    restored with `get --at ISO-8601`.  `put` skips files whose size and mtime match the current
    version, as restic's parent snapshot and borg's files cache do."""

    name = "edge"
    share = "bench"

    def __init__(self, repo: Path, scratch: Path, init_args: list[str] | None = None, dest: str = "/tree"):
        super().__init__(repo, scratch)
        self.init_args = init_args or []
        self.dest = dest

    def env(self) -> dict:
        return dict(os.environ, EDGE_ARCHIVE_PASSWORD=PASSWORD)

    def ctl(self, *args: str, **kw) -> Run:
        return run(["archivectl", "--repo", str(self.repo), *args], env=self.env(), **kw)

    def init(self) -> None:
        self.ctl("init", "--encrypt", *self.init_args)
        self.ctl("share", "add", self.share)

    def ingest(self, src: Path, label: str) -> Run:
        r = self.ctl("put", str(src), f"/{self.share}{self.dest}")
        time.sleep(0.01)    # keep the handle strictly after the last commit and before the next
        self.snapshots.append(datetime.now(timezone.utc).isoformat())
        return r

    def restore(self, index: int, dest: Path) -> Run:
        dest.parent.mkdir(parents=True, exist_ok=True)
        args = ["get", f"/{self.share}{self.dest}", str(dest)]
        if index != -1 and index != len(self.snapshots) - 1:
            args += ["--at", self.snapshots[index]]
        return self.ctl(*args)

    def stats(self) -> dict:
        import json
        return json.loads(self.ctl("stats", "--json").stdout)


TOOLS = {"edge": Edge, "restic": Restic, "borg": Borg}


def versions_info() -> dict[str, str]:
    out = {}
    for name, cmd in (("restic", ["restic", "version"]), ("borg", ["borg", "--version"])):
        try:
            out[name] = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except FileNotFoundError:
            out[name] = "MISSING"
    return out
