"""A share's usage counter (`shares.used`, migration 0015) and its quota, kept per transaction.

Why: the usage a quota limits is the logical size of the share's current files, i.e. for every
live name of a file, the size of that file's newest version (`SUM_SQL`; a tombstone's size is 0,
folders and names without a version count nothing).  Summing it on every upload made a tree put
into a quota'd share O(N^2), and a check made only when an upload starts let two parallel uploads
both pass it.  Now every event that changes which version is current, or which names are live,
moves the share's counter by its delta (`UPDATE shares SET used = used + ?`, never a
read-modify-write) inside the transaction that applies it (events.apply/apply_many), so live
commits and `recover` keep it alike; and `Repository.mutate` refuses, inside that transaction and
before anything reaches the packs, a transaction that leaves a share it grew above its quota.

Deltas by event:
- commit: the new version's size if the name stays live (not a deletion) minus the previous
  version's size if the name was live before (no `link`): the previous version is number - 1;
- unlink, link, rename, purge: the touched nodes' contributions (live names x newest version's
  size) after minus before (rare events: two small queries per node);
- mkdir, create (no version yet), times, props, share_del (no versions left): nothing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import rawsql as raw
from .errors import QuotaExceeded

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: the reference: logical bytes of every share's current files (check compares the counter with it)
SUM_SQL = ("SELECT n.share_id, coalesce(sum(v.size), 0) FROM dentries d JOIN nodes n ON n.id = d.node_id "
           "JOIN versions v ON v.node_id = n.id AND v.number = (SELECT max(number) FROM versions WHERE node_id = n.id) "
           "WHERE n.kind = 'file' AND d.valid_to IS NULL GROUP BY n.share_id")
USED_SQL = "SELECT used, quota FROM shares WHERE id = ?"
_ADD = "UPDATE shares SET used = used + ? WHERE id = ? RETURNING used, quota"
_PREV_SIZE = "SELECT size FROM versions WHERE node_id = ? AND number = ?"
_NODE_SHARE = "SELECT share_id FROM nodes WHERE id = ?"
#: one node's share and contribution: live names x the newest version's size (files only)
_NODE_USE = ("SELECT n.share_id, (SELECT count(*) FROM dentries d WHERE d.node_id = n.id AND d.valid_to IS NULL) * "
             "coalesce((SELECT v.size FROM versions v WHERE v.node_id = n.id ORDER BY v.number DESC LIMIT 1), 0) "
             "FROM nodes n WHERE n.id = ? AND n.kind = 'file'")
_LIVE_AT = "SELECT node_id FROM dentries WHERE parent_id = ? AND name = ? AND valid_to IS NULL"
#: where a transaction's deltas per share are summed (Session.info / RawWrite.info)
_KEY = "usage.deltas"
#: events whose delta is measured on the nodes they touch (before and after)
NODE_OPS = frozenset({"unlink", "link", "rename", "purge"})

Event = dict[str, Any]


def commit_share(s: Session, ev: Event) -> int | None:
    """The share of a commit event (events written before the field had none: ask the node)."""
    share = ev.get("share")
    return share if share is not None else raw.scalar(s, _NODE_SHARE, (ev["node"],))


def commit_delta(s: Session, ev: Event) -> int:
    """How a commit event moves its share's usage (see the module's docstring)."""
    after = 0 if ev.get("unlink") else int(ev["size"])
    before = 0
    if not ev.get("link") and not ev.get("new_node") and ev["number"] > 1:
        before = raw.scalar(s, _PREV_SIZE, (ev["node"], ev["number"] - 1)) or 0
    return after - before


def add(s: Session, share: int | None, delta: int) -> None:
    """Move `share`'s counter by `delta` in this transaction, and remember it for `enforce`."""
    if not delta or share is None:
        return
    row = raw.one(s, _ADD, (delta, share))
    deltas = s.info.setdefault(_KEY, {})
    old = deltas.get(share)
    # (net delta of the transaction, the counter and quota this statement left)
    deltas[share] = ((old[0] if old else 0) + delta, row)


def add_many(s: Session, deltas: dict[int, int]) -> None:
    for share, delta in deltas.items():
        add(s, share, delta)


