"""One TCP port for MOUNT v3 and NFS v3: record reading, dispatch, replies.

Each connection has its own threads (ShareFS calls block on the catalog and the disk), so a
slow operation delays only the client that asked; version commits run in the write
sessions' own thread.  A client may have several calls in flight on one connection (the
kernel client does; RPC over TCP lets replies come in any order, matched by xid): up to
MAX_INFLIGHT of them run at once, so one slow call does not hold up the calls behind it and
concurrent changes reach the core together (where its group commit can batch them).
Whatever a client sends,
the server answers with the RPC error RFC 5531 prescribes (PROG_UNAVAIL, PROG_MISMATCH,
PROC_UNAVAIL, GARBAGE_ARGS, RPC_MISMATCH, AUTH_ERROR) or closes that one connection (broken
record marking, a record over the size limit); it never stops serving the others.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import socket
import struct
import threading

from archive import errors

from . import buffers, mount, nfs3, rpc
from .drc import DuplicateCache
from .errors import NFSError, nfsstat
from .state import ServerState
from .xdr import XDRError

log = logging.getLogger("edge_archive.nfs")
MAX_RECORD = nfs3.MAX_IO + 64 * 1024
#: calls of one connection running at once: a client pipelining CREATEs or REMOVEs gets them
#: into the core's group commit together (8 let ~4 changes share a durable commit, 32 ~14)
MAX_INFLIGHT = 32
#: bytes of call records one connection's running calls may hold; beyond it no further call is
#: read until one ends (memory: 32 large WRITEs would hold 32 MiB; small calls are ~200 bytes)
MAX_HELD = 8 * 1024 * 1024
#: records at least this large (WRITEs) are received into buffers a connection reuses
#: (protocols/nfs/buffers.py), not into a new 1 MiB allocation per call
BIG_RECORD = 64 * 1024
#: free buffers a connection keeps for reuse (each MAX_RECORD bytes: WRITE records; READ data is
#: sent from the core's chunk views, Reader.readviews)
KEEP_BUFFERS = 4
#: READs of one connection running (or waiting for their file's turn, readorder.py) at once;
#: beyond it no further call is read until one ends.  A client pipelining READs (the kernel
#: client's read-ahead) gets them served one file-order stream at a time anyway, and 32
#: threads taking turns cost more than they overlap: measured, 32 READs of 128 KiB in flight
#: 264-312 MiB/s with up to 32 running, 442-460 with 4 (docs/benchmarks.md, readpath2)
MAX_READS = 4
_READ_CALL = (nfs3.PROGRAM.to_bytes(4, "big"), (6).to_bytes(4, "big"))   # prog, proc NFSPROC3_READ
#: READs of a file waiting, on the connection, for the worker already running READs of that
#: file (each costs no thread: that worker runs them after its own, lowest offset first)
MAX_QUEUED = 32
_U32 = struct.Struct(">I")
_OFFSET = struct.Struct(">Q")


def _is_read(record) -> bool:
    """An NFS READ call (program and procedure read straight from the record's bytes)."""
    return record[12:16] == _READ_CALL[0] and record[20:24] == _READ_CALL[1]


def _read_target(record) -> tuple[bytes, int] | None:
    """(file handle, offset) of a READ call record, read straight from its bytes; None when
    the record is not laid out as a whole READ call (the dispatcher then answers it)."""
    try:
        at = 32 + ((_U32.unpack_from(record, 28)[0] + 3) & ~3) + 4          # cred, verf flavor
        at += 4 + ((_U32.unpack_from(record, at)[0] + 3) & ~3)              # the verifier
        n = _U32.unpack_from(record, at)[0]
        if n > nfs3.FHSIZE or at + 4 + ((n + 3) & ~3) + 12 > len(record):
            return None
        fh = bytes(record[at + 4:at + 4 + n])
        return fh, _OFFSET.unpack_from(record, at + 4 + ((n + 3) & ~3))[0]
    except struct.error:
        return None


class RPCServer:
    def __init__(self, state: ServerState, host: str, port: int) -> None:
        self.state = state
        self.mount = mount.Mount(state)
        self.nfs = nfs3.NFS3(state)
        self.drc = DuplicateCache()
        self.sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                         backlog=64, reuse_port=False)
        self.address = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._busy = 0
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept, name=f"nfs-accept-{self.address[1]}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except OSError:
                if self._stop.is_set():
                    return
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(conn)
            if self.state.ctx is not None:
                self.state.ctx.event("nfs", "connect", address=addr[0])
            # Two workers from the start, started here: Thread.start() waits until the new
            # thread runs (under load, milliseconds), which a worker would otherwise do before
            # running the connection's first call (to keep a reader while it runs).
            c = _Connection(self, conn, addr[0], workers=2)
            for _ in range(2):
                threading.Thread(target=c.worker, name=f"nfs-{addr[0]}:{addr[1]}", daemon=True).start()

    def stop(self, grace: float) -> None:
        """Stop accepting, let calls in progress finish for `grace` seconds, close connections."""
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout=grace)
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)

    # -- one connection ------------------------------------------------------------------------
    def _closed(self, conn: socket.socket, address: str) -> None:
        with self._lock:
            self._conns.discard(conn)
        conn.close()
        if self.state.ctx is not None:
            self.state.ctx.event("nfs", "disconnect", address=address)

    def _call(self, record, address: str):
        with self._lock:
            self._busy += 1
        try:
            return self.handle(record, address)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def handle(self, record, address: str):
        """The reply to one call record: a buffer or a list of buffers to send one after the
        other (rpc.send_record); None: not even an xid to answer."""
        try:
            call = rpc.parse_call(record)
        except rpc.Denied as d:
            return d.reply
        except XDRError:
            return None
        if call.prog == nfs3.PROGRAM:
            program, low = self.nfs, nfs3.VERSION
        elif call.prog == mount.PROGRAM:
            program, low = self.mount, mount.VERSION
        else:
            return rpc.accepted(call.xid, rpc.PROG_UNAVAIL)
        if call.vers != low:
            return rpc.accepted(call.xid, rpc.PROG_MISMATCH, low=low, high=low)
        proc = program.procs.get(call.proc)
        if proc is None:
            return rpc.accepted(call.xid, rpc.PROC_UNAVAIL)

        def run() -> bytes:
            p = rpc.reply_header(call.xid)
            start = len(p.buf)
            try:
                proc(call.args, p, call.cred, address)
            except XDRError as e:
                log.info("nfs: garbage arguments from %s (proc %d): %s", address, call.proc, e)
                return rpc.accepted(call.xid, rpc.GARBAGE_ARGS)
            except (NFSError, errors.ArchiveError) as e:
                if program is self.mount:
                    return rpc.accepted(call.xid, rpc.SYSTEM_ERR)
                del p.buf[start:]
                p.tail = None
                p.u32(nfsstat(e))
                for _ in range(nfs3.FAIL_WORDS[call.proc]):
                    p.u32(0)
            except Exception:
                log.exception("nfs: procedure %d of program %d failed", call.proc, call.prog)
                return rpc.accepted(call.xid, rpc.SYSTEM_ERR)
            return p.parts()          # a READ's data stays its own piece: sent, never copied

        if program is self.nfs and call.proc in nfs3.NON_IDEMPOTENT:
            # (each procedure that changes something drops exactly what it changed from the
            # caches, ServerState.changed)
            return self.drc.run((address, call.prog, call.proc, call.xid), run)
        return run()


