"""Runs the protocol adapters of one `archivectl serve` process.

Discovery: every entry point in the group ``edge_archive.protocols`` names an adapter class
(see protocols/base.py), so a third party adds a protocol by installing a package that
declares one; nothing here lists protocols by hand.

Lifecycle: construct every enabled adapter, ``start()`` them (a bind failure stops the ones
already started and is reported with the protocol and address), announce readiness
(stdout URLs, ``READY=1`` to systemd, a status file for `archivectl status`), then wait for
signals: SIGHUP reloads what can be reloaded, SIGTERM/SIGINT stop every adapter in parallel
with the grace period (uploads in flight may finish; the rest are aborted by the adapter,
which never commits a partial version), then exit 0.  A second SIGTERM/SIGINT during the
grace period gives up waiting.

Signals are blocked in every thread and collected with ``sigtimedwait`` by the main thread,
so no Python signal handler ever runs in the middle of a lock and no adapter thread can be
killed by a default disposition.
"""
from __future__ import annotations

import errno
import importlib.metadata
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from typing import Any, Callable

from .base import ServeContext
from .config import ConfigError, ProtocolInfo, ServeConfig

ENTRY_POINT_GROUP = "edge_archive.protocols"
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STATUS_REFRESH_SECONDS = 2.0

log = logging.getLogger("edge_archive.serve")


class StartError(Exception):
    """Serving could not start (port taken, adapter failed): printed as is, exit status 1."""


# --------------------------------------------------------------------------- discovery

def discover(group: str = ENTRY_POINT_GROUP) -> dict[str, ProtocolInfo]:
    """Every adapter entry point, loaded; one that fails to import is kept with its error so
    that the runner can skip it (defaults) or refuse to start (explicitly enabled)."""
    found: dict[str, ProtocolInfo] = {}
    for ep in importlib.metadata.entry_points(group=group):
        if ep.name in found:
            log.warning("event=duplicate_adapter protocol=%s ignored=%r kept=%r", ep.name, ep.value,
                        found[ep.name].origin)
            continue
        info = ProtocolInfo(name=ep.name, origin=ep.value)
        try:
            info.cls = ep.load()
        except Exception as e:  # an optional adapter with a missing dependency must not stop the others
            info.error = f"{type(e).__name__}: {e}"
        found[ep.name] = info
    return found


# --------------------------------------------------------------------------- systemd

def sd_notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to systemd's notification socket, if there is one.

    The protocol is one datagram on the unix socket named by $NOTIFY_SOCKET ('@' = abstract
    namespace); done by hand so that no systemd library is needed."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError as e:
        log.warning("event=sd_notify_failed state=%r error=%r", state, str(e))
        return False


# --------------------------------------------------------------------------- status files

def _proc_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (guards against pid reuse)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        return data.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, proc_start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if proc_start is not None:
        now = _proc_start(pid)
        if now is not None and now != proc_start:
            return False
    return True


def run_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "run")


def read_status_files(state_dir: str) -> list[dict[str, Any]]:
    """Status of every live serve process on this state directory; stale files (dead pid) are
    ignored and removed when possible."""
    out = []
    directory = run_dir(state_dir)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return out
    for name in names:
        if not (name.startswith("serve-") and name.endswith(".json")):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                data = json.load(f)
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _alive(pid, data.get("proc_start")):
            try:
                os.unlink(path)
            except OSError:
                pass
            continue
        out.append(data)
    return out


