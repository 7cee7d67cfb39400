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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import Corrupt, NoSpace
from .packstore import LocalPackStore, PackSink, PackStore

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
    """The records of the packs in a store (a local folder by default, see packstore.py)."""

    def __init__(self, root: "Path | PackStore"):
        self.store = root if isinstance(root, PackStore) else LocalPackStore(Path(root).parent)

    def list(self) -> list[str]:
        return self.store.list()

    def size(self, pack_id: str) -> int:
        return self.store.size(pack_id)

    def mtime(self, pack_id: str) -> float:
        return self.store.mtime(pack_id)

    def exists(self, pack_id: str) -> bool:
        return self.store.exists(pack_id)

    def delete(self, pack_id: str) -> None:
        self.store.delete(pack_id)

    def read_record(self, pack_id: str, offset: int, length: int, check_crc: bool = True) -> Record:
        """Read one record and check its framing and (unless the caller authenticates the payload
        itself, as AES-GCM does) its CRC."""
        data = self.store.read_range(pack_id, offset, length)
        if len(data) != length or length < REC.size:
            raise Corrupt(f"pack {pack_id} is truncated at offset {offset}")
        magic, rtype, flags, rid, raw_len, plen, crc = REC.unpack_from(data)
        payload = data[REC.size:]
        if magic != REC_MAGIC or plen != len(payload) or (check_crc and zlib.crc32(payload) != crc):
            raise Corrupt(f"record at {pack_id}:{offset} fails its checksum")
        return Record(rtype, flags, rid, raw_len, offset, plen, payload)

    def scan(self, pack_id: str, with_payload: bool = True) -> Iterator[Record]:
        """Yield every intact record of a pack, stopping at a torn or corrupt tail."""
        with self.store.open_stream(pack_id) as f:
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
        """`packdir` (its store) decides where packs go: a local file, an object."""
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
        self._f = self.packdir.store.create(pack_id)
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
        f, self._f, self.pack_id = self._f, None, None
        for step in (f.sync, f.close):
            try:
                step()
            except Exception:
                pass

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
        """Make every appended record durable (called before the catalog commit that references them).

        A store whose packs cannot grow once durable (an object store) seals the current pack
        here: the next append starts a new one.  Sealed packs are synced outside the lock, and
        stay pending until their sync ends, so a concurrent sync() never returns early; and
        a pack whose upload failed is dropped (see below)."""
        with self._lock:
            if self._f is not None and self._dirty and not self._f.appendable:
                self._seal()
            sealed = list(self._unsynced)
        for f in sealed:                       # outside the lock: appends go on meanwhile
            try:
                f.sync()
            except BaseException:
                # Never retried later: the pack may hold events of the transaction now failing,
                # which must not reach the store after its rollback.  Uploads whose chunks were
                # in it fail their commit's check (`verify_refs`) and are retried by the client.
                with self._lock:
                    if f in self._unsynced:
                        self._unsynced.remove(f)
                        f.close()
                raise
            with self._lock:
                if f in self._unsynced:
                    self._unsynced.remove(f)
                    f.close()
        with self._lock:
            if self._f is not None and self._dirty:
                try:
                    self._f.sync()
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        self._drop_current()
                        raise NoSpace("the chunk store is full: nothing was committed") from None
                    raise
                self._dirty = False

    def _seal(self) -> None:
        """Stop appending to the current pack; it is durable after the next sync()."""
        self._f.seal()
        self._unsynced.append(self._f)
        self._f, self.pack_id = None, None
        self._dirty = False

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._seal()
        self.sync()
