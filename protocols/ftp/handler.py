"""pyftpdlib control and data handlers for Edge Archive.

The mixins here are combined with pyftpdlib's plain or TLS handlers into one class per
adapter (``build_handler``), because pyftpdlib configures everything through class
attributes.  What they add:

* commit-or-abort: the data handler commits an upload only when pyftpdlib saw the transfer
  finish *and* the control connection is still up (a client that dies mid-STOR closes
  both; stream mode cannot tell a clean EOF from a crash otherwise); any error, ABOR,
  timeout or shutdown aborts, so the previous version stays current;
* replies for archive errors from ``errors.py`` (452 disk full, 552 quota, 451 corrupt);
* listings streamed from ShareFS entries (no per-file stat);
* per-user connection limits, events, STOU, XCRC/HASH, TLS-required logins.
"""
from __future__ import annotations

import calendar
import collections
import datetime
import errno
import hashlib
import itertools
import logging
import os
import random
import re
import select
import socket
import sys
import time
import zlib
from typing import Any, Iterator

from pyftpdlib.exceptions import FilesystemError
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.handlers.ftp.data import DTPHandler
from pyftpdlib.handlers.ftp.dispatchers import PassiveDTP
from pyftpdlib.handlers.ftp.producers import BufferedIteratorProducer, FileProducer
from pyftpdlib.log import logger
from pyftpdlib.utils import strerror

from archive import errors

from .access import AccessMixin
from .authorizer import SessionAuthorizer
from .errors import TransferError, reply_for
from .files import ReadFile, WriteFile
from .filesystem import ArchiveFS, Session

_TRANSFER_CMDS = {"STOR", "STOU", "APPE", "RETR", "LIST", "NLST", "MLSD",
                  "PASV", "EPSV", "PORT", "EPRT"}
_HASH_ALGOS = {"SHA-256": "sha256", "SHA-1": "sha1", "MD5": "md5", "SHA-512": "sha512"}
_UPLOAD_CMDS = {"STOR", "STOU", "APPE"}
_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
               "error": logging.ERROR, "critical": logging.CRITICAL}
_ALLO = re.compile(r"\s*(\d{1,19})(?:\s+R\s+\d{1,19})?\s*", re.IGNORECASE)


#: lone surrogates U+DC80..U+DCFF: bytes that were not UTF-8, decoded with surrogateescape
_SURROGATE_ESCAPES = re.compile("[\udc80-\udcff]")


def _not_utf8(text: str) -> bool:
    """True when the command line held bytes that are not UTF-8 (decoded with
    surrogateescape, they show up as lone surrogates U+DC80..U+DCFF)."""
    return _SURROGATE_ESCAPES.search(text) is not None


def _primed(items: Any) -> Iterator[Any]:
    """Pull the first item now so errors surface as a 550 on the control channel,
    not as a broken data transfer."""
    it = iter(items)
    try:
        first = next(it)
    except StopIteration:
        return iter(())
    return itertools.chain([first], it)


def _abrupt(exc: BaseException | None) -> bool:
    """Whether the exception being handled while the data channel closes means the
    peer vanished (reset, TLS truncation) rather than ended the stream cleanly."""
    if exc is None:
        return False
    try:
        from OpenSSL import SSL
        if isinstance(exc, SSL.ZeroReturnError):      # TLS close_notify: a clean end
            return False
    except ImportError:                                # pragma: no cover
        pass
    return True


def _tls_ended_cleanly(sock: Any) -> bool | None:
    """For a TLS data connection: whether the client sent close_notify (None: not TLS).
    Over FTPS this is what tells a finished upload from a client that died: a TCP close
    without close_notify is a truncation (RFC 4217 section 10, RFC 8446 section 6.1)."""
    if type(sock) is socket.socket:                    # plain FTP: the common case, no import
        return None
    try:
        from OpenSSL import SSL
    except ImportError:                                # pragma: no cover
        return None
    if not isinstance(sock, SSL.Connection):
        return None
    try:
        return bool(sock.get_shutdown() & SSL.RECEIVED_SHUTDOWN)
    except Exception:
        return False


def _find_transfer_error(exc: BaseException | None) -> TransferError | None:
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, TransferError):
            return exc
        nxt = exc.__cause__
        if nxt is None and exc.args and isinstance(exc.args[0], BaseException):
            nxt = exc.args[0]
        exc, seen = nxt, seen + 1
    return None


