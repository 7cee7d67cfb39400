"""HTTP authentication against the catalog's users (wsgidav domain controller).

Basic: ``repo.authenticate(name, password)``.  The catalog stores slow salted hashes, so a
successful login is remembered for ``cache_seconds`` (default 60) under an HMAC of
(name, password) keyed by a per-process random key: a client sending Basic credentials on
each of 10,000 small PUTs pays the slow hash once, a wrong password is never cached, and a
changed password takes effect within ``cache_seconds``.

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

from archive import errors

REALM = "Edge Archive"


def _is_loopback(addr: str | None) -> bool:
    try:
        return ipaddress.ip_address((addr or "").split("%")[0]).is_loopback
    except ValueError:
        return False


class CatalogDomainController(BaseDomainController):
    """Authenticates every request; the share check itself happens in the provider."""

    def __init__(self, wsgidav_app, config: dict) -> None:
        super().__init__(wsgidav_app, config)
        opts = config["edge_archive"]
        self.repo = opts["repo"]
        self.ctx = opts.get("ctx")
        self.cache_seconds = float(opts.get("auth_cache_seconds", 60.0))
        #: True: Basic only over HTTPS; "remote": Basic over plain HTTP only from loopback
        self.basic_needs_tls = opts.get("require_tls_for_basic", False)
        self._key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return "CatalogDomainController"

    def get_domain_realm(self, path_info, environ):
        return REALM

    def require_authentication(self, realm, environ):
        return True

    def _event(self, environ, event: str, user: str) -> None:
        if self.ctx is not None:
            self.ctx.event("webdav", event, user=user, address=environ.get("REMOTE_ADDR"))

    def basic_auth_user(self, realm, user_name, password, environ):
        if self.basic_needs_tls and environ.get("wsgi.url_scheme") != "https" and not (
                self.basic_needs_tls == "remote" and _is_loopback(environ.get("REMOTE_ADDR"))):
            self._event(environ, "login_failed", user_name)
            return False
        key = hmac.new(self._key, f"{user_name}\0{password}".encode("utf-8", "surrogatepass"),
                       hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            environ["edge.user"] = hit[1]
            return True
        try:
            user = self.repo.authenticate(user_name, password)
        except errors.ArchiveError:
            self._event(environ, "login_failed", user_name)
            return False
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[key] = (now + self.cache_seconds, user)
        environ["edge.user"] = user
        self._event(environ, "login_ok", user_name)
        return True

    def supports_http_digest_auth(self):
        return hasattr(self.repo, "digest_ha1")

    def digest_auth_user(self, realm, user_name, environ):
        try:
            ha1 = self.repo.digest_ha1(user_name, realm)
            user = self.repo.user(user_name)
        except (AttributeError, errors.ArchiveError):
            return False
        if not ha1:
            return False
        environ["edge.user"] = user
        return ha1
