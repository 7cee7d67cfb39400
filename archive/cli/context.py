"""What every archivectl command shares: the config, the repository path, the passphrase."""
from __future__ import annotations

import contextlib
import gc
import getpass
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import config as cfg

if TYPE_CHECKING:       # imported when a command opens the repository: `--help` needs none of it
    from ..repository import Repository


class CLIContext:
    def __init__(self, repo_flag: str | None, config_flag: str | None):
        self.config, self.config_path = cfg.load(config_flag)
        self.repo_path: "Path | str" = cfg.repo_path(repo_flag, self.config, self.config_path)
        self.catalog_url = cfg.catalog_url(self.config)
        self.store_options = cfg.store_options(self.config)
        self._repo: Repository | None = None
        self._lean = None
        self._pw: str | None = None

    def encrypted(self) -> bool:
        from ..packstore import open_store
        try:
            raw = open_store(self.repo_path, **self.store_options).get_meta("config.json")
            return bool(raw) and json.loads(raw).get("encrypted", False)
        except (OSError, ValueError):
            return False

    def password(self, prompt: str = "Repository passphrase", confirm: bool = False) -> str | None:
        pw = os.environ.get("EDGE_ARCHIVE_PASSWORD")
        if pw is not None:
            return pw
        if not sys.stdin.isatty():
            raise click.ClickException("this repository is encrypted: set EDGE_ARCHIVE_PASSWORD")
        return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)

    def repo_password(self) -> str | None:
        """The passphrase of this (encrypted) repository, asked at most once per command."""
        if self._pw is None:
            self._pw = self.password()
        return self._pw

    def lean(self):
        """The repository opened for the lean read path (archive/cli/lean.py), or None where that
        path does not apply (the command then opens the Repository, as always)."""
        if self._lean is None:
            from .lean import FALLBACK, LeanRepo
            try:
                self._lean = LeanRepo(self.repo_path, self.catalog_url, self.repo_password)
            except FALLBACK:
                self._lean = False
        return self._lean or None

    def open_repo(self) -> Repository:
        if self._repo is None:
            if isinstance(self.repo_path, Path) and self.repo_path == cfg.default_repo_path() and \
                    not (self.repo_path / "config.json").is_file():
                raise click.ClickException(
                    f"no repository at {self.repo_path} (the default for this account, whatever the folder): "
                    "create it with `archivectl init` or a first `archivectl serve`, or name another with "
                    "--repo DIR or EDGE_ARCHIVE_REPO")
            self._check_catalog()
            pw = self.repo_password() if self.encrypted() else None
            with _gc_paused():
                from ..repository import Repository      # the core (SQLAlchemy only if the catalog needs it)
                self._repo = Repository.open(self.repo_path, password=pw, catalog_url=self.catalog_url,
                                             **self.store_options)
        return self._repo

    def lost_catalog(self) -> Path | None:
        """The catalog file a local repository should have but does not (see _check_catalog)."""
        if not isinstance(self.repo_path, Path) or self.catalog_url:
            return None
        from ..catalog.db import missing_catalog
        return missing_catalog(self.repo_path)

    def _check_catalog(self) -> None:
        """A local repository whose catalog file is gone must not be opened: that would create
        an empty catalog and every share, file and user would silently look deleted."""
        lost = self.lost_catalog()
        if lost is not None:
            raise click.ClickException(
                f"the catalog of the repository at {self.repo_path} is missing ({lost} does not exist): "
                "rebuild it from the packs with `archivectl recover`")

    def share(self, name: str):
        """A ShareFS with administrator rights, audited as the CLI user on this host."""
        from ..types import Origin
        origin = Origin("cli", socket.gethostname(), os.environ.get("USER") or getpass.getuser())
        return self.open_repo().share(name, origin=origin)

    def close(self) -> None:
        if self._lean:
            self._lean.close()
            self._lean = None
        if self._repo is not None:
            self._repo.close()
            self._repo = None


@contextlib.contextmanager
def _gc_paused():
    """The cyclic garbage collector paused while the core's modules load, what they made frozen
    after (as main.py does for the command's own module): they allocate many long-lived objects
    and free none, and each collection would walk them all again (~0.05 s of CPU per command)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


class _Counter:
    """Progress of an operation whose total is unknown: a count on a terminal, nothing otherwise."""

    def __init__(self, label: str):
        self.label, self.n = label, 0
        self.tty = sys.stderr.isatty()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.tty:
            click.echo(f"\r{self.label}: {self.n}", nl=False, err=True)

    def __enter__(self) -> "_Counter":
        return self

    def __exit__(self, *exc) -> None:
        if self.tty and self.n:
            click.echo("", err=True)


def progress(length: int | None, label: str):
    """A click progress bar on a terminal (a counter when the total is unknown), silent otherwise."""
    if length is None:
        return _Counter(label)
    return click.progressbar(length=length, label=label, file=sys.stderr,
                             hidden=not sys.stderr.isatty(), show_pos=True)
