"""The commit chain: one pack record per catalog transaction, each naming its parent.

Every write transaction reads the catalog's head (the newest committed transaction) under the
catalog's write lock, writes ONE record holding all its events with a fresh id and parent = that
head, fsyncs it, applies the events and moves the head to itself, all before the catalog commits.
So the committed transactions form one chain from the first; a writer that died after its fsync
and before its commit leaves a record nobody ever named as a parent: a dead leaf.

`resolve` picks the committed chain out of all records found in the packs (see
docs/architecture.md, "Events, the commit chain and recover").
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from . import rawsql as raw
from .clock import now_us

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

FORMAT = 1


@dataclass
class Txn:
    rid: bytes                 # the record id = the transaction id
    parent: bytes | None       # the head when it was written (None: the first of the chain)
    seq: int                   # parent's seq + 1: the transaction's place in the chain
    at: int                    # microseconds, strictly above the parent's
    events: list[dict] = field(default_factory=list)
    where: str = ""            # pack:offset, for reports

    def payload(self) -> bytes:
        return json.dumps({"f": FORMAT, "parent": self.parent.hex() if self.parent else None, "seq": self.seq,
                           "at": self.at, "events": self.events}, separators=(",", ":")).encode()

    @classmethod
    def from_payload(cls, rid: bytes, data: bytes, where: str = "") -> "Txn":
        d = json.loads(data)
        return cls(rid, bytes.fromhex(d["parent"]) if d["parent"] else None, int(d["seq"]), int(d["at"]),
                   list(d["events"]), where)


_HEAD = "SELECT txid, seq, at FROM chain_head WHERE id = 1"


def begin(s: Session, events: list[dict]) -> Txn:
    """The next transaction of the chain (inside the write transaction that commits it)."""
    row = raw.one(s, _HEAD)
    parent, seq, at = (bytes.fromhex(row[0]), row[1], row[2]) if row else (None, 0, 0)
    at = max(now_us(), at + 1)
    return Txn(at.to_bytes(8, "big") + os.urandom(24), parent, seq + 1, at, events)


def set_head(s: Session, rid: bytes, seq: int, at: int) -> None:
    """Make `rid` the head (the same write transaction that applies its events)."""
    values = (rid.hex(), seq, at)
    if raw.run(s, "UPDATE chain_head SET txid = ?, seq = ?, at = ? WHERE id = 1", values).rowcount == 0:
        raw.run(s, "INSERT INTO chain_head (id, txid, seq, at) VALUES (1, ?, ?, ?)", values)


@dataclass
class Resolved:
    chain: list[Txn]           # the committed chain, oldest first
    dead: list[Txn]            # records of writers that died before their catalog commit
    gaps: list[str]            # transactions of the chain whose record is missing or damaged


def _latest(txns: list[Txn]) -> Txn:
    """Among siblings, the one that held the write lock last: the others died holding it before."""
    return max(txns, key=lambda t: (t.at, t.rid))


def resolve(txns: dict[bytes, Txn]) -> Resolved:
    """The committed chain among all transaction records (already deduplicated by id).

    The tip is the latest record of the deepest level; from there parents are followed back.
    A fork below the tip can only be a dead writer's leaf beside the branch that went on, so the
    branch with descendants wins by construction.  A parent whose record is missing (damaged) is a
    gap: the walk resumes at the latest record of the nearest lower level written before."""
    if not txns:
        return Resolved([], [], [])
    levels: dict[int, list[Txn]] = {}
    for t in txns.values():
        levels.setdefault(t.seq, []).append(t)
    cur = _latest(levels[max(levels)])
    chain, gaps = [cur], []
    while cur.parent is not None:
        parent = txns.get(cur.parent)
        if parent is None or parent.seq != cur.seq - 1:
            gaps.append(f"transaction {cur.parent.hex()} (#{cur.seq - 1}), parent of {cur.rid.hex()}")
            lower = [t for lv, ts in levels.items() if lv < cur.seq - 1 for t in ts if t.at < cur.at]
            if not lower:
                break
            depth = max(t.seq for t in lower)
            parent = _latest([t for t in lower if t.seq == depth])
            if depth < cur.seq - 2:
                gaps.append(f"{cur.seq - 2 - depth} more transaction(s) before it")
        chain.append(parent)
        cur = parent
    if cur.parent is None and cur.seq != 1:
        gaps.append(f"{cur.seq - 1} transaction(s) before {cur.rid.hex()}")
    chain.reverse()
    on = {t.rid for t in chain}
    return Resolved(chain, [t for t in txns.values() if t.rid not in on], gaps)
