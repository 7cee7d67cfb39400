"""File commands: put, get, ls, versions, restore, rm, mv, mkdir.

Paths are /<share>/<path>.  `put` of a folder uploads it recursively, skips files whose size
and modification time match the current version (as backup tools do), and commits small files
in batches so a tree of many small files costs few transactions.
"""
from __future__ import annotations

import io
import os
from collections import deque
import shutil
import sys
from pathlib import Path

import click

from ..clock import iso, to_us
from ..errors import Exists, InvalidPath, IsADirectory, NotFound
from ..paths import check_name, join, split, split_archive_path
from .context import CLIContext, emit_json, progress
from .main import cli

READ = 4 * 1024 * 1024
BATCH_FILES = 1024             # new versions per commit_many transaction
TIMES_BATCH = 8192            # new mtimes (same bytes) per set_times_many transaction
BATCH_BYTES = 32 * 1024 * 1024
SMALL = 256 * 1024            # read whole and hashed before a Writer is made
GROUP_FILES = 128             # small files stored together (streams.prepare_many) ...
GROUP_BYTES = 4 * 1024 * 1024  # ... up to this many bytes
GROUPS_IN_FLIGHT = 2          # groups being stored in the pool while the next files are read


def _fs(obj: CLIContext, path: str):
    share, rel = split_archive_path(path)
    return obj.share(share), rel


def _at(at: str | None) -> int | None:
    return to_us(at) if at else None


def _ensure_dir(fs, rel: str) -> None:
    if split(rel):
        try:
            if not fs.stat(rel).is_dir:
                raise click.ClickException(f"{rel} is a file, not a folder")
        except NotFound:
            fs.mkdir(rel, parents=True)


def _put_stream(fs, rel: str, stream, mtime: float | None, bar=None, check: bool = True):
    w = fs.open_write(rel, mtime=mtime, check=check)
    try:
        while True:
            data = stream.read(READ)
            if not data:
                break
            w.write(data)
            if bar is not None:
                bar.update(len(data))
    except BaseException:
        w.abort()
        raise
    return w


@cli.command()
@click.argument("src")
@click.argument("dest")
@click.option("--checksum", "--force", "force", is_flag=True,
              help="Read every file, even when its size and mtime match the current version (the files "
                   "cache); a file whose bytes match still gets no new version.")
@click.pass_obj
def put(obj: CLIContext, src: str, dest: str, force: bool) -> None:
    """Store SRC (a file, a folder, or - for stdin) at DEST (/<share>/<path>)."""
    fs, rel = _fs(obj, dest)
    if src == "-":
        _ensure_dir(fs, join(split(rel)[:-1]))
        v = _put_stream(fs, rel, sys.stdin.buffer, None).commit()
        click.echo(f"{dest}: version {v.number} ({v.size} bytes)")
        return
    p = Path(src)
    if not p.exists():
        raise click.ClickException(f"{src}: no such file or folder")
    if p.is_dir():
        _put_tree(fs, p, rel, force)
        return
    if dest.endswith("/") or _is_dir(fs, rel):
        rel = join(split(rel) + (p.name,))
    _ensure_dir(fs, join(split(rel)[:-1]))
    st = p.stat()
    with open(p, "rb") as f, progress(st.st_size, p.name) as bar:
        v = _put_stream(fs, rel, f, st.st_mtime, bar).commit()
    click.echo(f"/{fs.share_name}{rel}: version {v.number} ({v.size} bytes)")


def _is_file(fs, rel: str) -> bool:
    try:
        return not fs.stat(rel).is_dir
    except NotFound:
        return False


def _is_dir(fs, rel: str) -> bool:
    try:
        return fs.stat(rel).is_dir
    except NotFound:
        return False


def _scan(root: Path, base: tuple[str, ...]) -> tuple[list[tuple], list[tuple]]:
    """The folders (as validated parts) and regular files ((local path, parts, stat)) of a local
    tree, names sorted, in os.walk's top-down order: symlinks to files are skipped, a symlink to
    a folder is created as a folder but not followed, an unreadable folder is skipped (as
    os.walk does).  One scandir per folder and one lstat per file (os.walk plus Path.is_file,
    is_symlink and stat cost four stats a file)."""
    folders: list[tuple] = [base]
    files: list[tuple] = []
    stack = [(str(root), base)]
    while stack:
        d, parts = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            click.echo(f"skipped {d}: {e.strerror}", err=True)
            continue
        subdirs = []
        for e in entries:
            try:
                if e.is_dir():
                    p = parts + (check_name(e.name),)
                    folders.append(p)
                    if not e.is_symlink():
                        subdirs.append((e.path, p))
                elif e.is_file(follow_symlinks=False):
                    files.append((e.path, parts + (check_name(e.name),), e.stat(follow_symlinks=False)))
            except FileNotFoundError:        # gone since the listing
                continue
        stack.extend(reversed(subdirs))
    return folders, files


