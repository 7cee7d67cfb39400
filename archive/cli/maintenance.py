"""Maintenance commands: check, prune, gc, stats, recover, audit."""
from __future__ import annotations

import json
import sys
import time

import click

from .. import gc as gcmod
from .. import retention
from ..catalog.db import sqlite_url
from ..check import Problem
from ..check import check as run_check
from ..clock import iso, to_us
from ..codec import Codec
from ..recover import recover as run_recover
from .context import CLIContext, emit_json, progress
from .main import cli


@cli.command()
@click.option("--read-data", is_flag=True, help="Re-read, decrypt and re-hash every stored chunk.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def check(obj: CLIContext, read_data: bool, as_json: bool) -> None:
    """Verify the repository; exits 1 when anything is wrong, naming every affected version."""
    lost = obj.lost_catalog()
    if lost is not None:        # reported like any problem; opening would create an empty catalog
        problems = [Problem("catalog-lost", f"the catalog file {lost} is missing: rebuild it from the packs "
                                            "with `archivectl recover`")]
    else:
        repo = obj.open_repo()
        packdir = repo.store.packdir
        total = sum(packdir.size(p) for p in packdir.list()) if read_data else None
        with progress(total, "check --read-data") as bar:
            problems = run_check(repo, read_data=read_data, progress=bar.update)
    if as_json:
        emit_json({"ok": not problems, "problems": [p.__dict__ for p in problems]})
    elif not problems:
        click.echo("no problems found" + (" (all data read and verified)" if read_data else ""))
    else:
        for p in problems:
            click.echo(f"PROBLEM {p.kind}: {p.message}", err=True)
            for a in p.affected:
                click.echo(f"    affects {a}", err=True)
        click.echo(f"{len(problems)} problem(s) found", err=True)
    if problems:
        sys.exit(1)


@cli.command()
@click.option("--dry-run", is_flag=True, help="List what would be pruned; change nothing.")
@click.option("--share", help="Only this share.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def prune(obj: CLIContext, dry_run: bool, share: str | None, as_json: bool) -> None:
    """Apply each share's retention rules (versions held by WORM are never pruned)."""
    repo = obj.open_repo()
    started = time.monotonic()
    doomed = retention.prune(repo, dry_run=dry_run, share=share)
    if not dry_run:
        repo.audit("prune_run", None, share, detail=json.dumps({"versions": len(doomed),
                                                                "duration": round(time.monotonic() - started, 3)}))
    from ..check import node_paths
    paths = node_paths(repo, {d["node"] for d in doomed})
    rows = [{"path": paths[d["node"]], "version": d["version"], "created_at": iso(d["created_at"]),
             "size": d["size"]} for d in doomed]
    if as_json:
        emit_json({"dry_run": dry_run, "pruned": rows})
        return
    for r in rows:
        click.echo(f"{'would prune' if dry_run else 'pruned'} {r['path']}@v{r['version']} ({r['created_at']})")
    click.echo(f"{len(rows)} version(s) {'would be ' if dry_run else ''}pruned"
               + ("" if dry_run else "; run `archivectl gc` to reclaim space"))


@cli.command()
@click.option("--grace", type=float, default=gcmod.DEFAULT_GRACE, show_default=True,
              help="Seconds: packs and orphans younger than this are left for uploads in flight.")
@click.option("--dry-run", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def gc(obj: CLIContext, grace: float, dry_run: bool, as_json: bool) -> None:
    """Reclaim chunks nothing references and rewrite sparse packs."""
    repo = obj.open_repo()
    started = time.monotonic()
    with progress(len(repo.store.packdir.list()), "gc") as bar:
        rep = gcmod.collect(repo, grace=grace, dry_run=dry_run, progress=bar.update)
    if not dry_run:
        repo.audit("gc", None, detail=json.dumps({**rep.as_dict(), "duration": round(time.monotonic() - started, 3)}))
    if as_json:
        emit_json(rep.as_dict())
        return
    for d in rep.details:
        click.echo(d)
    click.echo(f"{rep.chunks_deleted} unreferenced chunks dropped, {rep.packs_deleted} packs deleted, "
               f"{rep.packs_rewritten} rewritten, {rep.skipped_young} too young; "
               f"pack bytes {rep.bytes_before} -> {rep.bytes_after}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats(obj: CLIContext, as_json: bool) -> None:
    """Logical vs stored bytes, dedupe ratio, chunks, versions and files per share."""
    st = obj.open_repo().stats()
    if as_json:
        emit_json(st)
        return
    click.echo(f"logical {st['logical_bytes']} bytes, stored {st['stored_bytes']} bytes, ratio {st['ratio']}, "
               f"{st['chunks']} chunks in {st['packs']} packs, {st['versions']} versions, {st['files']} files")
    for name, sh in st["shares"].items():
        click.echo(f"  {name}: {sh['files']} files, {sh['versions']} versions, {sh['logical_bytes']} logical bytes")


@cli.command()
@click.option("--force", is_flag=True, help="Rebuild even though the catalog has content (it is kept aside).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def recover(obj: CLIContext, force: bool, as_json: bool) -> None:
    """Rebuild a lost, empty or damaged catalog from the packs alone.

    A damaged catalog file (and a stale WAL beside a deleted one) is moved aside, never deleted.
    Exits 0 when everything the packs hold came back, 1 when the catalog was rebuilt but some
    damaged records could not be (each is listed)."""
    from ..keys import parse_keyfile
    from ..packstore import open_store
    store = open_store(obj.repo_path, **obj.store_options)
    keys = store.get_meta("keys.json")
    if keys is None:
        raise click.ClickException(f"no repository keys at {obj.repo_path}")
    key = parse_keyfile(keys, obj.password() if obj.encrypted() else None)
    url = obj.catalog_url or sqlite_url(store.local_dir / "catalog.sqlite")
    n = len(store.list())
    with progress(n, "recover") as bar:
        rep = run_recover(store, key, Codec(key, store=store), url, force=force, progress=bar.update)
    if as_json:
        emit_json(rep.as_dict())
    else:
        for p in rep.moved_aside:
            click.echo(f"moved aside: {p}")
        click.echo(f"recovered {rep.shares} shares, {rep.versions} versions, {rep.chunks} chunks from "
                   f"{rep.packs} packs ({rep.transactions} transactions, {rep.legacy_events} older single-event "
                   f"records, {rep.events} events replayed; {rep.dead_transactions} never-committed transactions "
                   f"of interrupted writers left out, {rep.torn_tails} torn pack tails ignored)")
        _losses(rep)
    if not rep.complete:
        sys.exit(1)


def _losses(rep) -> None:
    """What recover could not bring back, on stderr (the catalog is rebuilt all the same)."""
    sections = [("damaged pack range", rep.damaged), ("unreadable record", rep.unreadable),
                ("missing transaction", rep.missing), ("event not applied", rep.failed),
                ("version with lost chunks", rep.incomplete_versions)]
    for label, items in sections:
        for item in items:
            click.echo(f"LOST {label}: {item}", err=True)
    if not rep.complete:
        click.echo("the catalog was rebuilt from every intact record, but the items above could not be "
                   "recovered; `archivectl check --read-data` names what they affect", err=True)


@cli.command()
@click.option("--since", help="ISO 8601 time.")
@click.option("--user", "user_name")
@click.option("--protocol")
@click.option("--limit", type=int, help="Only the newest N records (printed oldest first).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def audit(obj: CLIContext, since, user_name, protocol, limit, as_json: bool) -> None:
    """Read the audit trail: who changed what, when, from where, over which protocol."""
    recs = obj.open_repo().audit_events(since=since, user=user_name, protocol=protocol, limit=limit)
    if as_json:
        emit_json([{**r.__dict__, "at": iso(to_us(r.at))} for r in recs])
        return
    for r in recs:
        where = f"/{r.share}{r.path or ''}" if r.share else ""
        click.echo(f"{iso(to_us(r.at))} {r.protocol or '-'} {r.user or '-'}@{r.address or '-'} {r.action} "
                   f"{where}{' v' + str(r.version) if r.version else ''}{' ' + r.detail if r.detail else ''}")
