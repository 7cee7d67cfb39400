"""`archivectl serve` and `archivectl status`: the appliance in one process.

`serve` reads the configuration (protocols/config.py), opens the repository, or on a fresh
machine with no configuration creates the default one (``$XDG_DATA_HOME/edge-archive``, i.e.
``~/.local/share/edge-archive``; ``/var/lib/edge-archive`` for root and the service user: see
archive.config.default_repo_path) with a share ``archive`` and an ``admin`` user whose random
password is printed once, says where it is, makes sure TLS
material exists (protocols/tls.py), starts every enabled adapter (protocols/runner.py),
prints where each one listens, and serves until SIGTERM.  `status` reads the status files
the running serve processes keep in ``<state dir>/run/`` plus the repository's figures.

Both are contributed to the `archivectl` group through the ``edge_archive.cli`` entry points,
so the core never imports this package.

Exit statuses: 0 clean stop; 1 could not start (port taken, repository missing, adapter
failure); 2 configuration error; for `status`: 0 serving, 3 nothing serving, 1 no repository.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import re
import secrets
import shlex
import sys
import threading
import time
from typing import Any

import click

from .base import ServeContext
from .config import (ENV_PREFIX, ConfigError, ServeConfig, default_repository, load_file, parse_listen,
                     resolve)
from .memory import start_trimmer, tune_allocator
from .metrics import Metrics
from .runner import (StartError, StatusFile, Runner, bind_error, block_signals, discover, pending_stop_signal,
                     read_status_files, sd_notify, wait_signal)
from .tls import check_pair, ensure_self_signed
from . import runner as _runner

log = logging.getLogger("edge_archive.serve")

ADMIN_USER = "admin"
DEFAULT_SHARE = "archive"
#: libraries whose INFO chatter duplicates the adapters' own structured events
NOISY_LOGGERS = ("pyftpdlib", "wsgidav", "cheroot", "alembic")


# --------------------------------------------------------------------------- logging

class KeyValueFormatter(logging.Formatter):
    """One line per event: ``ts=... level=... logger=... key=value ...``.

    Messages already written as key=value pairs are kept as they are; any other text (from
    libraries) becomes ``msg="..."``, and an exception is folded into the same line, so a log
    shipper never has to reassemble multi-line records."""

    _KV = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [f"ts={ts}", f"level={record.levelname.lower()}", f"logger={record.name}"]
        if self._KV.match(msg) and "\n" not in msg:
            parts.append(msg)
        else:
            parts.append("msg=" + json.dumps(msg))
        if record.exc_info and record.exc_info[1] is not None:
            etype, exc = record.exc_info[0], record.exc_info[1]
            parts.append("exc=" + json.dumps(f"{etype.__name__}: {exc}"))
            parts.append("traceback=" + json.dumps(self.formatException(record.exc_info)))
        return " ".join(parts)


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_edge_archive", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(KeyValueFormatter())
        handler._edge_archive = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    set_log_level(level)


def set_log_level(level: str) -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.getLogger().setLevel(numeric)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)


# --------------------------------------------------------------------------- CLI context

def _obj() -> Any:
    """The lead's CLIContext, or None when the command runs outside the `archivectl` group."""
    ctx = click.get_current_context(silent=True)
    return ctx.obj if ctx is not None else None


def _config_path(flag: str | None) -> str | None:
    if flag:
        return flag
    obj = _obj()
    path = getattr(obj, "config_path", None)
    if path:
        return str(path)
    return os.environ.get(ENV_PREFIX + "CONFIG") or None


def _load(flag_config: str | None, only: list[str] | None, log_level: str | None,
          protocols: dict | None = None) -> tuple[ServeConfig, dict, dict[str, Any]]:
    path = _config_path(flag_config)
    raw = load_file(path) if path else {}
    protocols = discover() if protocols is None else protocols
    cfg = resolve(raw, protocols, source=path, env=os.environ, only=only, log_level=log_level)
    return cfg, protocols, raw


