"""One TCP port for MOUNT v3 and NFS v3: record reading, dispatch, replies.

Each connection has its own thread (ShareFS calls block on the catalog and the disk), so a
slow operation delays only the client that asked; version commits run in the write
sessions' own thread.  Calls are answered in order per connection.  Whatever a client sends,
the server answers with the RPC error RFC 5531 prescribes (PROG_UNAVAIL, PROG_MISMATCH,
PROC_UNAVAIL, GARBAGE_ARGS, RPC_MISMATCH, AUTH_ERROR) or closes that one connection (broken
record marking, a record over the size limit); it never stops serving the others.
"""
from __future__ import annotations

import logging
import socket
import threading

from archive import errors

from . import mount, nfs3, rpc
from .drc import DuplicateCache
from .errors import NFSError, nfsstat
from .state import ServerState
from .xdr import XDRError

log = logging.getLogger("edge_archive.nfs")
MAX_RECORD = nfs3.MAX_IO + 64 * 1024


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
            threading.Thread(target=self._serve, args=(conn, addr[0]), name=f"nfs-{addr[0]}:{addr[1]}",
                             daemon=True).start()

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
    def _serve(self, conn: socket.socket, address: str) -> None:
        ctx = self.state.ctx
        if ctx is not None:
            ctx.event("nfs", "connect", address=address)
        try:
            while not self._stop.is_set():
                try:
                    record = rpc.read_record(conn, MAX_RECORD)
                except rpc.RecordError as e:
                    log.info("nfs: closing %s: %s", address, e)
                    return
                if record is None:
                    return
                with self._lock:
                    self._busy += 1
                try:
                    reply = self.handle(record, address)
                finally:
                    with self._idle:
                        self._busy -= 1
                        self._idle.notify_all()
                if reply is not None:
                    conn.sendall(rpc.frame(reply))
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()
            if ctx is not None:
                ctx.event("nfs", "disconnect", address=address)

    def handle(self, record, address: str) -> bytes | None:
        """The reply to one call record (None: not even an xid to answer)."""
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
                p.u32(nfsstat(e))
                for _ in range(nfs3.FAIL_WORDS[call.proc]):
                    p.u32(0)
            except Exception:
                log.exception("nfs: procedure %d of program %d failed", call.proc, call.prog)
                return rpc.accepted(call.xid, rpc.SYSTEM_ERR)
            return p.bytes()

        if program is self.nfs and call.proc in nfs3.NON_IDEMPOTENT:
            # (each procedure that changes something drops exactly what it changed from the
            # caches, ServerState.changed)
            return self.drc.run((address, call.prog, call.proc, call.xid), run)
        return run()


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
