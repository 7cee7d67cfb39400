"""Repository, share, user and grant administration commands."""
from __future__ import annotations

import os
import sys

import click

from ..chunker import DEFAULT_AVG
from ..clock import iso, to_us
from ..repository import Repository
from .context import CLIContext, emit_json
from .main import cli


def _size(text: str | None) -> int | None:
    if text is None:
        return None
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().rstrip("ib")
    mult = units.get(t[-1:], 1)
    return int(float(t[:-1] if t[-1:] in units else t) * mult)


@cli.command()
@click.option("--encrypt", is_flag=True, help="Encrypt chunks and metadata (AES-256-GCM); asks for a passphrase.")
@click.option("--chunk-avg", type=int, default=DEFAULT_AVG, show_default=True, help="Average chunk size in bytes.")
@click.pass_obj
def init(obj: CLIContext, encrypt: bool, chunk_avg: int) -> None:
    """Create a new repository."""
    pw = obj.password("New repository passphrase", confirm=True) if encrypt else None
    Repository.init(obj.repo_path, password=pw, encrypt=encrypt, catalog_url=obj.catalog_url,
                    chunk_avg=chunk_avg, **obj.store_options).close()
    click.echo(f"initialized {'encrypted ' if encrypt else ''}repository at {obj.repo_path}")


@cli.command()
@click.pass_obj
def passwd(obj: CLIContext) -> None:
    """Change the repository passphrase (rewraps the key; no data is rewritten)."""
    repo = obj.open_repo()
    if not repo.key.encrypted:
        raise click.ClickException("this repository is not encrypted")
    new = os.environ.get("EDGE_ARCHIVE_NEW_PASSWORD")
    if new is None:
        if not sys.stdin.isatty():
            raise click.ClickException("set EDGE_ARCHIVE_NEW_PASSWORD (no terminal to ask on)")
        new = click.prompt("New passphrase", hide_input=True, confirmation_prompt=True)
    repo.change_password(new)
    repo.audit("passwd", None)
    click.echo("passphrase changed")


@cli.group()
def share() -> None:
    """Manage shares (named roots)."""


@share.command("add")
@click.argument("name")
@click.option("--retention", help='e.g. "keep-last=10,keep-daily=30,keep-monthly=12" (default: keep everything).')
@click.option("--worm-days", type=int, default=0, help="No version younger than this can be pruned, by anyone.")
@click.option("--quota", help="Logical size limit of current files, e.g. 10G.")
@click.option("--anonymous", is_flag=True, help="Allow read-only access without login.")
@click.pass_obj
def share_add(obj: CLIContext, name: str, retention: str | None, worm_days: int, quota: str | None,
              anonymous: bool) -> None:
    """Create a share."""
    obj.open_repo().add_share(name, retention=retention, worm_days=worm_days, quota=_size(quota), anonymous=anonymous)
    click.echo(f"share {name} created")


@share.command("set")
@click.argument("name")
@click.option("--retention")
@click.option("--worm-days", type=int)
@click.option("--quota")
@click.option("--anonymous/--no-anonymous", default=None)
@click.pass_obj
def share_set(obj: CLIContext, name: str, retention, worm_days, quota, anonymous) -> None:
    """Change a share's retention, WORM period (it can only grow), quota or anonymity."""
    values = {k: v for k, v in {"retention": retention, "worm_days": worm_days, "quota": _size(quota),
                                "anonymous": anonymous}.items() if v is not None}
    obj.open_repo().set_share(name, **values)
    click.echo(f"share {name} updated")


@share.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def share_list(obj: CLIContext, as_json: bool) -> None:
    """List shares."""
    shares = obj.open_repo().list_shares()
    if as_json:
        emit_json([{"name": s.name, "created_at": iso(to_us(s.created_at)), "retention": s.retention,
                    "worm_days": s.worm_days, "quota": s.quota, "anonymous": s.anonymous} for s in shares])
        return
    for s in shares:
        click.echo(f"{s.name}\tretention={s.retention or 'keep-all'}\tworm_days={s.worm_days}"
                   f"\tquota={s.quota or '-'}")


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise click.ClickException("no password on standard input")
        return line
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@cli.group()
def user() -> None:
    """Manage users (stored in the catalog with salted scrypt hashes)."""


@user.command("add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.pass_obj
def user_add(obj: CLIContext, name: str, password_stdin: bool) -> None:
    """Create a user."""
    obj.open_repo().add_user(name, _read_password(password_stdin))
    click.echo(f"user {name} created")


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True)
@click.pass_obj
def user_passwd(obj: CLIContext, name: str, password_stdin: bool) -> None:
    """Set a user's password."""
    obj.open_repo().set_password(name, _read_password(password_stdin))
    click.echo(f"password of {name} changed")


@user.command("rm")
@click.argument("name")
@click.pass_obj
def user_rm(obj: CLIContext, name: str) -> None:
    """Remove a user and its grants (files stay)."""
    obj.open_repo().remove_user(name)
    click.echo(f"user {name} removed")


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def user_list(obj: CLIContext, as_json: bool) -> None:
    """List users and their grants."""
    users = obj.open_repo().list_users()
    if as_json:
        emit_json([{"name": u.name, "created_at": iso(to_us(u.created_at)), "shares": u.shares} for u in users])
        return
    for u in users:
        click.echo(f"{u.name}\t" + ",".join(f"{s}:{m}" for s, m in sorted(u.shares.items())))


@cli.command()
@click.argument("user_name", metavar="USER")
@click.argument("share_name", metavar="SHARE")
@click.argument("mode", type=click.Choice(["ro", "rw"]))
@click.pass_obj
def grant(obj: CLIContext, user_name: str, share_name: str, mode: str) -> None:
    """Let USER read (ro) or read and write (rw) SHARE."""
    obj.open_repo().grant(user_name, share_name, mode)
    click.echo(f"{user_name} may {'read' if mode == 'ro' else 'read and write'} {share_name}")


@cli.command()
@click.argument("user_name", metavar="USER")
@click.argument("share_name", metavar="SHARE")
@click.pass_obj
def revoke(obj: CLIContext, user_name: str, share_name: str) -> None:
    """Take away USER's access to SHARE."""
    obj.open_repo().revoke(user_name, share_name)
    click.echo(f"{user_name} has no access to {share_name}")
