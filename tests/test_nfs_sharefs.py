"""What the NFS adapter reads and removes through since nfs11: Reader.readviews (NFS READ sends
the views as they are) and ShareFS.remove_at."""
from __future__ import annotations

import os

import pytest

from archive import errors

from conftest import put_bytes


def test_readviews_give_the_bytes_read_would_without_copying(fs):
    data = os.urandom(3 * 1024 * 1024 + 12345)           # many chunks, a short last one
    e = put_bytes(fs, "/big.bin", data)
    reader = fs.open_entry(fs.stat("/big.bin"))
    for offset, n in ((0, 1 << 20), (77_777, 1 << 20), (len(data) - 5000, 1 << 20), (12, 1), (len(data), 10)):
        reader.seek(offset)
        views = reader.readviews(n)
        assert all(isinstance(v, memoryview) for v in views)
        assert b"".join(views) == data[offset:offset + n]
        assert reader.tell() == min(offset + n, len(data))
    reader.seek(5)
    kept = reader.readviews(1 << 20)
    for off in range(0, len(data), 1 << 20):             # later reads do not overwrite held views
        reader.seek(off)
        reader.readviews(1 << 20)
    assert b"".join(kept) == data[5:5 + (1 << 20)]
    assert e.size == len(data)


def test_remove_at_returns_the_node_and_the_folders_new_mtime(fs):
    fs.mkdir("/d")
    e = put_bytes(fs, "/d/x.txt", b"x")
    before = fs.stat("/d").mtime
    node, at = fs.remove_at("/d/x.txt")
    assert node == e.node_id and isinstance(at, int)
    d = fs.stat("/d")
    assert d.mtime == at / 1_000_000 > before and d.etag == f"d{d.node_id}-{at}"
    assert fs.versions("/d/x.txt")[-1].deleted
    with pytest.raises(errors.NotFound):
        fs.remove_at("/d/x.txt")
    fs.mkdir("/d/sub")
    with pytest.raises(errors.IsADirectory):
        fs.remove_at("/d/sub")
