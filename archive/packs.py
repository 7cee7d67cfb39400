"""Pack files: append-only sequences of self-describing records.

Every record carries its type, id, lengths and a CRC of its payload, so the catalog can be
rebuilt from packs alone (`archivectl recover`) and a torn tail after a crash is detected.
Each process appends to packs of its own (random names), so processes never share an append.

Reading is forgiving: `parse_pack` skips a damaged record and resynchronises on the next valid
header+CRC (records are self-describing), and says what it skipped, so one flipped byte costs
one record, not the rest of the pack.
"""
from __future__ import annotations

import errno
import mmap
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
FLAG_HCRC = 0x80     # the CRC covers the header too (every record written since the commit chain)
T_CHUNK = 1
T_EVENT = 2          # legacy: one catalog event per record, no commit chain (read by recover only)
T_TXN = 3            # one catalog transaction: all its events, its id and its parent's (events.py)
RECORD_TYPES = (T_CHUNK, T_EVENT, T_TXN)
PACK_HEADER = len(PACK_MAGIC) + 16          # magic + the pack's uuid
PACK_TARGET = 64 * 1024 * 1024
UNREAD = object()                   # a gc fence not read (PackWriter.fence_state)
FLUSH_EVERY = 16 * 1024 * 1024      # bytes appended to a local pack between background fsyncs


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


@dataclass(frozen=True)
class Damage:
    """A byte range of a pack that holds no valid record (`torn`: an interrupted append at the
    tail, which never held anything acknowledged)."""
    pack: str
    start: int
    end: int
    reason: str
    torn: bool = False

    def __str__(self) -> str:
        return f"pack {self.pack} bytes {self.start}-{self.end}: {self.reason}"


def record_crc(rtype: int, flags: int, rid: bytes, raw_len: int, payload) -> int:
    """The record's CRC: of header and payload when FLAG_HCRC is set, so a flipped type, id or
    length is caught like a flipped payload byte; of the payload alone in older records."""
    if flags & FLAG_HCRC:
        head = REC.pack(REC_MAGIC, rtype, flags, rid, raw_len, len(payload), 0)[:-4]
        return zlib.crc32(payload, zlib.crc32(head))
    return zlib.crc32(payload)


def pack_record(rtype: int, rid: bytes, flags: int, raw_len: int, payload: bytes) -> bytes:
    """Header + payload of one record, as appended to a pack."""
    flags |= FLAG_HCRC
    return REC.pack(REC_MAGIC, rtype, flags, rid, raw_len, len(payload),
                    record_crc(rtype, flags, rid, raw_len, payload)) + payload


def _valid_at(buf, pos: int, size: int):
    """The record header at `pos` if it is a complete record with a matching CRC, else None."""
    if pos + REC.size > size:
        return None
    magic, rtype, flags, rid, raw_len, plen, crc = REC.unpack_from(buf, pos)
    if magic != REC_MAGIC or rtype not in RECORD_TYPES or pos + REC.size + plen > size:
        return None
    if record_crc(rtype, flags, rid, raw_len, buf[pos + REC.size:pos + REC.size + plen]) != crc:
        return None
    return rtype, flags, rid, raw_len, plen


def parse_pack(buf, pack_id: str, with_payload: bool = True,
               damage: "list[Damage] | None" = None) -> Iterator[Record]:
    """Yield every valid record of a whole pack held in `buf` (bytes, mmap), skipping damage.

    A record whose header or CRC is wrong is skipped by searching for the next position holding
    a complete record with a matching CRC; each skipped range is appended to `damage`.  A range at
    the end that holds only a truncated record (or zeros) is a torn tail: an append interrupted by
    a crash or a full disk, never part of an acknowledged commit."""
    view = memoryview(buf)           # slices without copies; released before an mmap closes
    try:
        yield from _parse(view, pack_id, with_payload, damage if damage is not None else [])
    finally:
        view.release()


def _parse(buf: memoryview, pack_id: str, with_payload: bool, dmg: "list[Damage]") -> Iterator[Record]:
    size = len(buf)
    if size < PACK_HEADER:       # a pack whose creation was interrupted: it never held a record
        dmg.append(Damage(pack_id, 0, size, "an incomplete pack header (an interrupted creation)", torn=True))
    elif bytes(buf[:len(PACK_MAGIC)]) != PACK_MAGIC:
        dmg.append(Damage(pack_id, 0, PACK_HEADER, "the pack header is damaged"))
    pos = PACK_HEADER
    while pos < size:
        hit = _valid_at(buf, pos, size)
        if hit is not None:
            rtype, flags, rid, raw_len, plen = hit
            payload = bytes(buf[pos + REC.size:pos + REC.size + plen]) if with_payload else None
            yield Record(rtype, flags, rid, raw_len, pos, plen, payload)
            pos += REC.size + plen
            continue
        start, nxt = pos, pos + 1
        while True:
            nxt = buf.obj.find(REC_MAGIC, nxt)
            if nxt < 0 or _valid_at(buf, nxt, size) is not None:
                break
            nxt += 1
        end = size if nxt < 0 else nxt
        dmg.append(_classify(buf, pack_id, start, end, size))
        pos = end