def _repo_path(cfg: ServeConfig, raw: dict[str, Any]) -> tuple[str | None, bool]:
    """(repository path, explicitly named?).  --repo / EDGE_ARCHIVE_REPO (the archivectl
    group's) win over EDGE_ARCHIVE_REPOSITORY_PATH, which wins over [repository] path."""
    ctx = click.get_current_context(silent=True)
    parent = ctx.parent if ctx is not None else None
    flag = parent.params.get("repo") if parent is not None else None
    if flag:
        return str(flag), True
    env_repo = os.environ.get(ENV_PREFIX + "REPO")
    if env_repo:
        return env_repo, True
    path = cfg.repository.get("path")
    if path:
        from_file = raw.get("repository", {}).get("path") == path and not os.environ.get(
            ENV_PREFIX + "REPOSITORY_PATH")
        from archive.packstore import is_url
        if from_file and not is_url(path) and not os.path.isabs(path) and cfg.source:
            # relative to the file that says it, not to wherever serve was started from
            path = os.path.join(os.path.dirname(os.path.abspath(cfg.source)), path)
        return str(path), True
    return None, False


def _password() -> str | None:
    return os.environ.get(ENV_PREFIX + "PASSWORD") or None


# --------------------------------------------------------------------------- repository

def _open_repository(path: str, cfg: ServeConfig) -> Any:
    from archive import Repository, errors

    from archive.config import store_options
    from archive.packstore import is_url

    catalog = os.environ.get(ENV_PREFIX + "CATALOG") or cfg.repository.get("catalog")
    opts = store_options({"repository": cfg.repository})
    if not is_url(path) and not os.path.isdir(path):
        raise StartError(f"repository missing: {path} does not exist "
                         f"(create it with `archivectl --repo {path} init`, or fix [repository] path)")
    try:
        try:
            return Repository.open(path, password=_password(), catalog_url=catalog, **opts)
        except errors.BadPassword:
            obj = _obj()
            if _password() is None and sys.stdin.isatty() and hasattr(obj, "password"):
                return Repository.open(path, password=obj.password(), catalog_url=catalog, **opts)
            raise
    except errors.BadPassword:
        raise StartError(f"repository {path} is encrypted and the passphrase is "
                         f"{'wrong' if _password() else 'missing'}: set {ENV_PREFIX}PASSWORD "
                         "(under systemd: an EnvironmentFile= readable only by root)") from None
    except errors.NotFound as e:
        raise StartError(f"repository missing: {e}") from None
    except errors.ArchiveError as e:
        raise StartError(f"cannot open repository {path}: {e}") from None


def _admin_command(path: str, args: str) -> str:
    """An archivectl command line that reaches this repository from any folder, as the
    account that owns it (the service user under systemd)."""
    from archive.config import SERVICE_USER
    import pwd
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        me = ""
    sudo = f"sudo -u {SERVICE_USER} " if me == SERVICE_USER else ""
    return f"{sudo}archivectl --repo {shlex.quote(path)} {args}"


def _warn_if_nobody_can_log_in(repo: Any, path: str) -> None:
    """A repository made by `init` + `share add` (the systemd recipe) has no user: serving it
    would accept connections that can never log in.  Say so, with the command that fixes it."""
    try:
        shares = repo.list_shares()
        users = repo.list_users()
    except Exception as e:            # a figure for a warning must never stop the service
        log.warning("event=user_check_failed error=%r", str(e))
        return
    problem = fix = None
    share = shares[0].name if shares else "SHARE"
    if not shares:
        problem = "has no share, so there is nothing to serve"
        fix = _admin_command(path, "share add archive")
    elif not users:
        anon = [s.name for s in shares if s.anonymous]
        problem = "has no user, so nobody can log in" + (
            f" (only anonymous reads of {', '.join(anon)})" if anon else "")
        fix = (f"{_admin_command(path, 'user add admin')} && "
               f"{_admin_command(path, f'grant admin {shlex.quote(share)} rw')}")
    elif not any(u.shares for u in users):
        problem = "has users but none is granted a share, so no login can see any file"
        fix = _admin_command(path, f"grant {shlex.quote(users[0].name)} {shlex.quote(share)} rw")
    if problem is None:
        return
    click.echo(f"Warning: repository {path} {problem}.\n  Fix it with: {fix}", err=True)
    sys.stderr.flush()
    log.warning("event=nobody_can_log_in repository=%r problem=%r fix=%r", path, problem, fix)


