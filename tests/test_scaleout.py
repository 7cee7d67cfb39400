"""Two `archivectl serve` nodes on one PostgreSQL catalog and one S3 bucket.

Node A serves FTP (the sensors), node B WebDAV (the desktops); both are real subprocesses
started from their own TOML file, as the README shows.  The tests run in file order: the
last ones kill A with SIGKILL, take the store down, and drop the catalog.
"""
from __future__ import annotations

import ftplib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from serve_helpers import ServeProcess, free_port

PW = "alice-pw"


def _bytes(n: int, seed: int) -> bytes:
    import random
    return random.Random(seed).randbytes(n)


class Cluster:
    def __init__(self, tmp: Path, pg, s3) -> None:
        self.tmp, self.pg, self.s3 = tmp, pg, s3
        self.url = s3.url(prefix="site/archive", retries="2")
        self.catalog = pg.new_url("scale")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_ARCHIVE_")}
        self.env.update(s3.env())
        self.ports = {"a": (free_port(), free_port()), "b": (free_port(), free_port())}
        self.nodes: dict[str, ServeProcess] = {}

    def ctl(self, *args: str, ok: bool = True, cache: str = "cli") -> subprocess.CompletedProcess:
        env = {**self.env, "EDGE_ARCHIVE_CATALOG": self.catalog, "EDGE_ARCHIVE_CACHE": str(self.tmp / f"cache-{cache}")}
        p = subprocess.run([sys.executable, "-m", "archive", "--repo", self.url, *args], env=env,
                           capture_output=True, timeout=180)
        if ok and p.returncode != 0:
            raise AssertionError(f"archivectl {args} failed: {p.stdout.decode()} {p.stderr.decode()}")
        return p

    def config(self, name: str) -> Path:
        ftp, dav = self.ports[name]
        path = self.tmp / f"node-{name}.toml"
        path.write_text(f"""
[repository]
path = "{self.url}"
catalog = "{self.catalog}"
cache = "{self.tmp / f'cache-{name}'}"
cache_size = "64M"

[serve]
state_dir = "{self.tmp / f'state-{name}'}"
grace_period = 1

[metrics]
enabled = false

[ftp]
listen = "127.0.0.1:{ftp}"
passive_ports = ""

[webdav]
listen = "127.0.0.1:{dav}"
require_tls_for_basic = false

# these nodes serve FTP and WebDAV only (two nodes would both want the default ports)
[smb]
enabled = false
[nfs]
enabled = false
[s3]
enabled = false

# scheduled gc every 2 s (grace stays 1 h: nothing young is touched), one node at a time
[gc]
interval = "1s"
check = "0.3s"
""")
        return path

    def start(self, name: str) -> ServeProcess:
        p = ServeProcess([sys.executable, "-m", "archive", "serve", "--config", str(self.config(name))],
                         cwd=str(self.tmp), env=self.env, tmp=str(self.tmp), tag=f"node-{name}-{time.time_ns()}")
        self.nodes[name] = p.ready()
        return p

    def ftp(self, name: str = "a") -> ftplib.FTP:
        f = ftplib.FTP()
        f.connect("127.0.0.1", self.ports[name][0], timeout=30)
        f.login("alice", PW)
        return f

    def dav(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name][1]}/office{path}"

    def versions(self, path: str) -> list[tuple]:
        out = json.loads(self.ctl("versions", f"/office{path}", "--json").stdout)
        return [(v["version"], v["size"], v["deleted"], v["etag"], v["origin"]["protocol"]) for v in out]

    def bootstrap(self) -> "Cluster":
        """init (with the passphrase from the environment when encrypted), a share, a user."""
        self.ctl("init")
        self.ctl("share", "add", "office")
        env = {**self.env, "EDGE_ARCHIVE_CATALOG": self.catalog, "EDGE_ARCHIVE_CACHE": str(self.tmp / "cache-cli")}
        p = subprocess.run([sys.executable, "-m", "archive", "--repo", self.url, "user", "add", "alice",
                            "--password-stdin"], input=PW.encode(), env=env, capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr
        self.ctl("grant", "alice", "office", "rw")
        return self

    def stop_all(self) -> None:
        for p in self.nodes.values():
            p.kill()
        self.nodes.clear()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg, s3):
    c = Cluster(tmp_path_factory.mktemp("scaleout"), pg, s3).bootstrap()
    c.start("a")
    c.start("b")
    yield c
    c.stop_all()


