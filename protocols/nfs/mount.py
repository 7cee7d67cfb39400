"""MOUNT v3 (program 100005, RFC 1813 appendix I): the way in to an export's handle.

MNT of "/<share>" or of any folder below it ("/<share>/a/b": libnfs' nfs-cp and nfs-cat
mount the URL's folder) answers that folder's file handle, if the client's address is in the
export's networks (else MNT3ERR_ACCES).  EXPORT lists the exports with their networks,
DUMP the mounts this server has seen, UMNT/UMNTALL forget them.
"""
from __future__ import annotations

from archive import errors
from archive.clock import parse_gmt_token
from archive.paths import SNAPSHOTS, split

from .errors import MNT3_OK, MNT3ERR_ACCES, MNT3ERR_NOENT, MNT3ERR_NOTDIR, mountstat
from .state import ServerState
from .xdr import Packer, Unpacker

PROGRAM, VERSION = 100005, 3
MNTPATHLEN = 1024
NULL, MNT, DUMP, UMNT, UMNTALL, EXPORT = range(6)
AUTH_SYS = 1


class Mount:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.procs = {NULL: self.null, MNT: self.mnt, DUMP: self.dump, UMNT: self.umnt, UMNTALL: self.umntall,
                      EXPORT: self.export}

    def null(self, u: Unpacker, p: Packer, cred, address: str) -> None:
        pass

    def mnt(self, u: Unpacker, p: Packer, cred, address: str) -> None:
        dirpath = u.string(MNTPATHLEN)
        status, fh = self._mount(dirpath, address)
        p.u32(status)
        if status == MNT3_OK:
            p.opaque(fh)
            p.u32(1).u32(AUTH_SYS)
        else:
            self.state.ctx and self.state.ctx.event("nfs", "mount_refused", path=dirpath, address=address,
                                                    status=status)

    def _mount(self, dirpath: str, address: str) -> tuple[int, bytes]:
        try:
            parts = split(dirpath)
        except errors.InvalidPath:
            return MNT3ERR_NOENT, b""
        if not parts:
            return MNT3ERR_NOENT, b""
        export = self.state.export_for(parts[0])
        if export is None:
            return MNT3ERR_NOENT, b""
        if not export.allows(address):
            return MNT3ERR_ACCES, b""
        try:
            fs = self.state.fs_for(export, address)
            e = fs.stat("/" + "/".join(parts[1:]))
        except errors.ArchiveError as exc:
            return mountstat(exc), b""
        if not e.is_dir:
            return MNT3ERR_NOTDIR, b""
        at = parse_gmt_token(parts[2]) if len(parts) > 2 and parts[1] == SNAPSHOTS else None
        self.state.mounts.add((address, dirpath))
        if self.state.ctx:
            self.state.ctx.event("nfs", "mount", path=dirpath, address=address, user=export.user)
        return MNT3_OK, self.state.handle_for(fs, e, at or 0)

    def dump(self, u: Unpacker, p: Packer, cred, address: str) -> None:
        for host, path in sorted(self.state.mounts):
            p.bool(True).string(host).string(path)
        p.bool(False)

    def umnt(self, u: Unpacker, p: Packer, cred, address: str) -> None:
        self.state.mounts.discard((address, u.string(MNTPATHLEN)))

    def umntall(self, u: Unpacker, p: Packer, cred, address: str) -> None:
        self.state.mounts = {m for m in self.state.mounts if m[0] != address}

    def export(self, u: Unpacker, p: Packer, cred, address: str) -> None:
        for e in self.state.export_list():
            p.bool(True).string("/" + e.share)
            for net in e.networks:
                p.bool(True).string(str(net))
            p.bool(False)
        p.bool(False)
