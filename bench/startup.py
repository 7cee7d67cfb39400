"""The fixed cost of one command: Edge Archive vs borg vs restic, in the same run.

    python -m bench.startup                   # 15 rounds, every workload, every tool found
    python -m bench.startup --rounds 31 --only ls,get
    python -m bench.startup --importtime      # + `python -X importtime` of `archivectl ls`
    python -m bench.startup --baseline /tmp/old   # + "edge@base": the package as checked out in
                                              #   /tmp/old (git archive COMMIT | tar -x -C /tmp/old)

Each tool gets an encrypted repository holding one small file, then every workload runs once
per tool per round, the tools interleaved inside a round (so a load spike from the other
users of the machine hits all of them alike).  Printed: the median and the spread
(25th-75th percentile) of the wall time of each command, the median CPU time (user + system,
from getrusage of the child: much less disturbed than wall time when the machine is shared),
and edge/peer ratios of the medians (< 1 means Edge Archive is faster).

Workloads (the same intent for every tool):

* ``version``: print the version; the bare interpreter + CLI start (no repository).
* ``ls``: list the repository's one folder / the archives (``archivectl ls /bench``,
  ``borg list REPO``, ``restic snapshots``): open the repository, unlock the key, read a catalog.
* ``get``: one small file to stdout (``archivectl get /bench/one.txt -``,
  ``borg extract --stdout REPO::a0 one.txt``, ``restic dump latest /one.txt``).
  Edge Archive answers ``ls`` and ``get`` of a local repository through the CLI's lean read
  path (archive/cli/lean.py: stdlib sqlite3, no SQLAlchemy); ``put`` opens the Repository,
  whose commit runs on stdlib sqlite3 too (the catalog's native mode: no SQLAlchemy either).
* ``put``: one small file with new bytes (``archivectl put``, ``borg create``, ``restic
  backup`` of a folder holding only that file); the file is rewritten before every round.

Needs `archivectl` (this venv), borg (``--borg``, default: on PATH or ``.borgvenv/bin/borg``)
and restic (Debian) — a missing peer is skipped and said so.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .peers import PASSWORD, Borg, Restic

HERE = Path(__file__).resolve().parent
WORKLOADS = ("version", "ls", "get", "put")


def _which(name: str, *fallbacks: Path) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for f in fallbacks:
        if f.is_file() and os.access(f, os.X_OK):
            return str(f)
    return None


class Tool:
    """One tool's commands for each workload, bound to its repository and environment."""

    def __init__(self, name: str, env: dict, commands: dict[str, list[str]], cwd: Path):
        self.name, self.env, self.commands, self.cwd = name, env, commands, cwd

    def run(self, workload: str) -> tuple[float, float]:
        """(wall seconds, CPU seconds) of one run."""
        cmd = self.commands[workload]
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 0:
            raise RuntimeError(f"{self.name} {workload}: {' '.join(cmd)} -> rc {p.returncode}\n"
                               f"{p.stderr.decode(errors='replace')[-1500:]}")
        return dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def precompile(*folders: Path) -> None:
    """Byte-compile the package as `pip install` (non-editable) does.  An editable checkout in an
    environment with PYTHONDONTWRITEBYTECODE=1 (this one) would otherwise compile every module
    from source at every start (~0.1 s of CPU), which no installed copy pays."""
    for f in folders:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(f)], check=True)


def setup(work: Path, archivectl: str, borg: str | None, restic: str | None,
          baseline: Path | None = None) -> list[Tool]:
    src = work / "src"
    src.mkdir(parents=True)
    (src / "one.txt").write_bytes(b"a small file\n" * 40)
    tools: list[Tool] = []

    e_repo = work / "edge-repo"
    e_env = dict(os.environ, EDGE_ARCHIVE_PASSWORD=PASSWORD, EDGE_ARCHIVE_REPO=str(e_repo))
    e_env.pop("EDGE_ARCHIVE_CONFIG", None)
    ctl = [archivectl]
    subprocess.run([*ctl, "init", "--encrypt"], env=e_env, check=True, capture_output=True)
    subprocess.run([*ctl, "share", "add", "bench"], env=e_env, check=True, capture_output=True)
    subprocess.run([*ctl, "put", str(src / "one.txt"), "/bench/one.txt"], env=e_env, check=True, capture_output=True)
    tools.append(Tool("edge", e_env, {
        "version": [*ctl, "--version"],
        "ls": [*ctl, "ls", "/bench"],
        "get": [*ctl, "get", "/bench/one.txt", "-"],
        "put": [*ctl, "put", str(src / "one.txt"), "/bench/one.txt"],
    }, work))
    if baseline is not None:
        # the same repository, through the package found in `baseline` (it comes first on the path)
        b_env = dict(e_env, PYTHONPATH=str(baseline))
        base = [sys.executable, "-c", "import sys; sys.argv[0] = 'archivectl'; "
                                      "from archive.cli.main import main; sys.exit(main())"]
        tools.append(Tool("edge@base", b_env, {w: base + cmd[1:] for w, cmd in tools[0].commands.items()}, work))

    if borg:
        b = Borg(work / "borg-repo", work / "borg-scratch")
        b.reset()
        b_env = b.env()
        b_env["PATH"] = f"{Path(borg).parent}:{b_env.get('PATH', '')}"
        subprocess.run([borg, "init", "-e", "repokey-blake2", str(b.repo)], env=b_env, check=True, capture_output=True)
        subprocess.run([borg, "create", f"{b.repo}::a0", "."], cwd=src, env=b_env, check=True, capture_output=True)
        tools.append(Tool("borg", b_env, {
            "version": [borg, "--version"],
            "ls": [borg, "list", str(b.repo)],
            "get": [borg, "extract", "--stdout", f"{b.repo}::a0", "one.txt"],
            # a new archive name per run: {now:%s.%f} is expanded by borg itself
            "put": [borg, "create", f"{b.repo}::p-{{now:%Y%m%d%H%M%S.%f}}", "."],
        }, src))
    if restic:
        r = Restic(work / "restic-repo", work / "restic-scratch")
        r.reset()
        r_env = r.env()
        subprocess.run([restic, "init", "-q"], env=r_env, check=True, capture_output=True)
        subprocess.run([restic, "backup", "-q", "."], cwd=src, env=r_env, check=True, capture_output=True)
        tools.append(Tool("restic", r_env, {
            "version": [restic, "version"],
            "ls": [restic, "snapshots", "-q"],
            "get": [restic, "dump", "-q", "latest", "/one.txt"],
            "put": [restic, "backup", "-q", "."],
        }, src))
    return tools


