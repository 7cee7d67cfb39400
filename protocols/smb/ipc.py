"""IPC$: the srvsvc named pipe, so `smbclient -L` and Explorer can list shares.

The DCE/RPC side is impacket's ``DCERPCServer`` (bind, request dispatch, fragmentation),
run in-process over a socketpair per pipe handle; the share list comes from the catalog
(only the shares granted to the session's user).  Other pipes are not served.
"""
from __future__ import annotations

import socket
from typing import Any

from impacket.dcerpc.v5 import srvs
from impacket.dcerpc.v5.dtypes import NULL
from impacket.dcerpc.v5.rpcrt import DCERPCServer

from . import errors as st
from .errors import SMBError

SRVSVC = ("4B324FC8-1670-01D3-1278-5A47BF6EE188", "3.0")
STYPE_DISKTREE, STYPE_IPC = 0, 0x80000003


class _Srvsvc(DCERPCServer):
    def __init__(self, sock: socket.socket, shares: list[str], server_name: str) -> None:
        super().__init__(client_socket=sock)
        self.shares = shares
        self.server_name = server_name
        self.addCallbacks(SRVSVC, "\\PIPE\\srvsvc", {15: self.share_enum, 16: self.share_get_info,
                                                      21: self.server_get_info})

    def _all(self) -> list[tuple[str, int, str]]:
        return [(s, STYPE_DISKTREE, "Edge Archive share") for s in self.shares] + [("IPC$", STYPE_IPC, "IPC")]

    def share_enum(self, data: bytes) -> Any:
        srvs.NetrShareEnum(data)
        ans = srvs.NetrShareEnumResponse()
        ans["InfoStruct"]["Level"] = 1
        ans["InfoStruct"]["ShareInfo"]["tag"] = 1
        items = self._all()
        ans["TotalEntries"] = len(items)
        ans["InfoStruct"]["ShareInfo"]["Level1"]["EntriesRead"] = len(items)
        for name, kind, remark in items:
            si = srvs.SHARE_INFO_1()
            si["shi1_netname"] = name + "\x00"
            si["shi1_type"] = kind
            si["shi1_remark"] = remark + "\x00"
            ans["InfoStruct"]["ShareInfo"]["Level1"]["Buffer"].append(si)
        ans["ErrorCode"] = 0
        return ans

    def share_get_info(self, data: bytes) -> Any:
        req = srvs.NetrShareGetInfo(data)
        want = req["NetName"][:-1].lower()
        ans = srvs.NetrShareGetInfoResponse()
        ans["InfoStruct"]["tag"] = 1
        for name, kind, remark in self._all():
            if name.lower() == want:
                ans["InfoStruct"]["ShareInfo1"]["shi1_netname"] = name + "\x00"
                ans["InfoStruct"]["ShareInfo1"]["shi1_type"] = kind
                ans["InfoStruct"]["ShareInfo1"]["shi1_remark"] = remark + "\x00"
                ans["ErrorCode"] = 0
                return ans
        ans["InfoStruct"]["ShareInfo1"] = NULL
        ans["ErrorCode"] = 0x0906                          # NERR_NetNameNotFound
        return ans

    def server_get_info(self, data: bytes) -> Any:
        req = srvs.NetrServerGetInfo(data)
        ans = srvs.NetrServerGetInfoResponse()
        ans["InfoStruct"]["tag"] = 101
        info = ans["InfoStruct"]["ServerInfo101"]
        info["sv101_platform_id"] = 500
        info["sv101_name"] = req["ServerName"]
        info["sv101_version_major"] = 6
        info["sv101_version_minor"] = 1
        info["sv101_type"] = 1
        info["sv101_comment"] = NULL
        ans["ErrorCode"] = 0
        return ans


class Pipe:
    """One open srvsvc handle: WRITE/IOCTL feed a request PDU, READ/IOCTL take the answer."""

    def __init__(self, shares: list[str], server_name: str) -> None:
        self._client, server_side = socket.socketpair()
        self._client.settimeout(5)
        server_side.settimeout(5)
        self._rpc = _Srvsvc(server_side, shares, server_name)
        self._server_side = server_side

    def write(self, data: bytes) -> None:
        self._client.sendall(data)
        pdu = self._rpc.recv()
        if pdu is None:
            raise SMBError(st.INVALID_PARAMETER)
        try:
            answer = self._rpc.processRequest(pdu)
        except Exception:
            raise SMBError(st.INVALID_PARAMETER) from None
        if answer is not None:
            self._rpc.send(answer)

    def read(self, n: int) -> bytes:
        self._client.setblocking(False)
        try:
            return self._client.recv(max(n, 0))
        except BlockingIOError:
            raise SMBError(0xC00000D9) from None               # STATUS_PIPE_EMPTY
        finally:
            self._client.settimeout(5)

    def close(self) -> None:
        for s in (self._client, self._server_side):
            try:
                s.close()
            except OSError:
                pass


def open_pipe(conn: Any, sess: Any, tree: Any, name: str) -> Any:
    from .files import Open
    from .info import Meta
    pipe_name = name.replace("\\", "/").strip("/").lower()
    if pipe_name.startswith("pipe/"):
        pipe_name = pipe_name[5:]
    if pipe_name != "srvsvc":
        raise SMBError(st.OBJECT_NAME_NOT_FOUND, f"no pipe {name!r}")
    shares = [n for n, _ in conn.server.repo.shares_for(sess.user)]
    return Open(fid=b"", session=sess, tree=tree, path="/" + pipe_name, is_dir=False, readonly=False,
                access=0x0012019F, meta=Meta(pipe_name, False, 0, 0.0, 0.0, 0), pipe=Pipe(shares, conn.cfg.server_name))
