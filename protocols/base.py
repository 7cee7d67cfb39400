"""The contract between `archivectl serve` and a protocol adapter.

Adapters are discovered through the entry-point group ``edge_archive.protocols``; each entry
point names a class implementing :class:`Adapter`.  The runner constructs it with the open
repository, the adapter's own config section (already merged with defaults, flags and
environment) and a :class:`ServeContext` of shared services, then calls ``start()``; on
shutdown it calls ``stop(grace)``.  An adapter never touches SQL or pack files: it logs users in
with ``repo.login(...)`` (throttled, audited), calls ``login.validate()`` once per request or
command (revocation takes effect there), and opens shares with ``login.share(...)`` (ShareFS).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class ServeContext:
    """Services the runner shares with every adapter."""

    tls_cert: str | None = None          # PEM certificate path (generated if not configured)
    tls_key: str | None = None           # PEM private key path
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("edge_archive"))
    metrics: Any = None                  # protocols.metrics.Metrics or None

    def event(self, protocol: str, event: str, **fields: Any) -> None:
        """Log one structured event line (connect, login_ok, login_failed, commit, error)."""
        if self.metrics is not None:
            self.metrics.observe_event(protocol, event, fields)
        parts = " ".join(f"{k}={v!r}" for k, v in fields.items())
        self.logger.info("protocol=%s event=%s %s", protocol, event, parts)


class Adapter(Protocol):
    """What every protocol adapter provides."""

    name: str

    def __init__(self, repo: Any, config: dict[str, Any], ctx: ServeContext) -> None: ...

    def start(self) -> None:
        """Bind the listening socket(s) and serve in background threads; raise OSError on bind failure."""

    def stop(self, grace: float) -> None:
        """Stop accepting, let transfers in flight finish for up to `grace` seconds, then abort the rest."""

    def urls(self) -> list[str]:
        """Where clients reach it, e.g. ['ftp://127.0.0.1:2121']."""
