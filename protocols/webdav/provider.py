"""wsgidav resources over ShareFS: the whole WebDAV namespace is one provider mounted at "/".

``/`` lists the shares granted to the authenticated user, ``/<share>/<path>`` maps to
``repo.share(<share>).stat(<path>)``.  Nothing here touches SQL or packs; every core call
goes through :func:`errors.mapped` so archive errors become HTTP codes in one table.

Decisions worth knowing:

* **PUT** streams the body into ``fs.open_write``; the Writer is committed only when the
  whole body arrived (byte count checked against Content-Length; a broken chunked body
  raises), otherwise aborted: a dropped upload never becomes a version.
* **Lock-null resources** (LOCK on an unmapped URL) are *not* stored as empty files: the
  lock itself (in the catalog) makes the name exist as an empty, locked resource that shows
  up in PROPFIND; the first PUT creates the real file, UNLOCK without PUT makes it vanish.
  So the LOCK-then-PUT dance of Office never leaves a spurious 0-byte version.
* **Dead properties** live in the catalog (``fs.get_props``/``fs.set_props``), including
  Windows' ``Win32*Time`` properties; ``Win32LastModifiedTime`` also sets the file's mtime.
* **COPY** uses ``fs.copy`` (no data rewritten), **MOVE** uses ``fs.rename`` (history and
  node identity kept), **DELETE** writes tombstones (restorable); all handled natively.
* **Junk files** (``._*``, ``.DS_Store``) are stored or, with ``junk_policy = "ignore"``,
  accepted by PUT and dropped (GET then answers 404).
"""
from __future__ import annotations

import email.utils
import unicodedata
from typing import Any
from urllib.parse import unquote

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_NOT_FOUND,
    PRECONDITION_CODE_PropfindFiniteDepth,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider
from wsgidav.util import etree
from wsgidav import xml_tools

from archive import ANONYMOUS, Origin, errors

from .downloads import CountedReader, report_download
from .errors import dav_error, mapped
from .names import SNAPSHOTS, is_junk, lock_root, split_url_path
from .put import PutStream
from .sendbody import DIRECT_KEY
from .tree import copy_tree, remove_tree

MS_NS = "{urn:schemas-microsoft-com:}"
WRITE_METHODS = {"PUT", "DELETE", "MKCOL", "PROPPATCH", "LOCK", "MOVE"}


class Session:
    """Per-request state: the authenticated user, its ShareFS objects, cached usage."""

    def __init__(self, provider: "EdgeProvider", environ: dict) -> None:
        self.provider = provider
        self.environ = environ
        # no login in environ means no authentication happened: never the admin (user=None)
        self.login = environ.get("edge.login") or provider.anonymous_login()
        self.user = self.login.user
        self.address = environ.get("REMOTE_ADDR")
        self._fs: dict[str, Any] = {}
        self._usage: dict[str, tuple[int, int | None]] = {}
        self._stat: dict = {}

    @classmethod
    def of(cls, provider: "EdgeProvider", environ: dict) -> "Session":
        s = environ.get("edge.session")
        if s is None:
            s = environ["edge.session"] = cls(provider, environ)
        return s

    def fs(self, share: str):
        """ShareFS for ``share`` or None when it does not exist or is not granted."""
        if share not in self._fs:
            self._fs[share] = self.provider.share_fs(self.login, share, self.address)
        return self._fs[share]

    def stat(self, fs, rel: str):
        """Entry at ``rel`` (None when missing), remembered for the rest of the request
        (wsgidav resolves the same resource and its parent several times per request);
        every change made through this adapter forgets it (:meth:`changed`)."""
        key = (id(fs), rel)
        if key not in self._stat:
            try:
                self._stat[key] = fs.stat(rel)
            except errors.NotFound:
                self._stat[key] = None
        return self._stat[key]

    def changed(self) -> None:
        self._stat.clear()
        self._usage.clear()

    def shares(self) -> list[tuple[str, str]]:
        return list(self.login.grants.items())

    def usage(self, share: str) -> tuple[int, int | None]:
        if share not in self._usage:
            fs = self.fs(share)
            with mapped():
                self._usage[share] = fs.usage()
        return self._usage[share]


