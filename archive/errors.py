"""The core's error hierarchy.

Adapters map these to protocol codes in one table each; the CLI prints them as one line.
"""


class ArchiveError(Exception):
    """Base class: every error the core raises on purpose."""


class NotFound(ArchiveError):
    pass


class Exists(ArchiveError):
    pass


class NotADirectory(ArchiveError):
    pass


class IsADirectory(ArchiveError):
    pass


class PermissionDenied(ArchiveError):
    pass


class AuthFailed(PermissionDenied):
    """Unknown user or wrong password (deliberately not distinguished)."""


class ReadOnly(ArchiveError):
    """A write into a read-only view (.snapshots, a past instant)."""


class InvalidPath(ArchiveError):
    pass


class Conflict(ArchiveError):
    pass


class NotEmpty(Conflict):
    pass


class QuotaExceeded(ArchiveError):
    pass


class NoSpace(ArchiveError):
    """The chunk store's disk is full; nothing was committed."""


class Corrupt(ArchiveError):
    """Stored data failed authentication or its checksum; wrong bytes are never returned."""


class BadPassword(ArchiveError):
    """The repository passphrase does not unwrap the master key."""


class WormLocked(PermissionDenied):
    """Retention lock: the version is younger than the share's WORM period."""


class Unavailable(ArchiveError):
    """The pack store (or catalog) cannot be reached even after retries; nothing was committed."""
