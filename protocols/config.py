"""The configuration `archivectl serve` runs from: schema, defaults, overrides, validation.

One TOML file (``etc/edge-archive/archive.toml`` documents every key), then environment
variables, then command-line flags; later wins.  The environment rule is mechanical so that a
systemd drop-in or a container can change any key without editing the file::

    EDGE_ARCHIVE_<SECTION>_<KEY>=value     e.g. EDGE_ARCHIVE_FTP_LISTEN=0.0.0.0:21
                                                EDGE_ARCHIVE_WEBDAV_ENABLED=false
                                                EDGE_ARCHIVE_SERVE_GRACE_PERIOD=10

Every problem is collected and reported at once as a :class:`ConfigError` whose text is
meant for the operator (file, section, key, what is wrong, what would be right), because
a service that dies with a traceback at boot is the worst way to learn about a typo.
"""
from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

ENV_PREFIX = "EDGE_ARCHIVE_"

#: Where a protocol listens when nothing says otherwise: loopback, unprivileged ports,
#: so that a bare `archivectl serve` never exposes anything and never needs root.
DEFAULT_PORTS: dict[str, int] = {"ftp": 2121, "webdav": 8080, "smb": 4445, "nfs": 20490, "s3": 9000}
DEFAULT_HOST = "127.0.0.1"
#: Protocol names known to the project even when their adapter is not installed, so that a
#: section for one of them is "not installed" rather than "unknown section".
KNOWN_PROTOCOLS = frozenset(DEFAULT_PORTS)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def default_repository() -> str:
    """Where the repository is created and served from when no configuration names one: the
    core's rule (archive.config.default_repo_path), never the working folder."""
    from archive.config import default_repo_path
    return str(default_repo_path())


class ConfigError(Exception):
    """A configuration problem for the operator: printed as is, exit status 2, no traceback."""

    def __init__(self, problems: str | list[str], source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__(self.text())

    def text(self) -> str:
        head = f"configuration error in {self.source}" if self.source else "configuration error"
        if len(self.problems) == 1:
            return f"{head}: {self.problems[0]}"
        return head + ":\n" + "\n".join(f"  - {p}" for p in self.problems)


# --------------------------------------------------------------------------- value checks

def parse_listen(value: Any) -> tuple[str, int]:
    """``"HOST:PORT"`` / ``"[v6]:PORT"`` -> (host, port); ValueError with the reason otherwise."""
    if not isinstance(value, str):
        raise ValueError(f'must be a string "HOST:PORT", got {value!r}')
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\S+)|([^:\s\[\]]+):(\S+)", value.strip())
    if not m:
        raise ValueError(f'must be "HOST:PORT" (e.g. "127.0.0.1:2121" or "[::1]:2121"), got {value!r}')
    host = m.group(1) or m.group(3)
    port_text = m.group(2) or m.group(4)
    if m.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    if not port_text.isdigit():
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (1-65535, or 0 for any free port)")
    return host, port


def format_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_listen(value: Any) -> None:
    parse_listen(value)


def _check_log_level(value: Any) -> None:
    if str(value).lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")


def _check_nonnegative(value: Any) -> None:
    if value < 0:
        raise ValueError(f"must be >= 0, got {value!r}")


@dataclass(frozen=True)
class Key:
    """One key of the schema: its type (for TOML and for environment strings), default, check."""

    type: type
    default: Any = None
    check: Callable[[Any], None] | None = None
    doc: str = ""


SCHEMA: dict[str, dict[str, Key]] = {
    "repository": {
        "path": Key(str, None, doc="repository directory (keys, catalog, packs)"),
        "catalog": Key(str, None, doc="catalog database URL (default: SQLite inside the repository)"),
        "cache": Key(str, None, doc="node-local chunk cache and staging for an s3:// repository"),
        "cache_size": Key(str, "1G", doc="bound of the chunk cache (LRU), e.g. 512M, 20G"),
        "access_key_id": Key(str, None, doc="S3 access key (default: AWS_ACCESS_KEY_ID)"),
        "secret_access_key": Key(str, None, doc="S3 secret key (default: AWS_SECRET_ACCESS_KEY)"),
    },
    "serve": {
        "grace_period": Key(float, 30.0, _check_nonnegative, "seconds uploads in flight may finish at shutdown"),
        "log_level": Key(str, "info", _check_log_level, "debug | info | warning | error"),
        "state_dir": Key(str, None, doc="status files and generated certificate (default: the repository)"),
    },
    "tls": {
        "cert": Key(str, None, doc="PEM certificate for FTPS/HTTPS (default: self-signed, generated)"),
        "key": Key(str, None, doc="PEM private key matching cert"),
    },
    "metrics": {
        "enabled": Key(bool, True, doc="serve Prometheus metrics"),
        "listen": Key(str, "127.0.0.1:9464", _check_listen, "HOST:PORT of the /metrics endpoint"),
    },
    # login throttling shared by every protocol (archive/throttle.py)
    "login": {
        "free_failures": Key(int, 5, _check_nonnegative, "failed logins of one user before backoff"),
        "free_failures_address": Key(int, 10, _check_nonnegative, "failed logins from one address before backoff"),
        "backoff": Key(float, 1.0, _check_nonnegative, "first lockout, seconds; doubles per further failure"),
        "max_backoff": Key(float, 60.0, _check_nonnegative, "longest lockout, seconds"),
        "window": Key(float, 900.0, _check_nonnegative, "seconds after which failures are forgotten"),
    },
}

