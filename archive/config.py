"""The configuration file (TOML) and its overrides: flags > EDGE_ARCHIVE_* environment > file.

The core reads only the [repository] section; `protocols/` validates the rest.  Any key can be
overridden from the environment as EDGE_ARCHIVE_<SECTION>_<KEY> (e.g. EDGE_ARCHIVE_FTP_LISTEN).

Where the repository is when nothing names one is decided here, once, for every command
(`archivectl serve` included): never the working folder, so that a command typed in another
folder reaches the same repository instead of silently creating an empty one.
"""
from __future__ import annotations

import os
import pwd
import tomllib
from pathlib import Path
from typing import Any, Mapping

DEFAULT_CONFIG = Path("/etc/edge-archive/archive.toml")
#: The system service's repository: the units' StateDirectory, the service user's home.
SYSTEM_REPO = Path("/var/lib/edge-archive")
#: The account the systemd units run as (README, systemd/).
SERVICE_USER = "edge-archive"
#: Where versions before 0.2 put the default repository (relative to the working folder).
LEGACY_REPO = Path("var/edge-archive")


class ConfigError(Exception):
    pass


def load(path: "str | Path | None") -> tuple[dict[str, Any], Path | None]:
    """Parse the config file; a syntax error names the file, line and column."""
    if path is None:
        env = os.environ.get("EDGE_ARCHIVE_CONFIG")
        if env:
            path = env
        elif DEFAULT_CONFIG.is_file():
            path = DEFAULT_CONFIG
        else:
            return {}, None
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f), path
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: syntax error: {e}") from None


def env_overrides(config: dict[str, Any], sections: list[str] | None = None) -> dict[str, Any]:
    """Apply EDGE_ARCHIVE_<SECTION>_<KEY> variables (values parsed as TOML scalars when possible)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for name, value in os.environ.items():
        if not name.startswith("EDGE_ARCHIVE_"):
            continue
        rest = name[len("EDGE_ARCHIVE_"):].lower()
        section, _, key = rest.partition("_")
        if not key or (sections is not None and section not in sections):
            continue
        out.setdefault(section, {})
        if isinstance(out[section], dict):
            out[section][key] = _scalar(value)
    return out


def _scalar(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def default_repo_path(env: Mapping[str, str] | None = None, euid: int | None = None,
                      user: str | None = None) -> Path:
    """The repository used when no flag, variable or config names one.

    1. ``$XDG_DATA_HOME/edge-archive`` when XDG_DATA_HOME is set to an absolute path;
    2. ``/var/lib/edge-archive`` for root and for the ``edge-archive`` service user, so that
       the systemd units and ``sudo -u edge-archive archivectl ...`` meet on one repository;
    3. ``~/.local/share/edge-archive`` (the XDG default) for everyone else.
    """
    env = os.environ if env is None else env
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and os.path.isabs(xdg):            # the XDG spec: a relative value is ignored
        return Path(xdg) / "edge-archive"
    euid = os.geteuid() if euid is None else euid
    if user is None:
        try:
            user = pwd.getpwuid(euid).pw_name
        except KeyError:
            user = ""
    if euid == 0 or user == SERVICE_USER:
        return SYSTEM_REPO
    home = env.get("HOME") or (pwd.getpwuid(euid).pw_dir if user else "/")
    return Path(home) / ".local" / "share" / "edge-archive"


def configured_repo_path(flag: str | None, config: dict[str, Any],
                         config_path: "str | Path | None" = None) -> "Path | str | None":
    """The repository named by --repo, EDGE_ARCHIVE_REPO or the file's [repository] path (a
    relative one is relative to the file's folder, not to the working folder), else None.
    A store URL (s3://BUCKET/PREFIX?endpoint=...) is kept as a string."""
    from .packstore import is_url
    p = flag or os.environ.get("EDGE_ARCHIVE_REPO") or config.get("repository", {}).get("path")
    if not p:
        return None
    if is_url(p):
        return p
    if flag or os.environ.get("EDGE_ARCHIVE_REPO"):
        return Path(p)
    p = Path(p)
    if not p.is_absolute() and config_path is not None:
        p = Path(config_path).parent / p
    return p


def repo_path(flag: str | None, config: dict[str, Any],
              config_path: "str | Path | None" = None) -> "Path | str":
    """The repository every archivectl command uses: named, else the default."""
    return configured_repo_path(flag, config, config_path) or default_repo_path()


def store_options(config: dict[str, Any]) -> dict[str, Any]:
    """[repository] cache (node-local chunk cache and staging), cache_size, and S3 credentials
    (access_key_id, secret_access_key; the AWS_* variables otherwise); EDGE_ARCHIVE_CACHE wins."""
    r = config.get("repository", {})
    creds = {k: r[k] for k in ("access_key_id", "secret_access_key") if r.get(k)}
    return {"cache": os.environ.get("EDGE_ARCHIVE_CACHE") or r.get("cache"),
            "cache_size": os.environ.get("EDGE_ARCHIVE_CACHE_SIZE") or r.get("cache_size"), "credentials": creds}


def catalog_url(config: dict[str, Any]) -> str | None:
    return os.environ.get("EDGE_ARCHIVE_CATALOG") or config.get("repository", {}).get("catalog")
