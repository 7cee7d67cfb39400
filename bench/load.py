"""Mixed FTP + WebDAV load in rounds; prints the server's RSS and open descriptors per round.

Starts the real ``archivectl serve --only ftp,webdav`` on loopback (a fresh repository in a
temporary folder), then runs ``--rounds`` rounds of ``--seconds`` seconds each with
``--clients`` concurrent clients, half FTP (ftplib) and half WebDAV (http.client, each
client from its own 127.0.0.x source address, as separate machines would be).  Every
client loops: upload a file (4 KiB - 1 MiB), download it and compare, list its folder.
After each round the clients disconnect and the server is left idle for ``--idle``
seconds; then RSS (VmRSS) and descriptors (/proc/PID/fd) are sampled.  Bounded: rounds,
seconds per round and every socket timeout are finite; loopback only.

    python3 bench/load.py                          # 64 clients, 3 rounds of 60 s
    python3 bench/load.py --clients 16 --rounds 2 --seconds 10     # a quick look

The targets (issue 8): RSS under 64 clients <= 256 MB, back near the baseline when
idle, no descriptor growth across rounds.
"""
from __future__ import annotations

import argparse
import base64
import ftplib
import http.client
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "load", "load-password"


def proc_stats(pid: int) -> dict[str, Any]:
    """VmRSS (MB), VmHWM (MB), threads, open descriptors and open pack files of a process."""
    out: dict[str, Any] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
            elif key == "Threads":
                out["threads"] = int(value)
    fds = os.listdir(f"/proc/{pid}/fd")
    out["fds"] = len(fds)
    packs = catalog = 0
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        packs += target.endswith(".pack")
        catalog += "catalog.sqlite" in target
    out["pack_fds"] = packs          # the core keeps up to 64 packs open for reading (bounded)
    out["catalog_fds"] = catalog     # database, WAL and shm of each pooled SQLite connection
    return out