def _bootstrap(path: str, cfg: ServeConfig) -> Any:
    """Open the default repository, creating it with its share and admin on the first start.

    Idempotent and safe against two first starts at once (an flock on the parent directory):
    the admin user is created, and its password printed, only while the repository has no
    user at all, so a crash between steps is repaired by the next start, and an operator who
    removed `admin` on purpose does not get it back."""
    from archive import Repository
    from archive.config import LEGACY_REPO

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        fresh = not os.path.exists(os.path.join(path, "config.json"))
        if fresh:
            if os.path.isdir(path) and os.listdir(path):
                raise StartError(f"{path} exists, is not empty and is not a repository; "
                                 "move it away or name a repository with --repo")
            legacy = os.path.abspath(LEGACY_REPO)
            if os.path.isfile(os.path.join(legacy, "config.json")) and legacy != path:
                # Before 0.2 the default repository was ./var/edge-archive: starting a second,
                # empty one here would look like "my data is gone".
                raise StartError(f"found a repository at {legacy} (the old default, relative to this folder) "
                                 f"and none at the default {path}: serve it with "
                                 f"`archivectl --repo {shlex.quote(legacy)} serve`, or move it with "
                                 f"`mv {shlex.quote(legacy)} {shlex.quote(path)}`")
            repo = Repository.init(path, password=None, encrypt=False)
            click.echo(f"Created repository {path} (unencrypted)")
            click.echo("  (the default for this account: archivectl finds it from any folder; "
                       "--repo or EDGE_ARCHIVE_REPO names another)")
        else:
            repo = _open_repository(path, cfg)
        if not repo.list_shares():
            repo.add_share(DEFAULT_SHARE)
            click.echo(f"Created share {DEFAULT_SHARE!r}")
        if not repo.list_users():
            password = secrets.token_urlsafe(12)
            repo.add_user(ADMIN_USER, password)
            for share in repo.list_shares():
                repo.grant(ADMIN_USER, share.name, "rw")
            click.echo(f"Created user {ADMIN_USER!r} with read-write access to "
                       f"{', '.join(repr(s.name) for s in repo.list_shares())}")
            click.echo(f"  user:     {ADMIN_USER}")
            click.echo(f"  password: {password}")
            click.echo(f"  (shown once; change it with `archivectl user passwd {ADMIN_USER}`)")
        else:
            click.echo(f"Using repository {path} (the {ADMIN_USER} password was shown at first start; "
                       f"reset it with `archivectl user passwd {ADMIN_USER}`)")
        sys.stdout.flush()
        return repo
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- serve

def _reload(path: str | None, protocols: dict, only: list[str] | None, flag_level: str | None,
            current: ServeConfig, runner: Runner) -> ServeConfig:
    """SIGHUP: re-read the file; apply the log level and hand adapters that have a
    ``reload(section)`` method their new section.  Anything else that changed is logged as
    needing a restart.  A broken file is logged and the running configuration kept."""
    sd_notify("RELOADING=1")
    try:
        raw = load_file(path) if path else {}
        new = resolve(raw, protocols, source=path, env=os.environ, only=only, log_level=flag_level)
    except ConfigError as e:
        log.error("event=reload_failed error=%s", json.dumps(e.text()))
        sd_notify("READY=1")
        return current
    set_log_level(new.serve["log_level"])
    needs_restart = []
    for sec in ("repository", "tls", "metrics"):
        for k, v in getattr(new, sec).items():
            if getattr(current, sec).get(k) != v:
                needs_restart.append(f"{sec}.{k}")
    if new.serve.get("state_dir") != current.serve.get("state_dir"):
        needs_restart.append("serve.state_dir")
    reloaded = []
    for name, section in new.protocols.items():
        old = current.protocols.get(name, {})
        if section == old:
            continue
        adapter = runner.adapters.get(name)
        if adapter is not None and hasattr(adapter, "reload"):
            try:
                adapter.reload(dict(section))
                reloaded.append(name)
                current.protocols[name] = section
                continue
            except Exception as e:
                log.error("event=reload_failed protocol=%s error=%r", name, f"{type(e).__name__}: {e}")
        needs_restart.extend(f"{name}.{k}" for k in sorted(set(section) | set(old)) if section.get(k) != old.get(k))
    current_grace = new.serve["grace_period"]
    log.info("event=reload log_level=%s grace_period=%s adapters_reloaded=%s needs_restart=%s",
             new.serve["log_level"], current_grace, ",".join(reloaded) or "-", ",".join(needs_restart) or "-")
    sd_notify("READY=1")
    # grace period and log level take effect; the rest keeps its running value
    current.serve["log_level"] = new.serve["log_level"]
    current.serve["grace_period"] = current_grace
    return current


