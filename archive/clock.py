"""Time in the catalog: integer microseconds since the epoch, strictly increasing per process."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

_lock = threading.Lock()
_last = 0


def now_us() -> int:
    global _last
    with _lock:
        t = max(time.time_ns() // 1000, _last + 1)
        _last = t
        return t


def to_us(t: "float | int | datetime | str | None") -> int | None:
    """Accept epoch seconds, a datetime, or an ISO 8601 string; None stays None."""
    if t is None:
        return None
    if isinstance(t, str):
        t = parse_iso(t)
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return int(t.timestamp() * 1_000_000)
    return int(float(t) * 1_000_000)


def parse_iso(s: str) -> datetime:
    try:
        d = datetime.fromisoformat(s.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {s!r} (e.g. 2026-11-24T10:00:00Z)") from None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def seconds(us: int | None) -> float | None:
    return None if us is None else us / 1_000_000


def iso(us: int | None) -> str | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1_000_000, timezone.utc).isoformat().replace("+00:00", "Z")


GMT_FORMAT = "@GMT-%Y.%m.%d-%H.%M.%S"


def gmt_token(us: int) -> str:
    return datetime.fromtimestamp(us // 1_000_000, timezone.utc).strftime(GMT_FORMAT)


def parse_gmt_token(token: str) -> int | None:
    """'@GMT-2026.11.24-10.00.00' -> the last microsecond of that second, or None if malformed."""
    try:
        d = datetime.strptime(token, GMT_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return int(d.timestamp()) * 1_000_000 + 999_999