class Server:
    """``archivectl serve`` in a subprocess over a fresh repository."""

    def __init__(self, work: Path, env_extra: dict[str, str]) -> None:
        self.work = work
        repo = work / "repo"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_ARCHIVE_")}
        self.env.update({"EDGE_ARCHIVE_REPO": str(repo), "EDGE_ARCHIVE_CONFIG": str(work / "none.toml"),
                         "EDGE_ARCHIVE_FTP_LISTEN": "127.0.0.1:0", "EDGE_ARCHIVE_FTP_PASSIVE_PORTS": "",
                         "EDGE_ARCHIVE_WEBDAV_LISTEN": "127.0.0.1:0", "EDGE_ARCHIVE_METRICS_ENABLED": "false",
                         **env_extra})
        (work / "none.toml").write_text("")
        ctl = [sys.executable, "-m", "archive"]
        for args, stdin in ((["init"], None), (["share", "add", "load"], None),
                            (["user", "add", USER, "--password-stdin"], PASSWORD.encode()),
                            (["grant", USER, "load", "rw"], None)):
            subprocess.run(ctl + args, env=self.env, input=stdin, check=True, capture_output=True, cwd=work)
        self.out = open(work / "serve.out", "w+b")
        self.err = open(work / "serve.err", "w+b")
        self.proc = subprocess.Popen(ctl + ["serve", "--only", "ftp,webdav"], env=self.env, cwd=work,
                                     stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL)
        self.urls = self._wait_urls()

    def _wait_urls(self) -> dict[str, str]:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            urls = {}
            for line in (self.work / "serve.out").read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 2 and "://" in parts[1]:
                    urls[parts[0]] = parts[1]
            if {"ftp", "webdav"} <= set(urls):
                return urls
            if self.proc.poll() is not None:
                raise SystemExit("serve exited:\n" + (self.work / "serve.err").read_text())
            time.sleep(0.1)
        raise SystemExit("serve did not print its URLs")

    def port(self, name: str) -> int:
        return int(self.urls[name].rstrip("/").rsplit(":", 1)[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops = 0
        self.failures: list[str] = []

    def ok(self) -> None:
        with self.lock:
            self.ops += 1

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def _payload(rng: random.Random) -> bytes:
    n = rng.choice([4096, 65536, 300_000, 1 << 20])
    return rng.randbytes(n)


def _loop(name: str, deadline: float, tally: Tally, step: Any) -> None:
    """Run ``step(i)`` (upload, download and compare, list) until the deadline; the first
    exception ends this client and is counted."""
    i = 0
    while time.monotonic() < deadline:
        try:
            step(i)
            tally.ok()
        except Exception as exc:                   # noqa: BLE001 - counted, not fatal
            tally.fail(f"{name}: {exc!r}")
            return
        i += 1


def ftp_client(n: int, port: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(n)
    ftp = ftplib.FTP()
    try:
        ftp.connect("127.0.0.1", port, timeout=60)
        ftp.login(USER, PASSWORD)
        try:
            ftp.mkd(f"/load/f{n}")
        except ftplib.error_perm:
            pass
    except Exception as exc:                       # noqa: BLE001
        tally.fail(f"ftp{n} login: {exc!r}")
        return

    def step(i: int) -> None:
        path, data = f"/load/f{n}/{i % 8}.bin", _payload(rng)
        ftp.storbinary(f"STOR {path}", io.BytesIO(data))
        got = bytearray()
        ftp.retrbinary(f"RETR {path}", got.extend)
        if bytes(got) != data:
            raise AssertionError("wrong bytes")
        ftp.nlst(f"/load/f{n}")

    _loop(f"ftp{n}", deadline, tally, step)
    try:
        ftp.quit()
    except Exception:                              # noqa: BLE001
        ftp.close()


def dav_client(n: int, port: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(10_000 + n)
    source = f"127.0.{1 + n // 250}.{1 + n % 250}"
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))

    def call(method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             ok: tuple[int, ...] = (200,)) -> bytes:
        conn.request(method, path, body=body, headers={"Authorization": auth, **(headers or {})})
        r = conn.getresponse()
        data = r.read()
        if r.status not in ok:
            raise AssertionError(f"{method} {path}: {r.status}")
        return data

    def step(i: int) -> None:
        path, data = f"/load/d{n}/{i % 8}.bin", _payload(rng)
        call("PUT", path, data, ok=(201, 204))
        if call("GET", path) != data:
            raise AssertionError("wrong bytes")
        call("PROPFIND", f"/load/d{n}/", headers={"Depth": "1"}, ok=(207,))

    try:
        call("MKCOL", f"/load/d{n}/", ok=(201, 405))
    except Exception as exc:                       # noqa: BLE001
        tally.fail(f"dav{n} mkcol: {exc!r}")
        return
    _loop(f"dav{n}", deadline, tally, step)
    conn.close()


def run_round(server: Server, clients: int, seconds: float) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    threads = []
    for n in range(clients):
        if n % 2 == 0:
            t = threading.Thread(target=ftp_client, args=(n, server.port("ftp"), deadline, tally))
        else:
            t = threading.Thread(target=dav_client, args=(n, server.port("webdav"), deadline, tally))
        threads.append(t)
        t.start()
    peak = 0.0
    while any(t.is_alive() for t in threads):
        peak = max(peak, proc_stats(server.proc.pid)["VmRSS"])
        time.sleep(0.5)
    for t in threads:
        t.join(timeout=seconds + 120)
    tally.peak_rss = peak                          # type: ignore[attr-defined]
    return tally


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle before sampling")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    args = ap.parse_args(argv)
    if args.clients > 1000 or args.rounds > 20 or args.seconds > 600:
        ap.error("bounded: at most 1000 clients, 20 rounds, 600 s per round")
    work = Path(tempfile.mkdtemp(prefix="edge-load-"))
    server = Server(work, dict(kv.split("=", 1) for kv in args.env))
    rows = []
    try:
        time.sleep(1.0)
        base = proc_stats(server.proc.pid)
        rows.append({"round": 0, "ops": 0, "failures": 0, "peak_rss_mb": base["VmRSS"],
                     "idle_rss_mb": base["VmRSS"], "fds": base["fds"], "pack_fds": base["pack_fds"],
                     "catalog_fds": base["catalog_fds"],
                     "threads": base["threads"]})
        print(f"{'round':>5} {'ops':>6} {'fail':>4} {'peak RSS MB':>11} {'idle RSS MB':>11} "
              f"{'fds':>4} {'packs':>5} {'catalog':>7} {'threads':>7}", flush=True)
        print(f"{0:>5} {0:>6} {0:>4} {base['VmRSS']:>11} {base['VmRSS']:>11} {base['fds']:>4} "
              f"{base['pack_fds']:>5} {base['catalog_fds']:>7} {base['threads']:>7}  (baseline)", flush=True)
        for r in range(1, args.rounds + 1):
            tally = run_round(server, args.clients, args.seconds)
            time.sleep(args.idle)
            st = proc_stats(server.proc.pid)
            row = {"round": r, "ops": tally.ops, "failures": len(tally.failures),
                   "peak_rss_mb": tally.peak_rss, "idle_rss_mb": st["VmRSS"], "fds": st["fds"],
                   "pack_fds": st["pack_fds"], "catalog_fds": st["catalog_fds"],
                   "threads": st["threads"], "first_failures": tally.failures[:3]}
            rows.append(row)
            print(f"{r:>5} {tally.ops:>6} {len(tally.failures):>4} {tally.peak_rss:>11} "
                  f"{st['VmRSS']:>11} {st['fds']:>4} {st['pack_fds']:>5} {st['catalog_fds']:>7} {st['threads']:>7}", flush=True)
            for f in tally.failures[:3]:
                print(f"      failure: {f}", flush=True)
        if args.json:
            print(json.dumps(rows))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
