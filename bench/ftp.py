"""FTP benchmark: Edge Archive's FTP adapter vs vsftpd serving a plain directory.

Same machine, same run, same clients (curl for one large file, lftp mirror for many small
ones), loopback only.  Prints throughput for both servers and the ratio Edge/vsftpd.

    python -m bench.ftp                           # 1 GiB file, 10,000 small files, 3 runs
    python -m bench.ftp --size-mib 256 --files 2000 --runs 3    # while the machine is busy

Targets (docs/benchmarks.md): large upload >= 0.5x vsftpd, large download >= 0.8x,
small files >= 0.5x files/s.  Each run uses a fresh Edge repository (so the large file
is never deduplicated against an earlier run) and a fresh vsftpd directory.
Needs curl, lftp and vsftpd (Debian: /usr/sbin/vsftpd); vsftpd runs as root, anonymous
with upload rights, only on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archive import Repository  # noqa: E402
from protocols.base import ServeContext  # noqa: E402
from protocols.ftp import FTPAdapter  # noqa: E402

USER, PASSWORD = "bench", "bench-password"
ENC_PASSWORD = "bench-passphrase-not-secret"
GETS = 1            # downloads of the large file per run (median); --gets


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def timed(cmd: list[str], timeout: float = 3600) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-1500:]}")
    return dt


class Edge:
    name = "edge"

    def __init__(self, work: Path, encrypt: bool) -> None:
        self.dir = work / "edge"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.repo = Repository.init(self.dir / "repo", password=ENC_PASSWORD if encrypt else None,
                                    encrypt=encrypt)
        self.repo.add_share("bench")
        self.repo.add_user(USER, PASSWORD)
        self.repo.grant(USER, "bench", "rw")
        self.port = free_port()
        self.adapter = FTPAdapter(self.repo, {"listen": f"127.0.0.1:{self.port}", "passive_ports": "",
                                              "max_connections_per_user": 0},
                                  ServeContext(logger=logging.getLogger("bench.ftp")))
        self.adapter.start()
        self.auth = f"{USER}:{PASSWORD}"
        self.base = "/bench"

    def stop(self) -> None:
        self.adapter.stop(1.0)
        self.repo.close()


class Vsftpd:
    name = "vsftpd"

    def __init__(self, work: Path) -> None:
        self.dir = work / "vsftpd"
        shutil.rmtree(self.dir, ignore_errors=True)
        root = self.dir / "root"
        (root / "up").mkdir(parents=True)
        os.chmod(root, 0o555)                         # anonymous root must not be writable
        shutil.chown(root / "up", "ftp", "ftp")
        self.port = free_port()
        lo = free_port()
        conf = self.dir / "vsftpd.conf"
        conf.write_text("\n".join([
            "listen=YES", "listen_ipv6=NO", "listen_address=127.0.0.1", f"listen_port={self.port}",
            "background=NO", "anonymous_enable=YES", "local_enable=NO", "no_anon_password=YES",
            "write_enable=YES", "anon_upload_enable=YES", "anon_mkdir_write_enable=YES",
            "anon_other_write_enable=YES", "anon_umask=022", f"anon_root={root}",
            "pasv_enable=YES", f"pasv_min_port={lo}", f"pasv_max_port={lo + 200}",
            "seccomp_sandbox=NO", "xferlog_enable=NO", "max_clients=0", "max_per_ip=0",
            "secure_chroot_dir=/var/run/vsftpd/empty", "pam_service_name=vsftpd", "",
        ]))
        self.proc = subprocess.Popen(["/usr/sbin/vsftpd", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_port(self.port)
        self.auth = "anonymous:bench@"
        self.base = "/up"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def make_tree(path: Path, n: int, size: int) -> None:
    """n small files of `size` random bytes, 100 per folder."""
    shutil.rmtree(path, ignore_errors=True)
    for i in range(n):
        d = path / f"d{i // 100:03d}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        (d / f"f{i:05d}.bin").write_bytes(os.urandom(size))


def make_big(path: Path, mib: int) -> None:
    if path.exists() and path.stat().st_size == mib << 20:
        return
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))


def one_run(server, work: Path, big: Path, tree: Path, n_files: int, tag: str) -> dict[str, float]:
    """Throughput of each workload; for Edge (served in this process, the clients being child
    processes) also the server's CPU per MiB / per file: the firm figure on a busy machine."""
    url = f"ftp://127.0.0.1:{server.port}{server.base}"
    size_mib = big.stat().st_size / (1 << 20)
    res: dict[str, float] = {}
    edge = server.name == "edge"
    cpu = time.process_time()
    dt = timed(["curl", "-sS", "--user", server.auth, "-T", str(big), f"{url}/big-{tag}.bin"])
    res["upload MiB/s"] = size_mib / dt
    if edge:
        res["upload CPU ms/MiB"] = (time.process_time() - cpu) * 1000 / size_mib
    cpu = time.process_time()
    res["download MiB/s"] = statistics.median(
        size_mib / timed(["curl", "-sS", "--user", server.auth, f"{url}/big-{tag}.bin", "-o", os.devnull])
        for _ in range(GETS))
    if edge:
        res["download CPU ms/MiB"] = (time.process_time() - cpu) * 1000 / (size_mib * GETS)
    if n_files == 0:
        return res
    user, _, pw = server.auth.partition(":")
    opener = f"set net:max-retries 1; open -u {user},{pw} -p {server.port} 127.0.0.1"
    cpu = time.process_time()
    dt = timed(["lftp", "-c", f"{opener}; mirror -R --no-perms {tree} {server.base}/tree-{tag}"])
    res["small upload files/s"] = n_files / dt
    if edge:
        res["small upload CPU ms/file"] = (time.process_time() - cpu) * 1000 / n_files
    back = work / f"back-{server.name}"
    shutil.rmtree(back, ignore_errors=True)
    cpu = time.process_time()
    dt = timed(["lftp", "-c", f"{opener}; mirror {server.base}/tree-{tag} {back}"])
    res["small download files/s"] = n_files / dt
    if edge:
        res["small download CPU ms/file"] = (time.process_time() - cpu) * 1000 / n_files
    check_back(back, n_files, server.name)
    return res