#: Keys every protocol section has; adapter-specific ones come from the adapter's `config_keys`.
PROTOCOL_KEYS: dict[str, Key] = {
    "enabled": Key(bool, True, doc="serve this protocol"),
    "listen": Key(str, None, _check_listen, "HOST:PORT"),
}

#: Top-level sections that belong to other parts of archivectl; serve leaves them alone.
FOREIGN_SECTIONS: frozenset[str] = frozenset({"cli", "users", "shares", "retention", "store", "gc"})


@dataclass
class ProtocolInfo:
    """What discovery found for one protocol name: the class, or why it could not be loaded."""

    name: str
    cls: type | None = None
    error: str | None = None
    origin: str = ""

    def key_schema(self) -> dict[str, Key] | None:
        """Adapter-specific keys the class declares in ``config_keys`` (names, or name -> default);
        None when it declares nothing, in which case any key is passed through unchecked."""
        declared = getattr(self.cls, "config_keys", None) if self.cls is not None else None
        if declared is None:
            return None
        # Names are checked here; values are the adapter's to check (its constructor's
        # ValueError becomes a configuration error), since a default's type is only a hint
        # (a port range may be "60000-60100" or an array).
        if isinstance(declared, Mapping):
            return {k: Key(object, v) for k, v in declared.items()}
        return {k: Key(object, None) for k in declared}

    def default_listen(self) -> str:
        declared = getattr(self.cls, "default_listen", None) if self.cls is not None else None
        if declared:
            return str(declared)
        return format_listen(DEFAULT_HOST, DEFAULT_PORTS.get(self.name, 0))


@dataclass
class ServeConfig:
    """The validated, merged configuration: what the runner acts on."""

    source: str | None
    repository: dict[str, Any]
    serve: dict[str, Any]
    tls: dict[str, Any]
    metrics: dict[str, Any]
    login: dict[str, Any] = field(default_factory=dict)
    #: name -> section handed to the adapter (common keys + adapter keys, merged)
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: protocol names whose `enabled` was said explicitly (file, env or --only)
    explicit: set[str] = field(default_factory=set)

    def enabled_protocols(self) -> list[str]:
        return [n for n, sec in self.protocols.items() if sec.get("enabled")]


# --------------------------------------------------------------------------- loading

def load_file(path: str) -> dict[str, Any]:
    """Parse one TOML file; syntax errors name the line and column."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(f"cannot read {path}: permission denied") from None
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            reason = msg[: m.start()].strip()
            raise ConfigError(f"TOML syntax error at line {m.group(1)}, column {m.group(2)}: {reason}",
                              path) from None
        raise ConfigError(f"TOML syntax error: {msg}", path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text ({e.reason} at byte {e.start})", path) from None


def _coerce(text: str, key: Key) -> Any:
    """Environment strings to the key's type."""
    t = key.type
    if t is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"must be true or false, got {text!r}")
    if t is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"must be an integer, got {text!r}") from None
    if t is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {text!r}") from None
    if t is str:
        return text
    # adapter key: the default's type says how to read the string, if there is one
    if isinstance(key.default, bool):
        return _coerce(text, Key(bool))
    if isinstance(key.default, (int, float)):
        return _coerce(text, Key(type(key.default)))
    if isinstance(key.default, str):
        return text
    # otherwise a TOML literal (number, bool, array), else the raw string
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _type_ok(value: Any, key: Key) -> bool:
    if key.type is object:
        return True
    if key.type is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if key.type is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, key.type)


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "a table"}


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def env_overrides(env: Mapping[str, str], sections: Iterable[str]) -> list[tuple[str, str, str, str]]:
    """``EDGE_ARCHIVE_<SECTION>_<KEY>`` variables that name a known section:
    [(variable, section, key, text)].  Section names are matched longest first, so a
    section name may itself contain an underscore."""
    names = sorted(set(sections), key=len, reverse=True)
    found = []
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX):].lower()
        for sec in names:
            if rest.startswith(sec + "_") and len(rest) > len(sec) + 1:
                found.append((var, sec, rest[len(sec) + 1:], text))
                break
    return sorted(found)