def _put_tree(fs, root: Path, rel: str, force: bool) -> None:
    """Upload a local tree onto `rel`.  The files cache: a file whose size and mtime (to the
    microsecond) equal those of its current version is not read at all (restic and borg do the
    same; --checksum reads every file).  A read file whose content hash equals the current
    version's gets no new version, only its new mtime.  A small file is read whole and hashed
    before anything is stored; a large one streams through a Writer, and its content hash is
    compared once its chunks are stored."""
    from ..streams import commit_many, prepare_many, small_etag
    base = split(rel)
    if base and _is_file(fs, rel):
        raise click.ClickException(f"{rel} is a file, not a folder")
    folders, files = _scan(root, base)
    total = sum(st.st_size for _, _, st in files)
    current = fs.current_files(folders)                      # every listing in one read transaction
    missing = [f for f in folders if f not in current]
    if missing:
        fs.mkdir_many([join(f) for f in missing])            # every new folder in one transaction
        current.update((f, {}) for f in missing)
    stored = skipped = same = 0
    pending, pending_bytes = [], 0
    touched: list[tuple[tuple, float]] = []
    group: list = []                 # (fresh Writer, bytes) of small files, stored together
    group_bytes = 0
    inflight: deque = deque()        # prepare_many of earlier groups, in the chunk pool

    def queue(ws) -> None:
        nonlocal pending_bytes
        pending.extend(ws)           # a group goes into one commit batch (prepare_many)
        pending_bytes += sum(w.size for w in ws)
        if len(pending) >= BATCH_FILES or pending_bytes >= BATCH_BYTES:
            flush(times=False)

    def settle(keep: int) -> None:
        while len(inflight) > keep:
            queue(inflight.popleft().result())

    def send() -> None:
        nonlocal group, group_bytes
        if group:
            inflight.append(fs.repo.store.pool.submit(prepare_many, group))
            group, group_bytes = [], 0
        settle(GROUPS_IN_FLIGHT)

    def flush(times: bool = True):
        nonlocal pending, pending_bytes, touched
        commit_many(pending)
        pending, pending_bytes = [], 0
        if times and touched:
            fs.set_times_many(touched)
            touched = []

    with progress(total, f"put {root}") as bar:
        for path, parts, st in files:
            cur = current.get(parts[:-1], {}).get(parts[-1])      # (kind, size, mtime us, etag)
            if cur is not None and cur[0] == "dir":
                raise click.ClickException(f"{join(parts)} is a folder in the archive")
            mtime_us = to_us(st.st_mtime)
            if cur is not None and cur[1] == st.st_size and cur[2] == mtime_us and not force:
                skipped += 1
                bar.update(st.st_size)
                continue
            if st.st_size <= SMALL:
                with open(path, "rb") as f:
                    data = f.read()
                bar.update(len(data))
                if cur is None or cur[1] != len(data) or small_etag(fs.repo, data) != cur[3]:
                    # chunked, stored and sealed with others in the pool while the next are read
                    group.append((fs.open_write(join(parts), mtime=st.st_mtime, check=False), data))
                    group_bytes += len(data)
                    stored += 1
                    if len(group) >= GROUP_FILES or group_bytes >= GROUP_BYTES:
                        send()
                    continue
            else:
                with open(path, "rb") as f:
                    w = _put_stream(fs, join(parts), f, st.st_mtime, bar, check=False)
                w.prepare()
                if cur is None or cur[3] != w.etag:
                    stored += 1
                    queue([w])
                    continue
                w.abort()
            if cur[2] == mtime_us:
                skipped += 1                 # --checksum: same bytes, same mtime: nothing to record
            else:
                # Same bytes under a new mtime (a re-extracted archive): no new version.
                touched.append((parts, st.st_mtime))
                same += 1
                if len(touched) >= TIMES_BATCH:
                    flush()
        send()
        settle(0)
        flush()
    click.echo(f"{stored} files stored, {skipped + same} unchanged"
               + (f" ({same} with a new mtime only)" if same else ""))


