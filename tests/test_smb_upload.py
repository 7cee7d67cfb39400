"""The SMB adapter's Upload (protocols/smb/upload.py) against a real ShareFS, no network:
whatever mix of writes and truncates a client sends, the one committed version holds exactly
the bytes a plain model file would; sequential uploads are chunked while they arrive (the
feeder thread), anything else falls back to the staged Updater; an abort leaves no version.
The thresholds are shrunk so small files cross every mode (memory, staged, streaming)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from archive import Repository
from archive.types import Origin
from protocols.smb import upload
from protocols.smb.upload import Upload

KIB = 1024


@pytest.fixture(scope="module")
def shared_fs(tmp_path_factory):
    r = Repository.init(Path(tmp_path_factory.mktemp("up")) / "repo")
    r.add_share("office")
    r.add_user("alice", "alice-pw")
    r.grant("alice", "office", "rw")
    yield r.share("office", user=r.authenticate("alice", "alice-pw"), origin=Origin("smb", "127.0.0.1"))
    r.close()


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch):
    monkeypatch.setattr(upload, "MEMORY_MAX", 8 * KIB)
    monkeypatch.setattr(upload, "STREAM_START", 32 * KIB)
    monkeypatch.setattr(upload, "PIECE", 16 * KIB)


def read(fs, path: str) -> bytes:
    with fs.open_read(path) as r:
        return r.read()


_n = iter(range(1 << 30))

ops = st.lists(st.one_of(
    st.tuples(st.just("seq"), st.integers(1, 40 * KIB)),                     # append at the end
    st.tuples(st.just("at"), st.integers(0, 200 * KIB), st.integers(1, 20 * KIB)),   # random write
    st.tuples(st.just("trunc"), st.integers(0, 200 * KIB)),
), min_size=1, max_size=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, fresh_over_existing=st.booleans(), seed=st.integers(0, 255))
def test_any_write_sequence_commits_exactly_the_model_bytes(shared_fs, ops, fresh_over_existing, seed):
    fs = shared_fs
    path = f"/f{next(_n)}.bin"
    if fresh_over_existing:
        with fs.open_write(path) as w:
            w.write(b"old content " * 100)
    u = Upload(fs, path, fresh=True, has_base=fresh_over_existing)
    model = bytearray()
    fill = bytes([seed]) * (40 * KIB)
    for i, op in enumerate(ops):
        if op[0] == "seq":
            data = (fill + bytes([i]) * (40 * KIB))[i:i + op[1]]
            u.pwrite(data, len(model))
            model += data
        elif op[0] == "at":
            off, data = op[1], bytes([(seed + i) % 256]) * op[2]
            u.pwrite(data, off)
            if off > len(model):
                model += bytes(off - len(model))
            model[off:off + len(data)] = data
        else:
            u.truncate(op[1])
            del model[op[1]:]
            model += bytes(op[1] - len(model))
        assert u.size == len(model)
        assert u.pread(len(model) + 10, 0) == bytes(model)          # reads see staged bytes
    before = len(fs.versions(path)) if fresh_over_existing else 0
    v = u.commit()
    assert v is not None and v.size == len(model) and u._held == 0      # memory budget given back
    assert read(fs, path) == bytes(model)
    assert len(fs.versions(path)) == before + 1


def test_sequential_upload_streams_while_writes_arrive_and_commits_once(shared_fs):
    fs = shared_fs
    data = os.urandom(300 * KIB)
    u = Upload(fs, "/streamed.bin", fresh=True, has_base=False)
    for off in range(0, len(data), 7 * KIB):
        u.pwrite(data[off:off + 7 * KIB], off)
    assert u.streaming                                   # the feeder started before CLOSE
    assert not fs.exists("/streamed.bin")                # nothing is visible before the commit
    v = u.commit()
    assert v.number == 1 and read(fs, "/streamed.bin") == data


def test_out_of_order_writes_still_stream(shared_fs):
    fs = shared_fs
    data = os.urandom(200 * KIB)
    u = Upload(fs, "/ooo.bin", fresh=True, has_base=False)
    blocks = [(off, data[off:off + 10 * KIB]) for off in range(0, len(data), 10 * KIB)]
    for i in range(0, len(blocks), 2):                  # pairs arrive swapped, as credits allow
        for off, b in reversed(blocks[i:i + 2]):
            u.pwrite(b, off)
    assert u.streaming
    assert u.commit().size == len(data) and read(fs, "/ooo.bin") == data


def test_rewrite_below_the_streamed_part_falls_back_to_the_staged_bytes(shared_fs):
    fs = shared_fs
    data = bytearray(os.urandom(200 * KIB))
    u = Upload(fs, "/rewrite.bin", fresh=True, has_base=False)
    for off in range(0, len(data), 8 * KIB):
        u.pwrite(data[off:off + 8 * KIB], off)
    assert u.streaming
    deadline = time.monotonic() + 60
    while u._fed == 0 and time.monotonic() < deadline:   # the feeder has taken offset 0
        time.sleep(0.01)
    u.pwrite(b"HEADER", 0)                              # e.g. a header patched at the end
    data[0:6] = b"HEADER"
    assert not u.streaming
    assert u.commit().size == len(data) and read(fs, "/rewrite.bin") == bytes(data)


def test_abort_mid_stream_leaves_no_version(shared_fs):
    fs = shared_fs
    with fs.open_write("/kept.bin") as w:
        w.write(b"previous")
    u = Upload(fs, "/kept.bin", fresh=True, has_base=True)
    for off in range(0, 200 * KIB, 8 * KIB):
        u.pwrite(os.urandom(8 * KIB), off)
    assert u.streaming
    u.abort()
    assert read(fs, "/kept.bin") == b"previous" and len(fs.versions("/kept.bin")) == 1


def test_preallocated_upload_still_streams(shared_fs):
    """Windows' copy engine sets the end of file to the final size before writing."""
    fs = shared_fs
    data = os.urandom(150 * KIB)
    u = Upload(fs, "/prealloc.bin", fresh=True, has_base=False)
    u.truncate(len(data))
    for off in range(0, len(data), 10 * KIB):
        u.pwrite(data[off:off + 10 * KIB], off)
    assert u.streaming
    assert u.commit().size == len(data) and read(fs, "/prealloc.bin") == data


def test_in_memory_uploads_share_one_budget_then_stage(shared_fs, monkeypatch):
    fs = shared_fs
    monkeypatch.setattr(upload, "MEMORY_BUDGET", 12 * KIB)
    a = Upload(fs, "/budget-a.bin", fresh=True, has_base=False)
    b = Upload(fs, "/budget-b.bin", fresh=True, has_base=False)
    a.pwrite(b"a" * 8 * KIB, 0)
    b.pwrite(b"b" * 8 * KIB, 0)                         # over the budget: b stages instead
    assert a._buf is not None and b._buf is None
    assert upload._held_total == 8 * KIB
    assert a.commit().size == b.commit().size == 8 * KIB
    assert upload._held_total == 0
    assert read(fs, "/budget-a.bin") == b"a" * 8 * KIB and read(fs, "/budget-b.bin") == b"b" * 8 * KIB