def resolve(raw: dict[str, Any], protocols: Mapping[str, ProtocolInfo], *,
            source: str | None = None, env: Mapping[str, str] | None = None,
            only: list[str] | None = None, log_level: str | None = None) -> ServeConfig:
    """Validate the file's tables against the schema and the installed adapters, apply
    environment variables and flags, and fill defaults.  Raises ConfigError with every problem."""
    env = os.environ if env is None else env
    problems: list[str] = []
    proto_names = set(protocols) | KNOWN_PROTOCOLS
    merged: dict[str, dict[str, Any]] = {}
    explicit: set[str] = set()

    def schema_for(sec: str) -> dict[str, Key] | None:
        if sec in SCHEMA:
            return SCHEMA[sec]
        info = protocols.get(sec)
        extra = info.key_schema() if info else None
        if extra is None:
            return None
        return {**extra, **PROTOCOL_KEYS}     # the runner's checks of enabled/listen always apply

    # 1. the file
    for sec, table in raw.items():
        if sec in FOREIGN_SECTIONS:
            continue
        if sec not in SCHEMA and sec not in proto_names:
            problems.append(f"unknown section [{sec}]" + _suggest(sec, list(SCHEMA) + sorted(proto_names))
                            + f"; sections are {', '.join(list(SCHEMA) + sorted(proto_names))}")
            continue
        if not isinstance(table, dict):
            problems.append(f"{sec} must be a table ([{sec}]), got {table!r}")
            continue
        schema = schema_for(sec)
        common = SCHEMA.get(sec, PROTOCOL_KEYS)
        out = merged.setdefault(sec, {})
        for k, v in table.items():
            key = (schema or common).get(k)
            if key is None and schema is not None:
                problems.append(f"[{sec}] unknown key {k!r}" + _suggest(k, schema)
                                + f"; valid keys: {', '.join(schema)}")
                continue
            if key is not None and not _type_ok(v, key):
                problems.append(f"[{sec}] {k} must be {_TYPE_NAMES.get(key.type, key.type.__name__)}, got {v!r}")
                continue
            if key is not None and key.check is not None:
                try:
                    key.check(v)
                except ValueError as e:
                    problems.append(f"[{sec}] {k} {e}")
                    continue
            out[k] = v
            if k == "enabled" and sec in proto_names:
                explicit.add(sec)

    # 2. the environment
    for var, sec, k, text in env_overrides(env, list(SCHEMA) + sorted(proto_names)):
        schema = schema_for(sec)
        common = SCHEMA.get(sec, PROTOCOL_KEYS)
        key = (schema or common).get(k)
        if key is None and schema is not None:
            problems.append(f"environment {var}: [{sec}] has no key {k!r}" + _suggest(k, schema)
                            + f"; valid keys: {', '.join(schema)}")
            continue
        try:
            value = _coerce(text, key or Key(object))
            if key is not None and key.check is not None:
                key.check(value)
        except ValueError as e:
            problems.append(f"environment {var}: {e}")
            continue
        merged.setdefault(sec, {})[k] = value
        if k == "enabled" and sec in proto_names:
            explicit.add(sec)

    # 3. flags
    if log_level is not None:
        try:
            _check_log_level(log_level)
            merged.setdefault("serve", {})["log_level"] = log_level
        except ValueError as e:
            problems.append(f"--log-level {e}")
    if only is not None:
        for name in only:
            if name not in protocols:
                installed = ", ".join(sorted(protocols)) or "none"
                problems.append(f"--only {name}: no such protocol installed (installed: {installed})")
        for name in protocols:
            merged.setdefault(name, {})["enabled"] = name in only
            explicit.add(name)

    if problems:
        raise ConfigError(problems, source)

    def fill(sec: str) -> dict[str, Any]:
        out = {k: key.default for k, key in SCHEMA[sec].items()}
        out.update(merged.get(sec, {}))
        return out

    cfg = ServeConfig(source=source, repository=fill("repository"), serve=fill("serve"), tls=fill("tls"),
                      metrics=fill("metrics"), login=fill("login"), explicit=explicit)
    cfg.serve["log_level"] = str(cfg.serve["log_level"]).lower()
    cfg.serve["grace_period"] = float(cfg.serve["grace_period"])

    for name, info in sorted(protocols.items()):
        section: dict[str, Any] = {"enabled": True, "listen": info.default_listen()}
        extra = info.key_schema() or {}
        section.update({k: key.default for k, key in extra.items()
                        if key.default is not None and k not in PROTOCOL_KEYS})
        section.update(merged.get(name, {}))
        cfg.protocols[name] = section
    # sections for known-but-uninstalled protocols: an explicit "enabled = true" is an error
    for name in sorted(KNOWN_PROTOCOLS - set(protocols)):
        if merged.get(name, {}).get("enabled") is True and name in explicit:
            problems.append(f"[{name}] is enabled but the {name} adapter is not installed "
                            f"(no entry point {name!r} in group edge_archive.protocols)")
    if cfg.tls["cert"] and not cfg.tls["key"] or cfg.tls["key"] and not cfg.tls["cert"]:
        problems.append("[tls] cert and key must be given together")
    if problems:
        raise ConfigError(problems, source)
    return cfg