def test_ftp_upload_on_a_is_read_over_webdav_on_b_with_the_same_history(cluster):
    data = _bytes(2_500_000, 1)
    with cluster.ftp("a") as f:
        f.storbinary("STOR /office/reading.bin", __import__("io").BytesIO(data))
        f.storbinary("STOR /office/reading.bin", __import__("io").BytesIO(data[:-5] + b"HELLO"))
    r = requests.get(cluster.dav("b", "/reading.bin"), auth=("alice", PW), timeout=30)
    assert r.status_code == 200 and r.content == data[:-5] + b"HELLO"
    r = requests.get(cluster.dav("b", "/reading.bin") + "?version=1", auth=("alice", PW), timeout=30)
    assert r.content == data
    hist = requests.get(cluster.dav("b", "/reading.bin") + "?versions", auth=("alice", PW), timeout=30).json()["versions"]
    assert [(v["version"], v["origin"]["protocol"]) for v in hist] == [(1, "ftp"), (2, "ftp")]
    # and back: a WebDAV PUT on B is an FTP download on A at once
    assert requests.put(cluster.dav("b", "/desk.txt"), data=b"from B", auth=("alice", PW), timeout=30).status_code == 201
    with cluster.ftp("a") as f:
        got = []
        f.retrbinary("RETR /office/desk.txt", got.append)
    assert b"".join(got) == b"from B"


def test_a_webdav_lock_taken_on_a_is_honoured_on_b(cluster):
    body = ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
            '<D:locktype><D:write/></D:locktype><D:owner>alice on A</D:owner></D:lockinfo>')
    url_a, url_b = cluster.dav("a", "/locked.txt"), cluster.dav("b", "/locked.txt")
    assert requests.put(url_a, data=b"v1", auth=("alice", PW), timeout=30).status_code == 201
    r = requests.request("LOCK", url_a, data=body, auth=("alice", PW), timeout=30,
                         headers={"Content-Type": "application/xml", "Timeout": "Second-600"})
    assert r.status_code == 200
    token = r.headers["Lock-Token"].strip("<>")
    assert requests.put(url_b, data=b"no token", auth=("alice", PW), timeout=30).status_code == 423
    r = requests.put(url_b, data=b"v2 with token", auth=("alice", PW), timeout=30, headers={"If": f"(<{token}>)"})
    assert r.status_code in (200, 204)
    assert requests.request("UNLOCK", url_b, auth=("alice", PW), timeout=30,
                            headers={"Lock-Token": f"<{token}>"}).status_code == 204
    assert requests.put(url_a, data=b"v3", auth=("alice", PW), timeout=30).status_code in (200, 204)
    assert [v[0] for v in cluster.versions("/locked.txt")] == [1, 2, 3]


def test_scheduled_gc_runs_on_the_nodes_one_at_a_time(cluster):
    from sqlalchemy import create_engine, text
    engine = create_engine(cluster.catalog)
    runs: list = []
    deadline = time.monotonic() + 60
    try:
        while len(runs) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            with engine.connect() as c:
                runs = c.execute(text("SELECT at, \"user\", detail FROM audit WHERE action = 'gc' "
                                      "AND protocol = 'gc' ORDER BY at")).all()
    finally:
        engine.dispose()
    assert len(runs) >= 2, runs
    pids = {p.proc.pid for p in cluster.nodes.values()}
    assert {int(user.split(":")[1]) for _, user, _ in runs} <= pids       # run by the serving nodes
    for (end1, _, _), (end2, _, d2) in zip(runs, runs[1:]):
        # the lease: a run starts only after the previous one ended (never two at once)
        assert end2 - json.loads(d2)["duration"] * 1e6 >= end1
        assert json.loads(d2)["scheduled"]


