"""Pack files: append-only sequences of self-describing records.

Every record carries its type, id, lengths and a CRC of its payload, so the catalog can be
rebuilt from packs alone (`archivectl recover`) and a torn tail after a crash is detected.
Each process appends to packs of its own (random names), so processes never share an append.
"""
from __future__ import annotations

import errno
import os
import struct
import threading
import uuid
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import Corrupt, NoSpace

PACK_MAGIC = b"EAPACK01"
REC_MAGIC = b"EAR1"
REC = struct.Struct("<4sBB32sIII")          # magic, type, flags, id, raw_len, payload_len, crc32
T_CHUNK = 1
T_EVENT = 2
PACK_TARGET = 64 * 1024 * 1024


@dataclass(frozen=True)
class Record:
    rtype: int
    flags: int
    rid: bytes
    raw_len: int
    offset: int          # of the record header within the pack
    payload_len: int
    payload: bytes | None = None

    @property
    def total_len(self) -> int:
        return REC.size + self.payload_len


class _NoSpaceFault:
    """Test hook: EDGE_ARCHIVE_FAULT_NOSPACE_AFTER=N makes pack writes fail with ENOSPC after N bytes."""

    def __init__(self) -> None:
        v = os.environ.get("EDGE_ARCHIVE_FAULT_NOSPACE_AFTER")
        self.left = int(v) if v else None

    def charge(self, n: int) -> None:
        if self.left is None:
            return
        self.left -= n
        if self.left < 0:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")


class PackDir:
    """The local directory holding packs: packs/<first two hex>/<pack id>.pack."""

    def __init__(self, root: Path):
        self.root = root
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, pack_id: str) -> Path:
        return self.root / pack_id[:2] / f"{pack_id}.pack"

    def list(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*/*.pack"))

    def size(self, pack_id: str) -> int:
        return self.path(pack_id).stat().st_size

    def delete(self, pack_id: str) -> None:
        with self._lock:
            fd = self._fds.pop(pack_id, None)
            if fd is not None:
                os.close(fd)
        try:
            self.path(pack_id).unlink()
        except FileNotFoundError:
            pass

    def _fd(self, pack_id: str) -> int:
        with self._lock:
            fd = self._fds.get(pack_id)
            if fd is not None:
                self._fds.move_to_end(pack_id)
                return fd
            try:
                fd = os.open(self.path(pack_id), os.O_RDONLY)
            except FileNotFoundError:
                raise Corrupt(f"pack {pack_id} is missing") from None
            self._fds[pack_id] = fd
            while len(self._fds) > 64:
                os.close(self._fds.popitem(last=False)[1])
            return fd

    def read_record(self, pack_id: str, offset: int, length: int, check_crc: bool = True) -> Record:
        """Read one record and check its framing and (unless the caller authenticates the payload
        itself, as AES-GCM does) its CRC."""
        data = os.pread(self._fd(pack_id), length, offset)
        if len(data) != length or length < REC.size:
            raise Corrupt(f"pack {pack_id} is truncated at offset {offset}")
        magic, rtype, flags, rid, raw_len, plen, crc = REC.unpack_from(data)
        payload = data[REC.size:]
        if magic != REC_MAGIC or plen != len(payload) or (check_crc and zlib.crc32(payload) != crc):
            raise Corrupt(f"record at {pack_id}:{offset} fails its checksum")
        return Record(rtype, flags, rid, raw_len, offset, plen, payload)

    def scan(self, pack_id: str, with_payload: bool = True) -> Iterator[Record]:
        """Yield every intact record of a pack, stopping at a torn or corrupt tail."""
        with open(self.path(pack_id), "rb") as f:
            if f.read(len(PACK_MAGIC) + 16)[:8] != PACK_MAGIC:
                raise Corrupt(f"pack {pack_id} has no pack header")
            offset = len(PACK_MAGIC) + 16
            while True:
                hdr = f.read(REC.size)
                if len(hdr) < REC.size:
                    return
                magic, rtype, flags, rid, raw_len, plen, crc = REC.unpack(hdr)
                if magic != REC_MAGIC:
                    return
                payload = f.read(plen)
                if len(payload) != plen or zlib.crc32(payload) != crc:
                    return
                yield Record(rtype, flags, rid, raw_len, offset, plen, payload if with_payload else None)
                offset += REC.size + plen


class PackWriter:
    """Appends records to this process's current pack; thread-safe; rolls over at PACK_TARGET."""

    def __init__(self, packdir: PackDir, target: int = PACK_TARGET):
        self.packdir = packdir
        self._target = target
        self._lock = threading.Lock()
        self._f = None
        self.pack_id: str | None = None
        self._offset = 0
        self._dirty = False
        self._unsynced: list = []          # sealed packs whose fsync waits for the next sync()
        self._fault = _NoSpaceFault()

    def _open_new(self) -> None:
        if self._f is not None:
            self._seal()
        pack_id = uuid.uuid4().hex
        path = self.packdir.path(pack_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "ab", buffering=0)
        header = PACK_MAGIC + uuid.UUID(pack_id).bytes
        self._write(header)
        self.pack_id, self._offset = pack_id, len(header)

    def _write(self, data: bytes) -> None:
        try:
            self._fault.charge(len(data))
            self._f.write(data)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                self._drop_current()
                raise NoSpace("the chunk store is full: nothing was committed") from None
            raise

    def _drop_current(self) -> None:
        """After a failed write the pack's tail is unknown: stop appending to it."""
        try:
            os.fsync(self._f.fileno())
        except OSError:
            pass
        try:
            self._f.close()
        except OSError:
            pass
        self._f, self.pack_id = None, None

    def append(self, rtype: int, rid: bytes, flags: int, raw_len: int, payload: bytes) -> tuple[str, int, int]:
        """Append one record; return (pack_id, offset, total length). Not durable until sync()."""
        hdr = REC.pack(REC_MAGIC, rtype, flags, rid, raw_len, len(payload), zlib.crc32(payload))
        with self._lock:
            if self._f is None or self._offset >= self._target:
                self._open_new()
            self._write(hdr + payload)
            off = self._offset
            self._offset += len(hdr) + len(payload)
            self._dirty = True
            return self.pack_id, off, len(hdr) + len(payload)

    def sync(self) -> None:
        """Make every appended record durable (called before the catalog commit that references them)."""
        with self._lock:
            sealed, self._unsynced = self._unsynced, []
        for f in sealed:                       # outside the lock: appends go on meanwhile
            try:
                os.fsync(f.fileno())
            finally:
                f.close()
        with self._lock:
            if self._f is not None and self._dirty:
                try:
                    os.fsync(self._f.fileno())
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        self._drop_current()
                        raise NoSpace("the chunk store is full: nothing was committed") from None
                    raise
                self._dirty = False

    def _seal(self) -> None:
        """Stop appending to the current pack; its fsync happens at the next sync()."""
        self._unsynced.append(self._f)
        self._f = None
        self._dirty = False

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._seal()
        self.sync()