def touched(s: Session, ev: Event) -> list[int]:
    """The nodes whose contribution a namespace event (NODE_OPS) may change."""
    op = ev["op"]
    if op == "purge":
        return list(dict.fromkeys(node for node, _ in ev["versions"]))
    nodes = [ev["node"]] if "node" in ev else []
    if op in ("unlink", "rename"):
        nodes += [r[0] for r in raw.run(s, _LIVE_AT, (ev["parent"], ev["name"])).fetchall()]
    return list(dict.fromkeys(nodes))


def uses(s: Session, nodes: list[int]) -> dict[int, tuple[int, int]]:
    """{node: (share, contribution)} of the file nodes among `nodes`."""
    out = {}
    for node in nodes:
        row = raw.one(s, _NODE_USE, (node,))
        if row is not None:
            out[node] = (row[0], int(row[1]))
    return out


def settle(s: Session, before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> None:
    """Add the difference of two `uses` of the same nodes to their shares."""
    deltas: dict[int, int] = {}
    for node in set(before) | set(after):
        for (share, use), sign in ((before.get(node, (None, 0)), -1), (after.get(node, (None, 0)), 1)):
            if share is not None and use:
                deltas[share] = deltas.get(share, 0) + sign * use
    add_many(s, deltas)


def begin(s: Session) -> None:
    """Start a transaction's account (Repository.mutate): no deltas yet."""
    s.info.pop(_KEY, None)


def enforce(s: Session) -> None:
    """QuotaExceeded when this transaction grew a share that now holds more than its quota:
    the transaction is refused before its record reaches the packs.  A transaction that frees
    space, or one on a share already over a lowered quota that does not grow it, passes."""
    for share, (delta, row) in sorted(s.info.pop(_KEY, {}).items()):
        if delta > 0 and row is not None and row[1] is not None and row[0] > row[1]:
            name = raw.scalar(s, "SELECT name FROM shares WHERE id = ?", (share,))
            raise QuotaExceeded(f"share {name!r} is over its quota ({row[0]} of {row[1]} bytes)")


def admit(s: Session, ev: Event, name: str, pending: dict[int, tuple] | None = None) -> None:
    """Refuse (QuotaExceeded) one upload's commit event that would take its share over its quota,
    counting what this transaction already applied and, in `pending`, what it admitted and has
    not applied yet (a batch built before it is applied: the share's row is read once, as
    nothing moves the counter until the batch is applied).  So one upload of a group commit
    batch is refused alone, not the batch.  (A batch of one needs no admission: `enforce`
    refuses its transaction, which is the same.)"""
    share = commit_share(s, ev)
    held = pending.get(share) if pending is not None else None
    if held is None:
        row = raw.one(s, USED_SQL, (share,))
        if row is None:
            return
        held = (int(row[0]), row[1], 0)               # (counter, quota, admitted since)
    used, quota, extra = held
    if quota is not None:
        delta = commit_delta(s, ev)
        if delta > 0 and used + extra + delta > quota:
            raise QuotaExceeded(f"share {name!r} is over its quota")
        extra += delta
    if pending is not None:
        pending[share] = (used, quota, extra)


def sums(s: Session) -> dict[int, int]:
    """{share id: the reference SUM} (shares without a current file are absent)."""
    return {share: int(total) for share, total in raw.run(s, SUM_SQL).fetchall()}


def recount(s: Session) -> None:
    """Set every share's counter to the reference SUM (recover, after its replay)."""
    totals = sums(s)
    raw.many(s, "UPDATE shares SET used = ? WHERE id = ?",
             [(totals.get(sid, 0), sid) for (sid,) in raw.run(s, "SELECT id FROM shares").fetchall()])


def mismatches(s: Session) -> list[tuple[str, int, int]]:
    """(share name, counter, SUM) of every share whose counter is not the SUM (check)."""
    totals = sums(s)
    return [(name, used, totals.get(sid, 0))
            for sid, name, used in raw.run(s, "SELECT id, name, used FROM shares ORDER BY name").fetchall()
            if used != totals.get(sid, 0)]
