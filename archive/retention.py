"""Retention: which versions a share's rules keep, and pruning the rest.

Rules read like restic's: keep-last=N keeps the N newest content versions of each file;
keep-hourly, keep-daily, keep-weekly and keep-monthly keep the newest content version in each of
the N most recent hours/days/weeks/months that have one.  Tombstones (deletes) are not counted,
and the content before a kept tombstone is kept with it, so a delete stays restorable under every
rule.  The newest version of a file is always kept, and no version younger than the share's WORM
period is ever pruned, whoever asks.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select

from .catalog import models as m
from .clock import now_us

RULES = ("keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly")
DAY_US = 86_400 * 1_000_000


def parse_rules(text: str) -> dict[str, int]:
    rules: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in RULES or not value.strip().isdigit():
            raise ValueError(f"bad retention rule {part!r}: use {', '.join(r + '=N' for r in RULES)}")
        rules[name] = int(value)
    return rules


def _bucket(rule: str, us: int):
    d = datetime.fromtimestamp(us / 1e6, timezone.utc)
    return {"keep-hourly": (d.year, d.month, d.day, d.hour), "keep-daily": (d.year, d.month, d.day),
            "keep-weekly": d.isocalendar()[:2], "keep-monthly": (d.year, d.month),
            "keep-yearly": (d.year,)}[rule]


def kept(versions: list[tuple[int, int, bool]], rules: dict[str, int], held_since: int | None = None) -> set[int]:
    """versions: (number, created_at, deleted) newest first; returns the numbers to keep.

    Rules count content versions only: a tombstone (a delete) is not a version of the content.
    The newest version is always kept, and so is every version created at or after `held_since`
    (the WORM limit).  A tombstone is kept while it is the newest version, is held, or lies within
    the history the rules keep (newer than the oldest kept content); the content just before a
    kept tombstone is kept with it, so every delete the archive remembers stays restorable."""
    if not versions:
        return set()
    content = [(n, at) for n, at, deleted in versions if not deleted]
    keep = {versions[0][0]}
    keep.update(n for n, _ in content[:rules.get("keep-last", 0)])
    for rule in RULES[1:]:
        want = rules.get(rule, 0)
        seen = set()
        for number, at in content:
            if len(seen) >= want:
                break
            b = _bucket(rule, at)
            if b not in seen:
                seen.add(b)
                keep.add(number)
    if content:
        keep.add(content[0][0])                       # the newest content, whatever the rules say
    if held_since is not None:
        keep.update(n for n, at, _ in versions if at >= held_since)
    oldest_kept = min((n for n, _ in content if n in keep), default=None)
    for i, (number, at, deleted) in enumerate(versions):
        if not deleted:
            continue
        if number in keep or (oldest_kept is not None and number > oldest_kept):
            keep.add(number)
            before = next((n for n, _, d in versions[i + 1:] if not d), None)
            if before is not None:
                keep.add(before)
    return keep


def plan(repo, share: str | None = None) -> list[dict]:
    """The versions each share's retention would prune (WORM-held ones are never listed)."""
    out = []
    now = now_us()
    with repo.catalog.session() as s:
        shares = list(s.scalars(select(m.Share).where(m.Share.retention.is_not(None))))
        for sh in shares:
            if share and sh.name != share:
                continue
            rules = parse_rules(sh.retention)
            worm_limit = now - sh.worm_days * DAY_US
            rows = s.execute(select(m.Version.node_id, m.Version.number, m.Version.created_at, m.Version.size,
                                    m.Version.deleted)
                             .join(m.Node, m.Node.id == m.Version.node_id).where(m.Node.share_id == sh.id)
                             .order_by(m.Version.node_id, m.Version.number.desc())).all()
            by_node: dict[int, list] = {}
            for node, number, at, size, deleted in rows:
                by_node.setdefault(node, []).append((number, at, size, bool(deleted)))
            for node, vs in by_node.items():
                keep = kept([(n, a, d) for n, a, _, d in vs], rules,
                            held_since=worm_limit if sh.worm_days else None)
                for number, at, size, _ in vs:
                    if number not in keep:
                        out.append({"share": sh.name, "share_id": sh.id, "node": node, "version": number,
                                    "created_at": at, "size": size})
    return out


def prune(repo, dry_run: bool = False, share: str | None = None) -> list[dict]:
    doomed = plan(repo, share)
    if dry_run or not doomed:
        return doomed
    for i in range(0, len(doomed), 1000):
        part = doomed[i:i + 1000]
        repo.mutate(lambda s, part=part: [{"op": "purge", "at": now_us(),
                                           "versions": [[d["node"], d["version"]] for d in part]}],
                    audit=lambda evs, part=part: [repo.audit_row("prune", None, part[0]["share"],
                                                                 detail=f"{len(part)} versions")])
    return doomed


def check_worm(repo, share: str, created_at: int) -> bool:
    """True when a version created at `created_at` is still held by the share's WORM lock."""
    with repo.catalog.session() as s:
        days = s.scalar(select(m.Share.worm_days).where(m.Share.name == share)) or 0
    return created_at >= now_us() - days * DAY_US
