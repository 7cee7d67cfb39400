"""Path validation: the one place that decides what a name may be, for every protocol."""
from __future__ import annotations

import re
import unicodedata

from .errors import InvalidPath

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
SNAPSHOTS = ".snapshots"
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def check_name(name: str) -> str:
    """Return the NFC form of one path component, or raise InvalidPath."""
    if not isinstance(name, str):
        raise InvalidPath(f"name must be text: {name!r}")
    name = unicodedata.normalize("NFC", name)
    if name in ("", ".", ".."):
        raise InvalidPath(f"invalid name {name!r}")
    if "/" in name:
        raise InvalidPath(f"name contains '/': {name!r}")
    if _CONTROL.search(name):           # a C-level scan: every path component of every request
        raise InvalidPath(f"name contains a control character: {name!r}")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath(f"name is not valid UTF-8: {name!r}") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidPath(f"name longer than {MAX_NAME_BYTES} bytes")
    return name


def split(path: str) -> tuple[str, ...]:
    """Split a share-relative path into validated NFC components ('' and '/' are the root)."""
    if not isinstance(path, str):
        raise InvalidPath(f"path must be text: {path!r}")
    if "\x00" in path:
        raise InvalidPath("path contains NUL")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidPath(f"path longer than {MAX_PATH_BYTES} bytes")
    parts = [p for p in path.split("/") if p != ""]
    return tuple(check_name(p) for p in parts)


def join(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


def fold(name: str) -> str:
    """Case-folded key for case-insensitive (SMB-style) lookups."""
    return unicodedata.normalize("NFC", name.casefold())


def split_archive_path(path: str) -> tuple[str, str]:
    """'/share/a/b' -> ('share', '/a/b'): the CLI's addressing of files across shares."""
    parts = split(path)
    if not parts:
        raise InvalidPath("path must start with a share name: /<share>/<path>")
    return parts[0], join(parts[1:])