def _fail(message: str, code: int) -> None:
    click.echo(f"archivectl serve: {message}", err=True)
    sys.stderr.flush()
    raise SystemExit(code)


def _split_only(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    return names


@click.command("serve")
@click.option("--config", "config_flag", type=click.Path(dir_okay=False), default=None,
              help="TOML configuration (default: the archivectl --config / EDGE_ARCHIVE_CONFIG).")
@click.option("--only", "only", metavar="NAMES", default=None,
              help="Comma-separated protocols to serve (e.g. ftp,webdav); others are not started.")
@click.option("--log-level", "log_level", type=click.Choice(["debug", "info", "warning", "error", "critical"],
              case_sensitive=False), default=None, help="Overrides [serve] log_level.")
def serve_command(config_flag: str | None, only: str | None, log_level: str | None) -> None:
    """Serve the repository over every enabled protocol until SIGTERM.

    With no configuration, creates the default repository (~/.local/share/edge-archive;
    /var/lib/edge-archive for root), with share 'archive' and user 'admin' whose password is
    printed once, and serves every installed protocol on 127.0.0.1."""
    block_signals()  # before any thread exists, so every thread inherits the mask
    tune_allocator()  # bounded RSS under load (protocols/memory.py)
    start_trimmer()
    setup_logging(log_level or "info")
    only_names = _split_only(only)
    try:
        cfg, protocols, raw = _load(config_flag, only_names, log_level)
    except ConfigError as e:
        _fail(e.text(), 2)
    set_log_level(cfg.serve["log_level"])
    path, named = _repo_path(cfg, raw)
    repo = gc_timer = None
    try:
        if named:
            from archive.packstore import is_url
            path = path if is_url(path) else os.path.abspath(path)
            repo = _open_repository(path, cfg)
            _warn_if_nobody_can_log_in(repo, path)
        else:
            path = os.path.abspath(default_repository())
            repo = _bootstrap(path, cfg)
            _warn_if_nobody_can_log_in(repo, path)
        gc_timer = _start_gc_timer(repo, raw)
        code = _serve(repo, cfg, protocols, config_path=_config_path(config_flag), only=only_names,
                      flag_level=log_level)
    except ConfigError as e:
        _fail(e.text(), 2)
    except StartError as e:
        _fail(str(e), 1)
    finally:
        if gc_timer is not None:
            gc_timer.stop()
        if repo is not None:
            try:
                repo.close()
            except Exception as e:
                log.warning("event=repository_close_failed error=%r", str(e))
    log.info("event=exit status=%d", code)
    logging.shutdown()
    sys.stdout.flush()
    _exit_now_if_threads_linger(code)
    raise SystemExit(code)


def _exit_now_if_threads_linger(code: int) -> None:
    """An adapter that leaves a non-daemon thread behind must not keep the process (and the
    systemd stop job) hanging after a clean shutdown."""
    deadline = time.monotonic() + 2.0
    for t in threading.enumerate():
        if t is threading.current_thread() or t.daemon:
            continue
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.current_thread()):
        os._exit(code)


