"""One end-to-end run on Ceph's RADOS gateway (Debian `radosgw`, single node, memstore).

rclone serves most store tests; this checks the same path against the object store sites
really run: `archivectl init` into a bucket, a serve node taking an FTP upload and serving it
over WebDAV, then the PostgreSQL catalog dropped and rebuilt from the bucket alone.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import requests

from s3store_helpers import free_port
from test_scaleout import PW, Cluster, _bytes

HERE = Path(__file__).parent


class RadosGW:
    access, secret = "EDGERGWKEY", "edge-rgw-secret"

    def __init__(self) -> None:
        for tool in ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed (Debian radosgw ceph-mon ceph-osd)")
        # A fresh single-node cluster now and then fails its first start ("wrong fsid" from
        # the monitor as the OSD boots, seen in 1 of ~10 runs on this machine): the peer's
        # start-up, not the archive, so a second cluster (new folder, new ports) gets one try;
        # two failures fail the test with both outputs.
        failures = []
        for _attempt in range(2):
            self.dir = Path(tempfile.mkdtemp(prefix="edge-rgw-"))
            self.port = free_port()
            p = subprocess.run(["bash", str(HERE / "ceph_rgw.sh"), str(self.dir), str(free_port()), str(self.port),
                                self.access, self.secret], capture_output=True, text=True, timeout=240)
            if "ready" in p.stdout:
                return
            self.close()
            failures.append(f"{p.stdout}{p.stderr}")
        raise RuntimeError("radosgw did not start: " + "\n--- second try ---\n".join(failures))

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def url(self, prefix: str = "repo", **query: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in {"endpoint": f"http://127.0.0.1:{self.port}", **query}.items())
        return f"s3://edge{uuid.uuid4().hex[:10]}/{prefix}?{q}"

    def close(self) -> None:
        for pid in self.dir.glob("*.pid"):
            try:
                subprocess.run(["kill", "-9", pid.read_text().strip()], capture_output=True)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def rgw():
    g = RadosGW()
    yield g
    g.close()


def test_end_to_end_on_ceph_radosgw(rgw, pg, tmp_path):
    c = Cluster(tmp_path, pg, rgw).bootstrap()
    try:
        c.start("a")
        data = _bytes(1_500_000, 3)
        with c.ftp("a") as f:
            f.storbinary("STOR /office/rgw.bin", io.BytesIO(data))
            f.storbinary("STOR /office/rgw.bin", io.BytesIO(data[::-1]))
        r = requests.get(c.dav("a", "/rgw.bin") + "?version=1", auth=("alice", PW), timeout=60)
        assert r.status_code == 200 and r.content == data
        before = c.versions("/rgw.bin")
        c.stop_all()
        c.pg.drop(c.catalog)
        c.pg.sql(f"CREATE DATABASE {c.catalog.rsplit('/', 1)[1]}")
        assert "recovered 1 shares" in c.ctl("recover", cache="fresh").stdout.decode()
        assert c.versions("/rgw.bin") == before
        assert c.ctl("check", "--read-data", cache="fresh2").returncode == 0
    finally:
        c.stop_all()


def test_multipart_packs_and_a_killed_uploader_on_radosgw(rgw, tmp_path, monkeypatch):
    """Packs sent in parts while they fill read back exactly; the parts a killed node left stay
    in RGW (invisible to readers) until gc aborts them after the grace period."""
    from archive import Repository
    from archive.check import check
    from archive.gc import collect
    from test_s3store import _uploads, kill_an_uploader_after_two_parts
    for k, v in rgw.env().items():
        monkeypatch.setenv(k, v)
    url = rgw.url(part="5M")
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    a = Repository.init(url, catalog_url=catalog, cache=str(tmp_path / "cache-a"))
    a.add_share("office")
    data = _bytes(13 * 1024 * 1024 + 5, 61)
    with a.share("office").open_write("/big.bin") as w:
        w.write(data)
    b = Repository.open(url, catalog_url=catalog, cache=str(tmp_path / "cache-b"))
    with b.share("office").open_read("/big.bin") as r:
        assert r.read() == data
    b.close()
    kill_an_uploader_after_two_parts(url, catalog, str(tmp_path / "cache-k"))
    assert len(_uploads(a.packstore)) == 1
    assert not a.share("office").exists("/half.bin")
    assert collect(a, grace=3600).uploads_aborted == 0 and len(_uploads(a.packstore)) == 1
    assert collect(a, grace=0).uploads_aborted == 1 and _uploads(a.packstore) == []
    assert check(a, read_data=True) == []
    a.close()