def test_kill_9_of_a_mid_upload_leaves_b_serving_and_nothing_partial(cluster):
    with cluster.ftp("a") as f:
        f.storbinary("STOR /office/kill.bin", __import__("io").BytesIO(b"acknowledged v1"))
    before = cluster.versions("/kill.bin")
    f = cluster.ftp("a")
    f.voidcmd("TYPE I")
    conn = f.transfercmd("STOR /office/kill.bin")
    conn.sendall(_bytes(3_000_000, 7))           # mid-upload: no end of file yet
    time.sleep(0.5)
    cluster.nodes["a"].proc.send_signal(signal.SIGKILL)
    cluster.nodes["a"].kill()
    conn.close()
    r = requests.get(cluster.dav("b", "/kill.bin"), auth=("alice", PW), timeout=30)
    assert r.status_code == 200 and r.content == b"acknowledged v1"
    assert requests.put(cluster.dav("b", "/after-kill.txt"), data=b"B goes on", auth=("alice", PW),
                        timeout=30).status_code == 201
    assert cluster.versions("/kill.bin") == before
    assert cluster.ctl("check", "--read-data").returncode == 0
    cluster.start("a")                            # A comes back on the same bucket and catalog
    with cluster.ftp("a") as f:
        got = []
        f.retrbinary("RETR /office/after-kill.txt", got.append)
    assert b"".join(got) == b"B goes on"


def test_store_down_gives_clear_errors_and_service_resumes_when_it_returns(cluster):
    cluster.s3.stop()
    try:
        r = requests.put(cluster.dav("b", "/down.txt"), data=b"x" * 1000, auth=("alice", PW), timeout=60)
        assert r.status_code == 503
        with cluster.ftp("a") as f:
            with pytest.raises(ftplib.error_temp) as e:
                f.storbinary("STOR /office/down-ftp.txt", __import__("io").BytesIO(b"y" * 1000))
            assert str(e.value).startswith("451")
    finally:
        cluster.s3.start()
    assert requests.get(cluster.dav("b", "/down.txt"), auth=("alice", PW), timeout=30).status_code == 404
    assert requests.put(cluster.dav("b", "/down.txt"), data=b"back", auth=("alice", PW), timeout=60).status_code == 201
    with cluster.ftp("a") as f:
        f.storbinary("STOR /office/down-ftp.txt", __import__("io").BytesIO(b"back over ftp"))
    assert [v[0] for v in cluster.versions("/down.txt")] == [1]
    assert [v[0] for v in cluster.versions("/down-ftp.txt")] == [1]


def test_catalog_dropped_and_recovered_from_the_bucket_with_every_version(cluster):
    files = ["/reading.bin", "/desk.txt", "/locked.txt", "/kill.bin", "/after-kill.txt", "/down.txt"]
    before = {p: cluster.versions(p) for p in files}
    listing = json.loads(cluster.ctl("ls", "/office", "--json").stdout)
    cluster.stop_all()
    cluster.pg.drop(cluster.catalog)
    cluster.pg.sql(f"CREATE DATABASE {cluster.catalog.rsplit('/', 1)[1]}")
    out = cluster.ctl("recover", cache="fresh").stdout.decode()
    assert "recovered 1 shares" in out
    assert {p: cluster.versions(p) for p in files} == before
    assert json.loads(cluster.ctl("ls", "/office", "--json").stdout) == listing
    assert cluster.ctl("check", "--read-data", cache="fresh2").returncode == 0
    cluster.start("b")                           # users and grants came back too
    r = requests.get(cluster.dav("b", "/reading.bin") + "?version=1", auth=("alice", PW), timeout=30)
    assert r.status_code == 200 and r.content == _bytes(2_500_000, 1)
