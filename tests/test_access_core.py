"""The core's access machinery: auth generation, Login re-validation, throttling, the batched
audit, and the `.snapshots` token policy (archive/access.py, throttle.py, auditlog.py)."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import event, insert

from archive import ANONYMOUS, Origin, Repository, errors
from archive.access import LoginThrottled
from archive.catalog import models as m
from archive.clock import parse_gmt_token
from archive.codec import Codec
from archive.recover import recover
from archive.throttle import LoginThrottle
from conftest import put_bytes

WEB = Origin("webdav", "10.0.0.7")


def test_auth_generation_moves_with_every_access_change_and_survives_recover(repo, tmp_path):
    seen = [repo.auth_generation()]

    def moved() -> bool:
        seen.append(repo.auth_generation())
        return seen[-1] > seen[-2]

    fs = repo.share("office")
    put_bytes(fs, "/a.txt", b"x")
    assert not moved(), "a file write is not an access change"
    repo.add_user("carol", "pw")
    assert moved()
    repo.grant("carol", "office", "ro")
    assert moved()
    repo.grant("carol", "office", "rw")
    assert moved()
    repo.set_password("carol", "pw2")
    assert moved()
    repo.revoke("carol", "office")
    assert moved()
    repo.add_share("pub", anonymous=True)
    assert moved()
    repo.set_share("pub", anonymous=False)
    assert moved()
    repo.remove_user("carol")
    assert moved()
    live = repo.auth_generation()
    path, key = repo.path, repo.key
    repo.close()
    url = f"sqlite:///{tmp_path / 'recovered.sqlite'}"
    recover(path, key, Codec(key), url)
    again = Repository.open(path, catalog_url=url)
    try:
        assert again.auth_generation() == live      # replaying the events gives the same value
    finally:
        again.close()


def test_login_follows_revoke_downgrade_password_change_and_removal(repo):
    alice = repo.login("alice", "alice-pw", WEB)
    assert alice.grants == {"office": "rw"}
    fs = alice.share("office", WEB)
    put_bytes(fs, "/before.txt", b"ok")
    pending = fs.open_write("/in-flight.txt")        # an upload that started while allowed
    pending.write(b"half")

    repo.grant("alice", "office", "ro")              # rw -> ro, from "another" client
    assert alice.validate().grants == {"office": "ro"}
    with pytest.raises(errors.PermissionDenied):
        pending.commit()                             # the commit re-checks inside its transaction
    with pytest.raises(errors.PermissionDenied):
        fs.mkdir("/new")                             # the ShareFS opened before the change too
    assert not alice.share("office", WEB).writable
    with alice.share("office", WEB).open_read("/before.txt") as r:
        assert r.read() == b"ok"                     # ro still reads
    assert [v.number for v in repo.share("office").versions("/before.txt")] == [1]
    assert not repo.share("office").exists("/in-flight.txt")

    repo.revoke("alice", "office")
    assert alice.validate().grants == {}
    with pytest.raises(errors.PermissionDenied):
        alice.share("office", WEB)

    bob = repo.login("bob", "bob-pw", WEB)
    repo.set_password("bob", "new-pw")
    with pytest.raises(errors.AuthFailed):
        bob.validate()
    with pytest.raises(errors.AuthFailed):
        repo.login("bob", "bob-pw", WEB)
    assert repo.login("bob", "new-pw", WEB).grants == {"office": "ro"}

    repo.grant("alice", "office", "rw")
    alice = repo.login("alice", "alice-pw", WEB)
    repo.remove_user("alice")
    with pytest.raises(errors.AuthFailed):
        alice.validate()


def test_validate_costs_one_query_while_nothing_changed(repo):
    alice = repo.login("alice", "alice-pw", WEB)
    statements: list[str] = []

    # Counted at the SQLite driver: the check runs plain SQL on a DBAPI connection, which
    # SQLAlchemy's statement events never see.
    def traced(dbapi_conn, _rec):
        dbapi_conn.set_trace_callback(statements.append)
    event.listen(repo.catalog.engine, "connect", traced)
    repo.catalog.engine.dispose()
    try:
        for _ in range(5):
            alice.validate()
    finally:
        event.remove(repo.catalog.engine, "connect", traced)
        repo.catalog.engine.dispose()
    queries = [q for q in statements if q not in ("BEGIN", "COMMIT", "ROLLBACK")]
    assert len(queries) == 5 and all("auth_state" in q for q in queries), statements


def test_anonymous_login_only_reads_anonymous_shares(repo):
    with pytest.raises(errors.AuthFailed):
        repo.login_anonymous()
    repo.add_share("pub", anonymous=True)
    anon = repo.login_anonymous()
    assert anon.user == ANONYMOUS and anon.grants == {"pub": "ro"}
    assert not anon.share("pub").writable
    with pytest.raises(errors.PermissionDenied):
        anon.share("office")
    repo.set_share("pub", anonymous=False)
    assert anon.validate().grants == {}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_backs_off_per_user_and_per_address_and_forgives():
    clock = FakeClock()
    t = LoginThrottle(clock, free_failures=2, free_failures_address=3, backoff=1, max_backoff=8, window=100)
    assert t.failure("1.1.1.1", "alice") == []
    assert t.failure("2.2.2.2", "alice") == []
    assert t.retry_after("3.3.3.3", "alice") == 0
    assert t.failure("3.3.3.3", "alice") == [("user", "alice", 1.0)]   # distributed guessing
    assert t.retry_after("4.4.4.4", "alice") == 1.0
    assert t.retry_after("4.4.4.4", "bob") == 0                         # other users unaffected
    locks = []
    for i in range(5):
        clock.now += 10
        locks += [s for kind, _, s in t.failure("3.3.3.3", "alice") if kind == "user"]
    assert locks == [2.0, 4.0, 8.0, 8.0, 8.0]                            # doubling, capped
    clock.now += 8
    t.success("3.3.3.3", "alice")
    assert t.retry_after("5.5.5.5", "alice") == 0
    # one address spraying users: its own lock
    assert t.failure("9.9.9.9", "u1") == [] and t.failure("9.9.9.9", "u2") == []
    assert t.failure("9.9.9.9", "u3") == [] and t.failure("9.9.9.9", "u4") == [("address", "9.9.9.9", 1.0)]
    assert t.retry_after("9.9.9.9", "someone-else") == 1.0
    clock.now += 101                                                      # the window forgets
    assert t.retry_after("9.9.9.9", "u5") == 0 and t.failure("9.9.9.9", "u5") == []


def test_login_is_throttled_across_origins_and_audited(repo):
    repo.throttle.configure(free_failures=2, backoff=0.5, max_backoff=0.5)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        with pytest.raises(errors.AuthFailed):
            repo.login("alice", "guess", Origin("ftp", address))
    with pytest.raises(LoginThrottled) as ei:
        repo.login("alice", "alice-pw", Origin("webdav", "10.0.0.4"))   # even the right password
    assert 0 < ei.value.retry_after <= 0.5
    time.sleep(ei.value.retry_after + 0.05)
    assert repo.login("alice", "alice-pw", Origin("webdav", "10.0.0.4")).user.name == "alice"
    recs = list(repo.audit_events(user="alice"))
    failed = [r for r in recs if r.action == "login_failed"]
    assert [(r.protocol, r.address) for r in failed] == [("ftp", "10.0.0.1"), ("ftp", "10.0.0.2"),
                                                         ("ftp", "10.0.0.3")]
    locked = [r for r in recs if r.action == "login_locked"]
    assert len(locked) == 1 and "user alice locked" in locked[0].detail


def test_audit_limit_returns_the_newest(repo):
    for i in range(5):
        repo.audit_later("download", WEB, "office", f"/f{i}")
    newest = list(repo.audit_events(limit=2))
    assert [r.path for r in newest] == ["/f3", "/f4"]           # newest two, oldest first


# -- .snapshots ---------------------------------------------------------------------------------
def test_snapshot_tokens_list_every_changed_second(fs):
    put_bytes(fs, "/t.txt", b"one")
    time.sleep(1.05)
    put_bytes(fs, "/t.txt", b"two")
    time.sleep(1.05)
    fs.remove("/t.txt")
    tokens = fs.snapshot_tokens()
    assert len(tokens) == 3                                   # seconds apart, same hour: all listed
    contents = []
    for tok in tokens:
        try:
            with fs.open_read(f"/.snapshots/{tok}/t.txt") as r:
                contents.append(r.read())
        except errors.NotFound:
            contents.append(None)
    assert contents == [b"one", b"two", None]


def _add_changes(repo, share_id: int, seconds: list[int]) -> None:
    with repo.catalog.write() as s:
        s.execute(insert(m.ShareChange.__table__), [{"share_id": share_id, "at_s": t} for t in seconds])


def test_snapshot_policy_coarsens_only_old_history_with_one_indexed_query(repo, fs):
    """5,000 changes over 60 days: the last 7 days every second, 7-30 days one per hour,
    older one per day, each token named after the last change in its hour/day."""
    now = 1_800_000_000                     # a fixed "now" (2027-01-15T08:00:00Z)
    day, hour = 86400, 3600
    times = sorted({now - 60 * day + i * (60 * day // 5000) for i in range(5000)})
    _add_changes(repo, fs.share_id, times)
    statements: list[tuple] = []

    def count(conn, cursor, statement, parameters, *args):
        statements.append((statement, parameters))
    event.listen(repo.catalog.engine, "before_cursor_execute", count)
    try:
        tokens = fs.snapshot_tokens(now=now)
    finally:
        event.remove(repo.catalog.engine, "before_cursor_execute", count)
    statements = [q for q in statements if q[0] != "BEGIN"]
    assert len(statements) == 1
    got = [parse_gmt_token(t) // 1_000_000 for t in tokens]
    recent_start = (now - 7 * day) // hour * hour
    hourly_start = (now - 30 * day) // day * day
    expect = [t for t in times if t >= recent_start]
    by_hour: dict[int, int] = {}
    by_day: dict[int, int] = {}
    for t in times:
        if hourly_start <= t < recent_start:
            by_hour[t // hour] = max(by_hour.get(t // hour, 0), t)
        elif t < hourly_start:
            by_day[t // day] = max(by_day.get(t // day, 0), t)
    expect += list(by_hour.values()) + list(by_day.values())
    assert got == sorted(expect)
    assert len(got) < len(times)
    with repo.catalog.engine.connect() as c:
        plan = " ".join(str(r) for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + statements[0][0],
                                                          statements[0][1]))
    assert "share_changes" in plan and ("PRIMARY KEY" in plan or "INDEX" in plan), plan


def test_upgrade_from_0002_fills_the_change_instants_from_history(tmp_path):
    import sqlite3
    repo = Repository.init(tmp_path / "r")
    repo.add_share("office")
    fs = repo.share("office")
    put_bytes(fs, "/a.txt", b"1")
    time.sleep(1.05)
    fs.mkdir("/d")
    before = fs.snapshot_tokens()
    repo.close()
    db = sqlite3.connect(tmp_path / "r" / "catalog.sqlite")
    db.execute("DROP TABLE share_changes")
    db.execute("DROP TABLE auth_state")
    db.execute("UPDATE alembic_version SET version_num = '0002'")
    db.commit()
    db.close()
    again = Repository.open(tmp_path / "r")                 # migrated in place
    try:
        assert len(before) == 2 and again.share("office").snapshot_tokens() == before
        assert again.auth_generation() == 0
        again.add_user("u", "pw")
        assert again.auth_generation() > 0
    finally:
        again.close()