class _Views:
    """A binary RETR over a plain TCP data connection, sent by ``EdgeDTPMixin._send_views``:
    the decoded chunks themselves (``ReadFile.views``) go to ``socket.sendmsg`` up to 2 MiB
    at a time, where pyftpdlib's FileProducer copied each into a buffer and sent it with one
    ``send()`` per turn of the event loop."""

    QUEUE = 2 * 1024 * 1024      #: bytes of decoded chunks queued for the socket (4 MiB: same CPU)
    IOV = 512                    #: views per sendmsg (IOV_MAX is 1024 on Linux)

    def __init__(self, fo: ReadFile) -> None:
        self.fo = fo
        self.pending: collections.deque[memoryview] = collections.deque()
        self.queued = 0
        self.eof = False

    def fill(self, ahead: bool = False) -> None:
        """Decode more when less than half the queue is left (`ahead`: whenever it is not
        full: the socket is full, so the client has bytes to read while this decodes)."""
        if not self.eof and self.queued < (self.QUEUE if ahead else self.QUEUE // 2):
            got = self.fo.views(self.QUEUE - self.queued)
            if not got:
                self.eof = True
            for v in got:
                self.pending.append(v)
                self.queued += len(v)

    def batch(self) -> list[memoryview]:
        return list(itertools.islice(self.pending, self.IOV))

    def advance(self, sent: int) -> None:
        self.queued -= sent
        pending = self.pending
        while sent:
            v = pending[0]
            if sent >= len(v):
                sent -= len(v)
                pending.popleft()
            else:
                pending[0] = v[sent:]
                sent = 0


class EdgeDTPMixin:
    """Data channel: decides commit vs abort for uploads, maps archive errors, sends binary
    downloads with sendmsg (``_Views``)."""

    def push_with_producer(self, producer: Any) -> None:
        fo = self.file_obj
        if (isinstance(fo, ReadFile) and isinstance(producer, FileProducer) and producer.type == "i"
                and isinstance(self.socket, socket.socket)):
            producer = _Views(fo)
        super().push_with_producer(producer)

    def initiate_send(self) -> None:
        fifo = self.producer_fifo
        if fifo and isinstance(fifo[0], _Views) and self.connected:
            if not self._send_views(fifo[0]):
                return                 # the socket is full: epoll calls again when it drains
            fifo.popleft()             # all sent: what follows (the close sentinel) as usual
        super().initiate_send()

    def _send_views(self, src: _Views) -> bool:
        """Send until the socket is full (False) or the file is all sent (True)."""
        while True:
            src.fill()
            if not src.pending:
                return True
            batch = src.batch()
            try:
                sent = self.socket.sendmsg(batch)
            except OSError as err:
                if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    src.fill(ahead=True)
                    return False
                if err.errno in (errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN,
                                 errno.ECONNABORTED, errno.EPIPE, errno.EBADF):
                    self.handle_close()
                    return False
                raise
            self.tot_bytes_sent += sent
            src.advance(sent)
            if sent < sum(len(v) for v in batch):
                # The socket is full: decode the next block now, while the client reads what
                # the socket holds, rather than when it has room again (a local store's Reader
                # decodes on this thread: docs/benchmarks.md "read11").
                src.fill(ahead=True)
                return False

    def close(self) -> None:
        # Hold a token in the transfer tracker until the final reply (226/426/452) has
        # been pushed, so stop(grace) cannot end the session between commit and reply.
        tracker = self.cmd_channel.edge_state.tracker
        token = object()
        tracker.add(token)
        try:
            self._edge_close()
        finally:
            tracker.discard(token)

    def _edge_close(self) -> None:
        fo = self.file_obj
        if not self._closed and self.receive and isinstance(fo, WriteFile) and not fo.closed:
            # pyftpdlib reports a reset connection (ECONNRESET, TLS without close_notify)
            # through the same handle_close() as a clean EOF, from inside the except
            # block that caught it: the exception still in flight tells them apart.
            broken = _abrupt(sys.exc_info()[1]) or _tls_ended_cleanly(self.socket) is False
            mismatch = fo.announced_mismatch()
            if self.transfer_finished and not broken and mismatch and not self._control_gone():
                fo.abort(errors.Conflict(mismatch))
                self.transfer_finished = False
                code = 552 if fo.received > (fo.expected or 0) else 426
                self._resp = (f"{code} Upload {mismatch}; transfer aborted.", logger.info)
            elif self.transfer_finished and not broken and not self._control_gone():
                try:
                    with self.cmd_channel.edge_state.commit_lock:
                        version = fo.commit()
                    if fo.node_id is not None:   # for an MFMT right after (ftp_MFMT)
                        self.cmd_channel._edge_stored = (fo.name, fo.node_id, version.number)
                except Exception as exc:
                    if not isinstance(exc, errors.ArchiveError):
                        logger.exception("ftp: commit of %s failed", fo.name)
                    code, msg = reply_for(exc)
                    self._resp = (f"{code} {msg}; transfer aborted.", logger.warning)
                    self.transfer_finished = False
            else:
                fo.abort(errors.Conflict("transfer incomplete or connection dropped"))
                if self.transfer_finished:   # EOF seen, but the client is gone
                    self.transfer_finished = False
                    self._resp = ("426 Connection closed; transfer aborted.", logger.info)
        super().close()

    def _control_gone(self) -> bool:
        """True when the client has hung up its control connection."""
        try:
            fd = self.cmd_channel.socket.fileno()
        except Exception:
            return True
        if fd < 0 or getattr(self.cmd_channel, "_closed", False):
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLRDHUP)
        for _, ev in poller.poll(0):
            if ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return True
        return False

    def handle_error(self) -> None:
        terr = _find_transfer_error(sys.exc_info()[1])
        if terr is None:
            return super().handle_error()
        self.cmd_channel.edge_state.event("error", user=self.cmd_channel.username,
                                          address=self.cmd_channel.remote_ip,
                                          error=type(terr.cause).__name__)
        try:
            self._resp = (f"{terr.code} {terr.strerror}; transfer aborted.", logger.warning)
            self.close()
        except Exception:
            logger.exception("closing data channel after error")


