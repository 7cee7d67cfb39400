"""Multipart uploads staged outside the namespace, committed as ONE version.

Parts are plain files under ``<repository>/tmp/multipart/<upload id>/`` (fsynced before the part
is acknowledged), with a small JSON manifest per upload and per part, so they survive a restart
of the server and several processes serving one repository see the same uploads.  No version
exists until `complete`, which streams the chosen parts in order through one Writer (chunked and
deduplicated like any upload) and commits one version; `abort` and `reclaim` (uploads older than
a configurable age) delete the folder, so a dropped upload leaves nothing in the archive.
Staged parts are not catalog state: `recover` does not bring unfinished uploads back.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import InvalidPath, NotFound

MAX_PART = 10_000
COPY_BLOCK = 1 << 20


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    md5: str
    modified: float
    #: a checksum of the part's bytes the caller computed while it streamed (S3: x-amz-checksum-*)
    checksum: str | None = None


@dataclass(frozen=True)
class Upload:
    upload_id: str
    share: str
    key: str
    user: str | None
    initiated: float
    meta: dict


class Staging:
    """The multipart staging area of one repository."""

    def __init__(self, repo):
        self.root = Path(repo.path) / "tmp" / "multipart"
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, upload_id: str, completed: bool = False) -> Path:
        if not upload_id or not all(c in "0123456789abcdef" for c in upload_id) or len(upload_id) != 32:
            raise NotFound("no such upload")
        d = self.root / upload_id
        if not (d / "upload.json").is_file() or (not completed and (d / "completed.json").is_file()):
            raise NotFound("no such upload")
        return d

    def completed(self, upload_id: str) -> dict | None:
        """What `complete` recorded for a finished upload (clients may retry a Complete whose
        answer they lost), or None."""
        try:
            return json.loads((self._dir(upload_id, completed=True) / "completed.json").read_text())
        except (NotFound, OSError, ValueError):
            return None

    def create(self, share: str, key: str, user: str | None, meta: dict) -> Upload:
        """Start an upload; `meta` is kept for the version Complete will make."""
        uid = uuid.uuid4().hex
        d = self.root / uid
        d.mkdir()
        up = Upload(uid, share, key, user, time.time(), meta)
        _write_json(d / "upload.json", up.__dict__)
        return up

    def get(self, upload_id: str, completed: bool = False) -> Upload:
        d = self._dir(upload_id, completed)
        return Upload(**json.loads((d / "upload.json").read_text()))

    def uploads(self, share: str) -> Iterator[Upload]:
        """Uploads in flight of a share, by key then start time."""
        found = []
        for d in self.root.iterdir():
            try:
                up = Upload(**json.loads((d / "upload.json").read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if up.share == share and not (d / "completed.json").exists():
                found.append(up)
        yield from sorted(found, key=lambda u: (u.key, u.initiated, u.upload_id))

    def put_part(self, upload_id: str, number: int, body: BinaryIO | Iterator[bytes], size: int | None = None,
                 check: Callable[[], None] | None = None,
                 checksum: Callable[[], str | None] | None = None) -> Part:
        """Stage part `number` from a stream of bytes (replacing an earlier one of that number).
        `check` runs after the last byte (e.g. a signature or checksum test): if it raises,
        nothing is staged; `checksum` (after `check`) gives a value kept with the part.  Returns
        the part with the MD5 of its bytes."""
        if not 1 <= number <= MAX_PART:
            raise InvalidPath(f"part numbers are 1-{MAX_PART}")
        d = self._dir(upload_id)
        tmp = d / f".{number}.{uuid.uuid4().hex}"
        md5 = hashlib.md5()
        n = 0
        try:
            with open(tmp, "wb") as f:
                blocks = iter(lambda: body.read(COPY_BLOCK), b"") if hasattr(body, "read") else body
                for block in blocks:
                    md5.update(block)
                    f.write(block)
                    n += len(block)
                f.flush()
                os.fsync(f.fileno())
            if check is not None:
                check()
            part = Part(number, n, md5.hexdigest(), time.time(), checksum() if checksum is not None else None)
            _write_json(d / f"{number}.json", part.__dict__)
            os.replace(tmp, d / f"{number}.part")
            return part
        finally:
            if tmp.exists():
                tmp.unlink()

    def parts(self, upload_id: str) -> list[Part]:
        d = self._dir(upload_id)
        out = []
        for p in d.glob("*.json"):
            if p.name == "upload.json":
                continue
            try:
                out.append(Part(**json.loads(p.read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(out, key=lambda p: p.number)

    def open_part(self, upload_id: str, number: int) -> BinaryIO:
        return open(self._dir(upload_id) / f"{number}.part", "rb")

    def complete(self, upload_id: str, fs, path: str, numbers: list[int], meta_json: str,
                 block: int = COPY_BLOCK, record: dict | None = None):
        """Write the listed parts, in order, as one new version of `path` in `fs`; then drop the
        parts, keeping `record` (plus the version number) for `completed`.  The caller has
        checked the part list (order, etags, sizes)."""
        w = fs.open_write(path)
        w.meta = meta_json
        try:
            for n in numbers:
                with self.open_part(upload_id, n) as f:
                    while True:
                        data = f.read(block)
                        if not data:
                            break
                        w.write(data)
            version = w.commit()
        except BaseException:
            w.abort()
            raise
        d = self._dir(upload_id)
        _write_json(d / "completed.json", {**(record or {}), "version": version.number})
        for p in d.iterdir():
            if p.name not in ("upload.json", "completed.json"):
                p.unlink(missing_ok=True)
        return version

    def abort(self, upload_id: str) -> None:
        shutil.rmtree(self._dir(upload_id, completed=True), ignore_errors=True)

    def reclaim(self, older_than: float) -> int:
        """Drop uploads started more than `older_than` seconds ago; returns how many."""
        limit = time.time() - older_than
        count = 0
        for d in self.root.iterdir():
            try:
                initiated = json.loads((d / "upload.json").read_text())["initiated"]
            except (OSError, ValueError, KeyError):
                initiated = d.stat().st_mtime
            if initiated < limit:
                shutil.rmtree(d, ignore_errors=True)
                count += 1
        return count


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
