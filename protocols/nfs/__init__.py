"""NFS version 3 over the archive: a native ONC RPC server (entry point ``nfs``).

Layout, bottom up: ``xdr.py`` (XDR encoding), ``rpc.py`` (RFC 5531 record marking, calls,
replies), ``handles.py`` (sealed file handles), ``exports.py`` (who may mount what, as whom),
``fattr.py`` (attributes), ``writes.py`` (staged write sessions: NFS has no close),
``state.py`` (what procedures share), ``mount.py`` (MOUNT v3), ``nfs3.py`` (the 22 NFSv3
procedures), ``drc.py`` (duplicate-request cache), ``errors.py`` (the archive-error ->
nfsstat3 table) and ``server.py`` (one TCP port for both programs, a thread per connection).

Config keys (section ``[nfs]``; defaults in brackets):

``listen`` ["127.0.0.1:20490"]
    one TCP port for MOUNT (100005 v3) and NFS (100003 v3); clients pass it as both
    ``nfsport`` and ``mountport``.
``exports`` [none]
    ``[[nfs.exports]]`` tables: ``share``, ``clients`` (CIDR list, default loopback),
    ``user`` (catalog user every request acts as; default ``default_user``),
    ``read_only`` (false).  None configured: every share, loopback clients only, as
    ``default_user``.
``default_user`` ["admin"]
    the user of exports that name none.
``commit_idle`` [2.0]
    seconds a file must stay idle after its data became durable (COMMIT or a stable
    WRITE) before that data is committed as a new version.
``abandon_timeout`` [600]
    seconds after which a file's writes that were never made durable are dropped.
``rpcbind`` [false]
    register MOUNT and NFS with a running rpcbind on 127.0.0.1:111 ("auto" or true);
    failures are logged, never fatal.
"""
from __future__ import annotations

from typing import Any

from archive.staging import recover

from .exports import parse_exports
from .server import RPCServer, register_rpcbind
from .state import ServerState
from .writes import WriteSessions

DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1:20490",
    "exports": [],
    "default_user": "admin",
    "commit_idle": 2.0,
    "abandon_timeout": 600.0,
    "rpcbind": False,
}


class NFSAdapter:
    """The NFSv3 adapter of `archivectl serve`."""

    name = "nfs"
    config_keys = DEFAULTS
    default_listen = DEFAULTS["listen"]

    def __init__(self, repo: Any, config: dict[str, Any], ctx: Any) -> None:
        from protocols.config import parse_listen
        cfg = dict(DEFAULTS)
        cfg.update({k: v for k, v in (config or {}).items() if v is not None})
        self.repo, self.config, self.ctx = repo, cfg, ctx
        self.host, self.port = parse_listen(cfg["listen"])
        self.exports = parse_exports(cfg["exports"], cfg["default_user"])
        self.commit_idle = float(cfg["commit_idle"])
        self.abandon_timeout = float(cfg["abandon_timeout"])
        if self.commit_idle < 0 or self.abandon_timeout <= 0:
            raise ValueError("nfs: commit_idle must be >= 0 and abandon_timeout > 0")
        self.server: RPCServer | None = None
        self.sessions: WriteSessions | None = None
        self._registered = False

    def start(self) -> None:
        for share, path, version in recover(self.repo):
            self.ctx.event("nfs", "recovered", share=share, path=path,
                           version=version.number if version else None)
        self.sessions = WriteSessions(self.commit_idle, self.abandon_timeout, self._committed)
        self.state = state = ServerState(self.repo, self.exports, self.config["default_user"], self.sessions,
                                         self.ctx)
        try:
            self.server = RPCServer(state, self.host, self.port)
        except OSError:
            self.sessions.close()
            raise
        self.server.start()
        if self.config["rpcbind"] not in (False, "false", "no", None):
            self._registered = register_rpcbind(self.server.address[1])
            self.ctx.event("nfs", "rpcbind", registered=self._registered)

    def _committed(self, session, version) -> None:
        self.state.changed(*session.key)          # (share id, node id): its cached attributes go
        if version is not None:
            self.ctx.event("nfs", "commit", path="/" + "/".join(session.upd.parts), size=version.size,
                           version=version.number, share=session.fs.share_name)

    def stop(self, grace: float) -> None:
        if self.server is not None:
            self.server.stop(grace)
        if self.sessions is not None:
            self.sessions.close()          # durable writes become versions, the rest is dropped
        if self._registered and self.server is not None:
            register_rpcbind(self.server.address[1], unset=True)

    def urls(self) -> list[str]:
        host, port = self.address
        share = self.exports[0].share if self.exports else "SHARE"
        return [f"nfs://{host}/{share}?version=3&nfsport={port}&mountport={port}"]

    @property
    def address(self) -> tuple[str, int]:
        if self.server is not None:
            return self.server.address[0], self.server.address[1]
        return self.host, self.port


__all__ = ["NFSAdapter"]