class EdgeHandlerMixin:
    """Control channel additions (see module docstring)."""

    edge_state: Any = None           # protocols.ftp.state.ServerState, set per adapter
    abstracted_fs = ArchiveFS
    # Undecodable bytes become lone surrogates, which pre_process_command refuses (553):
    # "replace" stored two different invalid names as the same U+FFFD name.
    unicode_errors = "surrogateescape"

    def __init__(self, conn: Any, server: Any, ioloop: Any = None) -> None:
        self.edge_user = None
        self.edge_session = None
        self._edge_slot = None
        self._hash_algo = "SHA-256"
        self._edge_allo: int | None = None
        self._edge_stored: tuple[str, int, int] | None = None   # (path, node, number) of the last STOR
        super().__init__(conn, server, ioloop)

    # --- session lifecycle -------------------------------------------------------------

    def log(self, msg: str, logfun: Any = logger.info) -> None:
        # pyftpdlib formats its prefix from the session's __dict__ for every command and
        # transfer before the logger drops the line (its level is WARNING unless configured).
        owner = getattr(logfun, "__self__", None)
        level = _LOG_LEVELS.get(getattr(logfun, "__name__", ""))
        if level is not None and hasattr(owner, "isEnabledFor") and not owner.isEnabledFor(level):
            return
        super().log(msg, logfun)

    def on_connect(self) -> None:
        self.edge_state.event("connect", address=self.remote_ip)

    def on_login(self, username: str) -> None:
        self.edge_state.event("login_ok", user=username, address=self.remote_ip)

    def on_login_failed(self, username: str, password: str) -> None:
        self.edge_state.event("login_failed", user=username, address=self.remote_ip,
                              attempt=self.attempted_logins)

    def handle_auth_success(self, home: str, password: str, msg_login: str) -> None:
        user = self.edge_user
        if not self.edge_state.acquire_slot(user.name):
            self.edge_state.event("login_failed", user=user.name, address=self.remote_ip,
                                  reason="too many connections for user")
            self.respond("421 Too many connections for this user.")
            self.close_when_done()
            return
        self._edge_slot = user.name
        try:
            self.edge_session = Session(self.edge_state, user, self.remote_ip, getattr(self, "edge_login", None))
        except errors.ArchiveError as exc:
            code, msg = reply_for(exc)
            self.respond(f"421 {msg}.")
            self.close_when_done()
            return
        super().handle_auth_success(home, password, msg_login)
        self.authorizer = SessionAuthorizer(self.edge_state.repo, self.fs)

    def flush_account(self) -> None:
        super().flush_account()
        self.__dict__.pop("authorizer", None)
        self.edge_session = None
        self._release_slot()

    def close(self) -> None:
        super().close()
        self._release_slot()

    def _release_slot(self) -> None:
        if self._edge_slot is not None:
            self.edge_state.release_slot(self._edge_slot)
            self._edge_slot = None

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        if _not_utf8(line):
            self._rnfr = None
            takes_path = (self.proto_cmds.get(cmd) or {}).get("perm") is not None
            msg = "File name not allowed: not valid UTF-8" if takes_path else "Command is not valid UTF-8"
            code = 553 if takes_path else 501
            self.respond(f"{code} {msg}.")
            self.log_cmd(cmd, "<not UTF-8>", code, msg)
            return
        # RNFR state lives for exactly one following command, and only if it is RNTO:
        # whatever else comes next (or a refused RNTO) forgets it.
        if cmd != "RNTO":
            self._rnfr = None
        if cmd != "MFMT":        # only the command right after a STOR's 226 is "right after"
            self._edge_stored = None
        announced = None
        if cmd in _UPLOAD_CMDS:
            announced, self._edge_allo = self._edge_allo, None
        try:
            super().pre_process_command(line, cmd, arg)
        finally:
            if cmd == "RNTO":
                self._rnfr = None
        if announced is not None:
            upload = self._pending_upload()
            if upload is not None:
                upload.expected = announced

    def _pending_upload(self) -> WriteFile | None:
        """The upload the last STOR/APPE/STOU opened, whether its data channel is up or not."""
        dc = self.data_channel
        fo = getattr(dc, "file_obj", None) if dc is not None else None
        if fo is None and self._in_dtp_queue:
            fo = self._in_dtp_queue[0]
        return fo if isinstance(fo, WriteFile) and not fo.closed else None

    def ftp_ALLO(self, line: str) -> None:
        """ALLO <size> [R <record>]: the next STOR/APPE/STOU must carry exactly <size>
        bytes, or it is not committed (lftp sends it by default)."""
        m = _ALLO.fullmatch(line)
        if not m:
            self.respond("501 Syntax: ALLO <bytes> [R <record-size>].")
            return
        self._edge_allo = int(m.group(1))
        self.respond(f"200 The next upload must carry {self._edge_allo} bytes.")

    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        state = self.edge_state
        if state.stopping and cmd in _TRANSFER_CMDS:
            self.respond("421 Server shutting down.")
            self.close_when_done()
            return
        if (cmd in ("USER", "PASS") and state.require_tls
                and not getattr(self, "_ssl_established", False)):
            self.respond("530 TLS required: use AUTH TLS before logging in.")
            self.log_cmd(cmd, args[0] if args else "", 530, "TLS required")
            return
        super().process_command(cmd, *args, **kwargs)

    # --- listings --------------------------------------------------------------------

    def _single(self, path: str) -> list[tuple[str, Any]]:
        st = self.fs.lstat(path)
        return [(os.path.basename(path) or "/", st)]

    def ftp_LIST(self, path: str) -> str | None:
        try:
            items = _primed(self.fs.list_entries(path)) if self.fs.isdir(path) else self._single(path)
        except (OSError, FilesystemError) as err:
            self.respond(f"550 {strerror(err)}.")
            return None
        producer = BufferedIteratorProducer(self.fs.format_list_entries(items))
        self.push_dtp_data(producer, isproducer=True, cmd="LIST")
        return path

    def ftp_NLST(self, path: str) -> str | None:
        try:
            items = _primed(self.fs.list_entries(path)) if self.fs.isdir(path) else self._single(path)
        except (OSError, FilesystemError) as err:
            self.respond(f"550 {strerror(err)}.")
            return None
        enc, errs = self.encoding, self.unicode_errors
        lines = (f"{name}\r\n".encode(enc, errs) for name, _ in items)
        self.push_dtp_data(BufferedIteratorProducer(lines), isproducer=True, cmd="NLST")
        return path

    def ftp_MLSD(self, path: str) -> str | None:
        if not self.fs.isdir(path):
            self.respond("501 No such directory.")
            return None
        try:
            items = _primed(self.fs.list_entries(path))
        except (OSError, FilesystemError) as err:
            self.respond(f"550 {strerror(err)}.")
            return None
        it = self.fs.format_mlsx_entries(items, self._current_facts, path)
        self.push_dtp_data(BufferedIteratorProducer(it), isproducer=True, cmd="MLSD")
        return path

    def ftp_MLST(self, path: str) -> str | None:
        line = self.fs.fs2ftp(path)
        try:
            st = self.fs.stat(path)
        except (OSError, FilesystemError) as err:
            self.respond(f"550 {strerror(err)}.")
            return None
        base = os.path.dirname(path)
        name = os.path.basename(path)
        data = b"".join(self.fs.format_mlsx_entries([(name, st)], self._current_facts, base))
        facts = data.decode(self.encoding, self.unicode_errors).split(" ")[0]
        self.push(f'250-Listing "{line}":\r\n')
        self.push(f" {facts} {line}\r\n")
        self.respond("250 End MLST.")
        return path

    # --- SIZE / MDTM / MFMT with one catalog call each (pyftpdlib stats 2-3 times) ------

    def _file_entry(self, path: str) -> Any | None:
        try:
            entry = self.fs.entry(path)
        except (OSError, FilesystemError) as err:
            self.respond(f"550 {strerror(err)}.")
            return None
        if entry is None or entry.is_dir:
            self.respond(f"550 {self.fs.fs2ftp(path)} is not retrievable.")
            return None
        return entry

    def ftp_SIZE(self, path: str) -> None:
        if self._current_type == "a":
            self.respond("550 SIZE not allowed in ASCII mode.")
            return
        entry = self._file_entry(path)
        if entry is not None:
            self.respond(f"213 {entry.size}")

    def ftp_MDTM(self, path: str) -> str | None:
        entry = self._file_entry(path)
        if entry is None:
            return None
        timefunc = time.gmtime if self.use_gmt_times else time.localtime
        self.respond(f"213 {time.strftime('%Y%m%d%H%M%S', timefunc(entry.mtime))}")
        return path

    def ftp_MFMT(self, path: str, timeval: str) -> str | None:
        line = self.fs.fs2ftp(path)
        try:
            if len(timeval) != 14 or not (timeval.isascii() and timeval.isdigit()):
                raise ValueError(timeval)
            # datetime checks the ranges; time.strptime cost more than the rest of the command
            t = timeval
            secs = calendar.timegm(datetime.datetime(int(t[:4]), int(t[4:6]), int(t[6:8]), int(t[8:10]),
                                                     int(t[10:12]), int(t[12:])).timetuple())
        except ValueError:
            self.respond("550 Invalid time format; expected: YYYYMMDDHHMMSS.")
            return None
        # Right after this session's STOR of the same path (lftp, FileZilla and WinSCP send it
        # to keep the local time), the time is that upload's: it goes to the version the STOR
        # made, even if another client has stored a newer one since (docs/architecture.md).
        stored, self._edge_stored = self._edge_stored, None
        version = (stored[1], stored[2]) if stored is not None and stored[0] == path else None
        try:
            self.run_as_current_user(self.fs.utime, path, secs, version)
        except (OSError, FilesystemError) as err:
            self.respond(f"550 {strerror(err)}.")
            return None
        self.respond(f"213 Modify={timeval}; {line}.")
        return path

    # --- STOU (pyftpdlib's relies on real temp files) -------------------------------------

    def ftp_STOU(self, line: str) -> str | None:
        if self._restart_position:
            self.respond("450 Can't STOU while REST request is pending.")
            return None
        if line:
            target = self.fs.ftp2fs(line)
            basedir, prefix = os.path.dirname(target), os.path.basename(target) + "."
        else:
            basedir, prefix = self.fs.cwd, "ftpd."
        if not self.fs.validpath(basedir):
            self.respond("550 Invalid path.")
            return None
        try:
            path = self.fs.unique_name(basedir, prefix)
            if not self.authorizer.has_perm(self.username, "w", path):
                self.respond("550 Not enough privileges.")
                return None
            fd = self.run_as_current_user(self.fs.open, path, "wb")
        except (OSError, FilesystemError) as err:
            self.respond(f"550 {strerror(err)}.")
            return None
        filename = os.path.basename(path)
        if self.data_channel is not None:
            self.respond(f"125 FILE: {filename}")
            self.data_channel.file_obj = fd
            self.data_channel.enable_receiving(self._current_type, "STOU")
        else:
            self.respond(f"150 FILE: {filename}")
            self._in_dtp_queue = (fd, "STOU")
        return filename

    # --- checksums (stream the file once; blocks only this session's thread) ----------

    def ftp_XCRC(self, path: str) -> None:
        try:
            f = self.fs.open(path, "rb")
        except (OSError, FilesystemError) as err:
            self.respond(f"550 {strerror(err)}.")
            return
        crc = 0
        try:
            while chunk := f.read(1 << 20):
                crc = zlib.crc32(chunk, crc)
        except OSError as err:
            self.respond(f"{getattr(err, 'code', 451)} {strerror(err)}.")
            return
        finally:
            f.close()
        self.respond(f"250 {crc:08X}")

    def ftp_HASH(self, path: str) -> None:
        try:
            size = self.fs.getsize(path)
            f = self.fs.open(path, "rb")
        except (OSError, FilesystemError) as err:
            self.respond(f"550 {strerror(err)}.")
            return
        h = hashlib.new(_HASH_ALGOS[self._hash_algo])
        try:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        except OSError as err:
            self.respond(f"{getattr(err, 'code', 451)} {strerror(err)}.")
            return
        finally:
            f.close()
        end = max(size - 1, 0)
        self.respond(f"213 {self._hash_algo} 0-{end} {h.hexdigest()} {self.fs.fs2ftp(path)}")

    def ftp_OPTS(self, line: str) -> None:
        cmd, _, arg = line.partition(" ")
        if cmd.upper() != "HASH":
            return super().ftp_OPTS(line)
        if not arg:
            self.respond(f"200 {self._hash_algo}")
        elif arg.upper() in _HASH_ALGOS:
            self._hash_algo = arg.upper()
            self.respond(f"200 {self._hash_algo}")
        else:
            self.respond("501 Unknown algorithm.")

    def ftp_FEAT(self, line: str) -> None:
        algos = ";".join(a + ("*" if a == self._hash_algo else "") for a in _HASH_ALGOS)
        extra = [f"HASH {algos}", "XCRC"]
        saved = list(self._extra_feats)
        self._extra_feats = saved + extra
        try:
            super().ftp_FEAT(line)
        finally:
            self._extra_feats = saved