@cli.command()
@click.argument("src")
@click.argument("dest")
@click.option("--version", "version", type=int, help="Version number (files).")
@click.option("--at", help="ISO 8601 time: the content as it was then.")
@click.pass_obj
def get(obj: CLIContext, src: str, dest: str, version: int | None, at: str | None) -> None:
    """Fetch SRC (/<share>/<path>, file or folder) into DEST (- for stdout)."""
    if version is None and at is None and _lean_get(obj, src, dest):
        return
    fs, rel = _fs(obj, src)
    entry = fs.stat(rel, at=_at(at) / 1e6 if at else None) if version is None else None
    if entry is not None and entry.is_dir:
        if version is not None or dest == "-":
            raise click.ClickException("a folder is fetched into a local folder, without --version")
        _get_tree(fs, rel, Path(dest), _at(at))
        return
    atv = _at(at) / 1e6 if at else None
    reader = fs.open_read(rel, version=version, at=atv)
    if dest == "-":
        _copy(reader, sys.stdout.buffer, None)
        sys.stdout.buffer.flush()
        return
    target = Path(dest)
    if target.is_dir():
        target = target / split(rel)[-1]
    _write_file(reader, target, entry.mtime if entry else None, split(rel)[-1])


class _Held(io.BytesIO):
    """A file's content already in memory, read as a Reader is."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)


def _lean_get(obj: CLIContext, src: str, dest: str) -> bool:
    """`get` of a small file's current content through the lean read path (archive/cli/lean.py);
    False, having written nothing, when that path does not answer."""
    lean = obj.lean()
    if lean is None:
        return False
    from .lean import FALLBACK
    share, rel = split_archive_path(src)
    try:
        entry, data = lean.share(share).read(split(rel))
    except FALLBACK:
        return False
    if dest == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return True
    target = Path(dest)
    if target.is_dir():
        target = target / split(rel)[-1]
    _write_file(_Held(data), target, entry.mtime, split(rel)[-1])
    return True


def _copy(reader, out, bar) -> None:
    buf = bytearray(READ)
    while True:
        n = reader.readinto(buf)
        if not n:
            break
        out.write(memoryview(buf)[:n])
        if bar is not None:
            bar.update(n)


def _write_file(reader, target: Path, mtime: float | None, label: str) -> None:
    """Write to a temporary name and rename: a failed fetch never leaves a truncated file."""
    tmp = target.with_name(f".{target.name}.partial")
    try:
        with open(tmp, "wb") as out, progress(reader.size, label) as bar:
            _copy(reader, out, bar)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _get_tree(fs, rel: str, dest: Path, at: int | None) -> None:
    """Small files are restored in batches (one catalog query for their chunk lists, packs
    read in pack order, archive/readpath.py); large ones stream through a Reader."""
    from ..readpath import restore_tree
    count = restore_tree(fs, rel, dest, at / 1e6 if at else None,
                         lambda e, target: _write_file(fs.open_entry(e), target, e.mtime, e.name))
    click.echo(f"{count} files fetched into {dest}", err=True)


def _entry_json(e) -> dict:
    return {"name": e.name, "path": e.path, "kind": e.kind, "size": e.size, "mtime": iso(to_us(e.mtime)),
            "version": e.version, "etag": e.etag, "node_id": e.node_id}


@cli.command()
@click.argument("path", default="/")
@click.option("--at", help="ISO 8601 time: list the folder as it was then.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ls(obj: CLIContext, path: str, at: str | None, as_json: bool) -> None:
    """List a folder (/ lists the shares)."""
    if at is None and _lean_ls(obj, path, as_json):
        return
    if not split(path):
        _print_shares([s.name for s in obj.open_repo().list_shares()], as_json)
        return
    fs, rel = _fs(obj, path)
    atv = _at(at) / 1e6 if at else None
    e = fs.stat(rel, at=atv)
    _print_entries(fs.listdir(rel, at=atv) if e.is_dir else iter([e]), as_json)


def _lean_ls(obj: CLIContext, path: str, as_json: bool) -> bool:
    """`ls` of the current state through the lean read path (archive/cli/lean.py); False,
    having printed nothing, when that path does not answer."""
    lean = obj.lean()
    if lean is None:
        return False
    from .lean import FALLBACK
    if not split(path):
        try:
            shares = lean.list_shares()
        except FALLBACK:
            return False
        _print_shares(shares, as_json)
        return True
    share, rel = split_archive_path(path)
    try:
        fs = lean.share(share)
        parts = split(rel)
        e = fs.stat(parts)
    except FALLBACK:
        return False
    _print_entries(fs.listdir(parts, e.node_id) if e.is_dir else iter([e]), as_json)
    return True


def _print_shares(names: list[str], as_json: bool) -> None:
    if as_json:
        emit_json([{"name": n, "kind": "share"} for n in names])
    else:
        for n in names:
            click.echo(f"{n}/")


def _print_entries(entries, as_json: bool) -> None:
    if as_json:
        emit_json([_entry_json(x) for x in entries])
        return
    for x in entries:
        ver = f"v{x.version}" if x.version else "-"
        click.echo(f"{'d' if x.is_dir else '-'} {x.size:>12} {iso(to_us(x.mtime))[:19]} {ver:>5} "
                   f"{x.name}{'/' if x.is_dir else ''}")


@cli.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def versions(obj: CLIContext, path: str, as_json: bool) -> None:
    """List every version of a file (also of a deleted one)."""
    fs, rel = _fs(obj, path)
    vs = fs.versions(rel)
    if as_json:
        emit_json([v.as_dict() for v in vs])
        return
    for v in vs:
        d = v.as_dict()
        o = v.origin
        who = f"{o.protocol}:{o.user or '-'}@{o.address or '-'}" if o else "-"
        click.echo(f"v{v.number:<4} {d['created_at']} {'deleted' if v.deleted else v.size:>12} {who}")


@cli.command()
@click.argument("path")
@click.option("--version", "version", type=int)
@click.option("--at", help="ISO 8601 time.")
@click.pass_obj
def restore(obj: CLIContext, path: str, version: int | None, at: str | None) -> None:
    """Make old content the newest version (a file by --version or --at, a folder tree by --at)."""
    if version is None and at is None:
        raise click.ClickException("give --version N or --at TIME")
    fs, rel = _fs(obj, path)
    with progress(None, f"restore {path}") as bar:
        n = fs.restore(rel, version=version, at=_at(at) / 1e6 if at else None, progress=bar.update)
    click.echo(f"{n} file(s) restored")


@cli.command()
@click.argument("path")
@click.option("-r", "--recursive", is_flag=True, help="Remove a folder and everything in it.")
@click.pass_obj
def rm(obj: CLIContext, path: str, recursive: bool) -> None:
    """Delete a file (a restorable tombstone) or an empty folder."""
    fs, rel = _fs(obj, path)
    if not split(rel):
        # Refused before anything is touched: removing the share's files one by one and then
        # failing on its root would leave every file deleted behind an error message.
        raise click.ClickException(
            f"/{fs.share_name} is the root of share {fs.share_name!r} and cannot be removed; nothing was "
            f"changed.  Remove what is inside by name (archivectl rm -r /{fs.share_name}/FOLDER).")
    e = fs.stat(rel)
    if not e.is_dir:
        fs.remove(rel)
    elif recursive:
        _rm_tree(fs, rel)
    else:
        fs.rmdir(rel)
    click.echo(f"removed {path}")


def _rm_tree(fs, rel: str) -> None:
    for e in list(fs.listdir(rel)):
        child = join(split(rel) + (e.name,))
        if e.is_dir:
            _rm_tree(fs, child)
        else:
            fs.remove(child)
    fs.rmdir(rel)


@cli.command()
@click.argument("src")
@click.argument("dest")
@click.option("--overwrite", is_flag=True, help="Replace an existing file (it becomes a tombstone).")
@click.pass_obj
def mv(obj: CLIContext, src: str, dest: str, overwrite: bool) -> None:
    """Rename or move within a share; history follows the file."""
    fs, rel = _fs(obj, src)
    dshare, drel = split_archive_path(dest)
    if dshare != fs.share_name:
        raise click.ClickException(f"mv works within one share: {src} is in {fs.share_name!r}, "
                                   f"{dest} in {dshare!r}")
    if split(rel) == split(drel):
        fs.stat(rel)                       # a missing source is still "no such file"
        raise click.ClickException(f"{src} and {dest} are the same path: nothing to move")
    fs.rename(rel, drel, overwrite=overwrite)
    click.echo(f"moved {src} -> {dest}")


@cli.command()
@click.argument("path")
@click.option("-p", "--parents", is_flag=True)
@click.pass_obj
def mkdir(obj: CLIContext, path: str, parents: bool) -> None:
    """Create a folder."""
    fs, rel = _fs(obj, path)
    fs.mkdir(rel, parents=parents)
    click.echo(f"created {path}")
