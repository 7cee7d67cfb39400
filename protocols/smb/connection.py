"""One TCP connection: framing, NEGOTIATE, SESSION_SETUP, TREE_CONNECT, and the seam where
every request is verified (signature / decryption), dispatched and answered.

The per-command handlers live in ``files.py`` (file commands onto ShareFS) and ``ipc.py``
(the srvsvc pipe); they are registered on impacket's server with ``hookSmb2Command`` and
called from :meth:`Connection.process`, which replaces impacket's ``processRequest``:
that one cannot verify signatures, decrypt, keep a preauth hash or hold more than one
session per connection.  Any exception a handler raises becomes an NTSTATUS reply
(``errors.status_for``); only framing errors and undecryptable frames drop the connection.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from archive import ANONYMOUS, Origin, User

from . import auth, crypto, errors as st, wire
from .crypto import SMB210, SMB300, SMB302, SMB311
from .errors import SMBError
from .wire import Header, WireError

TRACE = logging.getLogger("edge_archive.smb.trace")
MAX_FRAME = 16 * 1024 * 1024 + 4096
MAX_IO = 8 * 1024 * 1024            # MaxRead/Write/TransactSize offered to 2.1+ clients
MAX_IO_202 = 65536
ERROR_BODY = b"\x09\x00\x00\x00\x00\x00\x00\x00\x00"
ALL_FF = b"\xff" * 16
PRE_AUTH = (wire.NEGOTIATE, wire.SESSION_SETUP, wire.ECHO, wire.CANCEL)

SESSION_FLAG_IS_GUEST, SESSION_FLAG_IS_NULL, SESSION_FLAG_ENCRYPT_DATA = 1, 2, 4
SHAREFLAG_NO_CACHING, SHAREFLAG_ENCRYPT_DATA = 0x30, 0x8000
ACCESS_RW, ACCESS_RO = 0x001F01FF, 0x001200A9


class Drop(Exception):
    """Close the connection without answering (unparseable frame, failed decryption)."""


@dataclass
class Tree:
    tid: int
    share: str                     # catalog name, or "IPC$"
    fs: Any                        # ShareFS, None for IPC$
    writable: bool
    encrypt: bool


@dataclass
class Session:
    sid: int
    conn: "Connection"
    preauth: bytes = b""
    state: str = "auth"            # auth -> valid
    user: User | None = None
    anonymous: bool = False
    keys: crypto.SessionKeys | None = None
    signing_required: bool = False
    encrypt_data: bool = False
    challenge: bytes = b""
    client_flags: int = 0
    trees: dict[int, Tree] = field(default_factory=dict)
    next_tid: int = 1


class Connection:
    """State of one client connection; `process(frame)` -> the frame to send back (or None)."""

    def __init__(self, server: Any, sock: socket.socket, address: str) -> None:
        self.server = server                 # protocols.smb.server.SMBServer
        self.cfg = server.settings
        self.sock = sock
        self.address = address
        self.dialect = 0
        self.preauth = bytes(64)
        self.signing_algo: int | None = None
        self.cipher: int | None = None
        self.client_guid = b""
        self.client_caps = 0
        self.client_secmode = 0
        self.client_dialects: list[int] = []
        self.sessions: dict[int, Session] = {}
        self.opens: dict[bytes, Any] = {}      # file id -> files.Open
        self.last_fid = ALL_FF
        self.credits = 1
        self.failed_logins = 0
        self.lock = threading.Lock()
        self.known_dirs: dict[tuple[str, str], float] = {}   # (share, folded folder) -> seen until

    # -- framing -------------------------------------------------------------------------
    def serve(self) -> None:
        """Read NetBIOS-framed requests until EOF; answer each in order."""
        sock = self.sock
        head = bytearray(4)
        try:
            while True:
                if not _recv_exact(sock, head):
                    return
                if head[0] != 0:
                    return                                 # no NetBIOS session service here
                n = (head[1] << 16) | (head[2] << 8) | head[3]
                if n < 4 or n > MAX_FRAME:
                    return
                frame = bytearray(n)
                if not _recv_exact(sock, frame):
                    return
                out = self.process(frame)
                if out is not None:
                    sock.sendall(struct.pack(">I", len(out)) + out)
        except (Drop, OSError):
            return
        finally:
            self.teardown()

    def teardown(self) -> None:
        """Connection gone: every open handle closes without committing (a dropped client's
        half-written file never becomes a version)."""
        from .files import abort_open
        for fid, op in list(self.opens.items()):
            abort_open(self, op)
        self.opens.clear()
        self.sessions.clear()

    # -- the seam ------------------------------------------------------------------------
    def process(self, frame: bytearray | bytes) -> bytes | None:
        enc_session: Session | None = None
        mv = memoryview(frame)
        if bytes(mv[:4]) == wire.TRANSFORM_MAGIC:
            if len(mv) < 52:
                raise Drop()
            size, _r, _flags, sid = struct.unpack_from("<IHHQ", mv, 36)
            enc_session = self.sessions.get(sid)
            if enc_session is None or enc_session.keys is None or enc_session.keys._dec is None:
                raise Drop()
            plain = enc_session.keys.decrypt(mv)
            if plain is None or len(plain) != size:
                raise Drop()
            mv = memoryview(plain)
        elif bytes(mv[:4]) != wire.MAGIC:
            raise Drop()                                   # SMB1 or garbage: no SMB1 at all
        try:
            msgs = wire.split_compound(mv)
        except WireError:
            raise Drop() from None
        responses: list[bytearray] = []
        sign_with: list[Session | None] = []
        ctx = {"sid": 0, "tid": 0, "status": 0}
        for i, msg in enumerate(msgs):
            h = wire.parse_header(msg)
            if h.flags & wire.FLAG_RESPONSE:
                raise Drop()
            if h.command == wire.CANCEL:
                continue                                   # nothing is ever pending: no answer
            related = bool(h.flags & wire.FLAG_RELATED) and i > 0
            if related:
                if h.session_id == 0xFFFFFFFFFFFFFFFF:
                    h.session_id = ctx["sid"]
                if h.tree_id == 0xFFFFFFFF:
                    h.tree_id = ctx["tid"]
            resp, sess = self.one(h, msg, enc_session, related, ctx)
            ctx["sid"], ctx["tid"] = h.session_id, h.tree_id
            responses.append(resp)
            sign_with.append(sess)
        if not responses:
            return None
        for i, resp in enumerate(responses):
            if i + 1 < len(responses):
                resp += bytes(-len(resp) % 8)
                struct.pack_into("<I", resp, 20, len(resp))
            sess = sign_with[i]
            if sess is not None and enc_session is None and sess.keys is not None:
                sess.keys.sign(resp)
        out = b"".join(responses)
        if enc_session is not None:
            return enc_session.keys.encrypt(out, enc_session.sid)
        return out

    def one(self, h: Header, msg: memoryview, enc: Session | None, related: bool,
            ctx: dict) -> tuple[bytearray, Session | None]:
        """Verify, dispatch and frame one request; returns the response and the session that
        must sign it (None: unsigned)."""
        sess = self.sessions.get(h.session_id) if h.session_id else None
        sign_sess: Session | None = None
        status, body = st.SUCCESS, b""
        try:
            if related and ctx["status"] and h.command != wire.CREATE:
                raise SMBError(ctx["status"])
            if h.command not in PRE_AUTH or (h.command == wire.SESSION_SETUP and sess and sess.state == "valid"):
                if sess is None or sess.state != "valid":
                    raise SMBError(st.USER_SESSION_DELETED)
            if sess is not None and sess.state == "valid" and sess.keys is not None and enc is None:
                signed = bool(h.flags & wire.FLAG_SIGNED)
                if signed and not sess.keys.verify(msg):
                    raise SMBError(st.ACCESS_DENIED, "bad signature")
                if not signed and sess.signing_required and h.command not in (wire.NEGOTIATE,):
                    raise SMBError(st.ACCESS_DENIED, "unsigned request on a signed session")
                sign_sess = sess if (signed or sess.signing_required) else None
            if sess is not None and sess.state == "valid" and enc is None and h.command not in PRE_AUTH:
                tree = sess.trees.get(h.tree_id)
                if sess.encrypt_data or (tree is not None and tree.encrypt):
                    raise SMBError(st.ACCESS_DENIED, "this session/share requires encryption")
            if enc is not None and sess is not enc and h.command != wire.NEGOTIATE:
                raise SMBError(st.ACCESS_DENIED, "encrypted for another session")
            handler = self.server.handler_for(h.command)
            if handler is None:
                raise SMBError(st.NOT_SUPPORTED if h.command <= wire.OPLOCK_BREAK else st.INVALID_PARAMETER)
            status, body = handler(self, h, msg)
        except Drop:
            raise
        except SMBError as e:
            status, body = e.status, ERROR_BODY
        except Exception as e:                      # the seam: every failure is a status
            status, body = st.status_for(e), ERROR_BODY
            if status in (st.INTERNAL_ERROR, st.UNEXPECTED_IO_ERROR):
                self.server.log_error(h.command, e)
        if TRACE.isEnabledFor(10):
            TRACE.debug("cmd=%d mid=%d status=0x%08x", h.command, h.message_id, status)
        ctx["status"] = status if status not in (st.SUCCESS, st.MORE_PROCESSING_REQUIRED, st.BUFFER_OVERFLOW) else 0
        if h.command == wire.SESSION_SETUP:
            sess = self.sessions.get(h.session_id) if h.session_id else None
            if status == st.SUCCESS and sess is not None and sess.keys is not None and not sess.anonymous:
                sign_sess = sess if (sess.signing_required or self.dialect == SMB311) else None
        granted = self.grant(h)
        resp = wire.build_header(h, status, granted, h.session_id, h.tree_id)
        resp += body
        if h.command == wire.NEGOTIATE and status == st.SUCCESS and self.dialect == SMB311:
            self.preauth = crypto.preauth_update(self.preauth, resp)
        if h.command == wire.SESSION_SETUP and self.dialect == SMB311 and status == st.MORE_PROCESSING_REQUIRED:
            s = self.sessions.get(h.session_id)
            if s is not None:
                s.preauth = crypto.preauth_update(s.preauth, resp)
        return resp, sign_sess

    def grant(self, h: Header) -> int:
        """Credits for this response: what was asked, topping the client up to 512."""
        charge = max(h.credit_charge, 1)
        self.credits -= charge
        want = max(h.credits, 1)
        if self.credits + want < 512:
            want = 512 - self.credits
        want = min(want, 8192)
        self.credits += want
        return want

    # -- NEGOTIATE -----------------------------------------------------------------------
    def negotiate(self, h: Header, msg: memoryview) -> tuple[int, bytes]:
        if self.dialect:
            raise Drop()                                    # a second NEGOTIATE: protocol error
        req = wire.parse_negotiate(msg)
        offered = [d for d in crypto.DIALECTS if d in req.dialects and d in self.cfg.dialects]
        if not offered:
            raise SMBError(st.NOT_SUPPORTED, "no common dialect")
        d = offered[0]
        self.dialect = d
        self.client_guid, self.client_caps, self.client_secmode = req.client_guid, req.capabilities, req.security_mode
        self.client_dialects = req.dialects
        contexts: list[bytes] = []
        if d == SMB311:
            self.preauth = crypto.preauth_update(bytes(64), msg)
            algos, salt_ok = [], False
            for ctype, data in req.contexts:
                if ctype == 1:
                    algos, _salt = wire.parse_preauth_context(data)
                    salt_ok = True
                elif ctype == 2 and self.cfg.encryption != "off":
                    ids = wire.parse_id_list(data)
                    for c in ids:                       # the client's order (MS-SMB2 3.3.5.4)
                        if c in self.cfg.ciphers:
                            self.cipher = c
                            break
                elif ctype == 8:
                    ids = wire.parse_id_list(data)
                    for a in (crypto.AES_GMAC, crypto.AES_CMAC, crypto.HMAC_SHA256):
                        if a in ids:
                            self.signing_algo = a
                            break
            if not salt_ok or 1 not in algos:
                raise SMBError(st.INVALID_PARAMETER, "3.1.1 needs SHA-512 preauth integrity")
            contexts.append(wire.negotiate_context(1, struct.pack("<HHH", 1, 32, 1) + os.urandom(32)))
            if self.cipher is not None:
                contexts.append(wire.negotiate_context(2, struct.pack("<HH", 1, self.cipher)))
            if self.signing_algo is not None:
                contexts.append(wire.negotiate_context(8, struct.pack("<HH", 1, self.signing_algo)))
        elif d in (SMB300, SMB302) and self.cfg.encryption != "off" and req.capabilities & 0x40:
            self.cipher = crypto.AES128_CCM
        caps = 0
        if d >= SMB210:
            caps |= 0x4                                     # LARGE_MTU
        if d in (SMB300, SMB302) and self.cipher is not None:
            caps |= 0x40                                    # ENCRYPTION
        io = MAX_IO if d >= SMB210 else MAX_IO_202
        secmode = 0x1 | (0x2 if self.cfg.signing_required else 0)
        self.neg_caps, self.neg_secmode = caps, secmode
        token = auth.negotiate_token()
        now = wire.filetime(time.time())
        body = bytearray(struct.pack("<HHHH16sIIIIQQHHI", 65, secmode, d, len(contexts), self.server.guid, caps,
                                     io, io, io, now, 0, 128, len(token), 0))
        body += token
        if contexts:
            body += bytes(-(64 + len(body)) % 8)
            struct.pack_into("<I", body, 60, 64 + len(body))
            for i, c in enumerate(contexts):
                body += c
                if i + 1 < len(contexts):
                    body += bytes(-len(body) % 8)
        return st.SUCCESS, bytes(body)

    # -- SESSION_SETUP -------------------------------------------------------------------
    def session_setup(self, h: Header, msg: memoryview) -> tuple[int, bytes]:
        if not self.dialect:
            raise SMBError(st.ACCESS_DENIED, "NEGOTIATE first")
        if self.failed_logins >= self.cfg.max_login_attempts:
            raise Drop()
        _flags, secmode, blob, _prev = wire.parse_session_setup(msg)
        token, spnego = auth.unwrap(blob)
        if not token:                          # SPNEGO init without an NTLM token: ask for NTLM
            return self._reply_setup(st.MORE_PROCESSING_REQUIRED, auth.select_ntlm(), 0)
        mtype = auth.message_type(token)
        if mtype == 1:
            sess = Session(sid=self._new_sid(), conn=self, preauth=self.preauth)
            if self.dialect == SMB311:
                sess.preauth = crypto.preauth_update(sess.preauth, msg)
            sess.client_flags = auth.parse_negotiate_flags(token)
            sess.challenge = auth.new_challenge()
            self.sessions[sess.sid] = sess
            h.session_id = sess.sid
            ch = auth.build_challenge(sess.client_flags, sess.challenge, self.cfg.server_name, self.cfg.domain)
            return self._reply_setup(st.MORE_PROCESSING_REQUIRED, auth.wrap_challenge(ch) if spnego else ch, 0)
        if mtype != 3:
            raise SMBError(st.INVALID_PARAMETER)
        sess = self.sessions.get(h.session_id)
        if sess is None or sess.state != "auth" or not sess.challenge:
            raise SMBError(st.USER_SESSION_DELETED)
        if self.dialect == SMB311:
            sess.preauth = crypto.preauth_update(sess.preauth, msg)
        try:
            a = auth.parse_authenticate(token)
            user, session_key, anonymous = self._check(a, sess)
        except Exception:
            self.sessions.pop(sess.sid, None)               # a failed login leaves nothing behind
            raise
        sess.user, sess.anonymous, sess.state = user, anonymous, "valid"
        flags = 0
        if anonymous:
            flags = SESSION_FLAG_IS_NULL
        else:
            sess.keys = crypto.SessionKeys(session_key, self.dialect, sess.preauth, self.signing_algo, self.cipher)
            sess.signing_required = bool(self.cfg.signing_required or secmode & 0x2)
            if self.cfg.encryption == "required" and self.dialect >= SMB300:
                if self.cipher is None:
                    self.sessions.pop(sess.sid, None)
                    raise SMBError(st.ACCESS_DENIED, "encryption required; client cannot encrypt")
                sess.encrypt_data = True
                flags |= SESSION_FLAG_ENCRYPT_DATA
            elif self.cfg.encryption == "required":
                self.sessions.pop(sess.sid, None)
                raise SMBError(st.ACCESS_DENIED, "encryption required; SMB 3 needed")
        self.server.event("login_ok", user=user.name, address=self.address)
        return self._reply_setup(st.SUCCESS, auth.wrap_final(True) if self._spnego(blob) else b"", flags)

    @staticmethod
    def _spnego(blob: bytes) -> bool:
        return not blob.startswith(auth.SIG)

    def _check(self, a: auth.Authenticate, sess: Session) -> tuple[User, bytes, bool]:
        """The user an AUTHENTICATE proves, or an AuthFailed; anonymous only for anonymous shares."""
        if not a.user:
            if a.nt or (a.lm and a.lm != b"\x00"):
                self._failed("", "empty user name")
            if not self.server.anonymous_shares():
                self._failed("", "anonymous login: no anonymous share")
            return ANONYMOUS, b"", True
        creds = self.server.repo.smb_credentials(a.user)
        if creds is None:
            self._failed(a.user, "unknown user or not enabled for SMB")
        user, nt_hash = creds
        key = auth.verify_ntlmv2(nt_hash, a, sess.challenge)
        if key is None:
            self._failed(a.user, "wrong password")
        return user, key, False

    def _failed(self, user: str, why: str) -> None:
        from archive.errors import AuthFailed
        self.failed_logins += 1
        self.server.event("login_failed", user=user, address=self.address, reason=why)
        self.server.audit_failed_login(user, self.address)
        if self.cfg.login_delay:
            time.sleep(self.cfg.login_delay)
        raise AuthFailed(why)

    def _reply_setup(self, status: int, token: bytes, flags: int) -> tuple[int, bytes]:
        body = struct.pack("<HHHH", 9, flags, 72, len(token)) + token
        return status, body

    def _new_sid(self) -> int:
        while True:
            sid = int.from_bytes(os.urandom(8), "little") & 0x7FFFFFFFFFFFFFFF
            if sid and sid not in self.sessions:
                return sid

    def logoff(self, h: Header, msg: memoryview) -> tuple[int, bytes]:
        sess = self.sessions.pop(h.session_id, None)
        self._close_opens(lambda op: op.session is sess)
        return st.SUCCESS, struct.pack("<HH", 4, 0)

    def _close_opens(self, which: Callable[[Any], bool]) -> None:
        """A graceful LOGOFF / TREE_DISCONNECT closes its handles as CLOSE would (commits);
        only a vanished connection aborts (``teardown``)."""
        from .files import finish_open
        for fid, op in list(self.opens.items()):
            if which(op):
                del self.opens[fid]
                try:
                    finish_open(self, op)          # on failure it has already dropped the staged bytes
                except Exception as e:
                    self.server.log_error(wire.CLOSE, e)

    # -- TREE_CONNECT ---------------------------------------------------------------------
    def tree_connect(self, h: Header, msg: memoryview) -> tuple[int, bytes]:
        sess = self.sessions[h.session_id]
        path = wire.parse_tree_connect(msg)
        name = path.replace("/", "\\").rstrip("\\").rsplit("\\", 1)[-1]
        if name.upper() == "IPC$":
            tree = Tree(sess.next_tid, "IPC$", None, False, False)
            share_type, flags, access = 2, SHAREFLAG_NO_CACHING, ACCESS_RO
        else:
            real = self.server.resolve_share(sess.user, name)
            if real is None:
                raise SMBError(st.BAD_NETWORK_NAME, name)
            fs = self.server.repo.share(real, user=sess.user, origin=Origin("smb", self.address),
                                        case_insensitive=True)
            encrypt = self.server.share_encrypted(real)
            if (encrypt or sess.encrypt_data) and (self.cipher is None or sess.anonymous):
                raise SMBError(st.ACCESS_DENIED, "share requires encryption")
            writable = fs.writable and not sess.anonymous
            tree = Tree(sess.next_tid, real, fs, writable, encrypt)
            share_type, access = 1, (ACCESS_RW if writable else ACCESS_RO)
            flags = SHAREFLAG_NO_CACHING | (SHAREFLAG_ENCRYPT_DATA if encrypt else 0)
        sess.trees[tree.tid] = tree
        sess.next_tid += 1
        h.tree_id = tree.tid
        return st.SUCCESS, struct.pack("<HBBIII", 16, share_type, 0, flags, 0, access)

    def tree_disconnect(self, h: Header, msg: memoryview) -> tuple[int, bytes]:
        sess = self.sessions[h.session_id]
        tree = sess.trees.pop(h.tree_id, None)
        if tree is None:
            raise SMBError(st.NETWORK_NAME_DELETED)
        self._close_opens(lambda op: op.tree is tree)
        return st.SUCCESS, struct.pack("<HH", 4, 0)

    def echo(self, h: Header, msg: memoryview) -> tuple[int, bytes]:
        return st.SUCCESS, struct.pack("<HH", 4, 0)

    def tree_of(self, h: Header) -> Tree:
        tree = self.sessions[h.session_id].trees.get(h.tree_id)
        if tree is None:
            raise SMBError(st.NETWORK_NAME_DELETED)
        return tree


def _recv_exact(sock: socket.socket, buf: bytearray) -> bool:
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = sock.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True
