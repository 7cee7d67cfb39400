"""Repository, share, user and grant administration commands."""
from __future__ import annotations

import os
import re
import sys

import click

from ..chunker import DEFAULT_AVG
from ..clock import iso, to_us
from ..repository import Repository
from .context import CLIContext, emit_json
from .main import cli


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(?:i?b)?", re.IGNORECASE)
#: `share list` prints a share without retention rules as keep-all; the same word sets it.
KEEP_ALL = "keep-all"
NO_QUOTA = "none"


class SizeType(click.ParamType):
    """A byte count with an optional binary unit: 500G, 1.5T, 10GiB, 4096; `none` clears a quota."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value is None:
            return value
        text = str(value).strip()
        if text.lower() == NO_QUOTA:
            return NO_QUOTA
        m = _SIZE.fullmatch(text)
        if not m:
            self.fail(f"{value!r} is not a size: give a number of bytes with an optional unit K, M, G, T or P "
                      f"(powers of 1024; 10G = 10GiB = 10GB), e.g. 500G or 1.5T; 'none' removes the quota",
                      param, ctx)
        return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


class RetentionType(click.ParamType):
    """Retention rules as the core parses them, or keep-all (what `share list` prints for none)."""

    name = "RULES"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        if text.lower() == KEEP_ALL:
            return KEEP_ALL
        from ..retention import parse_rules
        try:
            parse_rules(text)
        except ValueError as e:
            self.fail(f"{e}; or {KEEP_ALL} to keep every version", param, ctx)
        return text


SIZE = SizeType()
RETENTION = RetentionType()


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
@click.option("--retention", type=RETENTION,
              help='e.g. "keep-last=10,keep-daily=30,keep-monthly=12" (default: keep-all, every version).')
@click.option("--worm-days", type=int, default=0, help="No version younger than this can be pruned, by anyone.")
@click.option("--quota", type=SIZE, help="Logical size limit of current files, e.g. 10G (K, M, G, T: powers of 1024).")
@click.option("--anonymous", is_flag=True, help="Allow read-only access without login.")
@click.pass_obj
def share_add(obj: CLIContext, name: str, retention: str | None, worm_days: int, quota: str | None,
              anonymous: bool) -> None:
    """Create a share."""
    obj.open_repo().add_share(name, retention=None if retention == KEEP_ALL else retention, worm_days=worm_days,
                              quota=None if quota == NO_QUOTA else quota, anonymous=anonymous)
    click.echo(f"share {name} created")


@share.command("set")
@click.argument("name")
@click.option("--retention", type=RETENTION, help="Rules, or keep-all.")
@click.option("--worm-days", type=int)
@click.option("--quota", type=SIZE, help="e.g. 10G, or none.")
@click.option("--anonymous/--no-anonymous", default=None)
@click.option("--allow-purge/--no-allow-purge", default=None,
              help="Let clients delete single versions for good (S3 DeleteObject with a VersionId); "
                   "never versions under the WORM period.")
@click.pass_obj
def share_set(obj: CLIContext, name: str, retention, worm_days, quota, anonymous, allow_purge) -> None:
    """Change a share's retention, WORM period (it can only grow), quota, anonymity or purge policy."""
    values = {k: v for k, v in {"retention": retention, "worm_days": worm_days, "quota": quota,
                                "anonymous": anonymous, "allow_purge": allow_purge}.items() if v is not None}
    for key, clear in (("retention", KEEP_ALL), ("quota", NO_QUOTA)):
        if values.get(key) == clear:
            values[key] = None            # stored as "no rules" / "no quota"
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
                    "worm_days": s.worm_days, "quota": s.quota, "used": s.used, "anonymous": s.anonymous} for s in shares])
        return
    for s in shares:
        click.echo(f"{s.name}\tretention={s.retention or 'keep-all'}\tworm_days={s.worm_days}"
                   f"\tquota={s.quota or '-'}\tused={s.used}")


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
@click.option("--smb", is_flag=True, help="Also allow SMB logins (stores the NT hash NTLM needs).")
@click.pass_obj
def user_add(obj: CLIContext, name: str, password_stdin: bool, smb: bool) -> None:
    """Create a user."""
    obj.open_repo().add_user(name, _read_password(password_stdin), smb=smb)
    click.echo(f"user {name} created")


@user.command("smb")
@click.argument("name")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--password-stdin", is_flag=True, help="Read the user's password from the first line of stdin.")
@click.pass_obj
def user_smb(obj: CLIContext, name: str, state: str, password_stdin: bool) -> None:
    """Allow (on: needs the user's password) or refuse (off) SMB logins for a user."""
    if state == "on":
        password = (_read_password(True) if password_stdin
                    else click.prompt(f"Password of {name}", hide_input=True))
        obj.open_repo().set_smb(name, True, password)
    else:
        obj.open_repo().set_smb(name, False)
    click.echo(f"SMB logins for {name}: {state}")


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


@user.command("set")
@click.argument("name")
@click.option("--create-shares/--no-create-shares", default=None,
              help="Allow the user to create shares itself (S3 CreateBucket).")
@click.pass_obj
def user_set(obj: CLIContext, name: str, create_shares: bool | None) -> None:
    """Change a user's permissions."""
    from ..accesskeys import set_create_shares
    if create_shares is None:
        raise click.ClickException("nothing to change (e.g. --create-shares)")
    set_create_shares(obj.open_repo(), name, create_shares)
    click.echo(f"user {name}: create_shares={'yes' if create_shares else 'no'}")


@user.command("s3-key")
@click.argument("name")
@click.option("--list", "list_", is_flag=True, help="List the user's access key ids (never the secrets).")
@click.option("--revoke", metavar="KEY", help="Revoke one access key.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def user_s3_key(obj: CLIContext, name: str, list_: bool, revoke: str | None, as_json: bool) -> None:
    """Create an S3 access key for a user (the secret is printed once), list or revoke keys."""
    from .. import accesskeys
    repo = obj.open_repo()
    if list_:
        keys = accesskeys.list_keys(repo, name)
        if as_json:
            emit_json([{"access_key_id": k["access_key_id"], "created_at": iso(to_us(k["created_at"]))}
                       for k in keys])
        else:
            for k in keys:
                click.echo(f"{k['access_key_id']}\t{iso(to_us(k['created_at']))}")
        return
    if revoke:
        accesskeys.revoke_key(repo, name, revoke)
        click.echo(f"access key {revoke} of {name} revoked")
        return
    key_id, secret = accesskeys.create_key(repo, name)
    if as_json:
        emit_json({"user": name, "access_key_id": key_id, "secret_access_key": secret})
    else:
        click.echo(f"access_key_id:     {key_id}\nsecret_access_key: {secret}\n(the secret is shown once)")