def _classify(buf, pack_id: str, start: int, end: int, size: int) -> Damage:
    if end == size:
        tail = bytes(buf[start:end])
        if not tail.strip(b"\0"):
            return Damage(pack_id, start, end, "zeros at the tail (an interrupted append)", torn=True)
        if len(tail) < REC.size:
            return Damage(pack_id, start, end, "a truncated record header at the tail", torn=True)
        magic, rtype, flags, rid, raw_len, plen, crc = REC.unpack_from(tail)
        if magic == REC_MAGIC and rtype in RECORD_TYPES and start + REC.size + plen > size:
            if record_crc(rtype, flags, rid, raw_len, tail[REC.size:]) == crc:    # only its length is wrong
                return Damage(pack_id, start, end, "a record whose length field is damaged")
            return Damage(pack_id, start, end, "a truncated record at the tail (an interrupted append)", torn=True)
    if start + REC.size <= size and bytes(buf[start:start + 4]) == REC_MAGIC:
        return Damage(pack_id, start, end, "a record fails its checksum")
    return Damage(pack_id, start, end, "bytes that are not a valid record")


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
        # Every commit asks whether its pack still exists: for a plain local store, one stat of a
        # string path (a pathlib path built and stat'ed cost ~15 us, a twentieth of the commit).
        self._local = f"{self.store.packs}{os.sep}" if type(self.store) is LocalPackStore else None

    def list(self) -> list[str]:
        return self.store.list()

    def path(self, pack_id: str) -> Path:
        """The file of a pack in a local store (tests and tools that damage or inspect it)."""
        return self.store.path(pack_id)

    def size(self, pack_id: str) -> int:
        return self.store.size(pack_id)

    def mtime(self, pack_id: str) -> float:
        return self.store.mtime(pack_id)

    def exists(self, pack_id: str) -> bool:
        if self._local is not None:
            return os.path.exists(f"{self._local}{pack_id[:2]}{os.sep}{pack_id}.pack")
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
        if magic != REC_MAGIC or plen != len(payload) or (
                check_crc and record_crc(rtype, flags, rid, raw_len, payload) != crc):
            raise Corrupt(f"record at {pack_id}:{offset} fails its checksum")
        return Record(rtype, flags, rid, raw_len, offset, plen, payload)

    def scan(self, pack_id: str, with_payload: bool = True,
             damage: "list[Damage] | None" = None) -> Iterator[Record]:
        """Yield every intact record of a pack, skipping (and listing in `damage`) damaged ones.

        Resynchronising after damage needs random access: a local pack is mapped, a remote one
        (an immutable object of at most a few tens of MiB) is read whole."""
        local = getattr(self.store, "path", None)
        if local is None:
            with self.store.open_stream(pack_id) as f:
                yield from parse_pack(f.read(), pack_id, with_payload, damage)
            return
        with open(local(pack_id), "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                yield from parse_pack(b"", pack_id, with_payload, damage)
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                yield from parse_pack(mm, pack_id, with_payload, damage)


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
        self._sealed_ids: dict = {}        # sink -> pack id, for the sealed packs not yet durable
        self._fault = _NoSpaceFault()
        self._since_flush = 0
        self._flusher: threading.Thread | None = None
        self._flush_failed: tuple | None = None     # (sink, error) of a background fsync
        # The gc fence (PackStore.gc_fence) as last read, and per pack of this writer the value
        # read before the pack was created; a pack leaves `_fences` when its upload fails.
        self._fence = UNREAD
        self._fences: dict[str, object] = {}

    def _open_new(self) -> None:
        if self._f is not None:
            self._seal()
        pack_id = uuid.uuid4().hex
        if self.packdir.store.fenced:
            if self._fence is UNREAD:          # once per writer: one small GET
                self._fence = self.packdir.store.gc_fence()
            self._fences[pack_id] = self._fence
            while len(self._fences) > 4096:    # an old pack without its value is asked about
                del self._fences[next(iter(self._fences))]
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
        self._fences.pop(self.pack_id, None)
        f, self._f, self.pack_id = self._f, None, None
        for step in (f.sync, f.close):
            try:
                step()
            except Exception:
                pass

    def append(self, rtype: int, rid: bytes, flags: int, raw_len: int, payload: bytes) -> tuple[str, int, int]:
        """Append one record; return (pack_id, offset, total length). Not durable until sync()."""
        rec = pack_record(rtype, rid, flags, raw_len, payload)
        with self._lock:
            if self._f is None or self._offset >= self._target:
                self._open_new()
            self._write(rec)
            off = self._offset
            self._offset += len(rec)
            self._dirty = True
            self._since_flush += len(rec)
            if self._since_flush >= FLUSH_EVERY and self._f.appendable:
                self._start_flush()
            return self.pack_id, off, len(rec)

    def _start_flush(self) -> None:
        """Start an fsync of the current local pack in the background (under the lock).

        The kernel keeps up to 10 % of RAM dirty before it writes back on its own, so without
        this a large upload's bytes all reach the disk inside the sync() before its commit, while
        the CPUs wait; flushing as it goes overlaps disk and CPU.  Durability does not depend on
        it: sync() still fsyncs every pack, and a failed background fsync fails that sync()
        (an fsync error is reported once, so it must not be lost here)."""
        if self._flusher is not None and self._flusher.is_alive():
            return
        self._since_flush = 0
        sink = self._f

        def flush() -> None:
            try:
                sink.sync()
            except BaseException as e:       # noqa: BLE001 - handed to the next sync()
                with self._lock:
                    self._flush_failed = (sink, e)

        self._flusher = threading.Thread(target=flush, name="pack-flush", daemon=True)
        self._flusher.start()

    def _raise_flush_failure(self) -> None:
        """Fail this sync() if a background fsync failed; that pack takes no more appends."""
        with self._lock:
            failed, self._flush_failed = self._flush_failed, None
            if failed is None:
                return
            sink, err = failed
            if sink is self._f:
                self._drop_current()
            elif sink in self._unsynced:
                self._unsynced.remove(sink)
                self._fences.pop(self._sealed_ids.pop(sink, None), None)
                sink.close()
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace("the chunk store is full: nothing was committed") from None
        raise err

    def sync(self) -> None:
        """Make every appended record durable (called before the catalog commit that references them).

        A store whose packs cannot grow once durable (an object store) seals the current pack
        here: the next append starts a new one.  Sealed packs are synced outside the lock, and
        stay pending until their sync ends, so a concurrent sync() never returns early; and
        a pack whose upload failed is dropped (see below)."""
        self._raise_flush_failure()
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
                        self._fences.pop(self._sealed_ids.pop(f, None), None)
                        f.close()
                raise
            with self._lock:
                if f in self._unsynced:
                    self._unsynced.remove(f)
                    self._sealed_ids.pop(f, None)
                    f.close()
        with self._lock:
            # A pack that cannot grow once durable (an object store) and was opened while the
            # sealed ones uploaded holds only records appended after this sync() began: a later
            # sync() seals it.  Syncing it here would upload it while appends go on, and what
            # they add would never reach the store (the next seal finds it uploaded).
            if self._f is not None and self._dirty and self._f.appendable:
                try:
                    self._f.sync()
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        self._drop_current()
                        raise NoSpace("the chunk store is full: nothing was committed") from None
                    raise
                self._dirty = False
        # A background fsync that failed while this one waited for it: its error was told to
        # it, not to the fsync above, which may then have found nothing to report.
        self._raise_flush_failure()

    def saw_fence(self, value) -> None:
        """The gc fence as read now (inside a commit's write transaction): the value packs
        created from now on are checked against."""
        with self._lock:
            self._fence = value

    def fence_state(self, pack_id: str) -> tuple[bool, object]:
        """(whether the pack may be in the store already, the gc fence read before it was
        created or UNREAD) for a pack this writer wrote.

        A pack this writer still holds whose upload has not completed is in no listing, so no
        gc can have taken it (and inside the catalog's write lock, none can before the commit
        registers its chunks); a pack in the store is safe if the fence has not moved since its
        value here was read (PackStore.gc_fence)."""
        with self._lock:
            if pack_id == self.pack_id:
                sink = self._f
            else:
                sink = next((f for f, p in self._sealed_ids.items() if p == pack_id), None)
            value = self._fences.get(pack_id, UNREAD)
        if sink is not None and not sink.in_store():
            return False, value
        return True, value

    def _seal(self) -> None:
        """Stop appending to the current pack; it is durable after the next sync()."""
        self._f.seal()
        self._sealed_ids[self._f] = self.pack_id
        self._unsynced.append(self._f)
        self._f, self.pack_id = None, None
        self._dirty = False

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._seal()
        self.sync()
