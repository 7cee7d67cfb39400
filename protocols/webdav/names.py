"""Names in the WebDAV URL space: share/path split, lock keys, macOS junk."""
from __future__ import annotations

import unicodedata
from urllib.parse import quote

SNAPSHOTS = ".snapshots"


def is_junk(name: str) -> bool:
    """macOS metadata droppings: AppleDouble ``._*`` files and ``.DS_Store``."""
    return name == ".DS_Store" or name.startswith("._")


def split_url_path(path: str) -> tuple[str | None, str]:
    """'/share/a/b' -> ('share', '/a/b'); '/' -> (None, '/').  NFC-normalizes."""
    path = unicodedata.normalize("NFC", path)
    parts = [p for p in path.split("/") if p != ""]
    if not parts:
        return None, "/"
    return parts[0], "/" + "/".join(parts[1:])


def lock_root(url_path: str) -> str:
    """The key wsgidav's lock manager uses for a path (quoted, no trailing slash)."""
    return "/" + quote(url_path).strip("/")
