"""NFS benchmark: Edge Archive's NFSv3 adapter vs nfs-ganesha (VFS backend, plain folder).

Same machine, same run, same clients, loopback only:
  * large file: `nfs-cp` local -> server (write) and server -> /dev/null-ish file (read), and
    read again with --depth 128 KiB READs in flight (libnfs' async API, as the kernel client);
    for Edge the write is also timed until its version is committed (commit_idle = 0.2 s);
  * many files: libnfs (the library behind nfs-cp, through ctypes) creates N small files,
    `nfs-ls` lists the folder, libnfs removes them; then the same create and remove with
    --depth files in flight on the one connection (libnfs' async API: the calls a kernel
    client pipelines for several writers; libnfs' sync calls and nfs-cp wait for each reply).
Prints medians of --runs and the ratios Edge/ganesha (higher is better).

    python3 bench/nfs.py --size-mib 1024 --files 10000 --runs 3
    python3 bench/nfs.py --size-mib 256 --files 1000 --runs 3        # a busy machine
    python3 bench/nfs.py --size-mib 64 --runs 5 --large-only         # the large file only
    python3 bench/nfs.py ... --serve-allocator     # malloc settings of `archivectl serve`

ganesha exits unless rpcbind runs when it starts, so this starts `rpcbind` first (as root)
if none answers on 127.0.0.1:111.  Debian packages: nfs-ganesha nfs-ganesha-vfs rpcbind
libnfs-utils libnfs13.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from nfs_helpers import LibNFS, Pipeline  # noqa: E402


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=3600)
    return time.perf_counter() - t0


_SERVE = r"""
import sys, time, logging
tree, home, allocator = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
sys.path.insert(0, tree)
logging.basicConfig(level=logging.WARNING)
if allocator:
    from protocols.memory import tune_allocator
    tune_allocator()
from archive import Repository
from protocols.base import ServeContext
from protocols.nfs import NFSAdapter
repo = Repository.init(home)
repo.add_share("bench")
repo.add_user("bench", "bench-password")
repo.grant("bench", "bench", "rw")
adapter = NFSAdapter(repo, {"listen": "127.0.0.1:0", "commit_idle": 0.2,
                            "exports": [{"share": "bench", "user": "bench"}]}, ServeContext())
adapter.start()
print(adapter.address[1], flush=True)
for line in sys.stdin:                     # "settle": answer once every written file is a version
    while adapter.sessions._sessions:
        time.sleep(0.02)
    print("ok", flush=True)
