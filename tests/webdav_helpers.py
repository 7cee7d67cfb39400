"""Helpers for the WebDAV tests: a running adapter on a fresh repository, real clients."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from archive import Repository
from protocols.base import ServeContext
from protocols.webdav import WebDAVAdapter

QUOTA = 100_000
USERS = {"alice": "wonder land", "bob": "builder", "carol": "ro-only"}


@dataclass
class DavServer:
    repo: Any
    adapter: WebDAVAdapter
    root: Path

    @property
    def url(self) -> str:
        return self.adapter.urls()[0].rstrip("/")

    @property
    def port(self) -> int:
        return self.adapter.port

    def session(self, user: str = "alice") -> requests.Session:
        s = requests.Session()
        s.auth = (user, USERS[user])
        return s

    def admin(self, share: str = "docs"):
        return self.repo.share(share, user=None)

    def stop(self) -> None:
        self.adapter.stop(1.0)


def make_repo(root: Path):
    repo = Repository.init(str(root / "repo"))
    for share in ("docs", "ro", "secret"):
        repo.add_share(share)
    repo.add_share("small", quota=QUOTA)
    for name, pw in USERS.items():
        repo.add_user(name, pw)
    repo.grant("alice", "docs", "rw")
    repo.grant("alice", "ro", "ro")
    repo.grant("bob", "docs", "rw")
    repo.grant("bob", "secret", "rw")
    repo.grant("carol", "docs", "ro")
    repo.grant("alice", "small", "rw")
    return repo


def start_server(repo, root: Path, ctx: ServeContext | None = None, **config: Any) -> DavServer:
    cfg = {"listen": "127.0.0.1:0", "require_tls_for_basic": False}
    cfg.update(config)
    adapter = WebDAVAdapter(repo, cfg, ctx or ServeContext())
    adapter.start()
    return DavServer(repo, adapter, root)


def need(tool: str) -> str:
    """Path of a real client; a missing one is a failure (tests/apt-packages.txt)."""
    path = shutil.which(tool)
    assert path, f"{tool} is not installed (see tests/apt-packages.txt)"
    return path


# -- litmus ------------------------------------------------------------------------------
RUNNING = re.compile(r"-> running `(\w+)'")
SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")
SKIPPED = re.compile(r"-> (\d+) tests? (?:was|were) skipped")


def parse_litmus(output: str) -> dict[str, dict[str, int]]:
    """{suite: {run, passed, failed, skipped, marked_skip, marked_fail}} from litmus' output.

    Counts both the summary lines and the per-test SKIPPED/FAIL markers, so a suite that
    skipped tests cannot look clean."""
    suites: dict[str, dict[str, int]] = {}
    current = None
    for line in output.splitlines():
        m = RUNNING.search(line)
        if m:
            current = m.group(1)
            suites[current] = {"run": -1, "passed": -1, "failed": -1, "skipped": 0,
                               "marked_skip": 0, "marked_fail": 0}
            continue
        if current is None:
            continue
        m = SUMMARY.search(line)
        if m:
            suites[current].update(run=int(m.group(2)), passed=int(m.group(3)),
                                   failed=int(m.group(4)))
            continue
        m = SKIPPED.search(line)
        if m:
            suites[current]["skipped"] = int(m.group(1))
        if "SKIPPED" in line:
            suites[current]["marked_skip"] += 1
        if re.search(r"\bFAIL\b", line):
            suites[current]["marked_fail"] += 1
    return suites


def run_litmus(url: str, user: str, password: str, cwd: Path) -> tuple[str, dict]:
    litmus = need("litmus")
    proc = subprocess.run([litmus, url, user, password], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    return out, parse_litmus(out)


# -- cadaver -----------------------------------------------------------------------------
def run_cadaver(url: str, user: str, password: str, commands: list[str], home: Path) -> str:
    cadaver = need("cadaver")
    home.mkdir(parents=True, exist_ok=True)
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1\nlogin {user}\npassword {password}\n")
    netrc.chmod(0o600)
    env = dict(os.environ, HOME=str(home))
    proc = subprocess.run([cadaver, url], input="\n".join(commands + ["quit"]) + "\n",
                          cwd=home, env=env, capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


# -- curl --------------------------------------------------------------------------------
def curl(*args: str, user: str = "alice") -> subprocess.CompletedProcess:
    exe = need("curl")
    return subprocess.run([exe, "-s", "-S", "-u", f"{user}:{USERS[user]}", *args],
                          capture_output=True, timeout=120)


# -- PROPFIND parsing ----------------------------------------------------------------------
def propfind(sess: requests.Session, url: str, depth: str = "1",
             body: str | None = None) -> tuple[int, dict[str, dict[str, str | None]]]:
    """{href: {prop clark name: text}} of the 200-propstat properties."""
    r = sess.request("PROPFIND", url, headers={"Depth": depth},
                     data=body.encode() if body else None)
    if r.status_code != 207:
        return r.status_code, {}
    out: dict[str, dict[str, str | None]] = {}
    root = ET.fromstring(r.content)
    for resp in root.findall("{DAV:}response"):
        href = resp.findtext("{DAV:}href")
        props: dict[str, str | None] = {}
        for ps in resp.findall("{DAV:}propstat"):
            if " 200 " not in (ps.findtext("{DAV:}status") or ""):
                continue
            for p in ps.find("{DAV:}prop"):
                props[p.tag] = (p.text or "") if len(p) == 0 else ET.tostring(p, "unicode")
        out[href] = props
    return r.status_code, out


def self_signed(dirpath: Path) -> tuple[str, str]:
    """A throwaway certificate for 127.0.0.1 (cert path, key path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cpath, kpath = dirpath / "cert.pem", dirpath / "key.pem"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return str(cpath), str(kpath)