class _RetryingPassiveDTP(PassiveDTP):
    """PASV/EPSV listener that survives "Address already in use".

    pyftpdlib binds passive ports with SO_REUSEADDR, so two sessions (threads, or serving
    processes sharing the range) can both bind the same free port; the second listen()
    then fails with EADDRINUSE and the session died.  Here listen() rebinds to another
    port of the range (the kernel's choice as a last resort) and tries again."""

    attempts = 16

    def listen(self, num: int) -> None:
        for attempt in range(self.attempts):
            try:
                return super().listen(num)
            except OSError as err:
                if err.errno != errno.EADDRINUSE:
                    raise
                self._rebind(last=attempt >= self.attempts - 2)
        return super().listen(num)

    def _rebind(self, last: bool) -> None:
        ip = self.socket.getsockname()[0]
        family = self.socket.family
        self.del_channel()
        self.socket.close()
        self.socket = None
        self.create_socket(family, socket.SOCK_STREAM)
        ports = self.cmd_channel.passive_ports
        if ports and not last:
            self.set_reuse_addr()
            try:
                self.bind((ip, random.choice(list(ports))))
                return
            except OSError as err:
                if err.errno != errno.EADDRINUSE:
                    raise
        self.bind((ip, 0))


EXTRA_CMDS = {
    "XCRC": dict(perm="r", auth=True, arg=True, help="Syntax: XCRC <SP> file-name (CRC32 of file)."),
    "HASH": dict(perm="r", auth=True, arg=True, help="Syntax: HASH <SP> file-name (hash of file)."),
}


def build_handler(state: Any, base: type = FTPHandler, dtp_base: type = DTPHandler,
                  **attrs: Any) -> type:
    """One handler class per adapter: pyftpdlib keeps its configuration in class attributes."""
    dtp = type("EdgeDTPHandler", (EdgeDTPMixin, dtp_base), {
        "ac_in_buffer_size": 256 * 1024,
        "ac_out_buffer_size": 1024 * 1024,
    })
    cmds = dict(base.proto_cmds)
    cmds.update(EXTRA_CMDS)
    attrs.update({"edge_state": state, "dtp_handler": dtp, "proto_cmds": cmds,
                  "passive_dtp": _RetryingPassiveDTP})
    return type("EdgeFTPHandler", (AccessMixin, EdgeHandlerMixin, base), attrs)
