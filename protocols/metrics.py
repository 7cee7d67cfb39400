"""Prometheus metrics for the appliance, fed by the adapters' events.

Adapters never touch prometheus_client: they call ``ServeContext.event(protocol, event, **fields)``
and the runner's :class:`Metrics` turns the events into counters.  Events understood:

=============  ==============================================================
connect        a client connected (sessions +1)
disconnect     it left (sessions -1)
login_ok       authentication succeeded
login_failed   authentication failed
commit         a version was committed; ``size=`` bytes received
download       a file was sent; ``size=`` bytes sent (``complete=False``: cut off, bytes only)
error          something failed on the server side
=============  ==============================================================

Repository figures (logical/stored bytes, dedupe ratio, chunks, versions, files) come from
``repo.stats()`` at scrape time, cached a few seconds so that a scrape storm cannot load the
catalog.  The same counters, without Prometheus, feed the status file `archivectl status` reads.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Summary, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server

log = logging.getLogger("edge_archive.metrics")
# `*_created` series double the output and no dashboard here uses them
disable_created_metrics()

#: Per-protocol figures kept for the status file (plain ints, independent of Prometheus).
FIGURES = ("sessions", "connections", "logins", "login_failures", "commits", "bytes_in", "downloads",
           "bytes_out", "errors")


class RepositoryCollector:
    """Repository headline figures, computed on scrape from ``repo.stats()`` and cached."""

    FIELDS = {
        "logical_bytes": "Bytes of all file versions as clients see them",
        "stored_bytes": "Bytes the chunk store holds after dedupe and compression",
        "ratio": "Dedupe and compression ratio (logical / stored)",
        "chunks": "Distinct chunks in the store",
        "versions": "File versions in the catalog",
        "files": "Files (current and deleted) in the catalog",
    }

    def __init__(self, stats: Callable[[], dict[str, Any]], cache_seconds: float = 5.0) -> None:
        self._stats = stats
        self._cache_seconds = cache_seconds
        self._cached: dict[str, Any] | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def figures(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._at > self._cache_seconds:
                try:
                    self._cached = dict(self._stats())
                except Exception as e:  # a scrape must not fail because the catalog is busy
                    log.warning("event=stats_failed error=%r", f"{type(e).__name__}: {e}")
                    self._cached = self._cached or {}
                self._at = now
            return self._cached

    def collect(self):
        figures = self.figures()
        for name, doc in self.FIELDS.items():
            if name in figures and figures[name] is not None:
                metric = "edge_archive_repository_dedupe_ratio" if name == "ratio" else f"edge_archive_repository_{name}"
                yield GaugeMetricFamily(metric, doc, value=float(figures[name]))


class Metrics:
    """Counters for every protocol, exported to Prometheus and summarised for `archivectl status`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("edge_archive_sessions", "Open client sessions", ["protocol"], registry=r)
        self.connections = Counter("edge_archive_connections", "Client connections accepted", ["protocol"], registry=r)
        self.logins = Counter("edge_archive_logins", "Successful logins", ["protocol"], registry=r)
        self.login_failures = Counter("edge_archive_login_failures", "Failed logins", ["protocol"], registry=r)
        self.commits = Counter("edge_archive_versions_committed", "File versions committed", ["protocol"], registry=r)
        self.bytes_in = Counter("edge_archive_bytes_in", "Bytes received in committed uploads", ["protocol"], registry=r)
        self.downloads = Counter("edge_archive_downloads", "Files sent", ["protocol"], registry=r)
        self.bytes_out = Counter("edge_archive_bytes_out", "Bytes sent to clients", ["protocol"], registry=r)
        self.errors = Counter("edge_archive_errors", "Server-side errors", ["protocol"], registry=r)
        self.maintenance = Summary("edge_archive_maintenance_duration_seconds",
                                   "Duration of gc and prune runs", ["task"], registry=r)
        self.started = Gauge("edge_archive_start_time_seconds", "When serve started (epoch)", registry=r)
        self.started.set_to_current_time()
        self._figures: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._server = None
        self._repo_collector: RepositoryCollector | None = None

    # ------------------------------------------------------------------ feeding
    def add_protocol(self, protocol: str) -> None:
        """Make the protocol's series exist (at 0) before its first event, so dashboards see it."""
        with self._lock:
            self._figures.setdefault(protocol, dict.fromkeys(FIGURES, 0))
        for c in (self.sessions, self.connections, self.logins, self.login_failures, self.commits,
                  self.bytes_in, self.downloads, self.bytes_out, self.errors):
            c.labels(protocol)

    def observe_event(self, protocol: str, event: str, fields: dict[str, Any]) -> None:
        """Count one adapter event (see the module docstring for the vocabulary)."""
        size = fields.get("size")
        size = int(size) if isinstance(size, (int, float)) and size > 0 else 0
        with self._lock:
            fig = self._figures.setdefault(protocol, dict.fromkeys(FIGURES, 0))
            if event == "connect":
                fig["sessions"] += 1
                fig["connections"] += 1
                self.sessions.labels(protocol).inc()
                self.connections.labels(protocol).inc()
            elif event == "disconnect":
                if fig["sessions"] > 0:
                    fig["sessions"] -= 1
                    self.sessions.labels(protocol).dec()
            elif event == "login_ok":
                fig["logins"] += 1
                self.logins.labels(protocol).inc()
            elif event == "login_failed":
                fig["login_failures"] += 1
                self.login_failures.labels(protocol).inc()
            elif event == "commit":
                fig["commits"] += 1
                fig["bytes_in"] += size
                self.commits.labels(protocol).inc()
                self.bytes_in.labels(protocol).inc(size)
            elif event == "download":
                if fields.get("complete", True):          # a cut-off download still sent bytes
                    fig["downloads"] += 1
                    self.downloads.labels(protocol).inc()
                fig["bytes_out"] += size
                self.bytes_out.labels(protocol).inc(size)
            elif event == "error":
                fig["errors"] += 1
                self.errors.labels(protocol).inc()

    def observe_maintenance(self, task: str, seconds: float) -> None:
        """Duration of a gc/prune run (fed by whoever runs them in this process)."""
        self.maintenance.labels(task).observe(seconds)

    def watch_repository(self, stats: Callable[[], dict[str, Any]], cache_seconds: float = 5.0) -> None:
        self._repo_collector = RepositoryCollector(stats, cache_seconds)
        self.registry.register(self._repo_collector)

    # ------------------------------------------------------------------ reading
    def figures(self) -> dict[str, dict[str, int]]:
        """Per-protocol counters for the status file."""
        with self._lock:
            return {p: dict(f) for p, f in self._figures.items()}

    # ------------------------------------------------------------------ HTTP endpoint
    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP server in a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return server.server_port

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
