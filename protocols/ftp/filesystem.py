"""pyftpdlib's AbstractedFS mapped onto ShareFS.

The FTP namespace of a session is virtual: ``/`` lists the shares the user is granted (as
folders), ``/<share>/<path>`` is ``<path>`` inside that share's ShareFS, and each share's
read-only ``.snapshots`` folder is reachable by name.  There are no real OS files: pyftpdlib's
"real" path is the virtual path itself, and stat results are built from archive Entries.

Path hygiene happens in :meth:`ArchiveFS.ftpnorm`: NUL and control characters, and any
``..`` that would climb above ``/``, turn the path into a sentinel that
:meth:`validpath` refuses, so pyftpdlib answers 550 before any command runs.
"""
from __future__ import annotations

import os
import re
import secrets
import stat as stat_mod
import time
from typing import Any, Iterator

from pyftpdlib.filesystems import AbstractedFS

from archive import Origin, errors

from .errors import FTPFilesystemError
from .files import ReadFile, WriteFile

REFUSED = "\x00refused"          # what ftpnorm returns for a path it will not serve
PERMS_RO = "elr"
PERMS_RW = "elradfmwMT"
SNAPSHOTS = ".snapshots"


#: control characters (C0 and DEL) a path may not contain; one regex search per check, where a
#: per-character generator cost ~10 us per path, 8 checks per uploaded file (ftp15)
_BAD_CHARS = re.compile("[\x00-\x1f\x7f]")


def _bad_chars(path: str) -> bool:
    return _BAD_CHARS.search(path) is not None


def entry_stat(entry: Any, writable: bool, dev: int = 0) -> os.stat_result:
    """An os.stat_result-like tuple for an archive Entry (what pyftpdlib's listers read)."""
    if entry.kind == "dir":
        mode = stat_mod.S_IFDIR | (0o755 if writable else 0o555)
        size = 0
    else:
        mode = stat_mod.S_IFREG | (0o644 if writable and not entry.readonly else 0o444)
        size = entry.size
    mtime = float(entry.mtime or 0)
    ctime = float(getattr(entry, "ctime", None) or mtime)
    return os.stat_result((mode, int(entry.node_id or 0), dev, 1, 0, 0, size, mtime, mtime, ctime))


def dir_stat(mtime: float = 0.0, ino: int = 0, dev: int = 0, writable: bool = False) -> os.stat_result:
    mode = stat_mod.S_IFDIR | (0o755 if writable else 0o555)
    return os.stat_result((mode, ino, dev, 1, 0, 0, 0, mtime, mtime, mtime))


