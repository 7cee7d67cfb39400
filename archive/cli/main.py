"""archivectl: the command line of Edge Archive.

The archive commands live here, with the core; `serve` and `status` come from the
`edge_archive.cli` entry-point group (contributed by protocols/), so archive/ never imports
protocols/.
"""
from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click

from .. import config as cfg
from ..errors import ArchiveError, BadPassword, NotFound, PermissionDenied
from .context import CLIContext


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


def _load_commands() -> None:
    from . import admin, files, maintenance  # noqa: F401  (they register on `cli`)
    for ep in entry_points(group="edge_archive.cli"):
        cli.add_command(_PluginCommand(ep), ep.name)


EXIT = {NotFound: 3, PermissionDenied: 4, BadPassword: 5}


def main() -> None:
    _load_commands()
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
    except KeyboardInterrupt:
        sys.exit(130)
