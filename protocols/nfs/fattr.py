"""NFSv3 attributes: fattr3 / post_op_attr / wcc_data encoding and sattr3 decoding."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from archive import Entry

from .xdr import Packer, Unpacker, XDRError

NF3REG, NF3DIR = 1, 2
DONT_CHANGE, SET_TO_SERVER_TIME, SET_TO_CLIENT_TIME = 0, 1, 2


class Attrs(NamedTuple):
    """What fattr3 needs, from an Entry plus any pending write session (a NamedTuple: one is
    made per GETATTR, LOOKUP and listed entry, ~4x cheaper than a frozen dataclass)."""
    kind: int
    mode: int
    size: int
    fsid: int
    fileid: int
    mtime: float
    ctime: float


def attrs_of(e: Entry, fsid: int, size: int | None = None, mtime: float | None = None,
             readonly: bool = False) -> Attrs:
    ro = e.readonly or readonly
    if e.is_dir:
        return Attrs(NF3DIR, 0o555 if ro else 0o755, 4096, fsid, e.node_id, e.mtime, e.mtime)
    m = e.mtime if mtime is None else mtime
    return Attrs(NF3REG, 0o444 if ro else 0o644, e.size if size is None else size, fsid, e.node_id, m, m)


#: fattr3 (RFC 1813 2.5) as one precompiled struct: type mode nlink uid gid size used
#: rdev(2) fsid fileid atime(2) mtime(2) ctime(2); a READDIRPLUS page packs one per entry, so
#: one pack() instead of seventeen Packer calls is most of what listing an entry costs
_FATTR3 = struct.Struct(">IIIII QQ II QQ II II II")
_POST_TRUE = struct.pack(">I", 1)


def _split(t: float) -> tuple[int, int]:
    sec = int(t)
    return sec & 0xFFFFFFFF, int((t - sec) * 1e9) % 1_000_000_000


def fattr3_bytes(a: Attrs, uid: int, gid: int) -> bytes:
    """The XDR fattr3 of `a` (84 bytes).  atime is not tracked and is reported as mtime."""
    ms, mn = _split(a.mtime)
    cs, cn = (ms, mn) if a.ctime == a.mtime else _split(a.ctime)
    return _FATTR3.pack(a.kind, a.mode, 2 if a.kind == NF3DIR else 1, uid & 0xFFFFFFFF, gid & 0xFFFFFFFF,
                        a.size, (a.size + 4095) & ~4095, 0, 0, a.fsid & 0xFFFFFFFFFFFFFFFF, a.fileid,
                        ms, mn, ms, mn, cs, cn)


_POST_FATTR3 = struct.Struct(">I" + _FATTR3.format[1:])


def listed_post_op_bytes(e: Entry, fsid: int, readonly: bool, uid: int, gid: int) -> bytes:
    """post_op_attr_bytes(attrs_of(e, fsid, readonly=readonly), uid, gid) in one pack, without
    building the Attrs: a READDIRPLUS entry whose file has no pending writes."""
    ro = e.readonly or readonly
    t = e.mtime
    sec = int(t)
    ms, mn = sec & 0xFFFFFFFF, int((t - sec) * 1e9) % 1_000_000_000
    if e.kind == "dir":
        kind, mode, size, nlink = NF3DIR, 0o555 if ro else 0o755, 4096, 2
    else:
        kind, mode, size, nlink = NF3REG, 0o444 if ro else 0o644, e.size, 1
    return _POST_FATTR3.pack(1, kind, mode, nlink, uid & 0xFFFFFFFF, gid & 0xFFFFFFFF, size, (size + 4095) & ~4095,
                             0, 0, fsid & 0xFFFFFFFFFFFFFFFF, e.node_id, ms, mn, ms, mn, ms, mn)


def fattr3(p: Packer, a: Attrs, uid: int, gid: int) -> None:
    p.buf += fattr3_bytes(a, uid, gid)


def post_op_attr_bytes(a: Attrs, uid: int = 0, gid: int = 0) -> bytes:
    """post_op_attr with attributes (the READDIRPLUS per-entry form)."""
    return _POST_TRUE + fattr3_bytes(a, uid, gid)


def post_op_attr(p: Packer, a: Attrs | None, uid: int = 0, gid: int = 0) -> None:
    if a is None:
        p.bool(False)
    else:
        p.buf += _POST_TRUE
        p.buf += fattr3_bytes(a, uid, gid)


def wcc_data(p: Packer, after: Attrs | None, uid: int = 0, gid: int = 0) -> None:
    p.bool(False)                 # pre_op_attr: not offered (clients then re-validate caches)
    post_op_attr(p, after, uid, gid)


@dataclass
class SetAttrs:
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime: tuple[int, float | None] = (DONT_CHANGE, None)
    mtime: tuple[int, float | None] = (DONT_CHANGE, None)


def _read_time(u: Unpacker) -> tuple[int, float | None]:
    how = u.enum((DONT_CHANGE, SET_TO_SERVER_TIME, SET_TO_CLIENT_TIME))
    if how == SET_TO_CLIENT_TIME:
        sec, nsec = u.u32(), u.u32()
        if nsec >= 1_000_000_000:
            raise XDRError("nanoseconds out of range")
        return how, sec + nsec / 1e9
    return how, None


def sattr3(u: Unpacker) -> SetAttrs:
    s = SetAttrs()
    if u.bool():
        s.mode = u.u32()
    if u.bool():
        s.uid = u.u32()
    if u.bool():
        s.gid = u.u32()
    if u.bool():
        s.size = u.u64()
    s.atime = _read_time(u)
    s.mtime = _read_time(u)
    return s
