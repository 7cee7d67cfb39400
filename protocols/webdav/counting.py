"""Counting WebDAV connections: cheroot makes one ConnectionClass object per accepted socket.

``connected`` wraps whatever ConnectionClass the server uses (so other wrappers compose) and
reports ``connect`` when a connection is accepted and ``disconnect`` once when it closes:
the ``edge_archive_sessions{protocol="webdav"}`` gauge is the number of open connections,
``edge_archive_connections_total`` the number accepted.
"""
from __future__ import annotations

from typing import Any, Callable


def connected(base: type, report: Callable[..., None]) -> type:
    """A subclass of cheroot's connection class `base` that reports its life."""

    class CountedConnection(base):  # type: ignore[misc, valid-type]
        _edge_open = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._edge_open = True
            report("connect")

        def close(self) -> None:
            try:
                super().close()
            finally:
                if self._edge_open:
                    self._edge_open = False
                    report("disconnect", address=getattr(self, "remote_addr", None))

    return CountedConnection
