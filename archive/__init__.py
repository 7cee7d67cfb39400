"""Edge Archive core: a versioned, deduplicating, optionally encrypted archive.

Adapters use only `Repository` and the `ShareFS` it hands out (see docs/sharefs-api.md).
This package never imports `protocols`.
"""
from . import errors
from .repository import Repository
from .sharefs import ShareFS
from .types import ANONYMOUS, AuditRecord, Entry, Origin, ShareInfo, User, UserInfo, Version

__all__ = ["ANONYMOUS", "errors", "Repository", "ShareFS", "Entry", "Version", "Origin", "User", "ShareInfo", "UserInfo",
           "AuditRecord"]
