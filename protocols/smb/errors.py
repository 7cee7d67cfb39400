"""The one table: archive errors (and wire errors) -> NTSTATUS codes.

Every handler raises; the dispatcher catches at the seam and answers with
:func:`status_for`, so a failing ShareFS call is an error reply, never a dropped connection.
"""
from __future__ import annotations

from archive import errors

from .wire import WireError

SUCCESS = 0x00000000
PENDING = 0x00000103
BUFFER_OVERFLOW = 0x80000005
NO_MORE_FILES = 0x80000006
INVALID_INFO_CLASS = 0xC0000003
INFO_LENGTH_MISMATCH = 0xC0000004
INVALID_HANDLE = 0xC0000008
INVALID_PARAMETER = 0xC000000D
NO_SUCH_FILE = 0xC000000F
INVALID_DEVICE_REQUEST = 0xC0000010
END_OF_FILE = 0xC0000011
MORE_PROCESSING_REQUIRED = 0xC0000016
ACCESS_DENIED = 0xC0000022
OBJECT_NAME_INVALID = 0xC0000033
OBJECT_NAME_NOT_FOUND = 0xC0000034
OBJECT_NAME_COLLISION = 0xC0000035
OBJECT_PATH_NOT_FOUND = 0xC000003A
DATA_ERROR = 0xC000003E
SHARING_VIOLATION = 0xC0000043
FILE_LOCK_CONFLICT = 0xC0000054
LOCK_NOT_GRANTED = 0xC0000055
DELETE_PENDING = 0xC0000056
LOGON_FAILURE = 0xC000006D
RANGE_NOT_LOCKED = 0xC000007E
DISK_FULL = 0xC000007F
MEDIA_WRITE_PROTECTED = 0xC00000A2
FILE_IS_A_DIRECTORY = 0xC00000BA
NOT_SUPPORTED = 0xC00000BB
NETWORK_NAME_DELETED = 0xC00000C9
BAD_NETWORK_NAME = 0xC00000CC
REQUEST_NOT_ACCEPTED = 0xC00000D0
INTERNAL_ERROR = 0xC00000E5
UNEXPECTED_IO_ERROR = 0xC00000E9
DIRECTORY_NOT_EMPTY = 0xC0000101
FILE_CORRUPT_ERROR = 0xC0000102
NOT_A_DIRECTORY = 0xC0000103
FILE_CLOSED = 0xC0000128
FS_DRIVER_REQUIRED = 0xC000019C
USER_SESSION_DELETED = 0xC0000203
NOT_FOUND = 0xC0000225

# First match wins: subclasses before their bases.
TABLE: list[tuple[type[BaseException], int]] = [
    (WireError, INVALID_PARAMETER),
    (errors.NotFound, OBJECT_NAME_NOT_FOUND),
    (errors.Exists, OBJECT_NAME_COLLISION),
    (errors.NotADirectory, OBJECT_PATH_NOT_FOUND),
    (errors.IsADirectory, FILE_IS_A_DIRECTORY),
    (errors.WormLocked, ACCESS_DENIED),
    (errors.AuthFailed, LOGON_FAILURE),
    (errors.PermissionDenied, ACCESS_DENIED),
    (errors.ReadOnly, MEDIA_WRITE_PROTECTED),
    (errors.InvalidPath, OBJECT_NAME_INVALID),
    (errors.NotEmpty, DIRECTORY_NOT_EMPTY),
    (errors.Conflict, SHARING_VIOLATION),
    (errors.QuotaExceeded, DISK_FULL),
    (errors.NoSpace, DISK_FULL),
    (errors.Corrupt, FILE_CORRUPT_ERROR),
    (errors.ArchiveError, UNEXPECTED_IO_ERROR),
]


class SMBError(Exception):
    """A handler's own refusal with an explicit NTSTATUS (bad handle, wrong disposition...)."""

    def __init__(self, status: int, why: str = "") -> None:
        super().__init__(why or hex(status))
        self.status = status


def status_for(exc: BaseException) -> int:
    if isinstance(exc, SMBError):
        return exc.status
    for cls, status in TABLE:
        if isinstance(exc, cls):
            return status
    return INTERNAL_ERROR
