"""commit_many of uploads to distinct paths builds every event first and applies them as one run
(streams._commit_batch, events._commit_many); where two of them would continue the same deleted
file's history, it falls back to the one-at-a-time build, and the result is what separate
commits give."""
from __future__ import annotations

from archive.streams import commit_many


def _prepared(fs, path: str, data: bytes):
    w = fs.open_write(path, check=False)
    w.write(data)
    w.prepare()
    return w


def _history(fs, path: str) -> list[tuple[int, int, bool]]:
    return [(v.number, v.size, v.deleted) for v in fs.versions(path)]


def _one_node_under_two_old_names(fs) -> None:
    """File node N was /a, then renamed to /b, then deleted: both names' newest file is N."""
    w = fs.open_write("/a")
    w.write(b"original")
    w.commit()
    fs.rename("/a", "/b")
    fs.remove("/b")


def test_two_names_continuing_one_node_fall_back_to_separate_builds(repo, fs, tmp_path):
    _one_node_under_two_old_names(fs)
    out = commit_many([_prepared(fs, "/a", b"new a"), _prepared(fs, "/b", b"new b!")])
    assert [v.size for v in out] == [5, 6]
    assert fs.open_read("/a").read() == b"new a" and fs.open_read("/b").read() == b"new b!"
    batched = (_history(fs, "/a"), _history(fs, "/b"), fs.stat("/a").node_id != fs.stat("/b").node_id)

    # the same, one commit at a time, in a second share
    repo.add_share("two")
    fs2 = repo.share("two")
    _one_node_under_two_old_names(fs2)
    commit_many([_prepared(fs2, "/a", b"new a")])
    commit_many([_prepared(fs2, "/b", b"new b!")])
    separate = (_history(fs2, "/a"), _history(fs2, "/b"), fs2.stat("/a").node_id != fs2.stat("/b").node_id)
    assert batched == separate
    assert batched[2]                                   # never one node under two live names


def test_distinct_uploads_in_one_batch(fs):
    ws = [_prepared(fs, f"/f{i}", bytes([i]) * (i + 1)) for i in range(20)]
    ws.append(_prepared(fs, "/big", bytes(range(256)) * 4000))
    out = commit_many(ws)
    assert [v.number for v in out] == [1] * 21
    for i in range(20):
        assert fs.open_read(f"/f{i}").read() == bytes([i]) * (i + 1)
    assert fs.open_read("/big").read() == bytes(range(256)) * 4000
    out = commit_many([_prepared(fs, f"/f{i}", b"v2") for i in range(3)])
    assert [v.number for v in out] == [2, 2, 2]
    assert [e.name for e in fs.listdir("/")][:3] == ["big", "f0", "f1"]
