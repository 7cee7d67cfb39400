"""archivectl: the command line of Edge Archive.

The archive commands live here, with the core; `serve` and `status` come from the
`edge_archive.cli` entry-point group (contributed by protocols/), so archive/ never imports
protocols/.

Start-up is most of what a small command costs (docs/benchmarks.md, "Start-up"), so:
* a command's module (and through it SQLAlchemy and the core) is imported only once the command
  is known (`_COMMANDS`); entry points are scanned only for a name that is not built in, or to
  list every command (help);
* before that import, the passphrase's key derivation starts on another thread (keys.prefetch),
  so the two overlap instead of adding up;
* the cyclic garbage collector is paused while the modules load (they allocate many objects and
  free none; each collection would walk them all again) and frozen after.
"""
from __future__ import annotations

import gc
import os
import sys
from importlib import import_module
from pathlib import Path

import click

from .. import config as cfg
from ..errors import ArchiveError, BadPassword, NotFound, PermissionDenied
from .context import CLIContext

#: Built-in command -> the module of this package that defines it (registers it on `cli`).
#: tests/test_cli.py keeps this in step with the modules.
_COMMANDS = {
    **dict.fromkeys(("init", "passwd", "share", "user", "grant", "revoke"), "admin"),
    **dict.fromkeys(("put", "get", "ls", "versions", "restore", "rm", "mv", "mkdir"), "files"),
    **dict.fromkeys(("check", "prune", "gc", "stats", "recover", "audit"), "maintenance"),
}
_PLUGIN_GROUP = "edge_archive.cli"
_gc_paused = False


def _prefetch_key(ctx: click.Context) -> None:
    """Start unwrapping the repository key (scrypt) in the background, when the passphrase is
    in the environment and the repository is a local folder; any doubt: do nothing here, the
    command opens the repository as always and reports what is wrong."""
    password = os.environ.get("EDGE_ARCHIVE_PASSWORD")
    if not password:
        return
    try:
        config, config_path = cfg.load(ctx.params.get("config"))
        path = cfg.repo_path(ctx.params.get("repo"), config, config_path)
        if not isinstance(path, Path):
            return
        keyfile = (path / "keys.json").read_bytes()
    except (cfg.ConfigError, OSError, ValueError):
        return
    from ..keys import prefetch
    prefetch(keyfile, password)


def _startup_done() -> None:
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()         # what the imports made lives as long as the process: never walk it again
        gc.enable()


class _LazyGroup(click.Group):
    """The top-level group: built-in commands load their module on first use, plugins too."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            if cmd_name in _COMMANDS:
                import_module(f".{_COMMANDS[cmd_name]}", __package__)
            else:
                _add_plugins(only=cmd_name)
        return self.commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        _load_commands()
        return sorted(self.commands)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] in _COMMANDS and args[0] != "init":
            _prefetch_key(ctx)
        try:
            return super().resolve_command(ctx, args)
        finally:
            _startup_done()


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--repo", "repo", envvar=None,
              help="Repository directory (or EDGE_ARCHIVE_REPO, or the config's [repository] path; default "
                   "$XDG_DATA_HOME/edge-archive, i.e. ~/.local/share/edge-archive; /var/lib/edge-archive for "
                   "root and the edge-archive service user).")
@click.option("--config", "config", help="Config file (or EDGE_ARCHIVE_CONFIG; default /etc/edge-archive/archive.toml).")
@click.version_option(package_name="edge-archive")
@click.pass_context
def cli(ctx: click.Context, repo: str | None, config: str | None) -> None:
    """Edge Archive: a versioned, deduplicating, multi-protocol archive."""
    try:
        ctx.obj = CLIContext(repo, config)
    except cfg.ConfigError as e:
        raise click.ClickException(str(e)) from None
    ctx.call_on_close(ctx.obj.close)


class _PluginCommand(click.Command):
    """A command from the `edge_archive.cli` entry points, imported only when it runs (or its
    help is asked for): `archivectl ls` need not load every protocol stack."""

    def __init__(self, ep) -> None:
        super().__init__(ep.name, help=f"(plugin: {ep.value})", add_help_option=False)
        self._ep = ep
        self._real: click.Command | None = None

    def real(self) -> click.Command:
        if self._real is None:
            self._real = self._ep.load()
        return self._real

    def get_short_help_str(self, limit: int = 45) -> str:
        try:
            return self.real().get_short_help_str(limit)
        except Exception:
            return f"(unavailable: {self._ep.value})"

    def make_context(self, info_name, args, parent=None, **extra):
        return self.real().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        return self.real().invoke(ctx)


def _add_plugins(only: str | None = None) -> None:
    from importlib.metadata import entry_points    # scanning every installed package costs ~30 ms
    for ep in entry_points(group=_PLUGIN_GROUP):
        if (only is None or ep.name == only) and ep.name not in cli.commands:
            cli.add_command(_PluginCommand(ep), ep.name)


def _load_commands() -> None:
    """Register every command: all built-in modules, then the plugins."""
    for module in sorted(set(_COMMANDS.values())):
        import_module(f".{module}", __package__)
    _add_plugins()


EXIT = {NotFound: 3, PermissionDenied: 4, BadPassword: 5}


def _unreadable_catalog(e: BaseException) -> str | None:
    """What SQLite said, when `e` is a SQLite catalog that does not read (not a database,
    malformed, locked past the busy timeout), raw or wrapped by SQLAlchemy; None otherwise
    (SQL errors of the program itself keep their traceback)."""
    import sqlite3
    dbapi = getattr(e, "orig", None) if type(e).__module__.startswith("sqlalchemy") else e
    if type(dbapi) in (sqlite3.DatabaseError, sqlite3.OperationalError):
        return str(dbapi)
    return None


def main() -> None:
    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ArchiveError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(next((code for cls, code in EXIT.items() if isinstance(e, cls)), 1))
    except (ValueError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except Exception as e:
        cause = _unreadable_catalog(e)
        if cause is None:
            raise
        click.echo(f"error: the catalog cannot be read ({cause}); if it is damaged, `archivectl recover` "
                   "rebuilds it from the packs (the damaged file is moved aside, not deleted)", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        _startup_done()
