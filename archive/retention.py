"""Retention: which versions a share's rules keep, and pruning the rest.

Rules read like restic's: keep-last=N keeps the N newest versions of each file; keep-hourly,
keep-daily, keep-weekly and keep-monthly keep the newest version in each of the N most recent
hours/days/weeks/months that have one.  The newest version of a file is always kept, and no
version younger than the share's WORM period is ever pruned, whoever asks.
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


def kept(versions: list[tuple[int, int]], rules: dict[str, int]) -> set[int]:
    """versions: (number, created_at) newest first; returns the numbers the rules keep."""
    keep = {versions[0][0]} if versions else set()
    keep.update(n for n, _ in versions[:rules.get("keep-last", 0)])
    for rule in RULES[1:]:
        want = rules.get(rule, 0)
        seen = set()
        for number, at in versions:
            if len(seen) >= want:
                break
            b = _bucket(rule, at)
            if b not in seen:
                seen.add(b)
                keep.add(number)
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
            rows = s.execute(select(m.Version.node_id, m.Version.number, m.Version.created_at, m.Version.size)
                             .join(m.Node, m.Node.id == m.Version.node_id).where(m.Node.share_id == sh.id)
                             .order_by(m.Version.node_id, m.Version.number.desc())).all()
            by_node: dict[int, list] = {}
            for node, number, at, size in rows:
                by_node.setdefault(node, []).append((number, at, size))
            for node, vs in by_node.items():
                keep = kept([(n, a) for n, a, _ in vs], rules)
                for number, at, size in vs:
                    if number not in keep and at < worm_limit:
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
