"""The PUT body sink: a version is committed only when the whole body arrived."""
from __future__ import annotations

from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_INSUFFICIENT_STORAGE, DAVError

from archive import errors

from .errors import dav_error, mapped
from .names import is_junk


class PutStream:
    """File-like sink handed to wsgidav's PUT loop.

    Counts bytes; ``close()`` (called by wsgidav only after the body loop finished) commits
    the Writer when the count matches Content-Length, otherwise aborts and answers 400.  A
    chunked body that breaks raises inside the loop, so ``end_write(with_errors=True)``
    aborts.  Either way a partial upload never becomes a version.
    """

    def __init__(self, writer, expected: int | None) -> None:
        self._w = writer
        self.expected = expected
        self.received = 0
        self.version = None
        self._done = False

    @classmethod
    def open(cls, res) -> "PutStream":
        environ = res.environ
        expected: int | None = None
        cl = environ.get("CONTENT_LENGTH", "").strip()
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            # macOS Finder sends chunked bodies and announces their size in this header
            cl = environ.get("HTTP_X_EXPECTED_ENTITY_LENGTH", "").strip()
        if cl:
            try:
                expected = int(cl)
            except ValueError:
                raise DAVError(HTTP_BAD_REQUEST, context_info="bad Content-Length") from None
        if res.provider.junk_policy == "ignore" and is_junk(res.name):
            return cls(None, expected)
        if expected and getattr(res.fs, "quota", True) is not None:
            used, quota = res.session.usage(res.share)
            if quota is not None and used + expected > quota:
                raise DAVError(HTTP_INSUFFICIENT_STORAGE,
                               context_info=f"quota of {quota} bytes exceeded")
        with mapped():
            return cls(res.fs.open_write(res.rel), expected)

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self._w is None:
            return
        try:
            self._w.write(data)
        except errors.ArchiveError as exc:
            self.abort()
            raise dav_error(exc) from exc

    def close(self) -> None:
        if self._done:
            return
        if self.expected is not None and self.received != self.expected:
            self.abort()
            raise DAVError(HTTP_BAD_REQUEST, context_info=(
                f"body ended after {self.received} of {self.expected} bytes; nothing stored"))
        self._done = True
        if self._w is None:
            return
        try:
            self.version = self._w.commit()
        except errors.ArchiveError as exc:
            self.abort()
            raise dav_error(exc) from exc

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._w is not None:
            try:
                self._w.abort()
            except Exception:  # noqa: BLE001 - aborting must never mask the real error
                pass