def _q(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


Times = dict[str, dict[str, list[tuple[float, float]]]]


def bench(tools: list[Tool], workloads: list[str], rounds: int, src_file: Path) -> Times:
    times: Times = {w: {t.name: [] for t in tools} for w in workloads}
    for w in workloads:          # one warm-up each (page cache, pyc files)
        for t in tools:
            t.run(w)
    for i in range(rounds):
        for w in workloads:
            if w == "put":
                src_file.write_bytes(f"round {i} {time.time_ns()}\n".encode() * 40)
            order = tools if i % 2 == 0 else list(reversed(tools))
            for t in order:
                times[w][t.name].append(t.run(w))
    return times


def report(times: Times) -> str:
    lines = ["| command | tool | wall median s | wall p25-p75 s | CPU median s | edge / tool (wall) | "
             "edge / tool (CPU) |", "|---|---|---:|---:|---:|---:|---:|"]
    for w, per in times.items():
        e_wall = statistics.median(x[0] for x in per["edge"])
        e_cpu = statistics.median(x[1] for x in per["edge"])
        for name, runs in per.items():
            wall, cpu = [x[0] for x in runs], [x[1] for x in runs]
            mw, mc = statistics.median(wall), statistics.median(cpu)
            ratios = "| |" if name == "edge" else f"| {e_wall / mw:.2f} | {e_cpu / mc:.2f} |"
            lines.append(f"| {w} | {name} | {mw:.3f} | {_q(wall, .25):.3f}-{_q(wall, .75):.3f} | {mc:.3f} {ratios}")
    return "\n".join(lines)


def importtime(archivectl_python: str, env: dict, top: int = 15) -> str:
    """`python -X importtime` of `archivectl ls /bench`: the heaviest top-level imports."""
    p = subprocess.run([archivectl_python, "-X", "importtime", "-c",
                        "import sys; sys.argv=['archivectl','ls','/bench']; from archive.cli.main import main; main()"],
                       env=env, capture_output=True, text=True)
    rows = []
    for ln in p.stderr.splitlines():
        if not ln.startswith("import time:") or "cumulative" in ln:
            continue
        self_us, cum_us, name = ln.split(":", 1)[1].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append((int(cum_us.strip()), depth, name.strip()))
    total = sum(c for c, d, _ in rows if d == 0)
    heavy = sorted((r for r in rows if r[1] <= 1), reverse=True)[:top]
    out = [f"total of top-level imports: {total / 1e6:.3f} s"]
    out += [f"  {c / 1e6:7.3f} s  {'  ' * d}{n}" for c, d, n in heavy]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated: " + ",".join(WORKLOADS))
    ap.add_argument("--borg", default=None)
    ap.add_argument("--restic", default=None)
    ap.add_argument("--no-peers", action="store_true", help="edge only")
    ap.add_argument("--importtime", action="store_true")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="also run the package found in this folder (another checkout) as edge@base")
    ap.add_argument("--no-compile", action="store_true",
                    help="do not byte-compile archive/ (and the baseline) first; see precompile()")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    a = ap.parse_args(argv)

    archivectl = _which("archivectl", Path(sys.executable).parent / "archivectl")
    if not archivectl:
        sys.exit("archivectl not found (pip install -e . in this venv)")
    borg = None if a.no_peers else (a.borg or _which("borg", HERE.parent / ".borgvenv" / "bin" / "borg"))
    restic = None if a.no_peers else (a.restic or _which("restic"))
    for name, found in (("borg", borg), ("restic", restic)):
        if not found and not a.no_peers:
            print(f"{name}: not found, skipped (bench/README.md says how to install it)")

    work_ctx = tempfile.TemporaryDirectory(prefix="startup-") if a.work is None else None
    work = Path(work_ctx.name) if work_ctx else a.work
    try:
        if not a.no_compile:
            import archive
            precompile(Path(archive.__file__).parent, *([a.baseline / "archive"] if a.baseline else []))
        tools = setup(work, archivectl, borg, restic, a.baseline)
        workloads = [w for w in a.only.split(",") if w]
        load = os.getloadavg()
        t0 = time.time()
        times = bench(tools, workloads, a.rounds, work / "src" / "one.txt")
        print(f"\n{a.rounds} rounds, {time.time() - t0:.0f} s, load average before "
              f"{load[0]:.1f}, after {os.getloadavg()[0]:.1f}")
        print(report(times))
        if a.importtime:
            print("\n`python -X importtime` of `archivectl ls` (cumulative):")
            print(importtime(sys.executable, tools[0].env))
    finally:
        if work_ctx:
            work_ctx.cleanup()


if __name__ == "__main__":
    main()
