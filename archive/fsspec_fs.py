"""An fsspec filesystem over the archive: `edgearchive://share/path`, for pandas, Dask, DuckDB.

It reads the catalog and the pack store directly (no server in between), so analyses run
where the data is, and with `at=` (an ISO time or epoch seconds) or `version=` on any past
state:

    import pandas as pd
    opts = {"repo": "s3://bucket/archive?endpoint=...", "catalog": "postgresql+psycopg://..."}
    pd.read_csv("edgearchive://sensors/2026/readings.csv", storage_options=opts)
    pd.read_csv("edgearchive://sensors/2026/readings.csv", storage_options={**opts, "at": "2026-11-20T00:00:00Z"})
    fsspec.open("edgearchive://sensors/r.csv", version=3, **opts)

Options default to EDGE_ARCHIVE_REPO, EDGE_ARCHIVE_CATALOG, EDGE_ARCHIVE_PASSWORD,
EDGE_ARCHIVE_CACHE and the config file, like archivectl.  Writes commit one version each on
close (origin protocol `fsspec`); a filesystem opened `at=` a past instant is read-only.
Registered through the `fsspec.specs` entry point, so `edgearchive://` works everywhere fsspec does.
"""
from __future__ import annotations

import io
import os
import re
import socket
import threading
from datetime import datetime, timezone
from typing import Any

from fsspec.spec import AbstractFileSystem

from . import config as cfg
from .errors import IsADirectory, NotFound, ReadOnly
from .repository import Repository
from .types import Origin

_repos: dict[tuple, Repository] = {}
_repos_lock = threading.Lock()


def _repository(repo: str | None, catalog: str | None, password: str | None, cache: str | None) -> Repository:
    """One open Repository per (location, catalog) in a process, shared by every instance."""
    conf, _ = cfg.load(None)
    location = str(repo or cfg.repo_path(None, conf))
    catalog = catalog or cfg.catalog_url(conf)
    opts = cfg.store_options(conf)
    if cache:
        opts["cache"] = cache
    key = (location, catalog)
    with _repos_lock:
        if key not in _repos:
            _repos[key] = Repository.open(location, password=password or os.environ.get("EDGE_ARCHIVE_PASSWORD"),
                                          catalog_url=catalog, **opts)
        return _repos[key]


class _WriteFile(io.RawIOBase):
    """A sequential upload: one version when closed, none when discarded after an error."""

    def __init__(self, writer, path: str):
        super().__init__()
        self._w, self.path = writer, path

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self._w.write(bytes(data))

    def close(self) -> None:
        if not self.closed:
            self._w.commit()
        super().close()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._w.abort()
            io.RawIOBase.close(self)
        else:
            self.close()


class EdgeArchiveFileSystem(AbstractFileSystem):
    protocol = ("edgearchive",)
    root_marker = ""

    def __init__(self, repo: str | None = None, catalog: str | None = None, password: str | None = None,
                 cache: str | None = None, at: Any = None, user: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.repo = _repository(repo, catalog, password, cache)
        self.at = at
        self.user = user
        self.origin = Origin("fsspec", socket.gethostname(), user or os.environ.get("USER"))

    # -- paths -------------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return re.sub(r"^[a-z][a-z0-9+.-]*://", "", str(path)).strip("/")     # any name it is registered under

    def _split(self, path: str):
        path = self._strip_protocol(path)
        share, _, rest = path.partition("/")
        if not share:
            return None, "/"
        return self.repo.share(share, user=self.user, origin=self.origin), "/" + rest

    def _info(self, share: str, e) -> dict:
        return {"name": f"{share}{e.path}".rstrip("/") if e.path != "/" else share,
                "size": e.size if not e.is_dir else 0, "type": "directory" if e.is_dir else "file",
                "mtime": e.mtime, "created": e.ctime, "version": e.version, "etag": e.etag}

    # -- reading -----------------------------------------------------------------------------
    def ls(self, path: str, detail: bool = True, **kwargs: Any):
        fs, rel = self._split(path)
        if fs is None:
            out = [{"name": s, "size": 0, "type": "directory"} for s, _ in self.repo.shares_for(self.user)]
        else:
            entry = fs.stat(rel, at=self.at)
            share = fs.share_name
            out = ([self._info(share, e) for e in fs.listdir(rel, at=self.at)] if entry.is_dir
                   else [self._info(share, entry)])
        return out if detail else [o["name"] for o in out]

    def info(self, path: str, **kwargs: Any) -> dict:
        fs, rel = self._split(path)
        if fs is None:
            return {"name": "", "size": 0, "type": "directory"}
        try:
            return self._info(fs.share_name, fs.stat(rel, at=self.at))
        except NotFound:
            raise FileNotFoundError(path) from None

    def modified(self, path: str) -> datetime:
        """Last change (DuckDB asks for it to validate its cache)."""
        return datetime.fromtimestamp(self.info(path)["mtime"], tz=timezone.utc)

    def created(self, path: str) -> datetime:
        return datetime.fromtimestamp(self.info(path)["created"], tz=timezone.utc)

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
              cache_options: Any = None, version: int | None = None, at: Any = None, **kwargs: Any):
        fs, rel = self._split(path)
        if fs is None:
            raise IsADirectory("the root holds shares, not files")
        if "r" in mode:
            try:
                reader = fs.open_read(rel, version=int(version) if version is not None else None, at=at or self.at)
            except NotFound:
                raise FileNotFoundError(path) from None
            return io.BufferedReader(reader, buffer_size=1 << 20)
        if self.at is not None or at is not None:
            raise ReadOnly("a filesystem opened at a past instant is read-only")
        return io.BufferedWriter(_WriteFile(fs.open_write(rel), rel), buffer_size=1 << 20)

    # -- changing ------------------------------------------------------------------------------
    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        fs, rel = self._split(path)
        fs.mkdir(rel, parents=create_parents)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        fs, rel = self._split(path)
        if fs.exists(rel) and exist_ok:
            return
        fs.mkdir(rel, parents=True)

    def rm_file(self, path: str) -> None:
        fs, rel = self._split(path)
        fs.remove(rel)

    def rmdir(self, path: str) -> None:
        fs, rel = self._split(path)
        fs.rmdir(rel)

    def _rm(self, path: str) -> None:
        if self.isdir(path):
            self.rmdir(path)
        else:
            self.rm_file(path)

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        fs, rel1 = self._split(path1)
        fs2, rel2 = self._split(path2)
        if fs2.share_name != fs.share_name:
            return super().mv(path1, path2, **kwargs)
        fs.rename(rel1, rel2)
