"""The one table that turns archive errors into NFSv3 status codes (nfsstat3, RFC 1813 2.6)."""
from __future__ import annotations

from archive import errors

NFS3_OK = 0
NFS3ERR_PERM, NFS3ERR_NOENT, NFS3ERR_IO, NFS3ERR_NXIO, NFS3ERR_ACCES = 1, 2, 5, 6, 13
NFS3ERR_EXIST, NFS3ERR_XDEV, NFS3ERR_NODEV, NFS3ERR_NOTDIR, NFS3ERR_ISDIR = 17, 18, 19, 20, 21
NFS3ERR_INVAL, NFS3ERR_FBIG, NFS3ERR_NOSPC, NFS3ERR_ROFS, NFS3ERR_MLINK = 22, 27, 28, 30, 31
NFS3ERR_NAMETOOLONG, NFS3ERR_NOTEMPTY, NFS3ERR_DQUOT, NFS3ERR_STALE = 63, 66, 69, 70
NFS3ERR_BADHANDLE, NFS3ERR_NOT_SYNC, NFS3ERR_BAD_COOKIE, NFS3ERR_NOTSUPP = 10001, 10002, 10003, 10004
NFS3ERR_TOOSMALL, NFS3ERR_SERVERFAULT, NFS3ERR_BADTYPE, NFS3ERR_JUKEBOX = 10005, 10006, 10007, 10008

# MOUNT v3 (mountstat3)
MNT3_OK, MNT3ERR_PERM, MNT3ERR_NOENT, MNT3ERR_IO, MNT3ERR_ACCES = 0, 1, 2, 5, 13
MNT3ERR_NOTDIR, MNT3ERR_INVAL, MNT3ERR_NAMETOOLONG, MNT3ERR_SERVERFAULT = 20, 22, 63, 10006

# First match wins: subclasses before their bases.  (archive error, nfsstat3, mountstat3)
_TABLE: list[tuple[type[BaseException], int, int]] = [
    (errors.NotFound, NFS3ERR_NOENT, MNT3ERR_NOENT),
    (errors.Exists, NFS3ERR_EXIST, MNT3ERR_INVAL),
    (errors.NotADirectory, NFS3ERR_NOTDIR, MNT3ERR_NOTDIR),
    (errors.IsADirectory, NFS3ERR_ISDIR, MNT3ERR_INVAL),
    (errors.WormLocked, NFS3ERR_ACCES, MNT3ERR_ACCES),
    (errors.PermissionDenied, NFS3ERR_ACCES, MNT3ERR_ACCES),
    (errors.ReadOnly, NFS3ERR_ROFS, MNT3ERR_ACCES),
    (errors.InvalidPath, NFS3ERR_INVAL, MNT3ERR_INVAL),
    (errors.NotEmpty, NFS3ERR_NOTEMPTY, MNT3ERR_INVAL),
    (errors.Conflict, NFS3ERR_INVAL, MNT3ERR_INVAL),
    (errors.QuotaExceeded, NFS3ERR_DQUOT, MNT3ERR_IO),
    (errors.NoSpace, NFS3ERR_NOSPC, MNT3ERR_IO),
    (errors.Corrupt, NFS3ERR_IO, MNT3ERR_IO),
    (errors.ArchiveError, NFS3ERR_IO, MNT3ERR_IO),
]


class NFSError(Exception):
    """Raised inside a procedure to answer with `status` (and the procedure's failure body)."""

    def __init__(self, status: int, why: str = "") -> None:
        super().__init__(why or str(status))
        self.status = status


def nfsstat(exc: BaseException) -> int:
    if isinstance(exc, NFSError):
        return exc.status
    for cls, code, _ in _TABLE:
        if isinstance(exc, cls):
            return code
    return NFS3ERR_SERVERFAULT


def mountstat(exc: BaseException) -> int:
    for cls, _, code in _TABLE:
        if isinstance(exc, cls):
            return code
    return MNT3ERR_SERVERFAULT