# ----------------------------------------------------------------------------------------
# shared behaviour of resources inside a share
# ----------------------------------------------------------------------------------------
class _InShare:
    """Mixin for resources that live in a share: props, locks, read-only checks, copy/move."""

    share: str
    rel: str
    fs: Any
    entry: Any
    path: str
    environ: dict
    provider: "EdgeProvider"

    def _init_share(self, share: str, rel: str, fs, entry, props: dict | None = None) -> None:
        self.share, self.rel, self.fs, self.entry = share, rel, fs, entry
        self._props = props

    @property
    def session(self) -> Session:
        return Session.of(self.provider, self.environ)

    @property
    def readonly(self) -> bool:
        return (not self.fs.writable) or bool(getattr(self.entry, "readonly", False)) \
            or self.rel == "/" + SNAPSHOTS or self.rel.startswith("/" + SNAPSHOTS + "/")

    def _check_writable(self) -> None:
        if self.readonly:
            raise DAVError(HTTP_FORBIDDEN, context_info="read-only")

    # -- times -----------------------------------------------------------------------
    def get_creation_date(self):
        return getattr(self.entry, "ctime", None) if self.entry is not None else None

    def get_last_modified(self):
        return self.entry.mtime if self.entry is not None else None

    def set_last_modified(self, dest_path, time_stamp, *, dry_run):
        self._check_writable()
        if isinstance(time_stamp, str):
            ts = util.parse_time_string(time_stamp)
            if ts is None:
                raise DAVError(HTTP_BAD_REQUEST, context_info="bad date")
        else:
            ts = float(time_stamp)
        if not dry_run:
            with mapped():
                self.fs.set_times(self.rel, float(ts))
            self.session.changed()
        return True

    # -- properties --------------------------------------------------------------------
    def dead_props(self) -> dict[str, str]:
        if self._props is None:
            if self.entry is None:
                self._props = {}
            else:
                with mapped():
                    self._props = dict(self.fs.get_props(self.rel))
        return self._props

    def get_property_names(self, *, is_allprop):
        names = ["{DAV:}resourcetype", "{DAV:}displayname"]
        if self.get_creation_date() is not None:
            names.append("{DAV:}creationdate")
        if self.get_last_modified() is not None:
            names.append("{DAV:}getlastmodified")
        if not self.is_collection:
            names += ["{DAV:}getcontentlength", "{DAV:}getcontenttype"]
            if self.get_etag() is not None:
                names.append("{DAV:}getetag")
        elif not is_allprop:
            # RFC 4331: quota properties are not returned by allprop.
            names += ["{DAV:}quota-used-bytes"]
            if self.get_available_bytes() is not None:
                names.append("{DAV:}quota-available-bytes")
        names += ["{DAV:}lockdiscovery", "{DAV:}supportedlock"]
        names += list(self.dead_props().keys())
        return names

    def get_property_value(self, name):
        if name.startswith("{DAV:}"):
            return super().get_property_value(name)
        value = self.dead_props().get(name)
        if value is None:
            raise DAVError(HTTP_NOT_FOUND)
        return xml_tools.string_to_xml(value)

    def set_property_value(self, name, value, *, dry_run=False):
        if name.startswith("{DAV:}"):
            return super().set_property_value(name, value, dry_run=dry_run)
        self._check_writable()
        if self.entry is None:
            raise DAVError(HTTP_CONFLICT, context_info="no properties on a lock-null resource")
        text = None if value is None else etree.tostring(value).decode("utf-8")
        if name == MS_NS + "Win32LastModifiedTime" and value is not None and value.text:
            ts = _parse_http_date(value.text)
            if ts is not None and not dry_run:
                with mapped():
                    self.fs.set_times(self.rel, ts)
                self.session.changed()
        if not dry_run:
            with mapped():
                self.fs.set_props(self.rel, {name: text})
            if self._props is not None:
                if text is None:
                    self._props.pop(name, None)
                else:
                    self._props[name] = text
        return True

    _writer = None
    _put_etag: str | None = None

    def _finish_put(self, with_errors: bool, new: bool) -> None:
        """After wsgidav's PUT loop: abort on error; otherwise the version is committed
        (by PutStream.close) and the response ETag is that version's hash."""
        w = self._writer
        if w is None:
            return
        if with_errors:
            w.abort()
        self.session.changed()
        if w.version is not None:
            self._put_etag = w.version.etag
            if new and w.version.number > 1:
                # The core continues the history of a deleted file of the same name; its
                # dead properties must not come back with it (RFC 4918: a new resource
                # starts without dead properties).
                with mapped():
                    stale = self.fs.get_props(self.rel)
                    if stale:
                        self.fs.set_props(self.rel, {k: None for k in stale})
        self.provider.on_put(self, w, with_errors)

    def remove_all_properties(self, *, recursive):
        pass  # properties die with the tombstone / follow the node on rename

    # -- locks -----------------------------------------------------------------------
    def prevent_locking(self):
        return self.readonly

    # -- delete / copy / move --------------------------------------------------------
    def _lock_check(self, depth: str) -> None:
        lm = self.provider.lock_manager
        if "wsgidav.conditions.if" not in self.environ:
            util.parse_if_header_dict(self.environ)
        lm.check_write_permission(
            url=self.get_ref_url(), depth=depth,
            token_list=self.environ["wsgidav.ifLockTokenList"],
            principal=self.environ["wsgidav.user_name"])

    def handle_delete(self):
        self._check_writable()
        self._lock_check("infinity")
        self.session.changed()
        if self.entry is not None:
            with mapped():
                remove_tree(self.fs, self.rel, self.entry.is_dir)
        self.provider.lock_manager.remove_all_locks_from_url(self.get_ref_url(), recursive=True)
        return True

    def _dest(self, dest_path: str):
        share, rel = split_url_path(dest_path)
        if share is None:
            raise DAVError(HTTP_FORBIDDEN, context_info="cannot write the share list")
        fs = self.session.fs(share)
        if fs is None:
            raise DAVError(HTTP_CONFLICT, context_info="no such share")
        if not fs.writable or rel == "/" or rel.split("/")[1] == SNAPSHOTS:
            raise DAVError(HTTP_FORBIDDEN, context_info="destination is read-only")
        with mapped():
            try:
                dst_entry = fs.stat(rel)
            except errors.NotFound:
                dst_entry = None
        return share, rel, fs, dst_entry

    def handle_copy(self, dest_path, *, depth_infinity):
        if self.entry is None:
            raise DAVError(HTTP_NOT_FOUND)
        share, rel, dfs, dst = self._dest(dest_path)
        self.environ["edge.created"] = dst is None
        self.session.changed()
        with mapped():
            if dst is not None and (dst.is_dir or self.entry.is_dir):
                remove_tree(dfs, rel, dst.is_dir)
                dst = None
            copy_tree(self.fs, self.rel, self.entry, dfs, rel, same=dfs is self.fs
                       or share == self.share, depth_infinity=depth_infinity,
                       overwrite=dst is not None)
        return True

    def handle_move(self, dest_path):
        if self.entry is None:
            raise DAVError(HTTP_NOT_FOUND)
        self._check_writable()
        share, rel, dfs, dst = self._dest(dest_path)
        self.environ["edge.created"] = dst is None
        self.session.changed()
        with mapped():
            if share == self.share:
                # rename keeps the node: history, inode and dead properties move with it
                if dst is not None and (dst.is_dir or self.entry.is_dir):
                    remove_tree(dfs, rel, dst.is_dir)
                    dst = None
                self.fs.rename(self.rel, rel, overwrite=dst is not None)
            else:
                if dst is not None:
                    remove_tree(dfs, rel, dst.is_dir)
                copy_tree(self.fs, self.rel, self.entry, dfs, rel, same=False,
                           depth_infinity=True, overwrite=False)
                remove_tree(self.fs, self.rel, self.entry.is_dir)
        self.provider.lock_manager.remove_all_locks_from_url(self.get_ref_url(), recursive=True)
        return True

    def support_recursive_delete(self):
        return True

    def support_recursive_move(self, dest_path):
        return True


