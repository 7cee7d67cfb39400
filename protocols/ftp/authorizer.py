"""Authentication against the catalog, permissions from the session's grants.

pyftpdlib asks one authorizer object (a class attribute of the handler) about everything.
Before login that is :class:`CatalogAuthorizer` (``repo.login``: throttled, audited); after
login the handler installs a :class:`SessionAuthorizer` on itself, which answers
``has_perm`` from that session's current grants (re-validated before every command) and
path (ro share, ``.snapshots``, the virtual root are read-only), so pyftpdlib's own
permission check yields the 550 replies.
"""
from __future__ import annotations

from typing import Any

from pyftpdlib.exceptions import AuthenticationFailed

from archive import errors
from archive.access import LoginThrottled


class CatalogAuthorizer:
    """Users and passwords come from the archive catalog."""

    msg_login = "Welcome to Edge Archive."
    msg_quit = "Goodbye."

    def __init__(self, repo: Any) -> None:
        self.repo = repo

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        # repo.login throttles per user and per address across every protocol and audits
        # failures; anonymous logins see, read-only, only the shares created with --anonymous.
        from .access import login
        try:
            state = getattr(handler, "edge_state", None)
            session = login(self.repo, username, password, handler.remote_ip,
                            state.logins if state is not None else None)
        except LoginThrottled as exc:
            raise AuthenticationFailed(f"Too many failed logins; try again in {exc.retry_after:.0f} s.") from exc
        except errors.ArchiveError as exc:       # AuthFailed, or anything else: no login
            msg = "Anonymous access is not enabled." if username.lower() in ("anonymous", "ftp") \
                else "Authentication failed."
            raise AuthenticationFailed(msg) from exc
        handler.edge_login = session
        handler.edge_user = session.user

    def get_home_dir(self, username: str) -> str:
        return "/"

    def get_msg_login(self, username: str) -> str:
        return self.msg_login

    def get_msg_quit(self, username: str) -> str:
        return self.msg_quit

    def has_user(self, username: str) -> bool:
        return True

    def get_perms(self, username: str) -> str:
        return ""

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return False

    def impersonate_user(self, username: str, password: str) -> None:
        pass

    def terminate_impersonation(self, username: str) -> None:
        pass


class SessionAuthorizer(CatalogAuthorizer):
    """Permissions of one logged-in session (its ArchiveFS knows the grants)."""

    def __init__(self, repo: Any, fs: Any) -> None:
        super().__init__(repo)
        self.fs = fs

    def get_perms(self, username: str) -> str:
        return self.fs.perms_for(self.fs.cwd)

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        if path is None:
            return perm in self.fs.perms_for(self.fs.cwd)
        return perm in self.fs.perms_for(path)
