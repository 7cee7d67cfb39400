"""A share's usage counter (archive/usage.py, migration 0015) and the quota at commit.

The counter must equal the reference SUM (logical bytes of the share's current files) after
every kind of change, on SQLite here and on PostgreSQL in test_postgres.py; uploads that would
take a quota'd share over its quota are refused inside the commit's transaction (nothing
committed), whether they run in threads of one process, in two Repository objects on one
catalog, or in one group-commit batch; a process killed around its commit leaves counter == SUM,
`check` reports a wrong counter and `recover` rebuilds it."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from archive import Origin, Repository, objects, retention, usage
from archive.check import check
from archive.errors import QuotaExceeded
from archive.streams import commit_many
from recover_helpers import DIED, FAULT, drop_catalog


def _put(fs, path: str, data: bytes):
    with fs.open_write(path) as w:
        w.write(data)


def _sums(repo: Repository) -> dict[str, tuple[int, int]]:
    """{share: (counter, SUM)}"""
    with repo.catalog.session() as s:
        totals = usage.sums(s)
        return {name: (used, totals.get(sid, 0))
                for sid, name, used in s.execute(text("SELECT id, name, used FROM shares")).all()}


def _exact(repo: Repository, share: str, expected: int) -> None:
    counter, total = _sums(repo)[share]
    assert (counter, total) == (expected, expected)
    assert repo.share(share).usage()[0] == expected


def _tick() -> float:
    time.sleep(0.01)
    t = time.time()
    time.sleep(0.01)
    return t


@pytest.fixture
def q(tmp_path):
    r = Repository.init(tmp_path / "repo")
    r.add_share("q", quota=1000)
    r.add_share("other")
    yield r
    r.close()


def test_the_counter_is_exact_after_every_kind_of_change(q):
    fs = q.share("q")
    _put(fs, "/a", b"a" * 100)
    _exact(q, "q", 100)
    _put(fs, "/a", b"a" * 30)                     # overwrite, smaller
    _exact(q, "q", 30)
    _put(fs, "/a", b"a" * 130)                    # overwrite, larger
    fs.mkdir("/d")
    _put(fs, "/d/b", b"b" * 200)
    _exact(q, "q", 330)
    fs.remove("/a")                               # tombstone + unlink
    _exact(q, "q", 200)
    fs.restore("/a", version=1)                   # a deleted file back, as version 4
    _exact(q, "q", 300)
    _put(fs, "/c", b"c" * 50)
    fs.rename("/c", "/d/c")                       # a rename keeps the bytes
    _exact(q, "q", 350)
    fs.rename("/d/c", "/a", overwrite=True)       # rename over: /a's 100 bytes go
    _exact(q, "q", 250)
    fs.copy("/a", "/a2")
    _exact(q, "q", 300)
    before = _tick()
    _put(fs, "/d/b", b"b" * 10)
    fs.remove("/a2")
    _exact(q, "q", 60)
    fs.restore("/d/b", at=before)                 # time travel: /d/b's 200 bytes again
    _exact(q, "q", 250)
    # a folder emptied and removed, then brought back as it was
    fs.remove("/d/b")
    fs.rmdir("/d")
    _exact(q, "q", 50)
    fs.restore("/d", at=before)
    _exact(q, "q", 250)
    # NFS: a name without a version, then its first content
    fs.create_file("/n")
    _exact(q, "q", 250)
    _put(fs, "/n", b"n" * 7)
    _exact(q, "q", 257)
    # S3: a delete marker of a key that never existed changes nothing; purging versions
    objects.delete_marker(fs, "ghost")
    _exact(q, "q", 257)
    q.set_share("q", allow_purge=True)
    node = fs.stat("/n").node_id
    objects.purge_version(fs, "n", node, 1)       # the current (only) version: the name goes
    _exact(q, "q", 250)
    _put(fs, "/p", b"p" * 40)
    _put(fs, "/p", b"p" * 60)
    objects.purge_version(fs, "p", fs.stat("/p").node_id, 2)   # the newest: version 1 is current again
    _exact(q, "q", 290)
    # retention prunes old versions only: the current bytes do not move
    q.set_share("q", retention="keep-last=1")
    assert retention.prune(q, share="q")
    _exact(q, "q", 290)
    other = q.share("other")
    _put(other, "/x", b"x" * 5000)               # another share: its own counter, no quota
    _exact(q, "other", 5000)
    _exact(q, "q", 290)
    assert not [p for p in check(q) if p.kind == "usage-mismatch"]


def test_a_commit_over_the_quota_is_refused_inside_its_transaction(q):
    fs = q.share("q")
    _put(fs, "/a", b"a" * 600)
    late = fs.open_write("/b")                   # the early check passes: 400 bytes of room
    late.write(b"b" * 300)
    _put(fs, "/c", b"c" * 300)                   # meanwhile another upload takes the room
    with pytest.raises(QuotaExceeded):
        late.commit()
    assert not fs.exists("/b")
    _exact(q, "q", 900)
    with pytest.raises(QuotaExceeded):           # refused at open already (the early check)
        _put(fs, "/d", b"d" * 200)
    _put(fs, "/a", b"a" * 100)                   # an overwrite that frees space passes
    _exact(q, "q", 400)
    q.set_share("q", quota=100)                  # over a lowered quota: shrinking and deleting still work
    fs = q.share("q")
    with pytest.raises(QuotaExceeded):
        _put(fs, "/e", b"e")
    fs.remove("/c")
    _exact(q, "q", 100)
    with pytest.raises(QuotaExceeded):           # a copy (no upload) is refused at commit too
        fs.copy("/a", "/a2")
    assert not fs.exists("/a2")
    _exact(q, "q", 100)


def test_one_batch_commits_what_fits_and_refuses_the_rest(q):
    fs = q.share("q")
    writers = []
    for i in range(8):
        w = fs.open_write(f"/f{i}")
        w.write(bytes([i]) * 300)
        w.prepare()
        writers.append(w)
    with pytest.raises(QuotaExceeded):
        commit_many(writers)
    assert [fs.exists(f"/f{i}") for i in range(8)] == [True] * 3 + [False] * 5
    _exact(q, "q", 900)


def test_parallel_writers_in_threads_cannot_exceed_the_quota(q):
    fs = q.share("q")
    errors: list[BaseException] = []
    done: list[str] = []
    gate = threading.Barrier(12)

    def upload(i: int) -> None:
        w = fs.open_write(f"/t{i}")              # every early check passes: the share is empty
        w.write(bytes([i]) * 150)
        gate.wait()
        try:
            w.commit()
            done.append(f"/t{i}")
        except QuotaExceeded as e:
            errors.append(e)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 6 and len(errors) == 6
    assert sorted(e.name for e in fs.listdir("/")) == sorted(p.lstrip("/") for p in done)
    _exact(q, "q", 900)


def test_two_repositories_on_one_catalog_cannot_exceed_the_quota(q, tmp_path):
    other = Repository.open(tmp_path / "repo")
    try:
        a, b = q.share("q"), other.share("q")
        wa, wb = a.open_write("/a"), b.open_write("/b")     # both see 1000 bytes of room
        wa.write(b"a" * 600)
        wb.write(b"b" * 600)
        wa.commit()
        with pytest.raises(QuotaExceeded):
            wb.commit()
        assert not a.exists("/b")
        _exact(q, "q", 600)
        _exact(other, "q", 600)
    finally:
        other.close()


@pytest.mark.parametrize("point", ["synced", "committed"])
def test_a_death_around_the_commit_leaves_the_counter_equal_to_the_sum(cli, point):
    cli("init")
    cli("share", "add", "q", "--quota", "10K")
    cli("put", "-", "/q/a", input=b"a" * 1000)
    p = cli("put", "-", "/q/a", input=b"a" * 3000, ok=False, env={FAULT: point})
    assert p.returncode == DIED
    p = cli("rm", "/q/a", ok=False, env={FAULT: point})
    assert p.returncode == DIED
    with Repository.open(cli.repo_path) as r:
        counter, total = _sums(r)["q"]
        assert counter == total == (1000 if point == "synced" else 0)
    cli("check")
    drop_catalog(cli.repo_path)
    cli("recover")
    with Repository.open(cli.repo_path) as r:
        counter, total = _sums(r)["q"]
        assert counter == total


def test_check_reports_a_wrong_counter_and_recover_rebuilds_it(cli):
    cli("init")
    cli("share", "add", "q", "--quota", "10K")
    cli("put", "-", "/q/a", input=b"a" * 1000)
    cli("put", "-", "/q/b", input=b"b" * 234)
    with Repository.open(cli.repo_path) as r:
        with r.catalog.session() as s:
            s.execute(text("UPDATE shares SET used = 5 WHERE name = 'q'"))
            s.commit()
    p = cli("check", ok=False)
    assert p.returncode == 1 and b"usage counter 5" in p.stdout + p.stderr and b"1234" in p.stdout + p.stderr
    drop_catalog(cli.repo_path)
    cli("recover")
    cli("check")
    with Repository.open(cli.repo_path) as r:
        assert _sums(r)["q"] == (1234, 1234)
        assert r.share("q").usage() == (1234, 10 * 1024)


def test_files_one_after_another_stop_at_the_quota(q):
    fs = q.share("q", origin=Origin("test", "127.0.0.1"))
    fs.mkdir("/many")
    for i in range(40):
        try:
            _put(fs, f"/many/{i:03}", b"m" * 30)
        except QuotaExceeded:
            break
    assert i == 33                               # 33 files of 30 bytes fit in 1000
    _exact(q, "q", 990)
