"""Durability of names: a file's fsync makes its bytes durable, not its folder entry.

POSIX leaves a newly created or renamed file's name to the folder's own fsync; ext4 and XFS
usually commit it with the file's journal transaction, but not every filesystem does, and a
pack whose bytes survived a power cut under no name is as lost as one never written.
"""
from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path | str) -> None:
    """fsync a folder, so the names created or renamed in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
