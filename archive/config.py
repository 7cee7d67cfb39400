"""The configuration file (TOML) and its overrides: flags > EDGE_ARCHIVE_* environment > file.

The core reads only the [repository] section; `protocols/` validates the rest.  Any key can be
overridden from the environment as EDGE_ARCHIVE_<SECTION>_<KEY> (e.g. EDGE_ARCHIVE_FTP_LISTEN).
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("/etc/edge-archive/archive.toml")
DEFAULT_REPO = Path("var/edge-archive")


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


def repo_path(flag: str | None, config: dict[str, Any]) -> "Path | str":
    """A folder (Path) or a store URL kept as a string (s3://BUCKET/PREFIX?endpoint=...)."""
    from .packstore import is_url
    p = flag or os.environ.get("EDGE_ARCHIVE_REPO") or config.get("repository", {}).get("path")
    if not p:
        return DEFAULT_REPO
    return p if is_url(p) else Path(p)


def store_options(config: dict[str, Any]) -> dict[str, Any]:
    """[repository] cache (node-local chunk cache and staging), cache_size, and S3 credentials
    (access_key_id, secret_access_key; the AWS_* variables otherwise); EDGE_ARCHIVE_CACHE wins."""
    r = config.get("repository", {})
    creds = {k: r[k] for k in ("access_key_id", "secret_access_key") if r.get(k)}
    return {"cache": os.environ.get("EDGE_ARCHIVE_CACHE") or r.get("cache"),
            "cache_size": os.environ.get("EDGE_ARCHIVE_CACHE_SIZE") or r.get("cache_size"), "credentials": creds}


def catalog_url(config: dict[str, Any]) -> str | None:
    return os.environ.get("EDGE_ARCHIVE_CATALOG") or config.get("repository", {}).get("catalog")
