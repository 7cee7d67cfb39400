"""The one table that turns archive errors into FTP replies.

pyftpdlib answers every failed filesystem call with ``550 <why>``; that is right for
almost everything (missing file, no permission, read-only snapshot, bad path).  Transfers
are different: running out of space mid-upload is ``452`` (RFC 959: insufficient storage),
an exceeded quota ``552``, a corrupt chunk ``451`` (local error in processing).  Every
place that reports an archive error goes through :func:`reply_for`, so the mapping lives
here and nowhere else.
"""
from __future__ import annotations

import errno

from pyftpdlib.exceptions import FilesystemError

from archive import errors

# (error class, FTP code, message, errno for OSError-style reporting). First match wins,
# so subclasses come before their bases.
_TABLE: list[tuple[type[BaseException], int, str, int]] = [
    (errors.NotFound, 550, "No such file or directory", errno.ENOENT),
    (errors.Exists, 550, "File exists", errno.EEXIST),
    (errors.NotADirectory, 550, "Not a directory", errno.ENOTDIR),
    (errors.IsADirectory, 550, "Is a directory", errno.EISDIR),
    (errors.WormLocked, 550, "Locked by retention (WORM)", errno.EPERM),
    (errors.AuthFailed, 530, "Authentication failed", errno.EACCES),
    (errors.PermissionDenied, 550, "Permission denied", errno.EACCES),
    (errors.ReadOnly, 550, "Read-only (snapshot or read-only share)", errno.EROFS),
    (errors.InvalidPath, 550, "Invalid path", errno.EINVAL),
    (errors.NotEmpty, 550, "Directory not empty", errno.ENOTEMPTY),
    (errors.Conflict, 550, "Conflict", errno.EBUSY),
    (errors.QuotaExceeded, 552, "Quota exceeded", errno.EDQUOT),
    (errors.NoSpace, 452, "Insufficient storage space", errno.ENOSPC),
    (errors.Unavailable, 451, "Storage temporarily unavailable; nothing was stored, try again", errno.EAGAIN),
    (errors.Corrupt, 451, "Stored data is corrupt; refusing to send wrong bytes", errno.EIO),
    (errors.ArchiveError, 451, "Local error in processing", errno.EIO),
]


def reply_for(exc: BaseException) -> tuple[int, str]:
    """FTP code and human message for an archive error (or 451 for anything else)."""
    for cls, code, msg, _ in _TABLE:
        if isinstance(exc, cls):
            return code, msg
    return 451, "Local error in processing"


def errno_for(exc: BaseException) -> int:
    for cls, _, _, num in _TABLE:
        if isinstance(exc, cls):
            return num
    return errno.EIO


class FTPFilesystemError(FilesystemError):
    """A FilesystemError (which pyftpdlib turns into ``550 <message>.``) that remembers
    the archive error behind it."""

    def __init__(self, cause: BaseException, path: str | None = None) -> None:
        code, msg = reply_for(cause)
        super().__init__(f"{msg}: {path}" if path else msg)
        self.cause = cause
        self.code = code


class TransferError(OSError):
    """Raised from a data-channel file's write/read so pyftpdlib's DTP handler sees an
    OSError; the handler subclass looks at ``cause`` to pick the reply code."""

    def __init__(self, cause: BaseException) -> None:
        code, msg = reply_for(cause)
        super().__init__(errno_for(cause), msg)
        self.cause = cause
        self.code = code
