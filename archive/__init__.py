"""Edge Archive core: a versioned, deduplicating, optionally encrypted archive.

Adapters use only `Repository` and the `ShareFS` it hands out (see docs/sharefs-api.md).
This package never imports `protocols`.

The names below are imported on first use (PEP 562): `import archive.cli.main` (what
`archivectl` runs) must not pay for SQLAlchemy and the whole core before it even knows the
command (`archivectl --version`, `--help`, or a mistyped command need none of it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import errors

if TYPE_CHECKING:
    from .repository import Repository
    from .sharefs import ShareFS
    from .types import ANONYMOUS, AuditRecord, Entry, Origin, ShareInfo, User, UserInfo, Version

__all__ = ["ANONYMOUS", "errors", "Repository", "ShareFS", "Entry", "Version", "Origin", "User", "ShareInfo", "UserInfo",
           "AuditRecord"]

_LAZY = {"Repository": "repository", "ShareFS": "sharefs", "ANONYMOUS": "types", "AuditRecord": "types",
         "Entry": "types", "Origin": "types", "ShareInfo": "types", "User": "types", "UserInfo": "types",
         "Version": "types"}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'archive' has no attribute {name!r}")
    from importlib import import_module
    value = getattr(import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
