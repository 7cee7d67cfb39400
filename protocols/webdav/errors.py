"""The one table mapping archive errors to WebDAV/HTTP status codes.

Every ShareFS call the provider makes goes through :func:`mapped` (a context manager) or
:func:`dav_error`, so a core error always becomes the same HTTP status, whatever the method.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_INTERNAL_ERROR,
    HTTP_METHOD_NOT_ALLOWED,
    HTTP_NOT_FOUND,
    HTTP_PRECONDITION_FAILED,
    DAVError,
)

from archive import errors

#: Most specific class first: the first isinstance() match wins.
ERROR_TABLE: list[tuple[type[BaseException], int]] = [
    (errors.WormLocked, HTTP_FORBIDDEN),
    (errors.AuthFailed, 401),
    (errors.PermissionDenied, HTTP_FORBIDDEN),
    (errors.ReadOnly, HTTP_FORBIDDEN),
    (errors.NotFound, HTTP_NOT_FOUND),
    (errors.Exists, HTTP_PRECONDITION_FAILED),      # COPY/MOVE onto an existing target
    (errors.NotADirectory, HTTP_CONFLICT),         # a parent is a file
    (errors.IsADirectory, HTTP_METHOD_NOT_ALLOWED),  # PUT onto a collection
    (errors.InvalidPath, HTTP_BAD_REQUEST),        # "..", NUL, control chars, over-long names
    (errors.NotEmpty, HTTP_CONFLICT),
    (errors.Conflict, HTTP_CONFLICT),
    (errors.QuotaExceeded, HTTP_INSUFFICIENT_STORAGE),
    (errors.NoSpace, HTTP_INSUFFICIENT_STORAGE),
    (errors.Corrupt, HTTP_INTERNAL_ERROR),         # wrong bytes are never served
    (errors.Unavailable, 503),                     # object store down after retries: try again
    (errors.ArchiveError, HTTP_INTERNAL_ERROR),
]


def status_for(exc: BaseException) -> int:
    """HTTP status for an archive error (500 for anything unexpected)."""
    for cls, status in ERROR_TABLE:
        if isinstance(exc, cls):
            return status
    return HTTP_INTERNAL_ERROR


def dav_error(exc: BaseException) -> DAVError:
    """Turn an archive error into the DAVError wsgidav reports to the client."""
    if isinstance(exc, DAVError):
        return exc
    return DAVError(status_for(exc), context_info=str(exc) or type(exc).__name__)


@contextmanager
def mapped() -> Iterator[None]:
    """Run a block of ShareFS calls, re-raising archive errors as DAVError."""
    try:
        yield
    except errors.ArchiveError as exc:
        raise dav_error(exc) from exc
