"""Is a catalog file there, empty, in use, or damaged?  Asked before `recover` touches it.

The probe opens a SQLite catalog read-only with the sqlite3 module (not the engine: the engine
would create, migrate or replay a stale write-ahead log), so a damaged file is never changed
before it is moved aside.
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SIDE_FILES = ("-wal", "-shm", "-journal")
CONTENT_TABLES = ("shares", "users", "nodes", "versions", "chunks")


@dataclass
class Health:
    state: str                 # "absent" | "empty" | "content" | "damaged"
    reason: str = ""


def probe_sqlite(db: Path) -> Health:
    if not db.exists():
        return Health("absent")
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError:       # a WAL without its SHM cannot be read read-only
        con = sqlite3.connect(db, timeout=10)
    except sqlite3.Error as e:
        return Health("damaged", f"cannot be opened: {e}")
    try:
        check = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            return Health("damaged", "integrity check failed: " + "; ".join(check[:3]))
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in CONTENT_TABLES if t in tables}
    except sqlite3.Error as e:
        return Health("damaged", f"not a readable catalog: {e}")
    finally:
        con.close()
    if not any(counts.values()):
        return Health("empty")
    missing = [t for t in CONTENT_TABLES if t not in tables]
    if missing:
        return Health("damaged", f"tables missing: {', '.join(missing)}")
    if counts["shares"] == 0 and (counts["nodes"] or counts["versions"]):
        return Health("damaged", f"the shares table is empty but {counts['nodes']} nodes remain")
    return Health("content")


def move_aside(db: Path, kind: str, with_main: bool = True) -> list[str]:
    """Rename the catalog file (if `with_main`) and its WAL/SHM/journal to `<name>.<kind>-<stamp>`;
    returns the new paths.  Nothing is deleted: an administrator may still want to look inside."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for suffix in ("",) + SIDE_FILES:
        if suffix == "" and not with_main:
            continue
        src = Path(f"{db}{suffix}")
        if not src.exists():
            continue
        n, dst = 0, Path(f"{db}{suffix}.{kind}-{stamp}")
        while dst.exists():
            n += 1
            dst = Path(f"{db}{suffix}.{kind}-{stamp}.{n}")
        os.replace(src, dst)
        moved.append(str(dst))
    return moved