class ArchiveFS(AbstractedFS):
    """One FTP session's view of the archive (created by pyftpdlib at login)."""

    def __init__(self, root: str, cmd_channel: Any) -> None:
        super().__init__("/", cmd_channel)
        self._session = cmd_channel.edge_session     # set by the handler before login completes
        self._shares: dict[str, Any] = {}
        self._gen = self._session.login.generation

    # --- session helpers -------------------------------------------------------------

    @property
    def grants(self) -> dict[str, str]:
        return self._session.grants

    def _share(self, name: str, path: str) -> Any:
        gen = self._session.login.generation     # moved: grants may differ, reopen the shares
        if gen != self._gen:
            self._shares.clear()
            self._gen = gen
        fs = self._shares.get(name)
        if fs is None:
            if name not in self.grants:
                raise FTPFilesystemError(errors.NotFound(name), path)
            try:
                fs = self._session.open_share(name)
            except errors.ArchiveError as exc:
                raise FTPFilesystemError(exc, path) from exc
            self._shares[name] = fs
        return fs

    @staticmethod
    def split(path: str) -> tuple[str | None, str]:
        """``/share/a/b`` -> (``share``, ``/a/b``); ``/`` -> (None, ``/``)."""
        if path == "/" or not path:
            return None, "/"
        parts = path.lstrip("/").split("/", 1)
        return parts[0], "/" + (parts[1] if len(parts) > 1 else "")

    def _resolve(self, path: str) -> tuple[Any | None, str, str | None]:
        if not self.validpath(path):
            raise FTPFilesystemError(errors.InvalidPath(path), path)
        name, rel = self.split(path)
        if name is None:
            return None, "/", None
        return self._share(name, path), rel, name

    def perms_for(self, path: str) -> str:
        """pyftpdlib permission letters for a path: ro at / and in snapshots and ro shares."""
        if not self.validpath(path):
            return ""
        name, rel = self.split(path)
        if name is None or self.grants.get(name) != "rw":
            return PERMS_RO
        if rel == "/" or rel.split("/")[1] == SNAPSHOTS:
            # the share root itself cannot be deleted/renamed, but files can be created in it
            return PERMS_RO if rel != "/" else PERMS_RO + "amwMT"
        return PERMS_RW

    def _call(self, path: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.ArchiveError as exc:
            raise FTPFilesystemError(exc, path) from exc

    # --- path conversion -------------------------------------------------------------

    def ftpnorm(self, ftppath: str) -> str:
        if _bad_chars(ftppath):
            return REFUSED
        base = [] if ftppath.startswith("/") else [p for p in self.cwd.split("/") if p]
        for part in ftppath.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not base:
                    if ftppath.strip("/") == "..":       # plain CDUP at the top: stay there
                        continue
                    return REFUSED
                base.pop()
            else:
                base.append(part)
        return "/" + "/".join(base)

    def ftp2fs(self, ftppath: str) -> str:
        return self.ftpnorm(ftppath)

    def fs2ftp(self, fspath: str) -> str:
        return "<refused path>" if fspath == REFUSED else fspath

    def validpath(self, path: str) -> bool:
        return path != REFUSED and path.startswith("/") and not _bad_chars(path)

    def realpath(self, path: str) -> str:
        return path

    # --- files -----------------------------------------------------------------------

    def open(self, filename: str, mode: str) -> Any:
        fs, rel, _ = self._resolve(filename)
        if fs is None or rel == "/":
            raise FTPFilesystemError(errors.IsADirectory(filename), filename)
        tracker = self._session.tracker
        if "r" in mode and "+" not in mode:
            return ReadFile(self._call(filename, fs.open_read, rel), filename, tracker)
        on_finish = self._session.upload_finished
        if "a" in mode:
            try:
                sink = fs.append(rel)
            except errors.NotFound:
                sink = self._call(filename, fs.open_write, rel)
            except errors.ArchiveError as exc:
                raise FTPFilesystemError(exc, filename) from exc
            return WriteFile(sink, filename, tracker, on_finish=on_finish)
        if "+" in mode:     # REST + STOR: rewrite from an offset, keep what is before it
            sink = self._call(filename, fs.open_update, rel, truncate=False, create=True)
            return WriteFile(sink, filename, tracker, offset=0, on_finish=on_finish)
        return WriteFile(self._call(filename, fs.open_write, rel), filename, tracker, on_finish=on_finish)

    def unique_name(self, dirpath: str, prefix: str) -> str:
        """A name in ``dirpath`` nothing uses yet (STOU)."""
        fs, rel, _ = self._resolve(dirpath)
        for _ in range(20):
            name = f"{prefix}{secrets.token_hex(4)}"
            target = (rel.rstrip("/") + "/" + name)
            if fs is None or not self._call(dirpath, fs.exists, target):
                return (dirpath.rstrip("/") + "/" + name)
        raise FTPFilesystemError(errors.Exists(dirpath), dirpath)

    def mkstemp(self, suffix: str = "", prefix: str = "", dir: str | None = None, mode: str = "wb") -> Any:
        path = self.unique_name(dir or self.cwd, prefix)
        return self.open(path, "wb")

    # --- namespace operations ----------------------------------------------------------

    def chdir(self, path: str) -> None:
        if not self.isdir(path):
            self.stat(path)                      # raises the precise error if missing
            raise FTPFilesystemError(errors.NotADirectory(path), path)
        self.cwd = path

    def mkdir(self, path: str) -> None:
        fs, rel, _ = self._resolve(path)
        if fs is None or rel == "/":
            raise FTPFilesystemError(errors.PermissionDenied(path), path)
        self._call(path, fs.mkdir, rel)

    def rmdir(self, path: str) -> None:
        fs, rel, _ = self._resolve(path)
        if fs is None or rel == "/":
            raise FTPFilesystemError(errors.PermissionDenied(path), path)
        self._call(path, fs.rmdir, rel)

    def remove(self, path: str) -> None:
        fs, rel, _ = self._resolve(path)
        if fs is None or rel == "/":
            raise FTPFilesystemError(errors.IsADirectory(path), path)
        self._call(path, fs.remove, rel)

    def rename(self, src: str, dst: str) -> None:
        sfs, srel, sname = self._resolve(src)
        dfs, drel, dname = self._resolve(dst)
        if sfs is None or dfs is None or srel == "/" or drel == "/":
            raise FTPFilesystemError(errors.PermissionDenied(dst), dst)
        if sname != dname:
            raise FTPFilesystemError(errors.Conflict("cannot rename across shares"), dst)
        # Unix rename semantics: a file replaces a file (as a new version, history kept);
        # nothing ever replaces a folder.
        overwrite = False
        try:
            target = sfs.stat(drel)
        except errors.NotFound:
            target = None
        except errors.ArchiveError as exc:
            raise FTPFilesystemError(exc, dst) from exc
        if target is not None:
            if target.is_dir:
                raise FTPFilesystemError(errors.Exists(dst), dst)
            source = self._call(src, sfs.stat, srel)
            if source.is_dir:
                raise FTPFilesystemError(errors.Exists(dst), dst)
            overwrite = True
        self._call(dst, sfs.rename, srel, drel, overwrite=overwrite)

    def chmod(self, path: str, mode: int) -> None:
        raise FTPFilesystemError(errors.PermissionDenied("chmod is not supported"), path)

    def utime(self, path: str, timeval: float, version: tuple[int, int] | None = None) -> None:
        """Set the modification time (MFMT); `version`: (node, number) of the version this
        session's STOR just made there, which gets the time (ShareFS.set_times)."""
        fs, rel, _ = self._resolve(path)
        if fs is None:
            raise FTPFilesystemError(errors.PermissionDenied(path), path)
        self._call(path, fs.set_times, rel, float(timeval), version)

    # --- stat ------------------------------------------------------------------------

    def entry(self, path: str) -> Any | None:
        """The archive Entry for path (None for the virtual root)."""
        fs, rel, _ = self._resolve(path)
        if fs is None:
            return None
        return self._call(path, fs.stat, rel)

    def stat(self, path: str) -> os.stat_result:
        fs, rel, name = self._resolve(path)
        if fs is None:
            return dir_stat(time.time())
        entry = self._call(path, fs.stat, rel)
        return entry_stat(entry, "w" in self.perms_for(path))

    lstat = stat

    def isfile(self, path: str) -> bool:
        try:
            e = self.entry(path)
        except FTPFilesystemError:
            return False
        return e is not None and not e.is_dir

    def isdir(self, path: str) -> bool:
        try:
            e = self.entry(path)
        except FTPFilesystemError:
            return False
        return e is None or e.is_dir

    def islink(self, path: str) -> bool:
        return False

    def lexists(self, path: str) -> bool:
        try:
            self.entry(path)
        except FTPFilesystemError:
            return False
        return True

    def getsize(self, path: str) -> int:
        e = self.entry(path)
        return 0 if e is None else int(e.size)

    def getmtime(self, path: str) -> float:
        e = self.entry(path)
        return time.time() if e is None else float(e.mtime)

    def get_user_by_uid(self, uid: int) -> str:
        return "owner"

    def get_group_by_gid(self, gid: int) -> str:
        return "group"

    # --- listings (streamed from ShareFS, one query per folder) -----------------------

    def list_entries(self, path: str) -> Iterator[tuple[str, os.stat_result]]:
        """(name, stat) of each child of a folder, in name order, streamed."""
        fs, rel, _ = self._resolve(path)
        if fs is None:
            now = time.time()
            for share in sorted(self.grants):
                yield share, dir_stat(now, writable=self.grants[share] == "rw")
            return
        entries = self._call(path, fs.listdir, rel)
        writable = "w" in self.perms_for(path.rstrip("/") + "/x")
        it = iter(entries)
        while True:
            try:
                e = next(it)
            except StopIteration:
                return
            except errors.ArchiveError as exc:
                raise FTPFilesystemError(exc, path) from exc
            yield e.name, entry_stat(e, writable)

    def listdir(self, path: str) -> list[str]:
        return [name for name, _ in self.list_entries(path)]

    def format_list_entries(self, items: Any) -> Iterator[bytes]:
        """``ls -l`` lines for (name, stat) pairs (LIST); like pyftpdlib's, minus the stats."""
        timefunc = time.gmtime if self.cmd_channel.use_gmt_times else time.localtime
        now = time.time()
        months = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
        enc, errs = self.cmd_channel.encoding, self.cmd_channel.unicode_errors
        for name, st in items:
            t = timefunc(st.st_mtime)
            fmt = "%d  %Y" if now - st.st_mtime > 180 * 86400 else "%d %H:%M"
            line = "%s %3s %-8s %-8s %8s %s %s %s\r\n" % (
                stat_mod.filemode(st.st_mode), 1, "owner", "group", st.st_size,
                months[t.tm_mon], time.strftime(fmt, t), name)
            yield line.encode(enc, errs)

    def format_mlsx_entries(self, items: Any, facts: list[str], basedir: str) -> Iterator[bytes]:
        """RFC 3659 fact lines for (name, stat) pairs (MLSD/MLST)."""
        timefunc = time.gmtime if self.cmd_channel.use_gmt_times else time.localtime
        enc, errs = self.cmd_channel.encoding, self.cmd_channel.unicode_errors
        for name, st in items:
            isdir = stat_mod.S_ISDIR(st.st_mode)
            child = basedir.rstrip("/") + "/" + name if basedir else name
            perms = self.perms_for(child)
            out: dict[str, Any] = {}
            if "type" in facts:
                out["type"] = "dir" if isdir else "file"
            if "perm" in facts:
                if isdir:
                    p = "el" + ("cmp" if "w" in perms else "")
                    p += "df" if "d" in perms else ""
                else:
                    p = "r" + ("awdf" if "w" in perms else "")
                out["perm"] = p
            if "size" in facts:
                out["size"] = st.st_size
            if "modify" in facts:
                out["modify"] = time.strftime("%Y%m%d%H%M%S", timefunc(st.st_mtime))
            if "create" in facts:
                out["create"] = time.strftime("%Y%m%d%H%M%S", timefunc(st.st_ctime))
            if "unique" in facts:
                out["unique"] = f"{st.st_dev:x}g{st.st_ino:x}"
            if "unix.mode" in facts:
                out["unix.mode"] = oct(st.st_mode & 0o777)
            line = "".join(f"{k}={out[k]};" for k in sorted(out)) + f" {name}\r\n"
            yield line.encode(enc, errs)


class Session:
    """What one logged-in FTP session knows: who, from where, and its Login (whose grants
    follow revocations: the handler re-validates it before every command)."""

    def __init__(self, state: Any, user: Any, address: str, login: Any = None) -> None:
        self.state = state
        self.user = user
        self.address = address
        self.login = login if login is not None else state.repo.login_for(user)
        self.tracker = state.tracker

    @property
    def grants(self) -> dict[str, str]:
        return self.login.grants

    def open_share(self, name: str) -> Any:
        return self.login.share(name, Origin("ftp", self.address, user=self.user.name))

    def upload_finished(self, wf: WriteFile, version: Any, exc: BaseException | None) -> None:
        self.state.upload_finished(self, wf, version, exc)
