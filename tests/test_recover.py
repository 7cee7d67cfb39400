"""`recover` after crashes: every acknowledged version comes back with its exact bytes.

Processes are made to die at every durable step of a commit (archive.faults), killed with
SIGKILL under concurrent load, and gc is killed half-way; then the catalog is deleted, rebuilt
from the packs alone and compared with the live one, version by version and byte by byte.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archive.chain import Txn, resolve
from recover_helpers import DIED, FAULT, drop_catalog, snapshot, version_bytes


def _recover_and_compare(cli, live: dict, password: str | None = None) -> dict:
    drop_catalog(cli.repo_path)
    p = cli("recover")
    assert b"LOST" not in p.stderr
    got = snapshot(cli.repo_path, password)
    assert got == live
    cli("recover", "--force")                          # a second rebuild makes the same choices
    assert snapshot(cli.repo_path, password) == live
    cli("check", "--read-data")
    return got


# -- the chain itself ------------------------------------------------------------------------------

def _t(name: str, parent: str | None, seq: int, at: int) -> Txn:
    return Txn(name.encode().ljust(32, b"."), parent.encode().ljust(32, b".") if parent else None, seq, at)


def _ids(txns) -> list[str]:
    return [t.rid.rstrip(b".").decode() for t in txns]


def test_resolve_follows_the_branch_with_descendants_and_the_latest_leaf():
    recs = [_t("g", None, 1, 10), _t("a", "g", 2, 20), _t("dead1", "a", 3, 25), _t("b", "a", 3, 30),
            _t("c", "b", 4, 40), _t("dead2", "c", 5, 45), _t("d", "c", 5, 50)]
    r = resolve({t.rid: t for t in recs})
    assert _ids(r.chain) == ["g", "a", "b", "c", "d"]
    assert sorted(_ids(r.dead)) == ["dead1", "dead2"] and r.gaps == []
    # the dead writer held the lock before the live one, even when it sorts after it by id
    recs = [_t("g", None, 1, 10), _t("zzz-dead", "g", 2, 15), _t("live", "g", 2, 16)]
    assert _ids(resolve({t.rid: t for t in recs}).chain) == ["g", "live"]


def test_resolve_skips_a_missing_record_and_says_so():
    recs = [_t("g", None, 1, 10), _t("a", "g", 2, 20), _t("dead", "a", 3, 25), _t("c", "b", 4, 40),
            _t("d", "c", 5, 50)]                          # "b" (#3) is damaged
    r = resolve({t.rid: t for t in recs})
    assert _ids(r.chain) == ["g", "a", "c", "d"] and _ids(r.dead) == ["dead"]
    assert len(r.gaps) == 1 and "#3" in r.gaps[0]
    assert resolve({}).chain == []


# -- death at every durable step -------------------------------------------------------------------

def test_death_at_every_durable_step_of_a_commit_then_more_writes(cli):
    cli("init")
    cli("share", "add", "s")
    cli("put", "-", "/s/a", input=b"a1")
    cli("put", "-", "/s/keep", input=b"k1")
    acked = {("/s/a", 1): b"a1", ("/s/keep", 1): b"k1"}
    for i, point in enumerate(["chunks", "synced", "committed"]):
        for path in ("/s/a", f"/s/ghost-{point}"):          # a new version, and a new file
            p = cli("put", "-", path, input=f"never acknowledged {point}".encode(), ok=False, env={FAULT: point})
            assert p.returncode == DIED, p.stderr
        # the next writers take the same version number and node id the dead one had used
        data = f"a-after-{point}".encode()
        cli("put", "-", "/s/a", input=data)
        n = json.loads(cli("versions", "/s/a", "--json").stdout)[-1]["version"]
        acked[("/s/a", n)] = data
        cli("put", "-", f"/s/new-{i}", input=data)
        acked[(f"/s/new-{i}", 1)] = data
    # mv --overwrite dies with its record durable, then the target is written again
    cli("put", "-", "/s/src", input=b"src")
    p = cli("mv", "--overwrite", "/s/src", "/s/keep", ok=False, env={FAULT: "synced"})
    assert p.returncode == DIED
    cli("put", "-", "/s/keep", input=b"k2")
    acked[("/s/keep", 2)] = b"k2"
    cli("rm", "/s/new-0")
    live = snapshot(cli.repo_path)
    _recover_and_compare(cli, live)
    for (path, number), data in acked.items():
        assert version_bytes(cli.repo_path, path, number) == data
    assert cli("get", "/s/src", "-").stdout == b"src"


def test_a_death_after_the_last_commit_comes_back_at_most_as_an_extra_version(cli):
    cli("init")
    cli("share", "add", "s")
    cli("put", "-", "/s/a", input=b"a1")
    cli("put", "-", "/s/a", input=b"a2")
    p = cli("put", "-", "/s/a", input=b"dead a3", ok=False, env={FAULT: "synced"})
    assert p.returncode == DIED
    live = snapshot(cli.repo_path)
    drop_catalog(cli.repo_path)
    cli("recover")
    got = snapshot(cli.repo_path)
    assert set(live["versions"]) <= set(got["versions"])
    assert live["content"].items() <= got["content"].items()
    extra = sorted(set(got["versions"]) - set(live["versions"]))
    assert [(v[1], v[2]) for v in extra] == [(3, 7)]        # after every acknowledged one, never instead
    assert version_bytes(cli.repo_path, "/s/a", 2) == b"a2"
    cli("put", "-", "/s/a", input=b"a4")                     # writes go on from the recovered head
    again = snapshot(cli.repo_path)
    _recover_and_compare(cli, again)


def test_mv_overwrite_on_a_full_disk_changes_nothing_live_or_recovered(cli):
    cli("init")
    cli("share", "add", "s")
    cli("put", "-", "/s/src", input=b"source")
    cli("put", "-", "/s/dst", input=b"target")
    for room in (30, 120, 300):        # the disk fills inside the pack header, the record, or its tail
        p = cli("mv", "--overwrite", "/s/src", "/s/dst", ok=False,
                env={"EDGE_ARCHIVE_FAULT_NOSPACE_AFTER": str(room)})
        assert p.returncode == 1 and b"full" in p.stderr
    assert cli("get", "/s/dst", "-").stdout == b"target"
    cli("put", "-", "/s/other", input=b"later")
    live = snapshot(cli.repo_path)
    _recover_and_compare(cli, live)
    assert cli("get", "/s/dst", "-").stdout == b"target" and cli("get", "/s/src", "-").stdout == b"source"


def test_gc_killed_before_it_deletes_a_rewritten_pack(cli):
    cli("init")
    cli("share", "add", "s", "--retention", "keep-last=1")
    for i in range(4):                                      # one small pack per process
        cli("put", "-", f"/s/f{i % 2}", input=os.urandom(20_000) + bytes([i]))
    cli("prune")
    p = cli("gc", "--grace", "0", ok=False, env={FAULT: "gc-moved"})
    assert p.returncode == DIED
    cli("check", "--read-data")
    live = snapshot(cli.repo_path)
    got = _recover_and_compare(cli, live)
    names = [d[1] for d in got["dentries"] if d[4] is None]
    assert sorted(names) == ["f0", "f1"]                    # listed once each
    cli("gc", "--grace", "0")
    _recover_and_compare(cli, live)


def test_check_names_a_file_listed_twice(cli):
    import sqlite3
    cli("init")
    cli("share", "add", "s")
    cli("put", "-", "/s/f", input=b"x")
    db = sqlite3.connect(cli.repo_path / "catalog.sqlite")
    db.execute("INSERT INTO dentries (parent_id, name, name_fold, node_id, valid_from, valid_to) "
               "SELECT parent_id, name, name_fold, node_id, valid_from, valid_to FROM dentries WHERE name = 'f'")
    db.commit()
    db.close()
    p = cli("check", ok=False)
    assert p.returncode == 1 and b"duplicate-entry" in p.stderr and b"/s/f is listed 2 times" in p.stderr


# -- kill -9 under concurrent load ---------------------------------------------------------------

WRITER = r"""
import hashlib, os, random, sys, threading
from archive import Repository
from archive.errors import ArchiveError
repo, tag, log = sys.argv[1], sys.argv[2], sys.argv[3]
r = Repository.open(repo)
fs = r.share("s")
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
def work(t):
    rng = random.Random(f"{tag}-{t}")
    i = 0
    while True:
        i += 1
        path = f"/f{rng.randrange(6)}"
        try:
            if rng.random() < 0.1:
                fs.remove(path)
                continue
            data = f"{tag}-{t}-{i}-".encode() * rng.randrange(1, 400)
            w = fs.open_write(path)
            w.write(data)
            v = w.commit()
            os.write(fd, f"{path}\t{v.number}\t{hashlib.sha256(data).hexdigest()}\n".encode())
        except ArchiveError:
            pass
threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(2)]
for th in threads: th.start()
for th in threads: th.join()
"""


def _lines(log: Path) -> int:
    return log.read_bytes().count(b"\n") if log.exists() else 0


def test_kill_9_under_concurrent_load_then_recover(cli, tmp_path):
    cli("init")
    cli("share", "add", "s")
    log = tmp_path / "acked.log"
    rng = random.Random(8)
    for round_ in range(4):
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(cli.repo_path), f"p{round_}{k}", str(log)],
                                  stderr=subprocess.DEVNULL) for k in range(3)]
        start = _lines(log)
        deadline = time.time() + 60
        while _lines(log) < start + 15 and time.time() < deadline:     # every writer is under way
            time.sleep(0.1)
        time.sleep(rng.random() * 1.5)
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
            time.sleep(rng.random() * 0.05)
        for p in procs:
            p.wait()
    acked = [line.split("\t") for line in log.read_text().splitlines()]
    assert len(acked) > 20
    live = snapshot(cli.repo_path)
    _recover_and_compare(cli, live)
    from archive import Repository
    with Repository.open(cli.repo_path) as r:
        fs = r.share("s")
        for path, number, digest in acked:
            with fs.open_read(path, version=int(number)) as f:
                assert hashlib.sha256(f.read()).hexdigest() == digest, (path, number)


# -- repositories written before the commit chain --------------------------------------------------

def _legacy_mutate(self, build, new_chunks=None, audit=None, refs=None, applied=False):
    """Repository.mutate as it was before the commit chain: one T_EVENT record per event."""
    from archive import events
    from archive.catalog import models as m
    from archive.packs import T_EVENT
    with self.catalog.write() as s:
        evs = build(s)
        for ev in evs:
            data = json.dumps(ev, separators=(",", ":")).encode()
            rid = ev["at"].to_bytes(8, "big") + os.urandom(24)
            flags, payload = self.codec.encode(T_EVENT, rid, data)
            self.store.writer.append(T_EVENT, rid, flags, len(data), payload)
        self.store.sync()
        if refs:
            self.store.verify_refs(s, refs, new_chunks or [])
        if new_chunks:
            self.store.register_chunks(s, new_chunks)
        if not applied:
            for ev in evs:
                events.apply(s, ev)
        for rec in (audit(evs) if audit else []):
            s.add(m.AuditEvent(**rec))
        return evs


def test_a_repository_written_before_the_chain_recovers_then_continues(tmp_path, monkeypatch):
    from archive import Repository
    from conftest import CLI, put_bytes
    path = tmp_path / "old"
    with monkeypatch.context() as mp:
        mp.setattr(Repository, "mutate", _legacy_mutate)
        with Repository.init(path) as r:
            r.add_share("s")
            r.add_user("u", "pw")
            r.grant("u", "s", "rw")
            fs = r.share("s")
            put_bytes(fs, "/a", b"old 1")
            put_bytes(fs, "/a", b"old 2")
            fs.mkdir("/d")
            fs.rename("/a", "/d/a")
    with Repository.open(path) as r:                        # upgraded software: chained records follow
        fs = r.share("s")
        put_bytes(fs, "/d/a", b"new 3")
        put_bytes(fs, "/b", b"new b")
        fs.remove("/b")
    live = snapshot(path)
    _recover_and_compare(CLI(path), live)
    assert version_bytes(path, "/s/d/a", 2) == b"old 2"
