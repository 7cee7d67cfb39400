"""The value types adapters see: entries, versions, origins."""
from __future__ import annotations

import re
from dataclasses import dataclass, fields

_HEX32 = re.compile("[0-9a-f]{32}")


@dataclass(frozen=True)
class Origin:
    """Who caused a change: the protocol, the client address and the user name."""
    protocol: str
    address: str | None = None
    user: str | None = None

    def as_dict(self) -> dict:
        return {"protocol": self.protocol, "user": self.user, "address": self.address}


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    kind: str                 # "file" | "dir"
    size: int
    mtime: float              # epoch seconds
    ctime: float              # creation of the node
    node_id: int              # stable: an inode number / file id
    version: int | None       # current version number (files)
    etag: str                 # content hash (files), change stamp (dirs)
    readonly: bool = False

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"


_ENTRY_FIELDS = tuple(f.name for f in fields(Entry))
_new = object.__new__


def entry_of(values: tuple) -> Entry:
    """An Entry from all ten field values in order: the same object `Entry(*values)` builds, in
    half the time (a frozen dataclass's __init__ sets each field through object.__setattr__),
    for listings that build hundreds of thousands of them (docs/benchmarks.md, "catalog1m")."""
    e = _new(Entry)
    e.__dict__.update(zip(_ENTRY_FIELDS, values))
    return e


def etag_text(value) -> str:
    """A version's etag as every reader shows it, from the catalog's column (schema 0014): 16
    bytes are a hex digest's; other values are text (`etag_blob`).  A text value (as a bulk
    loader may write into SQLite) passes through."""
    if value.__class__ is bytes and len(value) == 16:      # (the listing's hot path)
        return value.hex()
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        if len(value) == 16:
            return value.hex()
        if not value:
            return ""
        return value[2:].decode() if len(value) == 17 and value[:2] == b"~=" else value[1:].decode()
    return value or ""


def etag_blob(etag: str) -> bytes:
    """What the catalog stores of a version's etag: a 32-character lower-case hex digest (what
    the core writes) as its 16 bytes, "" as no bytes, any other text as "=" and its UTF-8 (with
    one more "~" in front where that would be 16 bytes long), so every text reads back as it was."""
    if isinstance(etag, bytes):
        return etag
    if len(etag) == 32 and _HEX32.fullmatch(etag):
        return bytes.fromhex(etag)
    if not etag:
        return b""
    b = b"=" + etag.encode()
    return b"~" + b if len(b) == 16 else b


def listed_entry(base: str, row: tuple, ro: bool) -> Entry:
    """The Entry of one row of the folder-listing query (name, node id, kind, ctime, node mtime,
    version number, size, version mtime, etag; times in microseconds), under the folder `base`:
    ShareFS.listdir and the CLI's lean listing build the same entries from the same SQL."""
    name, nid, kind, ctime, nmtime, number, size, vmtime, etag = row
    if kind == "dir":
        return entry_of((name, f"{base}/{name}", "dir", 0, nmtime / 1_000_000, ctime / 1_000_000,
                         nid, None, f"d{nid}-{nmtime}", ro))
    return entry_of((name, f"{base}/{name}", "file", size or 0,
                     (vmtime if vmtime is not None else nmtime) / 1_000_000, ctime / 1_000_000,
                     nid, number, etag_text(etag), ro))


@dataclass(frozen=True)
class Version:
    number: int
    size: int
    created_at: float
    mtime: float
    deleted: bool
    etag: str
    origin: Origin | None

    def as_dict(self) -> dict:
        """The one JSON form of a version, whoever shows it (`archivectl versions --json`,
        WebDAV ``?versions``, later adapters): the same field names, times in ISO 8601 UTC
        with microseconds (``2026-11-24T10:00:00.123456Z``), the origin as an object.
        Adapters may add fields of their own (WebDAV: placeholder, href), never rename these."""
        from .clock import iso
        return {"version": self.number, "size": self.size, "created_at": iso(int(self.created_at * 1e6)),
                "mtime": iso(int(self.mtime * 1e6)), "deleted": self.deleted, "etag": self.etag,
                "origin": self.origin.as_dict() if self.origin else None}


@dataclass(frozen=True)
class ShareInfo:
    name: str
    created_at: float
    retention: str | None
    worm_days: int
    anonymous: bool
    quota: int | None
    #: logical bytes of the share's current files (the counter the quota is checked against)
    used: int = 0


@dataclass(frozen=True)
class UserInfo:
    name: str
    created_at: float
    shares: dict[str, str]


@dataclass(frozen=True)
class AuditRecord:
    at: float
    user: str | None
    protocol: str | None
    address: str | None
    action: str
    share: str | None
    path: str | None
    version: int | None
    detail: str | None


@dataclass(frozen=True)
class User:
    """An authenticated catalog user (what adapters pass to Repository.share)."""
    id: int
    name: str


ANONYMOUS = User(0, "anonymous")
"""The user of an anonymous login: it sees, read-only, the shares created with anonymous=True."""
