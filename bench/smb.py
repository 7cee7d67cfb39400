"""SMB benchmark: Edge Archive's SMB adapter vs Samba's smbd serving a plain directory.

Same machine, same run, same client (Samba's smbclient), loopback only, both servers with
signing mandatory and NTLMv2 logins.  Prints throughput for both and the ratio Edge/Samba,
for a large put and get (signed, SMB 3.1.1), the same encrypted (AES-128-GCM), and many
small files (`mput`/`mget` of a tree).

    python -m bench.smb                               # 1 GiB file, 10,000 small files, 3 runs
    python -m bench.smb --size-mib 256 --files 2000   # while the machine is busy
    python -m bench.smb --calls --files 200           # SMB requests and core calls per small file

Targets (docs/benchmarks.md): large get >= 0.5x Samba, large put >= 0.33x, small files
>= 0.33x.  smbd runs as root from a temp folder on a free high port (`smb ports`,
`interfaces = lo`, `bind interfaces only`, private/lock/state/cache/pid dirs there,
`smbd -F --no-process-group -s FILE`).  Each run uses a fresh Edge repository.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archive import Repository  # noqa: E402
from bench.ftp import (ENC_PASSWORD, alternate, check_back, common_args, free_port, make_big,  # noqa: E402
                       make_tree, print_report, timed, wait_port)  # noqa: E402
from protocols.base import ServeContext  # noqa: E402
from protocols.smb import SMBAdapter  # noqa: E402

USER, PASSWORD = "bench", "bench-password"


class Edge:
    name = "edge"

    def __init__(self, work: Path, encrypt: bool) -> None:
        self.dir = work / "edge"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.repo = Repository.init(self.dir / "repo", password=ENC_PASSWORD if encrypt else None, encrypt=encrypt)
        self.repo.add_share("bench")
        self.repo.add_user(USER, PASSWORD, smb=True)
        self.repo.grant(USER, "bench", "rw")
        self.port = free_port()
        self.adapter = SMBAdapter(self.repo, {"listen": f"127.0.0.1:{self.port}"},
                                  ServeContext(logger=logging.getLogger("bench.smb")))
        self.adapter.start()
        self.user = USER

    def stop(self) -> None:
        self.adapter.stop(1.0)
        self.repo.close()


class Samba:
    name = "samba"

    def __init__(self, work: Path) -> None:
        self.dir = work / "samba"
        shutil.rmtree(self.dir, ignore_errors=True)
        share = self.dir / "share"
        share.mkdir(parents=True)
        for d in ("private", "lock", "state", "cache", "pid", "log"):
            (self.dir / d).mkdir()
        self.port = free_port()
        conf = self.dir / "smb.conf"
        d = self.dir
        conf.write_text(f"""[global]