adapter.stop(5)
repo.close()
"""


class Edge:
    """Edge Archive's NFS adapter in a process of its own, as `archivectl serve` runs it (and as
    ganesha runs): in the bench's process, the libnfs client's Python callbacks (the pipelined
    phases) and the server took turns for one GIL.  `--in-process` keeps the old way."""
    name = "edge"

    def __init__(self, work: Path, tree: Path = ROOT, allocator: bool = False, in_process: bool = False) -> None:
        self.work, self.tree, self.allocator, self.in_process = work, tree, allocator, in_process
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        shutil.rmtree(self.work / "edge", ignore_errors=True)
        self.export = "/bench"
        if self.in_process:
            from archive import Repository
            from protocols.base import ServeContext
            from protocols.nfs import NFSAdapter
            self.repo = Repository.init(self.work / "edge")
            self.repo.add_share("bench")
            self.repo.add_user("bench", "bench-password")
            self.repo.grant("bench", "bench", "rw")
            self.adapter = NFSAdapter(self.repo, {"listen": "127.0.0.1:0", "commit_idle": 0.2,
                                                  "exports": [{"share": "bench", "user": "bench"}]}, ServeContext())
            self.adapter.start()
            self.port = self.mountport = self.adapter.address[1]
            return
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(self.tree), str(self.work / "edge"),
                                      "1" if self.allocator else "0"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.port = self.mountport = int(self.proc.stdout.readline())

    def settle(self, timeout: float = 3600) -> None:
        """Wait until every written file is a committed version."""
        if self.proc is not None:
            self.proc.stdin.write("settle\n")
            self.proc.stdin.flush()
            assert self.proc.stdout.readline().strip() == "ok"
            return
        end = time.monotonic() + timeout
        while self.adapter.sessions._sessions and time.monotonic() < end:
            time.sleep(0.02)

    def cpu(self) -> float:
        """CPU seconds the server has used so far (its process; the bench's own in-process)."""
        if self.proc is None:
            return time.process_time()
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            return
        self.adapter.stop(5)
        self.repo.close()


class Ganesha:
    name = "ganesha"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if not port_open(111):
            subprocess.run(["rpcbind", "-w"], check=True)
            time.sleep(0.5)
        d = self.work / "ganesha"
        shutil.rmtree(d, ignore_errors=True)
        (d / "export").mkdir(parents=True)
        self.port, self.mountport = free_port(), free_port()     # ganesha cannot share one port
        conf = d / "ganesha.conf"
        conf.write_text(f"""
NFS_CORE_PARAM {{ Protocols = 3; NFS_Port = {self.port}; MNT_Port = {self.mountport}; Bind_addr = 127.0.0.1;
                  Enable_NLM = false; Enable_RQUOTA = false; }}
NFSV4 {{ Graceless = true; }}
EXPORT {{ Export_Id = 77; Path = {d / 'export'}; Pseudo = /bench; Access_Type = RW; Squash = No_Root_Squash;
          Protocols = 3; Transports = TCP; SecType = sys; FSAL {{ Name = VFS; }} }}
LOG {{ Default_Log_Level = WARN; }}
""")
        self.proc = subprocess.Popen(["ganesha.nfsd", "-F", "-f", str(conf), "-L", str(d / "ganesha.log"),
                                      "-p", str(d / "ganesha.pid")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        end = time.monotonic() + 30
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"ganesha did not start: {(d / 'ganesha.log').read_text()[-2000:]}")
            time.sleep(0.1)
        self.export = str(d / "export")          # NFSv3 mounts by path
        time.sleep(1)

    def settle(self, timeout: float = 0) -> None:
        pass

    def cpu(self) -> float:
        """CPU seconds ganesha has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def url(server, path: str = "") -> str:
    return f"nfs://127.0.0.1{server.export}{path}?version=3&nfsport={server.port}&mountport={server.mountport}"


def one_run(server, big: Path, size: int, files: int, scratch: Path, depth: int = 16,
            large_only: bool = False) -> dict[str, float]:
    out: dict[str, float] = {}
    server.start()
    try:
        t = timed(["nfs-cp", str(big), url(server, "/big.bin")])
        out["write MiB/s"] = size / t / 2 ** 20
        server.settle()
        back = scratch / f"back-{server.name}.bin"
        c0 = server.cpu()
        t = timed(["nfs-cp", url(server, "/big.bin"), str(back)])
        out["read MiB/s"] = size / t / 2 ** 20
        cpu_read = (server.cpu() - c0) * 1000 / (size / 2 ** 20)
        assert back.stat().st_size == size
        back.unlink()
        # the same file read with READs in flight (libnfs' async API), as the kernel client's
        # read-ahead sends them
        c = LibNFS(url(server))
        try:
            t0, c0 = time.perf_counter(), server.cpu()
            got = Pipeline(c, depth).read_file("/big.bin", size)
            out[f"read MiB/s, {depth} x 128 KiB in flight"] = size / (time.perf_counter() - t0) / 2 ** 20
            cpu_piped = (server.cpu() - c0) * 1000 / (size / 2 ** 20)
            assert got == big.read_bytes()
        finally:
            c.close()
        out["read: server CPU ms per MiB (lower is better)"] = cpu_read
        out[f"read, {depth} in flight: server CPU ms per MiB (lower is better)"] = cpu_piped
        if large_only:
            return out
        c = LibNFS(url(server))
        try:
            c.mkdir("/many")
            t0, c0 = time.perf_counter(), server.cpu()
            for i in range(files):
                fh = c.creat(f"/many/f{i:05d}.txt")
                c.pwrite(fh, b"small file %d\n" % i, 0)
                c.close_file(fh)
            out["create files/s"] = files / (time.perf_counter() - t0)
            server.settle()
            out["create: server CPU ms per file, versions included (lower is better)"] = \
                (server.cpu() - c0) * 1000 / files
            t = timed(["nfs-ls", url(server, "/many")])
            out["list entries/s"] = files / t
            t0, c0 = time.perf_counter(), server.cpu()
            for i in range(files):
                c.unlink(f"/many/f{i:05d}.txt")
            out["delete files/s"] = files / (time.perf_counter() - t0)
            out["delete: server CPU ms per file (lower is better)"] = (server.cpu() - c0) * 1000 / files
            # the same with calls in flight on the one connection (libnfs' async API), as the
            # kernel client sends them for several writers
            c.mkdir("/piped")
            p = Pipeline(c, depth)
            t0, c0 = time.perf_counter(), server.cpu()
            p.put_files([(f"/piped/f{i:05d}.txt", b"small file %d\n" % i) for i in range(files)])
            out[f"create files/s, {depth} in flight"] = files / (time.perf_counter() - t0)
            server.settle()
            out[f"create, {depth} in flight: server CPU ms per file, versions included (lower is better)"] = \
                (server.cpu() - c0) * 1000 / files
            t0, c0 = time.perf_counter(), server.cpu()
            p.unlink_files([f"/piped/f{i:05d}.txt" for i in range(files)])
            out[f"delete files/s, {depth} in flight"] = files / (time.perf_counter() - t0)
            out[f"delete, {depth} in flight: server CPU ms per file (lower is better)"] = \
                (server.cpu() - c0) * 1000 / files
        finally:
            c.close()
    finally:
        server.stop()
    return out


def until_version(server: Edge, big: Path, size: int) -> float:
    """Edge only: nfs-cp plus the commit of the version (what makes the data an archive version)."""
    server.start()
    try:
        t0 = time.perf_counter()
        subprocess.run(["nfs-cp", str(big), url(server, "/big.bin")], check=True, stdout=subprocess.DEVNULL)
        server.settle()
        return size / (time.perf_counter() - t0) / 2 ** 20
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--depth", type=int, default=16, help="calls in flight for the pipelined small files")
    ap.add_argument("--large-only", action="store_true", help="only the large file's write and read")
    ap.add_argument("--serve-allocator", action="store_true",
                    help="glibc settings of `archivectl serve` (protocols/memory.py: fixed 128 KiB mmap "
                         "threshold, 4 arenas) in this process, as in production")
    ap.add_argument("--in-process", action="store_true",
                    help="run Edge's server in the bench's own process (as before nfs11: it then shares "
                         "the GIL with the libnfs client's Python callbacks)")
    ap.add_argument("--server-tree", default=str(ROOT),
                    help="source tree whose archive/ and protocols/ Edge's server runs (same-run A/B)")
    ap.add_argument("--work", default=str(ROOT / "bench" / "work" / "nfs"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.serve_allocator and args.in_process:
        from protocols.memory import tune_allocator
        tune_allocator()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    size = args.size_mib * 2 ** 20
    big = work / "big.bin"
    with open(big, "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(2 ** 20))
    results: dict[str, list[dict[str, float]]] = {"edge": [], "ganesha": []}
    edge, ganesha = Edge(work, Path(args.server_tree), args.serve_allocator, args.in_process), Ganesha(work)
    versions: list[float] = []
    for _ in range(args.runs):
        results["ganesha"].append(one_run(ganesha, big, size, args.files, work, args.depth, args.large_only))
        results["edge"].append(one_run(edge, big, size, args.files, work, args.depth, args.large_only))
        versions.append(until_version(edge, big, size))
    big.unlink()
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; "
          f"{args.size_mib} MiB, {args.files} files, median of {args.runs}")
    print("| workload | Edge | ganesha | ratio |\n|---|---:|---:|---:|")
    for m in med["edge"]:
        e, g = med["edge"][m], med["ganesha"][m]
        print(f"| {m} | {e:.1f} | {g:.1f} | {e / g:.2f} |" if g else f"| {m} | {e:.1f} | {g:.1f} | - |")
    v = statistics.median(versions)
    print(f"| write until the version is committed, MiB/s | {v:.1f} | {med['ganesha']['write MiB/s']:.1f} | "
          f"{v / med['ganesha']['write MiB/s']:.2f} |")


if __name__ == "__main__":
    main()