class _Connection:
    """The worker threads of one connection (leader/follower): whichever worker is free reads
    the next record, and before running its call makes sure another worker is reading (up to
    MAX_INFLIGHT); no record is read while the running calls' records hold MAX_HELD bytes, or
    while MAX_READS READs run.  A READ of a file that a worker of the connection is reading
    already is queued for that worker (no thread of its own, no turn to wait for in
    readorder.py: the kernel client's read-ahead costs no thread hand-off per READ).  A
    client that waits for each reply is served by two threads taking turns (both started when
    the connection is accepted), with no hand-off between a reading thread and a running one;
    replies are sent whole, one at a time.  The last worker out closes the socket."""

    def __init__(self, server: RPCServer, conn: socket.socket, address: str, workers: int = 1) -> None:
        self.server, self.conn, self.address = server, conn, address
        self.read_lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.lock = threading.Lock()
        self.workers = workers       # threads serving this connection (the caller starts them)
        self.reading = workers       # workers not running a call
        self.held = 0                # bytes of the records being run
        self.reads = 0               # READ calls being run
        self.room = threading.Condition(self.lock)     # held fell below MAX_HELD
        self.closed = False
        self.pool = buffers.Pool(MAX_RECORD, KEEP_BUFFERS)   # WRITE records, READ data
        #: file handle -> READs of it queued for the worker running READs of it (a heap of
        #: (offset, arrival, record)); a handle is a key while such a worker runs
        self.queued: dict[bytes, list] = {}
        self.nqueued = 0
        self._arrival = itertools.count()

    def _alloc(self, n: int) -> bytearray:
        """The buffer a record of n bytes is received into (rpc.read_record)."""
        return bytearray(n) if n < BIG_RECORD else self.pool.take()

    def _record(self):
        """The next call record, or None when the connection is over."""
        with self.read_lock:
            with self.room:          # the running calls hold too much: read on when one ends
                self.room.wait_for(lambda: self.held < MAX_HELD and self.reads < MAX_READS)
            if self.closed or self.server._stop.is_set():
                return None
            try:
                record = rpc.read_record(self.conn, MAX_RECORD, self._alloc)
            except rpc.RecordError as e:
                log.info("nfs: closing %s: %s", self.address, e)
                record = None
            except OSError:
                record = None
            if record is None:
                self.closed = True
            else:
                # counted (bytes, READs) before the next reader checks the budget (read_lock
                # still held): the worker that got it counted it only after it had let the next
                # reader in, so under load records past MAX_HELD / MAX_READS were taken
                with self.lock:
                    self.held += len(record)
                    self.reads += _is_read(record)
            return record

    def _run_queued(self, fh: bytes) -> None:
        """Run the READs of `fh` queued while this worker ran one (lowest offset first), on
        this thread, until none is left; then the file is no longer run here."""
        while True:
            with self.lock:
                q = self.queued.get(fh)
                if not q:
                    self.queued.pop(fh, None)
                    return
                record = heapq.heappop(q)[2]
                self.nqueued -= 1
            reply = self.server._call(record, self.address)
            with self.lock:
                self.held -= len(record)
                self.room.notify()
            if reply is not None:
                with self.send_lock:
                    rpc.send_record(self.conn, reply)
                del reply
            buffers.settle()

    def worker(self) -> None:
        running = read = False
        size = 0
        buffers.lend(self.pool)
        try:
            while True:
                record = self._record()
                if record is None:
                    return
                size = len(record)
                read = _is_read(record)
                target = _read_target(record) if read and size < BIG_RECORD else None
                with self.lock:
                    if target is not None:
                        q = self.queued.get(target[0])
                        if q is not None and self.nqueued < MAX_QUEUED:
                            # a worker runs READs of this file: it runs this one after its
                            # own (no thread woken, none waiting for a turn); read on
                            heapq.heappush(q, (target[1], next(self._arrival), record))
                            self.nqueued += 1
                            self.reads -= read         # counted by _record: it does not run now
                            read = False
                            self.room.notify()
                            continue
                        if q is None:
                            self.queued[target[0]] = []
                    self.reading -= 1
                    running = True
                    if self.reading == 0 and self.workers < MAX_INFLIGHT and self.held < MAX_HELD:
                        self.workers += 1
                        self.reading += 1
                        threading.Thread(target=self.worker, daemon=True,
                                         name=threading.current_thread().name).start()
                buf = record.obj if isinstance(record, memoryview) and len(record.obj) == MAX_RECORD else None
                reply = self.server._call(record, self.address)
                del record
                if reply is not None:
                    with self.send_lock:
                        rpc.send_record(self.conn, reply)
                    del reply
                if buf is not None:
                    self.pool.give(buf)
                    buf = None
                buffers.settle()         # what the call borrowed for its reply (buffers.borrow)
                if target is not None:
                    self._run_queued(target[0])
                    target = None
                with self.lock:
                    self.reading += 1
                    self.held -= size
                    self.reads -= read
                    read = False
                    running = False
                    self.room.notify()
        except OSError:                  # the reply could not be sent: the connection is broken
            self.closed = True
            try:                         # wake a worker blocked reading it
                self.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        finally:
            with self.lock:
                self.workers -= 1
                if running:
                    self.held -= size
                    self.reads -= read
                    self.room.notify()
                else:
                    self.reading -= 1
                last = self.workers == 0
            if last:
                self.server._closed(self.conn, self.address)