smb ports = {self.port}
interfaces = lo
bind interfaces only = yes
private dir = {d}/private
lock directory = {d}/lock
state directory = {d}/state
cache directory = {d}/cache
pid directory = {d}/pid
log file = {d}/log/smbd.log
passdb backend = tdbsam:{d}/private/passdb.tdb
server signing = mandatory
server min protocol = SMB2_02
disable netbios = yes
load printers = no
printing = bsd
printcap name = /dev/null
[bench]
path = {share}
read only = no
""")
        subprocess.run(["smbpasswd", "-c", str(conf), "-a", "-s", "root"], input=b"%s\n%s\n" % (
            PASSWORD.encode(), PASSWORD.encode()), check=True, capture_output=True)
        self.proc = subprocess.Popen(["smbd", "-F", "--no-process-group", "-s", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)     # smbd signals its whole group on exit
        wait_port(self.port)
        self.user = "root"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def smbclient(server, commands: str, *extra: str, cwd: Path) -> list[str]:
    return ["smbclient", "//127.0.0.1/bench", "-p", str(server.port), "-U", f"{server.user}%{PASSWORD}",
            "-m", "SMB3_11", *extra, "-c", commands]


def one_run(server, work: Path, bigs: list[Path], tree: Path, n_files: int, tag: str) -> dict[str, float]:
    size_mib = bigs[0].stat().st_size / (1 << 20)
    res: dict[str, float] = {}
    out = work / "out"
    out.mkdir(exist_ok=True)
    # two different files, so the encrypted put is not deduplicated against the signed one
    for big, (mode, extra) in zip(bigs, (("signed", ["--client-protection=sign"]),
                                         ("encrypted", ["--client-protection=encrypt"]))):
        name = f"big-{tag}-{mode}.bin"
        dt = timed(smbclient(server, f"put {big} {name}", *extra, cwd=work))
        res[f"{mode} put MiB/s"] = size_mib / dt
        dt = timed(smbclient(server, f"get {name} {out / name}", *extra, cwd=work))
        res[f"{mode} get MiB/s"] = size_mib / dt
        if (out / name).stat().st_size != big.stat().st_size:
            raise RuntimeError(f"{server.name}: short download")
        (out / name).unlink()
    dt = timed(["bash", "-c", f"cd {tree.parent} && " + " ".join(
        f"'{a}'" for a in smbclient(server, f"prompt off; recurse on; mkdir t{tag}; cd t{tag}; "
                                              f"lcd {tree}; mput *", "--client-protection=sign", cwd=work))])
    res["small put files/s"] = n_files / dt
    back = work / f"back-{server.name}"
    shutil.rmtree(back, ignore_errors=True)
    back.mkdir()
    dt = timed(smbclient(server, f"prompt off; recurse on; cd t{tag}; lcd {back}; mget *",
                         "--client-protection=sign", cwd=work))
    res["small get files/s"] = n_files / dt
    check_back(back, n_files, server.name)
    return res


COMMANDS = ("NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT", "CREATE", "CLOSE",
            "FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL", "ECHO", "QUERY_DIRECTORY", "CHANGE_NOTIFY",
            "QUERY_INFO", "SET_INFO", "OPLOCK_BREAK")
CORE_CALLS = ("stat", "exists", "listdir", "open_read", "open_write", "open_update", "open_staged_update",
              "mkdir", "set_times", "rename", "remove", "usage", "snapshot_tokens", "create_file")


def count_calls(work: Path, n_files: int, file_size: int) -> None:
    """`--calls`: the adapter's own per-file work for a small-file `mput` (Edge only): SMB
    requests per file by command, and ShareFS calls and version commits per file."""
    from collections import Counter

    from archive import streams
    from archive.sharefs import ShareFS
    counts: Counter[str] = Counter()

    def wrap(cls: type, name: str, label: str) -> None:
        orig = getattr(cls, name)

        def counted(*a, **kw):
            counts[label] += 1
            return orig(*a, **kw)
        setattr(cls, name, counted)
    for name in CORE_CALLS:
        wrap(ShareFS, name, f"core {name}")
    wrap(streams.Writer, "commit", "core commit (Writer)")
    wrap(streams.Updater, "commit", "core commit (Updater)")

    class Cmds(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            counts["smb " + COMMANDS[record.args[0]] if record.args[0] < len(COMMANDS) else "smb ?"] += 1
    trace = logging.getLogger("edge_archive.smb.trace")
    trace.setLevel(logging.DEBUG)
    trace.addHandler(Cmds())
    trace.propagate = False
    tree = work / "calls-tree"
    make_tree(tree, n_files, file_size)
    server = Edge(work, encrypt=True)
    try:
        counts.clear()
        dt = timed(["bash", "-c", f"cd {tree.parent} && " + " ".join(
            f"'{a}'" for a in smbclient(server, f"prompt off; recurse on; mkdir calls; cd calls; lcd {tree}; mput *",
                                        "--client-protection=sign", cwd=work))])
    finally:
        server.stop()
    print(f"{n_files} files x {file_size} B put in {dt:.2f} s ({n_files / dt:.1f} files/s); per file:")
    for k, v in sorted(counts.items()):
        print(f"  {k:34s} {v / n_files:6.2f}")


def main() -> None:
    if "--calls" in sys.argv:
        sys.argv.remove("--calls")
        args = common_args(__doc__, ROOT / "bench" / "work" / "smb")
        args.work.mkdir(parents=True, exist_ok=True)
        count_calls(args.work, args.files, args.file_size)
        return
    args = common_args(__doc__, ROOT / "bench" / "work" / "smb")
    for tool in ("smbclient", "smbd", "smbpasswd"):
        if not shutil.which(tool) and not Path("/usr/sbin", tool).exists():
            sys.exit(f"{tool} is missing (apt-get install samba smbclient)")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    big, tree = work / "big.bin", work / "tree"
    print(f"preparing {args.size_mib} MiB file and {args.files} x {args.file_size} B files in {work}", flush=True)
    make_big(big, args.size_mib)
    make_big(work / "big2.bin", args.size_mib)
    make_tree(tree, args.files, args.file_size)
    results = alternate(args.runs, "samba", lambda: Samba(work), lambda: Edge(work, encrypt=not args.plain),
                        lambda server, tag: one_run(server, work, [big, work / "big2.bin"], tree, args.files, tag))
    targets = {"signed put MiB/s": 0.33, "signed get MiB/s": 0.5, "encrypted put MiB/s": None,
               "encrypted get MiB/s": None, "small put files/s": 0.33, "small get files/s": 0.33}
    print_report(results, targets, "samba", args)
    shutil.rmtree(work / "edge", ignore_errors=True)
    shutil.rmtree(work / "samba", ignore_errors=True)


if __name__ == "__main__":
    main()
