"""Retention counts content versions: a delete stays restorable under every rule."""
from __future__ import annotations

import json

import pytest

from archive.retention import DAY_US, RULES, kept

HOUR = 3_600_000_000
T0 = 1_790_000_000 * 1_000_000


def _vs(*spec: str, step: int = HOUR) -> list[tuple[int, int, bool]]:
    """'c' content, 'd' tombstone; oldest first in the spec, newest first in the result."""
    return [(i + 1, T0 + i * step, kind == "d") for i, kind in enumerate(spec)][::-1]


@pytest.mark.parametrize("rule", RULES)
def test_a_deleted_file_keeps_its_last_content_under_every_rule(rule):
    for step in (1_000_000, HOUR, DAY_US, 40 * DAY_US):
        keep = kept(_vs("c", "c", "c", "d", step=step), {rule: 1})
        assert {3, 4} <= keep, (rule, step)                 # the tombstone and the content before it


def test_keep_last_counts_content_versions_not_tombstones():
    assert kept(_vs("c", "c", "d"), {"keep-last": 1}) == {2, 3}
    assert kept(_vs("c", "c", "d"), {"keep-last": 2}) == {1, 2, 3}
    assert kept(_vs("c", "c", "c", "c"), {"keep-last": 2}) == {3, 4}
    # deleted and re-created: the old tombstone lies outside what keep-last=1 keeps
    assert kept(_vs("c", "d", "c", "c"), {"keep-last": 1}) == {4}
    # ... and inside what keep-last=3 keeps, together with the content it deleted
    assert kept(_vs("c", "c", "d", "c", "c"), {"keep-last": 3}) == {2, 3, 4, 5}


def test_a_tombstone_held_by_worm_keeps_the_content_before_it():
    vs = _vs("c", "c", "d", "c")
    held_since = T0 + 2 * HOUR                               # the tombstone (v3) is young
    assert kept(vs, {"keep-last": 1}, held_since=held_since) == {2, 3, 4}


def test_time_rules_count_only_content():
    vs = _vs("c", "d", "c", "d", step=DAY_US)                # one version a day
    assert kept(vs, {"keep-daily": 1}) == {3, 4}
    assert kept(vs, {"keep-daily": 2}) == {1, 2, 3, 4}


def test_prune_with_keep_last_1_leaves_a_delete_restorable(cli):
    cli("init")
    cli("share", "add", "s", "--retention", "keep-last=1")
    cli("put", "-", "/s/f", input=b"one")
    cli("put", "-", "/s/f", input=b"two")
    cli("rm", "/s/f")
    cli("put", "-", "/s/g", input=b"g1")
    cli("put", "-", "/s/g", input=b"g2")
    dry = json.loads(cli("prune", "--dry-run", "--json").stdout)
    assert sorted((d["path"], d["version"]) for d in dry["pruned"]) == [("/s/f", 1), ("/s/g", 1)]
    cli("prune")
    cli("gc", "--grace", "0")
    vs = json.loads(cli("versions", "/s/f", "--json").stdout)
    assert [(v["version"], v["deleted"]) for v in vs] == [(2, False), (3, True)]
    cli("restore", "/s/f", "--version", "2")
    assert cli("get", "/s/f", "-").stdout == b"two"
    cli("check", "--read-data")
