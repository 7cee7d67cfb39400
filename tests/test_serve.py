"""`archivectl serve` / `archivectl status` as a user runs them: real processes, real clients.

Every test starts `archivectl serve` as a subprocess and drives it over loopback: curl for
FTP and WebDAV, a socket client for the "upload" adapter that tests install as a third-party
package (a dist-info directory with an entry point on PYTHONPATH), `requests` for /metrics,
a unix datagram socket standing in for systemd's NOTIFY_SOCKET, `systemd-analyze verify`
for the unit files.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests

from archive import Repository
from serve_helpers import (ServeProcess, UploadClient, archivectl, free_port, install_fake_package,
                           python_env)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN_PW = "s3cret-pw"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def pkg(tmp_path_factory) -> str:
    """The third-party package: adapter 'upload' (works) and 'broken' (cannot be imported)."""
    root = str(tmp_path_factory.mktemp("thirdparty"))
    return install_fake_package(root, {"upload": "serve_helpers:UploadAdapter",
                                       "broken": "no_such_module_here:Adapter"})


def make_repo(path: str, files: dict[str, bytes] | None = None) -> str:
    repo = Repository.init(path)
    try:
        repo.add_share("archive")
        repo.add_user("alice", ADMIN_PW)
        repo.grant("alice", "archive", "rw")
        fs = repo.share("archive")
        for name, data in (files or {}).items():
            with fs.open_write(name) as w:
                w.write(data)
    finally:
        repo.close()
    return path


@pytest.fixture
def repo(tmp_path) -> str:
    return make_repo(str(tmp_path / "repo"), {"/old.bin": b"previous content\n"})


def write_config(tmp_path, text: str, name: str = "archive.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def base_config(repo: str, *, grace: float = 30, metrics: bool = False, ports: dict | None = None) -> str:
    """A config on free loopback ports (`ports` pins some: {"ftp": 2121})."""
    ports = {"metrics": free_port(), "ftp": free_port(), "webdav": free_port(), "s3": free_port(), "smb": free_port(),
             "nfs": free_port(), "upload": 0,
             **(ports or {})}
    return (f'[repository]\npath = "{repo}"\n[serve]\ngrace_period = {grace}\n'
            f'[metrics]\nenabled = {str(metrics).lower()}\nlisten = "127.0.0.1:{ports["metrics"]}"\n'
            f'[ftp]\nlisten = "127.0.0.1:{ports["ftp"]}"\n'
            f'[webdav]\nlisten = "127.0.0.1:{ports["webdav"]}"\nrequire_tls_for_basic = false\n'
            f'[s3]\nlisten = "127.0.0.1:{ports["s3"]}"\n'
            f'[smb]\nlisten = "127.0.0.1:{ports["smb"]}"\n'
            f'[nfs]\nlisten = "127.0.0.1:{ports["nfs"]}"\n'
            f'[upload]\nlisten = "127.0.0.1:{ports["upload"]}"\n')


def start(tmp_path, pkg: str, args: list[str], tag: str = "serve", cwd: str | None = None,
          **env: str) -> ServeProcess:
    return ServeProcess(archivectl() + args, cwd=cwd or str(tmp_path), env=python_env([pkg], **env),
                        tmp=str(tmp_path), tag=tag)


def run(tmp_path, pkg: str, args: list[str], cwd: str | None = None, timeout: float = 60,
        **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(archivectl() + args, cwd=cwd or str(tmp_path), env=python_env([pkg], **env),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def stop(proc: ServeProcess, sig: int = signal.SIGTERM) -> int:
    proc.proc.send_signal(sig)
    return proc.finish()


def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "50", *args], capture_output=True,
                          timeout=timeout)


def current(repo: str, path: str) -> tuple[bytes, int]:
    """(current bytes, number of versions) of a file, read through the core."""
    r = Repository.open(repo)
    try:
        fs = r.share("archive")
        with fs.open_read(path) as f:
            data = f.read()
        return data, len(fs.versions(path))
    finally:
        r.close()


def assert_clean_error(res: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    out = res.stdout + res.stderr
    assert res.returncode == code, out
    assert "Traceback" not in out, out
    for n in needles:
        assert n in out, f"{n!r} not in:\n{out}"


def check_clean(tmp_path, pkg: str, repo: str) -> None:
    res = run(tmp_path, pkg, ["--repo", repo, "check"])
    assert res.returncode == 0, res.stdout + res.stderr


# ----------------------------------------------------------------------------- first start

def test_first_start_creates_repository_admin_and_certificate_then_reuses_them(tmp_path, pkg):
    """No configuration at all: a repository at the default place ($XDG_DATA_HOME/edge-archive),
    share 'archive', user 'admin' with a password printed once, a self-signed certificate,
    every installed protocol on loopback.  The second start reuses all of it and prints no
    password."""
    ftp_port, dav_port, metrics_port = free_port(), free_port(), free_port()
    env = dict(EDGE_ARCHIVE_FTP_LISTEN=f"127.0.0.1:{ftp_port}", EDGE_ARCHIVE_WEBDAV_LISTEN=f"127.0.0.1:{dav_port}",
               EDGE_ARCHIVE_METRICS_LISTEN=f"127.0.0.1:{metrics_port}", XDG_DATA_HOME=str(tmp_path / "data"),
               **{f"EDGE_ARCHIVE_{name}_LISTEN": f"127.0.0.1:{free_port()}" for name in ("SMB", "NFS", "S3")})
    p = start(tmp_path, pkg, ["serve"], **env).ready()
    out = p.stdout()
    m = re.search(r"password: (\S+)", out)
    assert m, out
    password = m.group(1)
    urls = p.urls()
    assert urls["ftp"] == f"ftp://127.0.0.1:{ftp_port}"
    assert urls["webdav"].startswith(f"http://127.0.0.1:{dav_port}")
    assert urls["upload"].startswith("upload://127.0.0.1:")
    assert urls["metrics"] == f"http://127.0.0.1:{metrics_port}/metrics"
    assert "event=adapter_unavailable protocol=broken" in p.stderr()   # skipped, not fatal
    repo = tmp_path / "data" / "edge-archive"
    assert (repo / "config.json").is_file()
    assert f"Created repository {repo}" in out

    # the printed password works over a real client, with rw on share 'archive'
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello from the first start\n")
    res = curl("-T", str(src), f"ftp://admin:{password}@127.0.0.1:{ftp_port}/archive/hello.txt")
    assert res.returncode == 0, res.stderr
    bad = curl("-T", str(src), f"ftp://admin:wrong@127.0.0.1:{ftp_port}/archive/x.txt")
    assert bad.returncode != 0
    # FTPS with the generated certificate
    res = curl("--ssl-reqd", "-k", f"ftp://admin:{password}@127.0.0.1:{ftp_port}/archive/hello.txt")
    assert res.returncode == 0 and res.stdout == b"hello from the first start\n", res.stderr
    from cryptography import x509
    cert = x509.load_pem_x509_certificate((repo / "tls" / "cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(i) for i in san.get_values_for_type(x509.IPAddress)]
    assert oct((repo / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"
    assert stop(p) == 0

    p2 = start(tmp_path, pkg, ["serve"], tag="second", **env).ready()
    out2 = p2.stdout()
    assert "password:" not in out2
    assert "archivectl user passwd admin" in out2
    res = curl(f"ftp://admin:{password}@127.0.0.1:{ftp_port}/archive/hello.txt")
    assert res.stdout == b"hello from the first start\n", res.stderr
    assert stop(p2) == 0
    assert current(str(repo), "/hello.txt") == (b"hello from the first start\n", 1)


# ----------------------------------------------------------------------------- lifecycle

def test_notify_status_reload_and_clean_stop(tmp_path, pkg, repo):
    """READY=1 once listening, `status` shows the process, SIGHUP reloads the log level
    (a broken file is refused and the old config kept), SIGTERM sends STOPPING=1, exits 0
    and removes the status file."""
    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.settimeout(60)
    cfg_text = base_config(repo, metrics=True)
    cfg = write_config(tmp_path, cfg_text)
    p = start(tmp_path, pkg, ["serve", "--config", cfg, "--only", "upload"], NOTIFY_SOCKET=notify_path)
    msg = sock.recv(4096).decode()
    assert "READY=1" in msg and f"MAINPID={p.proc.pid}" in msg
    p.ready()
    port = p.port("upload")

    st = run(tmp_path, pkg, ["--config", cfg, "status", "--json"])
    assert st.returncode == 0, st.stderr
    doc = json.loads(st.stdout)
    assert [s["pid"] for s in doc["serving"]] == [p.proc.pid]
    assert doc["serving"][0]["protocols"]["upload"]["urls"] == [f"upload://127.0.0.1:{port}"]
    assert doc["repository"]["stats"]["files"] == 1
    text = run(tmp_path, pkg, ["--config", cfg, "status"])
    assert text.returncode == 0 and f"pid {p.proc.pid}" in text.stdout and "upload://" in text.stdout

    # a session shows up in the status file (refreshed every couple of seconds)
    c = UploadClient(port)
    assert c.cmd(f"LOGIN alice {ADMIN_PW}") == "OK"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        doc = json.loads(run(tmp_path, pkg, ["--config", cfg, "status", "--json"]).stdout)
        if doc["serving"][0]["protocols"]["upload"].get("sessions") == 1:
            break
        time.sleep(0.3)
    assert doc["serving"][0]["protocols"]["upload"]["sessions"] == 1
    assert doc["serving"][0]["protocols"]["upload"]["logins"] == 1
    c.close()

    # SIGHUP: a broken file is refused, the process keeps serving
    open(cfg, "w").write("[serve\n")
    p.proc.send_signal(signal.SIGHUP)
    p.wait_for("event=reload_failed")
    assert "line 1" in p.stderr()
    # then a good one: the log level changes, the adapter gets its new section
    open(cfg, "w").write(cfg_text.replace("[serve]\n", '[serve]\nlog_level = "debug"\n')
                         .replace("[upload]\n", '[upload]\nbanner = "reloaded"\n'))
    p.proc.send_signal(signal.SIGHUP)
    p.wait_for("event=reload log_level=debug")
    assert "adapters_reloaded=upload needs_restart=-" in p.stderr()
    c = UploadClient(port)      # still serving after both reloads, with the new banner
    assert c.hello == "HELLO reloaded"
    c.close()

    assert stop(p) == 0
    notes = []
    while "STOPPING=1" not in notes:
        notes.append(sock.recv(4096).decode())       # RELOADING=1, READY=1 (reload), STOPPING=1
    assert notes == ["RELOADING=1", "READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    sock.close()
    assert os.listdir(os.path.join(repo, "run")) == []
    st = run(tmp_path, pkg, ["--config", cfg, "status"])
    assert st.returncode == 3 and "Not serving" in st.stdout
    for line in p.stderr().splitlines():            # one key=value line per event
        assert re.match(r"ts=\S+ level=\w+ logger=\S+ \w+=", line), line


def test_status_ignores_a_stale_status_file(tmp_path, pkg, repo):
    run_dir = os.path.join(repo, "run")
    os.makedirs(run_dir, exist_ok=True)
    dead = int(open("/proc/sys/kernel/pid_max").read()) + 1       # above pid_max: never alive
    stale = os.path.join(run_dir, f"serve-{dead}.json")
    with open(stale, "w") as f:
        json.dump({"pid": dead, "started_at": 0, "protocols": {"ftp": {"urls": ["ftp://x"]}}}, f)
    reused = os.path.join(run_dir, f"serve-{os.getpid()}.json")   # a live pid, but another process
    with open(reused, "w") as f:
        json.dump({"pid": os.getpid(), "proc_start": "1", "started_at": 0, "protocols": {}}, f)
    res = run(tmp_path, pkg, ["--repo", repo, "status", "--json"])
    assert res.returncode == 3, res.stdout + res.stderr
    assert json.loads(res.stdout)["serving"] == []
    assert not os.path.exists(stale) and not os.path.exists(reused)


def test_status_without_repository(tmp_path, pkg):
    res = run(tmp_path, pkg, ["--repo", str(tmp_path / "none"), "status"])
    assert_clean_error(res, 1, "no repository at")


# ----------------------------------------------------------------------------- bad input

CONFIG_ERRORS = {
    # (the file starts with two [repository] lines, so line 3 of the snippet is line 5)
    "syntax": ('[ftp]\nlisten = "127.0.0.1:2121"\nenabled = tru\n', ["TOML syntax error at line 5, column 11"]),
    "unknown_key": ('[metrics]\nlisen = "127.0.0.1:2121"\n', ["[metrics] unknown key 'lisen'",
                                                              "did you mean 'listen'"]),
    "common_key_type": ('[ftp]\nenabled = "yes"\n', ["[ftp] enabled must be true or false"]),
    "unknown_key_serve": ('[serve]\ngrace = 3\n', ["[serve] unknown key 'grace'", "grace_period"]),
    "unknown_section": ('[ftpp]\nenabled = true\n', ["unknown section [ftpp]", "did you mean 'ftp'"]),
    "bad_port": ('[ftp]\nlisten = "127.0.0.1:99999"\n', ["[ftp] listen", "port 99999 is out of range"]),
    "port_not_number": ('[upload]\nlisten = "127.0.0.1:ftp"\n', ["[upload] listen", "port 'ftp' is not a number"]),
    "listen_not_string": ('[metrics]\nlisten = 9464\n', ["[metrics] listen must be a string"]),
    "bad_type": ('[serve]\ngrace_period = "long"\n', ["[serve] grace_period must be a number"]),
    "bad_log_level": ('[serve]\nlog_level = "loud"\n', ["[serve] log_level must be one of"]),
    "adapter_key": ('[upload]\nbaner = "hi"\n', ["[upload] unknown key 'baner'", "did you mean 'banner'"]),
    # values the adapters themselves refuse (their constructor's ValueError)
    "ftp_value": ('[ftp]\nrequire_tls = true\ntls = false\n', ["[ftp]", "require_tls needs tls"]),
    "webdav_value": ('[webdav]\nauth = "kerberos"\n', ["[webdav]", "kerberos"]),
    "tls_half": ('[tls]\ncert = "/etc/hostname"\n', ["[tls] cert and key must be given together"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_config_errors_are_reported_without_traceback(tmp_path, pkg, repo, case):
    text, needles = CONFIG_ERRORS[case]
    cfg = write_config(tmp_path, f'[repository]\npath = "{repo}"\n' + text)
    res = run(tmp_path, pkg, ["serve", "--config", cfg])
    assert_clean_error(res, 2, "configuration error", *needles)
    assert not os.path.exists(os.path.join(repo, "run")) or os.listdir(os.path.join(repo, "run")) == []


def test_config_error_through_the_archivectl_group_names_line_and_column(tmp_path, pkg):
    cfg = write_config(tmp_path, "[serve]\ngrace_period = = 3\n")
    res = run(tmp_path, pkg, ["--config", cfg, "serve"])
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in out
    assert "line 2" in out and "column" in out, out


@pytest.mark.parametrize("var,value,needle", [
    ("EDGE_ARCHIVE_UPLOAD_ENABLED", "maybe", "must be true or false"),
    ("EDGE_ARCHIVE_METRICS_LISEN", "127.0.0.1:21", "EDGE_ARCHIVE_METRICS_LISEN: [metrics] has no key 'lisen'"),
    ("EDGE_ARCHIVE_UPLOAD_BANER", "x", "EDGE_ARCHIVE_UPLOAD_BANER: [upload] has no key 'baner'"),
    ("EDGE_ARCHIVE_METRICS_LISTEN", "localhost", 'must be "HOST:PORT"'),
    ("EDGE_ARCHIVE_SERVE_GRACE_PERIOD", "soon", "must be a number"),
])
def test_bad_environment_overrides(tmp_path, pkg, repo, var, value, needle):
    res = run(tmp_path, pkg, ["--repo", repo, "serve"], **{var: value})
    assert_clean_error(res, 2, var, needle)


def test_unknown_protocol_in_only(tmp_path, pkg, repo):
    res = run(tmp_path, pkg, ["--repo", repo, "serve", "--only", "gopher"])
    assert_clean_error(res, 2, "--only gopher: no such protocol installed", "ftp", "upload")


def test_explicitly_enabled_adapter_that_cannot_load(tmp_path, pkg, repo):
    res = run(tmp_path, pkg, ["--repo", repo, "serve", "--only", "broken"])
    assert_clean_error(res, 1, "broken: adapter no_such_module_here:Adapter cannot be loaded",
                       "ModuleNotFoundError")


def _cert_pair(directory) -> tuple[str, str]:
    from protocols.tls import ensure_self_signed
    cert, key, _ = ensure_self_signed(str(directory))
    return cert, key


@pytest.mark.parametrize("case", ["missing", "garbage", "directory", "mismatch"])
def test_unusable_certificate(tmp_path, pkg, repo, case):
    cert, key = _cert_pair(tmp_path / "a")
    other_cert, _ = _cert_pair(tmp_path / "b")
    if case == "missing":
        cert, needle = str(tmp_path / "nope.pem"), "file not found"
    elif case == "garbage":
        (tmp_path / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
        cert, needle = str(tmp_path / "garbage.pem"), "not a PEM certificate"
    elif case == "directory":
        cert, needle = str(tmp_path), "is a directory"
    else:
        cert, needle = other_cert, "does not belong to the certificate"
    cfg = write_config(tmp_path, base_config(repo) + f'[tls]\ncert = "{cert}"\nkey = "{key}"\n')
    res = run(tmp_path, pkg, ["serve", "--config", cfg])
    assert_clean_error(res, 2, "[tls]", needle)


def test_configured_repository_missing(tmp_path, pkg):
    missing = str(tmp_path / "not-there")
    cfg = write_config(tmp_path, f'[repository]\npath = "{missing}"\n')
    res = run(tmp_path, pkg, ["serve", "--config", cfg])
    assert_clean_error(res, 1, "repository missing", missing)
    assert not os.path.exists(missing)          # a named repository is never created implicitly
    notrepo = tmp_path / "somedir"
    notrepo.mkdir()
    (notrepo / "precious.txt").write_text("mine")
    res = run(tmp_path, pkg, ["--repo", str(notrepo), "serve"])
    assert_clean_error(res, 1, "repository missing")
    assert os.listdir(notrepo) == ["precious.txt"]


def test_lost_catalog_is_not_served_as_an_empty_archive(tmp_path, pkg, repo):
    """serve must not open a repository whose catalog file is gone: that would create an empty
    catalog, and every client would see every share and file deleted."""
    cfg = write_config(tmp_path, base_config(repo))
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / "repo" / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    res = run(tmp_path, pkg, ["serve", "--config", cfg])
    assert_clean_error(res, 1, "catalog", "archivectl recover")
    assert not (tmp_path / "repo" / "catalog.sqlite").exists()       # nothing created in its place
    with pytest.raises(Exception, match="archivectl recover"):
        Repository.open(repo)                                         # the Python API refuses too
    assert run(tmp_path, pkg, ["--repo", repo, "recover"]).returncode == 0
    assert current(repo, "/old.bin") == (b"previous content\n", 1)


@pytest.mark.parametrize("what", ["ftp", "upload", "metrics"])
def test_port_already_in_use(tmp_path, pkg, repo, what):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        cfg = write_config(tmp_path, base_config(repo, metrics=True, ports={what: port}))
        only = "ftp,upload" if what == "metrics" else what
        res = run(tmp_path, pkg, ["serve", "--config", cfg, "--only", only])
        assert_clean_error(res, 1, f"{what}: cannot listen on 127.0.0.1:{port}: address already in use")
    finally:
        busy.close()
    run_dir = os.path.join(repo, "run")
    assert not os.path.isdir(run_dir) or os.listdir(run_dir) == []


# ----------------------------------------------------------------------------- overrides

def test_environment_overrides_the_file_and_only_selects(tmp_path, pkg, repo):
    port = free_port()
    cfg = write_config(tmp_path, base_config(repo))
    p = start(tmp_path, pkg, ["serve", "--config", cfg], EDGE_ARCHIVE_UPLOAD_LISTEN=f"127.0.0.1:{port}",
              EDGE_ARCHIVE_WEBDAV_ENABLED="false", EDGE_ARCHIVE_UPLOAD_BANNER="from-env").ready()
    urls = p.urls()
    assert urls["upload"] == f"upload://127.0.0.1:{port}"
    assert "webdav" not in urls and "ftp" in urls
    assert UploadClient(port).hello == "HELLO from-env"
    assert stop(p) == 0
    p = start(tmp_path, pkg, ["serve", "--config", cfg, "--only", "upload"], tag="only").ready()
    assert set(p.urls()) == {"upload"}
    assert stop(p) == 0


# ----------------------------------------------------------------------------- shutdown with uploads

def test_sigterm_lets_a_short_upload_finish_and_aborts_a_long_one(tmp_path, pkg, repo):
    """Grace period: an upload that completes within it is committed; one still running
    when it ends is aborted: the client sees the connection drop, the previous version
    stays current, and `archivectl check` is clean."""
    cfg = write_config(tmp_path, base_config(repo, grace=3))
    p = start(tmp_path, pkg, ["serve", "--config", cfg, "--only", "upload"]).ready()
    port = p.port("upload")
    finisher, stalled = UploadClient(port), UploadClient(port)
    for c in (finisher, stalled):
        assert c.cmd(f"LOGIN alice {ADMIN_PW}") == "OK"
    finisher.put_start("archive", "/new.bin", 200_000, b"a" * 100_000)
    stalled.put_start("archive", "/old.bin", 1_000_000, b"b" * 100_000)
    time.sleep(0.5)          # let both transfers reach the server before the signal
    p.proc.send_signal(signal.SIGTERM)
    p.wait_for("event=stopping")
    deadline = time.monotonic() + 30                  # no longer accepting (soon)
    while time.monotonic() < deadline:
        try:
            UploadClient(port).close()
        except ConnectionRefusedError:
            break
        except (ConnectionResetError, OSError):
            pass
        time.sleep(0.05)
    else:
        raise AssertionError("still accepting connections after SIGTERM")
    finisher.f.write(b"a" * 100_000)
    finisher.f.flush()
    assert finisher.f.readline().decode().startswith("OK version=1")
    assert stalled.f.readline() == b""                 # dropped without an OK
    assert p.finish() == 0
    assert current(repo, "/old.bin") == (b"previous content\n", 1)
    assert current(repo, "/new.bin") == (b"a" * 200_000, 1)
    check_clean(tmp_path, pkg, repo)


def test_a_second_sigterm_gives_up_waiting_for_uploads(tmp_path, pkg, repo):
    cfg = write_config(tmp_path, base_config(repo, grace=300))
    p = start(tmp_path, pkg, ["serve", "--config", cfg, "--only", "upload"]).ready()
    stalled = UploadClient(p.port("upload"))
    assert stalled.cmd(f"LOGIN alice {ADMIN_PW}") == "OK"
    stalled.put_start("archive", "/old.bin", 1_000_000, b"b" * 100_000)
    time.sleep(0.5)
    p.proc.send_signal(signal.SIGTERM)
    p.wait_for("event=stopping")
    p.proc.send_signal(signal.SIGTERM)
    assert p.finish() == 1
    assert "event=stop_forced" in p.stderr()
    assert stalled.f.readline() == b""
    assert current(repo, "/old.bin") == (b"previous content\n", 1)
    check_clean(tmp_path, pkg, repo)


@pytest.mark.parametrize("protocol", ["ftp", "webdav"])
def test_sigterm_during_a_curl_upload_keeps_the_previous_version(tmp_path, pkg, repo, protocol):
    cfg = write_config(tmp_path, base_config(repo, grace=0.5))
    p = start(tmp_path, pkg, ["serve", "--config", cfg, "--only", protocol]).ready()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4 << 20))
    if protocol == "ftp":
        target = ["-T", str(big), f"ftp://alice:{ADMIN_PW}@127.0.0.1:{p.port('ftp')}/archive/old.bin"]
    else:
        target = ["-f", "-u", f"alice:{ADMIN_PW}", "-T", str(big), p.urls()["webdav"].rstrip("/") + "/archive/old.bin"]
    up = subprocess.Popen(["curl", "-sS", "--limit-rate", "256k", *target],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.wait_for("event=login_ok")
    time.sleep(1.0)          # the transfer is under way (4 MiB at 256 KiB/s needs ~16 s)
    p.proc.send_signal(signal.SIGTERM)
    assert p.finish() == 0
    _out, err = up.communicate(timeout=60)
    assert up.returncode != 0, err             # the client sees the upload fail
    assert current(repo, "/old.bin") == (b"previous content\n", 1)
    check_clean(tmp_path, pkg, repo)


# ----------------------------------------------------------------------------- several processes

def test_two_serve_processes_share_one_repository(tmp_path, pkg, repo):
    """`serve --only ftp` and `serve --only webdav` at once (the per-protocol systemd units):
    a file uploaded over FTP is read back over WebDAV, and `status` lists both processes."""
    cfg = write_config(tmp_path, base_config(repo))
    ftp = start(tmp_path, pkg, ["serve", "--config", cfg, "--only", "ftp"], tag="ftp")
    dav = start(tmp_path, pkg, ["serve", "--config", cfg, "--only", "webdav"], tag="webdav")
    ftp.ready()
    dav.ready()
    data = os.urandom(300_000)
    src = tmp_path / "shared.bin"
    src.write_bytes(data)
    res = curl("-T", str(src), f"ftp://alice:{ADMIN_PW}@127.0.0.1:{ftp.port('ftp')}/archive/shared.bin")
    assert res.returncode == 0, res.stderr
    res = curl("-f", "-u", f"alice:{ADMIN_PW}", dav.urls()["webdav"].rstrip("/") + "/archive/shared.bin")
    assert res.returncode == 0 and res.stdout == data, res.stderr
    res = curl("-f", "-u", f"alice:{ADMIN_PW}", "-T", str(src),
               dav.urls()["webdav"].rstrip("/") + "/archive/shared.bin")
    assert res.returncode == 0, res.stderr
    st = json.loads(run(tmp_path, pkg, ["--config", cfg, "status", "--json"]).stdout)
    assert sorted(s["pid"] for s in st["serving"]) == sorted([ftp.proc.pid, dav.proc.pid])
    assert sorted(n for s in st["serving"] for n in s["protocols"]) == ["ftp", "webdav"]
    assert stop(ftp) == 0 and stop(dav) == 0
    assert current(repo, "/shared.bin") == (data, 2)
    check_clean(tmp_path, pkg, repo)


# ----------------------------------------------------------------------------- metrics

def _metric(text: str, name: str, protocol: str | None = None) -> float:
    label = f'{{protocol="{protocol}"}}' if protocol else ""
    m = re.search(rf"^{re.escape(name + label)} (\S+)$", text, re.M)
    assert m, f"{name}{label} not in metrics"
    return float(m.group(1))


def test_metrics_count_sessions_bytes_commits_and_login_failures(tmp_path, pkg, repo):
    cfg = write_config(tmp_path, base_config(repo, metrics=True))
    p = start(tmp_path, pkg, ["serve", "--config", cfg, "--only", "upload,ftp"]).ready()
    url = p.urls()["metrics"]
    c = UploadClient(p.port("upload"))
    assert c.cmd("LOGIN alice wrong") == "ERR auth"
    assert c.cmd(f"LOGIN alice {ADMIN_PW}") == "OK"
    assert c.put("archive", "/m.bin", b"x" * 5000).startswith("OK version=1")
    assert c.put("archive", "/m.bin", b"x" * 5000 + b"y").startswith("OK version=2")
    assert c.cmd("GET archive /m.bin") == "OK 5001"
    assert c.f.read(5001) == b"x" * 5000 + b"y"
    text = requests.get(url, timeout=30).text
    assert _metric(text, "edge_archive_sessions", "upload") == 1
    assert _metric(text, "edge_archive_login_failures_total", "upload") == 1
    assert _metric(text, "edge_archive_logins_total", "upload") == 1
    assert _metric(text, "edge_archive_versions_committed_total", "upload") == 2
    assert _metric(text, "edge_archive_bytes_in_total", "upload") == 10001
    assert _metric(text, "edge_archive_bytes_out_total", "upload") == 5001
    assert _metric(text, "edge_archive_sessions", "ftp") == 0
    assert _metric(text, "edge_archive_repository_logical_bytes") >= 10001
    assert _metric(text, "edge_archive_repository_stored_bytes") > 0
    assert _metric(text, "edge_archive_repository_dedupe_ratio") > 1      # v1 and v2 share chunks
    c.close()
    # a real FTP client's upload is counted too
    src = tmp_path / "f.txt"
    src.write_bytes(b"ftp bytes\n")
    assert curl("-T", str(src), f"ftp://alice:{ADMIN_PW}@127.0.0.1:{p.port('ftp')}/archive/f.txt").returncode == 0
    text = requests.get(url, timeout=30).text
    assert _metric(text, "edge_archive_versions_committed_total", "ftp") == 1
    assert stop(p) == 0


# ----------------------------------------------------------------------------- systemd

def test_systemd_units_verify(tmp_path):
    """`systemd-analyze verify` on the shipped units; ExecStart is pointed at the installed
    archivectl in a copy (verify insists that the binary exists).  Any warning fails."""
    exe = archivectl()[0]                  # the environment's console script (tests/run.sh: .venv)
    assert shutil.which("systemd-analyze"), "systemd-analyze is needed (tests/apt-packages.txt: systemd)"
    units = os.path.join(ROOT, "systemd")
    names = sorted(os.listdir(units))
    assert names == ["edge-archive.service", "edge-archive.target", "edge-archive@.service"]
    for n in names:
        text = open(os.path.join(units, n)).read()
        (tmp_path / n).write_text(text.replace("/usr/local/bin/archivectl", exe))
    main = open(os.path.join(units, "edge-archive.service")).read()
    for directive in ("Type=notify", "User=edge-archive", "StateDirectory=edge-archive", "NoNewPrivileges=yes",
                      "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                      "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                      "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert directive in main, directive
    assert "serve --only %i" in open(os.path.join(units, "edge-archive@.service")).read()
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "edge-archive.service"),
                          str(tmp_path / "edge-archive@ftp.service"), str(tmp_path / "edge-archive.target")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "" and res.stderr.strip() == "", res.stdout + res.stderr


def test_shipped_default_config_is_all_defaults(tmp_path):
    """etc/edge-archive/archive.toml parses, validates, and changes nothing."""
    from protocols.config import ProtocolInfo, load_file, resolve
    protocols = {n: ProtocolInfo(n) for n in ("ftp", "webdav")}
    shipped = resolve(load_file(os.path.join(ROOT, "etc", "edge-archive", "archive.toml")), protocols, env={})
    empty = resolve({}, protocols, env={})
    assert vars(shipped) | {"source": None} == vars(empty) | {"source": None}
    assert empty.protocols["ftp"]["listen"] == "127.0.0.1:2121"
    assert empty.protocols["webdav"]["listen"] == "127.0.0.1:8080"
    assert empty.metrics == {"enabled": True, "listen": "127.0.0.1:9464"}
    assert empty.serve["grace_period"] == 30.0
    env = resolve({}, protocols, env={"EDGE_ARCHIVE_SERVE_GRACE_PERIOD": "5", "EDGE_ARCHIVE_FTP_ENABLED": "no",
                                      "EDGE_ARCHIVE_REPO": "/x", "EDGE_ARCHIVE_WEBDAV_THREADS": "4"})
    assert env.serve["grace_period"] == 5.0 and env.protocols["ftp"]["enabled"] is False
    assert env.protocols["webdav"]["threads"] == 4


def test_encrypted_repository_needs_its_passphrase(tmp_path, pkg):
    path = str(tmp_path / "enc")
    r = Repository.init(path, password="correct horse", encrypt=True)
    r.add_share("archive")
    r.close()
    cfg = write_config(tmp_path, base_config(path))
    res = run(tmp_path, pkg, ["serve", "--config", cfg, "--only", "upload"])
    assert_clean_error(res, 1, "is encrypted and the passphrase is missing", "EDGE_ARCHIVE_PASSWORD")
    res = run(tmp_path, pkg, ["serve", "--config", cfg, "--only", "upload"], EDGE_ARCHIVE_PASSWORD="wrong")
    assert_clean_error(res, 1, "is encrypted and the passphrase is wrong")
    p = start(tmp_path, pkg, ["serve", "--config", cfg, "--only", "upload"],
              EDGE_ARCHIVE_PASSWORD="correct horse").ready()
    assert stop(p) == 0


def test_unwritable_state_dir_is_a_clear_error(tmp_path, pkg, repo):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    cfg = write_config(tmp_path, base_config(repo))
    res = run(tmp_path, pkg, ["serve", "--config", cfg, "--only", "upload"],
              EDGE_ARCHIVE_SERVE_STATE_DIR=str(blocker / "state"))
    assert_clean_error(res, 1, "cannot create the self-signed certificate", "state_dir")