def check_back(back: Path, n_files: int, name: str) -> None:
    """Every small file came back; then the copy goes."""
    got = sum(1 for p in back.rglob("*") if p.is_file())
    if got != n_files:
        raise RuntimeError(f"{name}: got back {got} of {n_files} files")
    shutil.rmtree(back, ignore_errors=True)


def common_args(doc: str, work: Path) -> argparse.Namespace:
    """The options every protocol bench takes (sizes, runs, repository kind, work folder)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024, help="large file size (default 1024)")
    ap.add_argument("--files", type=int, default=10_000, help="number of small files (default 10000; 0: the large file only)")
    ap.add_argument("--gets", type=int, default=1, help="downloads of the large file per run, median (default 1)")
    ap.add_argument("--file-size", type=int, default=4096, help="bytes per small file (default 4096)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--plain", action="store_true", help="unencrypted Edge repository (default: encrypted)")
    ap.add_argument("--work", type=Path, default=work)
    return ap.parse_args()


def alternate(runs: int, peer_name: str, peer: Any, edge: Any, one: Any) -> dict[str, dict[str, list[float]]]:
    """`runs` rounds of the peer and Edge (order alternating, so neither always gets the warmer
    page cache); `peer()`/`edge()` start a server, `one(server, tag)` measures it; results by
    server name and metric."""
    results: dict[str, dict[str, list[float]]] = {"edge": {}, peer_name: {}}
    for run in range(runs):
        for kind in ([peer, None] if run % 2 == 0 else [None, peer]):
            server = kind() if kind is not None else edge()
            try:
                r = one(server, f"r{run}")
            finally:
                server.stop()
            for k, v in r.items():
                results[server.name].setdefault(k, []).append(v)
            print(f"run {run + 1} {server.name:7s} " + "  ".join(f"{k} {v:8.1f}" for k, v in r.items()),
                  flush=True)
    return results


def main() -> None:
    args = common_args(__doc__, ROOT / "bench" / "work" / "ftp")
    for tool in ("curl", "lftp"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing")
    if not Path("/usr/sbin/vsftpd").exists():
        sys.exit("vsftpd is missing (apt-get install vsftpd)")
    global GETS
    GETS = args.gets
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    big, tree = work / "big.bin", work / "tree"
    print(f"preparing {args.size_mib} MiB file and {args.files} x {args.file_size} B files in {work}", flush=True)
    make_big(big, args.size_mib)
    make_tree(tree, args.files, args.file_size)
    results = alternate(args.runs, "vsftpd", lambda: Vsftpd(work), lambda: Edge(work, encrypt=not args.plain),
                        lambda server, tag: one_run(server, work, big, tree, args.files, tag))
    targets = {"upload MiB/s": 0.5, "download MiB/s": 0.8, "small upload files/s": 0.5,
               "small download files/s": None}
    if args.files == 0:
        targets = {"upload MiB/s": 0.5, "download MiB/s": 0.8}
    print_report(results, targets, "vsftpd", args)
    shutil.rmtree(work / "edge", ignore_errors=True)
    shutil.rmtree(work / "vsftpd", ignore_errors=True)


def print_report(results: dict[str, dict[str, list[float]]], targets: dict[str, float | None], peer: str,
                 args: argparse.Namespace) -> None:
    """The machine line and the markdown table (medians, ratios vs `peer`) every protocol bench prints."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"\nmachine: nproc={os.cpu_count()}, {cpu}; python {platform.python_version()}; "
          f"{args.size_mib} MiB file, {args.files} x {args.file_size} B files, "
          f"{'encrypted' if not args.plain else 'plain'} repository, medians of {args.runs} runs\n")
    print(f"| metric | Edge Archive | {peer} | ratio of medians | median of per-run ratios | target |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, target in targets.items():
        e, v = statistics.median(results["edge"][k]), statistics.median(results[peer][k])
        per_run = statistics.median(a / b for a, b in zip(results["edge"][k], results[peer][k]))
        t = f">= {target}x" if target else "-"
        print(f"| {k} | {e:.1f} | {v:.1f} | {e / v:.2f}x | {per_run:.2f}x | {t} |")
    cpu = {k: statistics.median(v) for k, v in results["edge"].items() if "CPU" in k}
    if cpu:
        print("\nEdge server CPU (medians): " + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items()))


if __name__ == "__main__":
    main()