def register_rpcbind(port: int, unset: bool = False, host: str = "127.0.0.1") -> bool:
    """Tell a running rpcbind (portmapper v2, PMAPPROC_SET/UNSET over TCP) that MOUNT and NFS
    v3 are on `port`.  Optional: False when no rpcbind answers."""
    from .xdr import Packer, Unpacker
    ok = True
    try:
        with socket.create_connection((host, 111), timeout=2) as s:
            for xid, prog, vers in ((1, nfs3.PROGRAM, 3), (2, mount.PROGRAM, 3)):
                p = Packer().u32(0x45410000 + xid).u32(rpc.CALL).u32(2).u32(100000).u32(2).u32(2 if unset else 1)
                p.u32(0).u32(0).u32(0).u32(0)                      # AUTH_NONE cred and verifier
                p.u32(prog).u32(vers).u32(6).u32(port)
                s.sendall(rpc.frame(p.bytes()))
                reply = rpc.read_record(s, 1024)
                u = Unpacker(bytes(reply or b""))
                u.u32(), u.u32(), u.u32(), u.u32(), u.opaque(400)
                ok = ok and u.u32() == rpc.SUCCESS and u.bool()
    except (OSError, XDRError, rpc.RecordError):
        return False
    return ok


__all__ = ["RPCServer", "register_rpcbind"]