def _parse_http_date(text: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(text.strip()).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


# ----------------------------------------------------------------------------------------
# resources
# ----------------------------------------------------------------------------------------
class RootCollection(DAVCollection):
    """``/``: one member per share granted to the user; read-only."""

    def __init__(self, path: str, environ: dict) -> None:
        super().__init__("/", environ)

    def get_display_name(self):
        return ""

    def get_member_names(self):
        return [name for name, _mode in Session.of(self.provider, self.environ).shares()]

    def get_member(self, name):
        return self.provider.get_resource_inst("/" + name, self.environ)

    def get_last_modified(self):
        return None

    def prevent_locking(self):
        return True

    def create_empty_resource(self, name):
        raise DAVError(HTTP_FORBIDDEN, context_info="shares are created with archivectl")

    def create_collection(self, name):
        raise DAVError(HTTP_FORBIDDEN, context_info="shares are created with archivectl")

    def handle_delete(self):
        raise DAVError(HTTP_FORBIDDEN)

    def handle_copy(self, dest_path, *, depth_infinity):
        raise DAVError(HTTP_FORBIDDEN)

    def handle_move(self, dest_path):
        raise DAVError(HTTP_FORBIDDEN)

    def set_property_value(self, name, value, *, dry_run=False):
        raise DAVError(HTTP_FORBIDDEN)


class DirResource(_InShare, DAVCollection):
    """A folder of a share (the share root included)."""

    def __init__(self, path: str, environ: dict, share: str, rel: str, fs, entry,
                 props: dict | None = None) -> None:
        DAVCollection.__init__(self, path, environ)
        self._init_share(share, rel, fs, entry, props)

    def get_display_name(self):
        return self.share if self.rel == "/" else self.name

    def get_etag(self):
        return None

    # RFC 4331 quota: usage of the whole share
    def get_used_bytes(self):
        return self.session.usage(self.share)[0]

    def get_available_bytes(self):
        used, quota = self.session.usage(self.share)
        return None if quota is None else max(0, quota - used)

    def _child_path(self, name: str) -> str:
        return self.path.rstrip("/") + "/" + name

    def _child_rel(self, name: str) -> str:
        return self.rel.rstrip("/") + "/" + name

    def get_member_names(self):
        return [m.name for m in self.get_member_list()]

    def get_member_list(self):
        """Children straight from one ``listdir`` (no per-child stat); lock-null members
        come from one prefetch of the locks below this folder."""
        ignore = self.provider.junk_policy == "ignore"
        storage = self.provider.lock_storage
        locks = storage.prefetch(self.get_ref_url())
        out: list = []
        seen: set[str] = set()
        with mapped():
            for e in self.fs.listdir(self.rel):
                if ignore and is_junk(e.name):
                    continue
                seen.add(e.name)
                out.append(self.provider.resource_for(self._child_path(e.name), self.environ,
                                                      self.share, self._child_rel(e.name),
                                                      self.fs, e))
        base = lock_root(self.path)
        for lk in locks:
            root = lk["root"]
            if root.rsplit("/", 1)[0] != base:
                continue
            name = unicodedata.normalize("NFC", unquote(root.rsplit("/", 1)[1]))
            if name in seen:
                continue
            seen.add(name)
            out.append(LockNullResource(self._child_path(name), self.environ, self.share,
                                        self._child_rel(name), self.fs))
        return out

    def get_member(self, name):
        return self.provider.get_resource_inst(self._child_path(name), self.environ)

    def get_descendants(self, *, collections=True, resources=True, depth_first=False,
                        depth="infinity", add_self=False):
        return DAVCollection.get_descendants(
            self, collections=collections, resources=resources, depth_first=depth_first,
            depth=depth, add_self=add_self)

    def create_empty_resource(self, name):
        self._check_writable()
        child = LockNullResource(self._child_path(name), self.environ, self.share,
                                 self._child_rel(name), self.fs)
        if self.environ.get("REQUEST_METHOD") != "LOCK":
            child.pending_put = True
        return child

    def create_collection(self, name):
        self._check_writable()
        self.session.changed()
        with mapped():
            self.fs.mkdir(self._child_rel(name))

    def handle_delete(self):
        if self.rel == "/":
            raise DAVError(HTTP_FORBIDDEN, context_info="shares are removed with archivectl")
        return super().handle_delete()

    def handle_move(self, dest_path):
        if self.rel == "/":
            raise DAVError(HTTP_FORBIDDEN, context_info="shares are renamed with archivectl")
        return super().handle_move(dest_path)


class FileResource(_InShare, DAVNonCollection):
    """A file: content is its newest version; ETag is the version's content hash."""

    def __init__(self, path: str, environ: dict, share: str, rel: str, fs, entry,
                 props: dict | None = None) -> None:
        DAVNonCollection.__init__(self, path, environ)
        self._init_share(share, rel, fs, entry, props)
        self._writer: PutStream | None = None

    def get_content_length(self):
        return self.entry.size

    def get_etag(self):
        return self._put_etag or self.entry.etag

    def support_etag(self):
        return True

    def support_ranges(self):
        return True

    def support_modified(self):
        return True

    def support_content_length(self):
        return True

    def get_content(self):
        with mapped():
            reader = self.fs.open_read(self.rel)
        entry, environ, provider = self.entry, self.environ, self.provider
        return CountedReader(reader, lambda sent: report_download(
            provider, environ, self.share, self.rel, entry.version, entry.size, sent),
            direct=bool(environ.get(DIRECT_KEY)) and environ.get("REQUEST_METHOD") == "GET")

    def begin_write(self, *, content_type=None):
        self._check_writable()
        self._writer = PutStream.open(self)
        return self._writer

    def end_write(self, *, with_errors):
        self._finish_put(with_errors, new=False)

    def get_display_info(self):
        return {"type": "File"}


class LockNullResource(_InShare, DAVNonCollection):
    """An unmapped URL that exists only because it is locked (or is being PUT)."""

    pending_put = False

    def __init__(self, path: str, environ: dict, share: str, rel: str, fs) -> None:
        DAVNonCollection.__init__(self, path, environ)
        self._init_share(share, rel, fs, None, {})
        self._writer: PutStream | None = None

    def get_content_length(self):
        return self.entry.size if self.entry is not None else 0

    def get_content(self):
        raise DAVError(HTTP_NOT_FOUND, context_info="lock-null resource")

    def begin_write(self, *, content_type=None):
        self._check_writable()
        self._writer = PutStream.open(self)
        return self._writer

    def end_write(self, *, with_errors):
        self._finish_put(with_errors, new=True)

    def support_etag(self):  # after a PUT there is a real etag
        return self._put_etag is not None

    def get_etag(self):
        return self._put_etag


# ----------------------------------------------------------------------------------------
# the provider
# ----------------------------------------------------------------------------------------
class EdgeProvider(DAVProvider):
    """One provider for the whole namespace; resolves paths per request and user."""

    def __init__(self, repo, *, junk_policy: str = "store", placeholder_window: float = 10.0,
                 lock_storage=None, ctx=None) -> None:
        super().__init__()
        if junk_policy not in ("store", "ignore"):
            raise ValueError("junk_policy must be 'store' or 'ignore'")
        self.repo = repo
        self.junk_policy = junk_policy
        self.placeholder_window = float(placeholder_window)
        self.lock_storage = lock_storage
        self.ctx = ctx
        self.allow_propfind_infinity = False

    def is_readonly(self):
        return False

    def share_fs(self, login, share: str, address: str | None):
        """ShareFS of `login` on `share` (None when it does not exist or is not granted).
        The Login caches it until the auth generation moves: a revoked grant takes effect on
        the next request (the authenticator re-validates the login on every request)."""
        try:
            return login.share(share, Origin("webdav", address, login.user.name))
        except (errors.NotFound, errors.PermissionDenied, errors.InvalidPath):
            return None

    def anonymous_login(self):
        """A Login with no rights beyond anonymous shares (requests that skipped authentication)."""
        return self.repo.login_for(ANONYMOUS)

    def resource_for(self, path: str, environ: dict, share: str, rel: str, fs, entry,
                     props: dict | None = None):
        cls = DirResource if entry.is_dir else FileResource
        return cls(path, environ, share, rel, fs, entry, props)

    def get_resource_inst(self, path: str, environ: dict):
        self._count_get_resource_inst += 1
        share, rel = split_url_path(path)
        if share is None:
            return RootCollection("/", environ)
        session = Session.of(self, environ)
        fs = session.fs(share)
        if fs is None:
            return None
        url_path = "/" + share + (rel if rel != "/" else "")
        name = rel.rsplit("/", 1)[-1]
        if rel != "/" and self.junk_policy == "ignore" and is_junk(name):
            return None
        try:
            entry = session.stat(fs, rel)
        except errors.NotADirectory:
            return None
        except errors.ArchiveError as exc:
            raise dav_error(exc) from exc
        if entry is not None:
            return self.resource_for(url_path, environ, share, rel, fs, entry)
        if self.lock_storage is not None and self.lock_storage.get_lock_list(
                lock_root(url_path), include_root=True, include_children=False,
                token_only=True):
            return LockNullResource(url_path, environ, share, rel, fs)
        return None

    def exists(self, path: str, environ: dict):
        return self.get_resource_inst(path, environ) is not None

    # -- hooks -----------------------------------------------------------------------
    def on_put(self, res, writer: PutStream | None, with_errors: bool) -> None:
        if self.ctx is not None and writer is not None and writer.version is not None:
            self.ctx.event("webdav", "commit", share=res.share, path=res.rel,
                           size=writer.received,
                           user=getattr(res.session.user, "name", None))

    def custom_request_handler(self, environ, start_response, default_handler):
        """Refuse writes on read-only places early, serve ``?versions``/``?version=N``,
        and report 201 (not 204) when a native COPY/MOVE created its destination."""
        from .versions import maybe_serve_versions  # local: keeps this module small

        method = environ["REQUEST_METHOD"]
        if (method == "PROPFIND" and not self.allow_propfind_infinity
                and environ.get("HTTP_DEPTH", "infinity").strip().lower() == "infinity"):
            util.fail(DAVError(HTTP_FORBIDDEN, context_info="Depth: infinity is disabled",
                               err_condition=PRECONDITION_CODE_PropfindFiniteDepth))
        if method == "PROPFIND":
            from . import propfind
            res = self.get_resource_inst(environ.get("PATH_INFO", "/"), environ)
            if isinstance(res, (DirResource, FileResource)):
                return propfind.serve(self, res, environ, start_response, default_handler)
            return default_handler(environ, start_response)
        share, _ = split_url_path(environ.get("PATH_INFO", "/"))
        if share is not None and method != "OPTIONS" and Session.of(self, environ).fs(share) is None:
            util.fail(HTTP_NOT_FOUND, "no such share")     # not granted (any more): for every method
        served = maybe_serve_versions(self, environ, start_response)
        if served is not None:
            return served
        if method in WRITE_METHODS:
            share, rel = split_url_path(environ.get("PATH_INFO", "/"))
            if share is not None:
                fs = Session.of(self, environ).fs(share)
                if fs is not None and (not fs.writable or
                                       rel.split("/")[1:2] == [SNAPSHOTS]):
                    util.fail(HTTP_FORBIDDEN, "read-only")
        if method not in ("COPY", "MOVE"):
            return default_handler(environ, start_response)

        def _start(status, headers, exc_info=None):
            if environ.get("edge.created") and status.startswith("204"):
                status = "201 Created"
            return start_response(status, headers, exc_info)

        return default_handler(environ, _start)