def _serve(repo: Any, cfg: ServeConfig, protocols: dict, *, config_path: str | None, only: list[str] | None,
           flag_level: str | None) -> int:
    state_dir = os.path.abspath(cfg.serve.get("state_dir") or str(repo.path))
    if cfg.tls["cert"]:
        check_pair(cfg.tls["cert"], cfg.tls["key"])
        cert, key = cfg.tls["cert"], cfg.tls["key"]
    else:
        try:
            cert, key, created = ensure_self_signed(os.path.join(state_dir, "tls"))
        except OSError as e:
            raise StartError(f"cannot create the self-signed certificate in {state_dir}/tls: {e.strerror or e} "
                             "(set [serve] state_dir to a writable directory, or [tls] cert and key)") from None
        if created:
            log.info("event=tls_generated cert=%r key=%r", cert, key)
    if hasattr(repo, "throttle"):
        repo.throttle.configure(**cfg.login)
    metrics = Metrics()
    if hasattr(repo, "stats"):
        metrics.watch_repository(repo.stats)
    ctx = ServeContext(tls_cert=cert, tls_key=key, logger=logging.getLogger("edge_archive"), metrics=metrics)
    runner = Runner(repo, cfg, protocols, ctx)
    names = runner.plan()
    if not names:
        installed = ", ".join(n for n, i in sorted(protocols.items()) if i.cls is not None) or "none"
        raise StartError(f"nothing to serve: no enabled protocol adapter (installed: {installed})")
    urls = runner.start(names)
    metrics_url = None
    if cfg.metrics["enabled"]:
        host, port = parse_listen(cfg.metrics["listen"])
        try:
            port = metrics.serve(host, port)
        except OSError as e:
            runner.stop(0.0)
            raise bind_error("metrics", cfg.metrics["listen"], e) from None
        metrics_url = f"http://{host if ':' not in host else '[' + host + ']'}:{port}/metrics"
        log.info("event=listening protocol=metrics urls=%r", metrics_url)

    click.echo(f"Serving {getattr(repo, 'location', repo.path)}")
    for name in names:
        for url in urls[name]:
            click.echo(f"  {name:<8} {url}")
    if metrics_url:
        click.echo(f"  {'metrics':<8} {metrics_url}")
    click.echo("Stop with Ctrl-C (SIGTERM); reload the configuration with SIGHUP.")
    sys.stdout.flush()

    status = StatusFile(state_dir, {
        "started_at": time.time(),
        "repository": str(repo.path),
        "config": config_path,
        "metrics_url": metrics_url,
        "protocols": {n: {"urls": urls[n]} for n in names},
    })
    status.write(metrics.figures())
    sd_notify(f"READY=1\nSTATUS=serving {', '.join(names)}\nMAINPID={os.getpid()}")
    log.info("event=ready protocols=%s pid=%d", ",".join(names), os.getpid())
    try:
        while True:
            sig = wait_signal(_runner.STATUS_REFRESH_SECONDS)
            if sig is None:
                status.write(metrics.figures())
                continue
            if sig == _runner.signal.SIGHUP:
                log.info("event=sighup")
                cfg = _reload(config_path, protocols, only, flag_level, cfg, runner)
                continue
            break
        grace = cfg.serve["grace_period"]
        sd_notify("STOPPING=1")
        log.info("event=stopping signal=%s grace_period=%s", _runner.signal.Signals(sig).name, grace)
        # the /metrics server takes up to its poll interval to stop: overlap it with the adapters
        closer = threading.Thread(target=metrics.close, name="metrics-close", daemon=True)
        closer.start()
        complete = runner.stop(grace, interrupted=pending_stop_signal)
        closer.join(2.0)
        if not complete:
            log.warning("event=stop_forced reason=second_signal")
            return 1
        return 0
    finally:
        status.remove()
        metrics.close()


# --------------------------------------------------------------------------- status

