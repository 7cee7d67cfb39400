"""What revocation-on-the-next-request and the new `.snapshots` listing cost.

    python3 bench/access.py [--gets 2000] [--changes 100000] [--runs 3]

* ``validate``: microseconds per ``Login.validate()`` while nothing changed (one catalog read).
* WebDAV small GETs/s (1 KiB file, one keep-alive ``requests`` session), with the per-request
  re-validation, against the same server with ``Login.validate`` made a no-op (what the 60 s
  cache did): the ratio is the price of immediate revocation.
* ``.snapshots``: milliseconds to list the tokens of a share with ``--changes`` changed seconds
  spread over a year (the coarsening policy applied), one indexed query.
Medians of ``--runs``.  Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archive import Origin, Repository  # noqa: E402
from archive.access import Login  # noqa: E402
from archive.catalog import models as m  # noqa: E402
from protocols.base import ServeContext  # noqa: E402
from protocols.webdav import WebDAVAdapter  # noqa: E402


def gets_per_second(url: str, n: int) -> float:
    s = requests.Session()
    s.auth = ("alice", "pw")
    assert s.get(url).status_code == 200
    t = time.perf_counter()
    for _ in range(n):
        s.get(url).content
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gets", type=int, default=2000)
    ap.add_argument("--changes", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repository.init(Path(tmp) / "repo")
        repo.add_share("office")
        repo.add_user("alice", "pw")
        repo.grant("alice", "office", "rw")
        with repo.share("office").open_write("/small.txt") as w:
            w.write(b"x" * 1024)
        login = repo.login("alice", "pw", Origin("bench"))
        per_call = []
        for _ in range(a.runs):
            t = time.perf_counter()
            for _ in range(5000):
                login.validate()
            per_call.append((time.perf_counter() - t) / 5000 * 1e6)

        dav = WebDAVAdapter(repo, {"listen": "127.0.0.1:0", "require_tls_for_basic": False}, ServeContext())
        dav.start()
        url = dav.urls()[0] + "office/small.txt"
        real = Login.validate
        with_check, without = [], []
        for _ in range(a.runs):
            with_check.append(gets_per_second(url, a.gets))
            Login.validate = lambda self, s=None: self          # the old behaviour: no re-check
            try:
                without.append(gets_per_second(url, a.gets))
            finally:
                Login.validate = real
        dav.stop(1.0)

        fs = repo.share("office")
        now = int(time.time())
        step = max(1, 365 * 86400 // a.changes)
        rows = [{"share_id": fs.share_id, "at_s": now - i * step} for i in range(a.changes)]
        with repo.catalog.write() as s:
            for i in range(0, len(rows), 10_000):
                s.execute(insert(m.ShareChange.__table__), rows[i:i + 10_000])
        listing, tokens = [], 0
        for _ in range(a.runs):
            t = time.perf_counter()
            tokens = len(fs.snapshot_tokens())
            listing.append((time.perf_counter() - t) * 1000)
        repo.close()
    med = statistics.median
    print("| measure | value |\n|---|---:|")
    print(f"| Login.validate(), nothing changed (us/call) | {med(per_call):.0f} |")
    print(f"| WebDAV 1 KiB GET/s, re-validated per request | {med(with_check):.0f} |")
    print(f"| WebDAV 1 KiB GET/s, no re-validation (old cache) | {med(without):.0f} |")
    print(f"| ratio (immediate revocation / old) | {med(with_check) / med(without):.2f} |")
    print(f"| .snapshots listing, {a.changes:,} changed seconds over a year -> {tokens:,} tokens (ms) "
          f"| {med(listing):.0f} |")


if __name__ == "__main__":
    main()
