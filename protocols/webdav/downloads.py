"""Counting what GET sends: the ``download`` event (metrics) and the audit record.

wsgidav reads a resource's content through the file object ``get_content()`` returns and
closes it when the response ends, also when the client went away.  Under our cheroot gateway
its first ``read`` hands the gateway the reader itself (:mod:`.sendbody`).  :class:`CountedReader`
wraps the ShareFS Reader, counts the bytes handed out, and reports once, at close.
"""
from __future__ import annotations

from typing import Any, Callable

from .sendbody import DirectBody


class CountedReader:
    """A Reader proxy that calls ``on_close(bytes_read)`` exactly once."""

    def __init__(self, reader: Any, on_close: Callable[[int], None], direct: bool = False) -> None:
        self._reader = reader
        self._on_close = on_close
        self._direct = direct
        self.bytes_read = 0

    def read(self, n: int = -1) -> bytes:
        if self._direct and n and n > 0:
            # served by EdgeGateway: it sends the body itself (see .sendbody)
            self._direct = False
            return DirectBody(self)
        data = self._reader.read(n)
        self.bytes_read += len(data)
        return data

    @property
    def has_views(self) -> bool:
        return hasattr(self._reader, "readviews")

    def readviews(self, n: int) -> list:
        """The Reader's zero-copy views of the next n bytes (see Reader.readviews), counted."""
        views = self._reader.readviews(n)
        self.bytes_read += sum(len(v) for v in views)
        return views

    def readinto(self, b: Any) -> int:
        got = self._reader.readinto(b)
        self.bytes_read += got or 0
        return got

    def close(self) -> None:
        on_close, self._on_close = self._on_close, None
        try:
            self._reader.close()
        finally:
            if on_close is not None:
                on_close(self.bytes_read)

    def __getattr__(self, name: str) -> Any:      # seek, tell, size, ...
        return getattr(self._reader, name)

    def __enter__(self) -> "CountedReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def report_download(provider: Any, environ: dict, share: str, rel: str, version: int | None,
                    size: int, sent: int) -> None:
    """Event + audit of one GET: complete when a whole-file request read every byte (a Range
    request is complete when it ends; its bytes count either way)."""
    complete = sent >= size if "HTTP_RANGE" not in environ else True
    login = environ.get("edge.login")
    user = login.user.name if login is not None else None
    address = environ.get("REMOTE_ADDR")
    if provider.ctx is not None:
        provider.ctx.event("webdav", "download", user=user, address=address, path=f"/{share}{rel}",
                           size=sent, complete=complete)
    try:
        from archive import Origin
        provider.repo.audit_later("download" if complete else "download_incomplete",
                                  Origin("webdav", address, user), share, rel, version=version,
                                  detail=f"{sent} bytes")
    except Exception:           # auditing must never break a response
        pass