def _human(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _repo_stats(path: str, cfg: ServeConfig) -> tuple[dict | None, str | None]:
    try:
        repo = _open_repository(path, cfg)
    except StartError as e:
        return None, str(e)
    try:
        if not hasattr(repo, "stats"):
            return None, "this core has no Repository.stats()"
        return dict(repo.stats()), None
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"
    finally:
        repo.close()


@click.command("status")
@click.option("--config", "config_flag", type=click.Path(dir_okay=False), default=None,
              help="TOML configuration (default: the archivectl --config / EDGE_ARCHIVE_CONFIG).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(config_flag: str | None, as_json: bool) -> None:
    """What is serving this repository, and its headline figures.

    Exit status: 0 when at least one serve process is running, 3 when none is, 1 when there
    is no repository."""
    try:
        cfg, _protocols, raw = _load(config_flag, None, None)
    except ConfigError as e:
        click.echo(f"archivectl status: {e.text()}", err=True)
        raise SystemExit(2)
    path, _named = _repo_path(cfg, raw)
    path = os.path.abspath(path or default_repository())
    if not os.path.isfile(os.path.join(path, "config.json")):
        msg = f"no repository at {path}"
        if as_json:
            click.echo(json.dumps({"repository": {"path": path, "error": msg}, "serving": []}, indent=1))
        else:
            click.echo(f"archivectl status: {msg}", err=True)
        raise SystemExit(1)
    state_dir = os.path.abspath(cfg.serve.get("state_dir") or path)
    serving = read_status_files(state_dir)
    stats, stats_error = _repo_stats(path, cfg)
    if as_json:
        doc = {"repository": {"path": path, "stats": stats, "error": stats_error}, "serving": serving}
        click.echo(json.dumps(doc, indent=1, sort_keys=True))
        raise SystemExit(0 if serving else 3)
    click.echo(f"Repository {path}")
    if stats is not None:
        ratio = stats.get("ratio")
        click.echo(f"  {stats.get('files', '-')} files, {stats.get('versions', '-')} versions, "
                   f"{_human(stats.get('logical_bytes'))} logical, {_human(stats.get('stored_bytes'))} stored"
                   f"{f', ratio {ratio:.2f}' if isinstance(ratio, (int, float)) else ''}, "
                   f"{stats.get('chunks', '-')} chunks")
    else:
        click.echo(f"  figures unavailable: {stats_error}")
    if not serving:
        click.echo("Not serving (start with `archivectl serve`).")
        raise SystemExit(3)
    for proc in serving:
        started = _dt.datetime.fromtimestamp(proc.get("started_at", 0), _dt.timezone.utc)
        up = int(time.time() - proc.get("started_at", time.time()))
        click.echo(f"Serving: pid {proc['pid']}, since {started:%Y-%m-%d %H:%M:%S} UTC "
                   f"(up {up // 3600}h{up % 3600 // 60:02d}m{up % 60:02d}s)")
        for name, info in sorted(proc.get("protocols", {}).items()):
            click.echo(f"  {name:<8} {' '.join(info.get('urls', []))}  sessions {info.get('sessions', 0)}, "
                       f"commits {info.get('commits', 0)} ({_human(info.get('bytes_in', 0))} in), "
                       f"downloads {info.get('downloads', 0)} ({_human(info.get('bytes_out', 0))} out), "
                       f"login failures {info.get('login_failures', 0)}, errors {info.get('errors', 0)}")
        if proc.get("metrics_url"):
            click.echo(f"  {'metrics':<8} {proc['metrics_url']}")
    raise SystemExit(0)


# --------------------------------------------------------------------------- scheduled gc

def _start_gc_timer(repo: Any, raw: dict[str, Any]) -> Any:
    """Scheduled gc ([gc] interval, grace; archive/gctimer.py): one node of a cluster at a time."""
    from archive.gctimer import GcConfigError, GcSchedule, GcTimer

    section = raw.get("gc") or {}
    for key in ("interval", "grace"):
        env = os.environ.get(f"{ENV_PREFIX}GC_{key.upper()}")
        if env is not None:
            section = {**section, key: env}
    try:
        schedule = GcSchedule.from_config(section)
    except GcConfigError as e:
        raise ConfigError(str(e)) from None
    return GcTimer(repo, schedule).start()
