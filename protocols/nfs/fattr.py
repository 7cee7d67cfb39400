"""NFSv3 attributes: fattr3 / post_op_attr / wcc_data encoding and sattr3 decoding."""
from __future__ import annotations

from dataclasses import dataclass

from archive import Entry

from .xdr import Packer, Unpacker, XDRError

NF3REG, NF3DIR = 1, 2
DONT_CHANGE, SET_TO_SERVER_TIME, SET_TO_CLIENT_TIME = 0, 1, 2


@dataclass(frozen=True)
class Attrs:
    """What fattr3 needs, from an Entry plus any pending write session."""
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


def _time(p: Packer, t: float) -> None:
    sec = int(t)
    p.u32(sec).u32(int((t - sec) * 1e9) % 1_000_000_000)


def fattr3(p: Packer, a: Attrs, uid: int, gid: int) -> None:
    p.u32(a.kind).u32(a.mode).u32(2 if a.kind == NF3DIR else 1).u32(uid).u32(gid)
    p.u64(a.size).u64((a.size + 4095) & ~4095).u32(0).u32(0).u64(a.fsid).u64(a.fileid)
    _time(p, a.mtime)             # atime: not tracked, reported as mtime
    _time(p, a.mtime)
    _time(p, a.ctime)


def post_op_attr(p: Packer, a: Attrs | None, uid: int = 0, gid: int = 0) -> None:
    if a is None:
        p.bool(False)
    else:
        p.bool(True)
        fattr3(p, a, uid, gid)


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
