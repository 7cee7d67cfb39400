"""Encoders for the FILE_*_INFORMATION structures (MS-FSCC 2.4, 2.5) that QUERY_INFO,
QUERY_DIRECTORY and CLOSE answer with, from one small :class:`Meta` per file."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .wire import filetime

ATTR_READONLY, ATTR_HIDDEN, ATTR_DIRECTORY, ATTR_ARCHIVE = 0x1, 0x2, 0x10, 0x20
CLUSTER = 4096

# FileInformationClass values
FILE_DIRECTORY, FILE_FULL_DIRECTORY, FILE_BOTH_DIRECTORY = 1, 2, 3
FILE_BASIC, FILE_STANDARD, FILE_INTERNAL, FILE_EA, FILE_ACCESS = 4, 5, 6, 7, 8
FILE_NAME, FILE_RENAME, FILE_NAMES, FILE_DISPOSITION, FILE_POSITION = 9, 10, 12, 13, 14
FILE_FULL_EA, FILE_MODE, FILE_ALIGNMENT, FILE_ALL, FILE_ALLOCATION, FILE_END_OF_FILE = 15, 16, 17, 18, 19, 20
FILE_ALTERNATE_NAME, FILE_STREAM, FILE_COMPRESSION = 21, 22, 28
FILE_NETWORK_OPEN, FILE_ATTRIBUTE_TAG = 34, 35
FILE_ID_BOTH_DIRECTORY, FILE_ID_FULL_DIRECTORY = 37, 38
FILE_NORMALIZED_NAME = 48
FILE_ID_INFORMATION = 59
FILE_DISPOSITION_EX = 64


@dataclass
class Meta:
    """What every info class is built from."""
    name: str
    is_dir: bool
    size: int
    ctime: float
    mtime: float
    node_id: int
    readonly: bool = False

    @property
    def attributes(self) -> int:
        a = ATTR_DIRECTORY if self.is_dir else ATTR_ARCHIVE
        if self.readonly and not self.is_dir:
            a |= ATTR_READONLY
        if self.name.startswith(".") and self.name not in (".", ".."):
            a |= ATTR_HIDDEN
        return a

    @property
    def allocation(self) -> int:
        return 0 if self.is_dir else -(-self.size // CLUSTER) * CLUSTER

    def times(self) -> bytes:
        """CreationTime, LastAccessTime, LastWriteTime, ChangeTime."""
        m = filetime(self.mtime)
        return struct.pack("<QQQQ", filetime(self.ctime), m, m, m)


def basic(m: Meta) -> bytes:
    return m.times() + struct.pack("<II", m.attributes, 0)


def standard(m: Meta, delete_pending: bool = False) -> bytes:
    return struct.pack("<QQIBBH", m.allocation, 0 if m.is_dir else m.size, 1, delete_pending, m.is_dir, 0)


def network_open(m: Meta) -> bytes:
    return m.times() + struct.pack("<QQII", m.allocation, 0 if m.is_dir else m.size, m.attributes, 0)


def file_all(m: Meta, path_name: str, position: int, access: int, delete_pending: bool) -> bytes:
    name = path_name.encode("utf-16-le")
    return (basic(m) + standard(m, delete_pending) + struct.pack("<Q", m.node_id) + struct.pack("<I", 0)
            + struct.pack("<I", access) + struct.pack("<Q", position) + struct.pack("<I", 0)
            + struct.pack("<I", 0) + struct.pack("<I", len(name)) + name)


def stream(m: Meta) -> bytes:
    if m.is_dir:
        return b""
    name = "::$DATA".encode("utf-16-le")
    return struct.pack("<IIQQ", 0, len(name), m.size, m.allocation) + name


def file_info(cls: int, m: Meta, path_name: str, position: int, access: int, delete_pending: bool) -> bytes | None:
    """The QUERY_INFO (InfoType FILE) answer for one class, or None when unsupported."""
    if cls == FILE_BASIC:
        return basic(m)
    if cls == FILE_STANDARD:
        return standard(m, delete_pending)
    if cls == FILE_INTERNAL:
        return struct.pack("<Q", m.node_id)
    if cls == FILE_EA:
        return struct.pack("<I", 0)
    if cls == FILE_ACCESS:
        return struct.pack("<I", access)
    if cls == FILE_POSITION:
        return struct.pack("<Q", position)
    if cls == FILE_MODE:
        return struct.pack("<I", 0)
    if cls == FILE_ALIGNMENT:
        return struct.pack("<I", 0)
    if cls == FILE_ALL:
        return file_all(m, path_name, position, access, delete_pending)
    if cls == FILE_NETWORK_OPEN:
        return network_open(m)
    if cls == FILE_ATTRIBUTE_TAG:
        return struct.pack("<II", m.attributes, 0)
    if cls == FILE_STREAM:
        return stream(m)
    if cls in (FILE_NAME, FILE_NORMALIZED_NAME, FILE_ALTERNATE_NAME):
        n = (path_name if cls != FILE_ALTERNATE_NAME else m.name).encode("utf-16-le")
        return struct.pack("<I", len(n)) + n
    if cls == FILE_COMPRESSION:
        return struct.pack("<QHBBB3s", m.size, 0, 0, 0, 0, b"\x00" * 3)
    if cls == FILE_ID_INFORMATION:
        return struct.pack("<Q", 0x45444745) + struct.pack("<Q", m.node_id) + bytes(8)
    return None


DIR_CLASSES = (FILE_DIRECTORY, FILE_FULL_DIRECTORY, FILE_BOTH_DIRECTORY, FILE_NAMES,
               FILE_ID_BOTH_DIRECTORY, FILE_ID_FULL_DIRECTORY)


def dir_entry(cls: int, m: Meta) -> bytes:
    """One QUERY_DIRECTORY entry with NextEntryOffset 0, unpadded (the caller links and pads)."""
    name = m.name.encode("utf-16-le")
    if cls == FILE_NAMES:
        return struct.pack("<III", 0, 0, len(name)) + name
    head = struct.pack("<II", 0, 0) + m.times() + struct.pack(
        "<QQII", 0 if m.is_dir else m.size, m.allocation, m.attributes, len(name))
    if cls == FILE_DIRECTORY:
        return head + name
    if cls == FILE_FULL_DIRECTORY:
        return head + struct.pack("<I", 0) + name
    if cls == FILE_ID_FULL_DIRECTORY:
        return head + struct.pack("<IIQ", 0, 0, m.node_id) + name
    if cls == FILE_BOTH_DIRECTORY:
        return head + struct.pack("<IBB24s", 0, 0, 0, b"") + name
    # FILE_ID_BOTH_DIRECTORY
    return head + struct.pack("<IBB24sHQ", 0, 0, 0, b"", 0, m.node_id) + name


# -- file system information (InfoType 2) -----------------------------------------------------
FS_VOLUME, FS_SIZE, FS_DEVICE, FS_ATTRIBUTE, FS_FULL_SIZE, FS_OBJECT_ID, FS_SECTOR_SIZE = 1, 3, 4, 5, 7, 8, 11


def fs_info(cls: int, label: str, created: float, used: int, quota: int | None) -> bytes | None:
    total = quota if quota else max(used * 2, 1 << 40)
    total_units = max(total // CLUSTER, 1)
    free_units = max((total - used) // CLUSTER, 0)
    if cls == FS_VOLUME:
        lab = label.encode("utf-16-le")
        return struct.pack("<QIIBB", filetime(created), 0x45444745, len(lab), 0, 0) + lab
    if cls == FS_SIZE:
        return struct.pack("<QQII", total_units, free_units, 8, 512)
    if cls == FS_FULL_SIZE:
        return struct.pack("<QQQII", total_units, free_units, free_units, 8, 512)
    if cls == FS_DEVICE:
        return struct.pack("<II", 7, 0)                        # FILE_DEVICE_DISK
    if cls == FS_ATTRIBUTE:
        name = "NTFS".encode("utf-16-le")
        # case-preserved + unicode names (not case-sensitive search)
        return struct.pack("<III", 0x00000002 | 0x00000004, 255, len(name)) + name
    if cls == FS_OBJECT_ID:
        return bytes(64)
    if cls == FS_SECTOR_SIZE:
        return struct.pack("<IIIIIII", 512, 512, 512, 512, 0, 0, 0)
    return None


def security_descriptor() -> bytes:
    """Owner/group Everyone, a DACL allowing Everyone everything: access is decided by grants,
    not ACLs, and clients (Explorer, smbclient allinfo) only need a well-formed answer."""
    everyone = b"\x01\x01\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00"        # S-1-1-0
    ace = struct.pack("<BBHI", 0, 0, 8 + len(everyone), 0x001F01FF) + everyone
    acl = struct.pack("<BBHHH", 2, 0, 8 + len(ace), 1, 0) + ace
    off_owner = 20
    off_group = off_owner + len(everyone)
    off_dacl = off_group + len(everyone)
    head = struct.pack("<BBHIIII", 1, 0, 0x8004, off_owner, off_group, 0, off_dacl)
    return head + everyone + everyone + acl