class StatusFile:
    """``<state_dir>/run/serve-<pid>.json``: what this process serves, refreshed while running."""

    def __init__(self, state_dir: str, base: dict[str, Any]) -> None:
        self.path = os.path.join(run_dir(state_dir), f"serve-{os.getpid()}.json")
        self.base = dict(base, pid=os.getpid(), proc_start=_proc_start(os.getpid()))
        self._last: str | None = None
        self._failed = False

    def write(self, figures: dict[str, dict[str, int]]) -> None:
        """Best effort: a read-only state directory costs `archivectl status`, not the service."""
        data = dict(self.base)
        data["protocols"] = {name: dict(info, **figures.get(name, {}))
                             for name, info in self.base.get("protocols", {}).items()}
        text = json.dumps(data, indent=1, sort_keys=True)
        if text == self._last:
            return
        tmp = self.path + ".tmp"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except OSError as e:
            if not self._failed:
                log.warning("event=status_file_failed path=%r error=%r", self.path, e.strerror or str(e))
                self._failed = True
            return
        self._last = text

    def remove(self) -> None:
        for p in (self.path, self.path + ".tmp"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


# --------------------------------------------------------------------------- the runner

_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")


def _describe_os_error(e: BaseException) -> OSError | None:
    """The OSError behind an adapter's start failure (libraries often wrap it)."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        if isinstance(e, OSError) and e.args and isinstance(e.args[0], OSError):
            e = e.args[0]          # pyftpdlib: socket.error(<the OSError from bind>)
            seen += 1
            continue
        m = _ERRNO_IN_TEXT.search(str(e)) if isinstance(e, OSError) else None
        if m:
            # cheroot (WebDAV): OSError("No socket could be created -- (('127.0.0.1', 8080):
            # [Errno 98] Address already in use)") carries the errno only in its text
            return OSError(int(m.group(1)), os.strerror(int(m.group(1))))
        e = e.__cause__ or e.__context__
        seen += 1
    return None


_BIND_HINTS = {
    errno.EADDRINUSE: "address already in use (another server is listening there)",
    errno.EACCES: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
    errno.EADDRNOTAVAIL: "address not available on this host",
}


def bind_error(what: str, listen: str, e: BaseException) -> StartError:
    os_err = _describe_os_error(e)
    if os_err is not None:
        why = _BIND_HINTS.get(os_err.errno, os_err.strerror or str(os_err))
        return StartError(f"{what}: cannot listen on {listen}: {why}")
    return StartError(f"{what}: failed to start: {type(e).__name__}: {e}")


class Runner:
    """Starts, supervises and stops the adapters of one process."""

    def __init__(self, repo: Any, cfg: ServeConfig, protocols: dict[str, ProtocolInfo],
                 ctx: ServeContext) -> None:
        self.repo = repo
        self.cfg = cfg
        self.protocols = protocols
        self.ctx = ctx
        self.adapters: dict[str, Any] = {}

    def plan(self) -> list[str]:
        """Names to start: enabled and importable.  An adapter that cannot be imported is
        skipped with a warning when it was merely enabled by default, and is an error when the
        configuration (or --only) asked for it."""
        names = []
        problems = []
        for name in self.cfg.enabled_protocols():
            info = self.protocols[name]
            if info.cls is None:
                if name in self.cfg.explicit:
                    problems.append(f"{name}: adapter {info.origin} cannot be loaded: {info.error}")
                else:
                    log.warning("event=adapter_unavailable protocol=%s entry_point=%r error=%r",
                                name, info.origin, info.error)
                continue
            names.append(name)
        if problems:
            raise StartError("; ".join(problems))
        return names

    def start(self, names: list[str]) -> dict[str, list[str]]:
        """Construct every adapter first (so that a value an adapter refuses is reported before
        any socket is bound), then start them; on any failure stop the started ones and raise."""
        built: dict[str, Any] = {}
        for name in names:
            section = dict(self.cfg.protocols[name])
            try:
                built[name] = self.protocols[name].cls(self.repo, section, self.ctx)
            except (ValueError, TypeError, KeyError) as e:
                raise ConfigError(f"[{name}] {e}", self.cfg.source) from None
            except Exception as e:
                raise StartError(f"{name}: failed to set up: {type(e).__name__}: {e}") from None
        urls: dict[str, list[str]] = {}
        try:
            for name, adapter in built.items():
                try:
                    adapter.start()
                except Exception as e:
                    log.debug("event=start_failed protocol=%s", name, exc_info=True)
                    raise bind_error(name, self.cfg.protocols[name].get("listen", "?"), e) from None
                self.adapters[name] = adapter
                if self.ctx.metrics is not None:
                    self.ctx.metrics.add_protocol(name)
                urls[name] = list(adapter.urls())
                log.info("event=listening protocol=%s urls=%r", name, ",".join(urls[name]))
        except BaseException:
            self.stop(0.0)
            raise
        return urls

    def stop(self, grace: float, interrupted: Callable[[], bool] | None = None) -> bool:
        """Stop every adapter in parallel (so shutdown takes one grace period, not one per
        protocol).  Returns False when `interrupted()` said to give up waiting."""
        threads = []
        for name, adapter in list(self.adapters.items()):
            def run(name: str = name, adapter: Any = adapter) -> None:
                t0 = time.monotonic()
                try:
                    adapter.stop(grace)
                except Exception as e:
                    log.error("event=stop_failed protocol=%s error=%r", name, f"{type(e).__name__}: {e}")
                log.info("event=stopped protocol=%s seconds=%.2f", name, time.monotonic() - t0)
            t = threading.Thread(target=run, name=f"stop-{name}", daemon=True)
            t.start()
            threads.append(t)
        self.adapters.clear()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
                if interrupted is not None and interrupted():
                    return False
        return True


def block_signals() -> None:
    """Block the handled signals in this thread and every thread it creates from now on."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)


def wait_signal(timeout: float) -> int | None:
    info = signal.sigtimedwait(HANDLED_SIGNALS, timeout)
    return info.si_signo if info is not None else None


def pending_stop_signal() -> bool:
    info = signal.sigtimedwait((signal.SIGTERM, signal.SIGINT), 0)
    return info is not None
