"""Which shares are exported, to which client networks, acting as which catalog user.

    [[nfs.exports]]
    share = "office"
    clients = ["127.0.0.0/8"]   # others get MNT3ERR_ACCES and NFS3ERR_ACCES
    user = "alice"              # every request acts as this catalog user (all_squash)
    read_only = false

With no `[[nfs.exports]]` at all, every share is exported to loopback clients only
(127.0.0.0/8 and ::1), acting as `[nfs] default_user` ("admin", the user a first
`archivectl serve` creates) with that user's grants; shares it has no grant on are refused.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

LOOPBACK = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class Export:
    share: str
    networks: tuple
    user: str | None
    read_only: bool = False

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks if net.version == ip.version)


def parse_exports(items: Any, default_user: str | None) -> list[Export] | None:
    """The configured exports, or None when none are configured (then `all_shares_export`
    applies per share).  ValueError names the bad item."""
    if items in (None, [], ()):
        return None
    if not isinstance(items, list):
        raise ValueError("nfs exports must be an array of tables ([[nfs.exports]])")
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get("share"), str):
            raise ValueError(f"nfs exports[{i}] needs share = \"NAME\"")
        unknown = set(it) - {"share", "clients", "user", "read_only"}
        if unknown:
            raise ValueError(f"nfs exports[{i}]: unknown key(s) {', '.join(sorted(unknown))} "
                             "(valid: share, clients, user, read_only)")
        clients = it.get("clients", list(LOOPBACK))
        if isinstance(clients, str):
            clients = [clients]
        try:
            nets = tuple(ipaddress.ip_network(c, strict=False) for c in clients)
        except ValueError as e:
            raise ValueError(f"nfs exports[{i}] clients: {e}") from None
        user = it.get("user", default_user)
        out.append(Export(it["share"], nets, user, bool(it.get("read_only", False))))
    return out


def all_shares_export(share: str, default_user: str | None) -> Export:
    return Export(share, tuple(ipaddress.ip_network(c) for c in LOOPBACK), default_user, False)
