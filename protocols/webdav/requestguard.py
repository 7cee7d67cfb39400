"""Outermost WSGI layer: refuse malformed requests with a 4xx before wsgidav sees them.

wsgidav answers some hostile shapes with 500/502 or not at all (a traceback, the
connection dropped): a path that is not UTF-8, ``..``/``.`` path elements (``%2e%2e``),
``DELETE /``, an empty, host-only, unparsable or non-HTTP ``Destination``, Basic
credentials that are not base64 of ``user:password`` in UTF-8.  This guard answers them
with a short ``text/plain`` 4xx and never calls the application.  It also hands the
application a ``wsgi.input`` that turns a :class:`~.framing.FramingError` in a chunked body
into ``400`` (wsgidav's PUT handler re-raises a DAVError with its own status), and catches
one that escapes before the response started (an XML body read by the XML guard).
"""
from __future__ import annotations

import base64
import binascii
from http import HTTPStatus
from typing import Any, Callable, Iterable
from urllib.parse import unquote_to_bytes, urlsplit

from wsgidav.dav_error import DAVError

from .framing import FramingError, LineIteration

_MOVERS = {"COPY", "MOVE"}


class _Refused(Exception):
    def __init__(self, status: str, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


def _bad(why: str) -> _Refused:
    return _Refused("400 Bad Request", why)


def check_path(raw: bytes, what: str = "path") -> str:
    """A decoded request path, or _Refused: UTF-8 only, no ``.``/``..`` elements."""
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(f"{what} is not valid UTF-8") from None
    if any(seg in (".", "..") for seg in path.split("/")):
        raise _bad(f"{what} contains a '.' or '..' element")
    if "\x00" in path:
        raise _bad(f"{what} contains NUL")
    return path


def check_destination(value: str | None) -> None:
    """COPY/MOVE ``Destination``: an absolute http(s) URL or absolute path (RFC 4918 10.3)."""
    if value is None or not value.strip():
        raise _bad("missing or empty Destination header")
    value = value.strip()
    try:
        parts = urlsplit(value)
        _ = parts.port                       # raises ValueError for a bad port
    except ValueError:
        raise _bad("unparsable Destination header") from None
    if parts.scheme:
        if parts.scheme.lower() not in ("http", "https"):
            raise _bad("Destination must be an http(s) URL")
        if not parts.netloc:
            raise _bad("Destination URL has no host")
    elif parts.netloc or not value.startswith("/"):
        raise _bad("Destination must be an absolute URL or path")
    if not parts.path.startswith("/"):
        raise _bad("Destination has no path")
    check_path(unquote_to_bytes(parts.path), "Destination path")


def check_basic(header: str | None) -> None:
    """Basic credentials must be base64 of ``user:password`` in UTF-8 (RFC 7617)."""
    if not header:
        return
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _bad("malformed Basic credentials") from None
    if ":" not in decoded:
        raise _bad("malformed Basic credentials (no ':')")


class _GuardedInput(LineIteration):
    """``wsgi.input`` that reports a broken chunked body as ``400 Bad Request``."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _call(self, fn: Callable, *args: Any) -> Any:
        try:
            return fn(*args)
        except FramingError as exc:
            raise DAVError(400, context_info=f"malformed request body: {exc}") from exc

    def read(self, *args: Any) -> bytes:
        return self._call(self._stream.read, *args)

    def readline(self, *args: Any) -> bytes:
        return self._call(self._stream.readline, *args)

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class RequestGuard:
    """WSGI middleware; see the module docstring."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            self._screen(environ)
        except _Refused as r:
            return self._answer(start_response, r.status, r.why)
        environ["wsgi.input"] = _GuardedInput(environ["wsgi.input"])
        try:
            return self.app(environ, start_response)
        except DAVError as exc:                       # raised before wsgidav's error layer
            if exc.value >= 500:
                raise
            return self._answer(start_response, f"{exc.value} {HTTPStatus(exc.value).phrase}",
                                exc.context_info or "bad request")
        except FramingError as exc:
            return self._answer(start_response, "400 Bad Request", f"malformed request body: {exc}")

    @staticmethod
    def _screen(environ: dict) -> None:
        method = environ.get("REQUEST_METHOD", "")
        raw = environ.get("PATH_INFO", "").encode("latin-1", "replace")
        path = check_path(raw)
        if method in ("DELETE", "MOVE") and path.strip("/") == "":
            raise _Refused("403 Forbidden", "the root cannot be deleted or moved")
        if method in _MOVERS:
            check_destination(environ.get("HTTP_DESTINATION"))
        check_basic(environ.get("HTTP_AUTHORIZATION"))

    @staticmethod
    def _answer(start_response: Callable, status: str, why: str) -> list[bytes]:
        data = (why + "\n").encode("utf-8", "replace")
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(data))),
                                ("Connection", "close")])
        return [data]
