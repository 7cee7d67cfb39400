"""Recursive DELETE and COPY over ShareFS (the core removes and copies one file at a time)."""
from __future__ import annotations


def remove_tree(fs, rel: str, is_dir: bool) -> None:
    """Tombstone a file, or every file below a directory and then the directories."""
    if not is_dir:
        fs.remove(rel)
        return
    for child in list(fs.listdir(rel)):       # materialised: we change the folder below
        remove_tree(fs, rel.rstrip("/") + "/" + child.name, child.is_dir)
    fs.rmdir(rel)


def copy_props(sfs, srel, dfs, drel, replace: bool) -> None:
    """Dead properties of the source onto the target (``replace``: drop the target's others)."""
    props = dict(sfs.get_props(srel))
    if replace:
        for name in dfs.get_props(drel):
            props.setdefault(name, None)
    if props:
        dfs.set_props(drel, props)


def copy_tree(sfs, srel, entry, dfs, drel, *, same: bool, depth_infinity: bool,
              overwrite: bool) -> None:
    """COPY: within a share by reference (``fs.copy``: no data rewritten), across shares by
    streaming; folders are re-created and their members copied when ``depth_infinity``."""
    if not entry.is_dir:
        if same:
            sfs.copy(srel, drel, overwrite=overwrite)
        else:
            with sfs.open_read(srel) as r, dfs.open_write(drel, mtime=entry.mtime) as w:
                while True:
                    buf = r.read(1 << 20)
                    if not buf:
                        break
                    w.write(buf)
        copy_props(sfs, srel, dfs, drel, replace=True)  # also drops a tombstone's props
        return
    dfs.mkdir(drel)
    copy_props(sfs, srel, dfs, drel, replace=False)
    if depth_infinity:
        for child in list(sfs.listdir(srel)):
            copy_tree(sfs, srel.rstrip("/") + "/" + child.name, child, dfs,
                      drel.rstrip("/") + "/" + child.name, same=same,
                      depth_infinity=True, overwrite=False)
