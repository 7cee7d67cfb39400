"""What an FTP session owes the access rules and the counters, as one handler mixin.

* Every command of a logged-in session first re-validates its login (``Login.validate``: one
  catalog read while nothing changed), except those that only set up the next transfer
  (PASV, EPSV, TYPE, MODE, STRU, REST, ALLO: the transfer's own command is checked).  A removed user or a changed password ends the
  session with ``421``; a revoked or downgraded grant changes the session's grants, so the
  very next command sees the share vanish or turn read-only (pyftpdlib's own permission
  check then answers 550).  Uploads in flight are re-checked by the core at commit.
* ``disconnect`` is reported when the control connection closes (the sessions gauge goes
  down), and every download, complete or not, is counted (``download`` event, bytes sent)
  and audited (``download`` / ``download_incomplete``) through the core's batched audit.
"""
from __future__ import annotations

from typing import Any

from archive import Origin, errors

from .filesystem import ArchiveFS


#: commands that read nothing of the archive and only set up the transfer that follows, which
#: is checked itself (lftp sends PASV before every STOR: one catalog read less per file)
_NO_CHECK = frozenset({"QUIT", "ABOR", "PASV", "EPSV", "TYPE", "MODE", "STRU", "REST", "ALLO"})


class AccessMixin:
    """Put before EdgeHandlerMixin in the handler's bases (see handler.build_handler)."""

    _edge_gone = False

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        session = getattr(self, "edge_session", None)
        if self.authenticated and session is not None and cmd not in _NO_CHECK:
            try:
                session.login.validate()
            except errors.AuthFailed as exc:
                self.edge_state.event("access_ended", user=session.user.name, address=self.remote_ip,
                                      reason=str(exc))
                self.respond(f"421 Access ended: {exc}.")
                self.close_when_done()
                return
            except errors.ArchiveError:
                self.respond("421 Cannot check access now; try again.")
                self.close_when_done()
                return
        super().pre_process_command(line, cmd, arg)

    def close(self) -> None:
        first = not self._edge_gone and not getattr(self, "_closed", False)
        self._edge_gone = True
        super().close()
        if first and self.remote_ip:
            self.edge_state.event("disconnect", address=self.remote_ip,
                                  user=getattr(self, "username", None) or None)

    # --- downloads ---------------------------------------------------------------------

    def _download(self, filename: str, complete: bool) -> None:
        dc = getattr(self, "data_channel", None)
        sent = dc.get_transmitted_bytes() if dc is not None else 0
        session = getattr(self, "edge_session", None)
        user = session.user.name if session is not None else None
        self.edge_state.event("download", user=user, address=self.remote_ip, path=filename,
                              size=sent, complete=complete)
        share, rel = ArchiveFS.split(filename)
        try:
            self.edge_state.repo.audit_later("download" if complete else "download_incomplete",
                                             Origin("ftp", self.remote_ip, user), share, rel,
                                             detail=f"{sent} bytes")
        except Exception:            # auditing must never break a session
            pass

    def on_file_sent(self, file: str) -> None:
        self._download(file, True)

    def on_incomplete_file_sent(self, file: str) -> None:
        self._download(file, False)


def login(repo: Any, username: str, password: str, address: str, cache: Any = None) -> Any:
    """The catalog login for USER/PASS (anonymous names get the anonymous login); `cache`:
    the adapter's LoginCache (state.py) of verified passwords."""
    if username.lower() in ("anonymous", "ftp"):
        return repo.login_anonymous()
    # While the user or the address is locked out, every login goes to repo.login (which
    # refuses it): a remembered password must not tell a guesser that a guess was right.
    if cache is not None and repo.throttle.retry_after(address, username) <= 0:
        hit = cache.get(username, password)
        if hit is not None:
            return hit
    session = repo.login(username, password, Origin("ftp", address, username))
    if cache is not None:
        cache.put(username, password, session)
    return session
