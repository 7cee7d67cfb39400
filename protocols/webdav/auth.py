"""HTTP authentication against the catalog's users (wsgidav domain controller).

Basic: ``repo.login(name, password, origin)``, which throttles guesses per user and per
address (shared with every other protocol of the process) and audits failures and lockouts.
The catalog stores slow salted hashes, so a verified password is remembered (under an HMAC
of (name, password) keyed by a per-process random key, never the password itself) for
``cache_seconds`` (default 300): a client sending Basic credentials on each of 10,000 small
PUTs pays the slow hash once.  What is remembered is an ``archive.access.Login``, and every
request re-validates it (one catalog read while nothing changed), so a revoked grant, a
removed user or a changed password takes effect on the very next request, also when the
change was made by another process (``archivectl``, another ``serve``).

Anonymous: a request without credentials that only reads (GET, HEAD, PROPFIND, OPTIONS)
inside a share created with ``--anonymous`` is served read-only as the anonymous user;
everything else still gets the 401 challenge, so clients with an account can log in.

Digest (RFC 2617/7616, MD5): needs HA1 = MD5(user:realm:password), which cannot be derived
from a slow hash.  It is offered only when the repository can provide it
(``repo.digest_ha1(name, realm)``); see the adapter's docstring.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from typing import Any

from wsgidav.dc.base_dc import BaseDomainController

from archive import ANONYMOUS, Origin, errors
from archive.access import LoginThrottled

from .names import split_url_path

REALM = "Edge Archive"
#: methods an anonymous client may use on an anonymous share
ANONYMOUS_METHODS = frozenset({"GET", "HEAD", "PROPFIND", "OPTIONS"})


def _is_loopback(addr: str | None) -> bool:
    try:
        return ipaddress.ip_address((addr or "").split("%")[0]).is_loopback
    except ValueError:
        return False


class CatalogDomainController(BaseDomainController):
    """Authenticates every request; the share check itself happens in the provider."""

    MAX_CACHED = 10_000

    def __init__(self, wsgidav_app, config: dict) -> None:
        super().__init__(wsgidav_app, config)
        opts = config["edge_archive"]
        self.repo = opts["repo"]
        self.ctx = opts.get("ctx")
        self.cache_seconds = float(opts.get("auth_cache_seconds", 300.0))
        #: True: Basic only over HTTPS; "remote": Basic over plain HTTP only from loopback
        self.basic_needs_tls = opts.get("require_tls_for_basic", False)
        self._key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, Any]] = {}
        self._anonymous: Any = None
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return "CatalogDomainController"

    def get_domain_realm(self, path_info, environ):
        return REALM

    def require_authentication(self, realm, environ):
        """False (serve without login, as ANONYMOUS) only for reads inside an anonymous share."""
        if environ is None:                     # wsgidav asks once at startup
            return True
        if environ.get("HTTP_AUTHORIZATION") or environ.get("REQUEST_METHOD") not in ANONYMOUS_METHODS:
            return True
        share, _ = split_url_path(environ.get("PATH_INFO", "/"))
        if share is None:
            return True
        login = self._anonymous_login()
        if login is None or share not in login.grants:
            return True
        environ["edge.user"] = ANONYMOUS
        environ["edge.login"] = login
        return False

    def _anonymous_login(self) -> Any:
        try:
            if self._anonymous is None:
                self._anonymous = self.repo.login_for(ANONYMOUS)
            return self._anonymous.validate()
        except errors.ArchiveError:
            return None

    def _event(self, environ, event: str, user: str, **fields: Any) -> None:
        if self.ctx is not None:
            self.ctx.event("webdav", event, user=user, address=environ.get("REMOTE_ADDR"), **fields)

    def basic_auth_user(self, realm, user_name, password, environ):
        address = environ.get("REMOTE_ADDR")
        if self.basic_needs_tls and environ.get("wsgi.url_scheme") != "https" and not (
                self.basic_needs_tls == "remote" and _is_loopback(address)):
            self._event(environ, "login_failed", user_name, reason="basic auth needs TLS")
            return False
        key = hmac.new(self._key, f"{user_name}\0{password}".encode("utf-8", "surrogatepass"),
                       hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        # While the user or the address is locked out every login goes to repo.login (throttled,
        # audited): a remembered password must not confirm an attacker's right guess then.
        if hit is not None and hit[0] > now and self.repo.throttle.retry_after(address, user_name) <= 0:
            try:
                login = hit[1].validate()
            except errors.AuthFailed:          # removed, disabled or password changed
                with self._lock:
                    self._cache.pop(key, None)
            except errors.ArchiveError:
                return False
            else:
                environ["edge.user"] = login.user
                environ["edge.login"] = login
                return True
        try:
            login = self.repo.login(user_name, password, Origin("webdav", address, user_name))
        except LoginThrottled as exc:
            self._event(environ, "login_failed", user_name, reason="throttled",
                        retry_after=round(exc.retry_after, 1))
            return False
        except errors.ArchiveError:
            self._event(environ, "login_failed", user_name)
            return False
        with self._lock:
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.clear()
            self._cache[key] = (now + self.cache_seconds, login)
        environ["edge.user"] = login.user
        environ["edge.login"] = login
        self._event(environ, "login_ok", user_name)
        return True

    def supports_http_digest_auth(self):
        return hasattr(self.repo, "digest_ha1")

    def digest_auth_user(self, realm, user_name, environ):
        try:
            ha1 = self.repo.digest_ha1(user_name, realm)
            login = self.repo.login_for(user_name)
        except (AttributeError, errors.ArchiveError):
            return False
        if not ha1:
            return False
        environ["edge.user"] = login.user
        environ["edge.login"] = login
        return ha1
