"""The S3 WSGI application: request parsing, authentication, routing, responses.

Path-style addressing only (``/<bucket>/<key>``): a bucket is a share, a key a share-relative
path.  Every request is authenticated (SigV4 header or query, SigV2 header or query) with the
caller's access key, or runs as the anonymous user, who only reads shares marked anonymous.
Handlers live in :mod:`.handlers`; each gets a :class:`Call` and returns a :class:`Response`.
"""
from __future__ import annotations

import copy
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator
from urllib.parse import unquote

from archive import ANONYMOUS, Origin, accesskeys, errors
from archive.multipart import Staging
from archive.paths import split

from . import sigv4
from .versioning import Store as VersioningStore
from .body import Body
from .errors import S3Error, from_archive
from .xml import error_document

MAX_KEY_BYTES = 1024


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | Iterable[bytes] = b""


@dataclass
class Call:
    """One request as the handlers see it."""
    app: "S3App"
    environ: dict
    method: str
    bucket: str
    key: str
    query: dict[str, str]
    headers: dict[str, str]
    user: Any
    auth: "sigv4.Auth | None"
    address: str
    request_id: str
    _body: Body | None = None

    @property
    def repo(self):
        return self.app.repo

    @property
    def origin(self) -> Origin:
        return Origin("s3", self.address, None if self.user is ANONYMOUS else self.user.name)

    @property
    def user_name(self) -> str:
        return self.user.name

    def body(self, object_checksums: bool = True) -> Body:
        if self._body is None:
            self._body = Body(self.environ, self.headers, self.auth, object_checksums)
        return self._body

    def share(self, name: str | None = None, write: bool = False):
        """The caller's ShareFS of a bucket: NoSuchBucket / AccessDenied otherwise."""
        name = name if name is not None else self.bucket
        try:
            fs = self.app.share_fs(name, self.user, self.origin)
        except errors.NotFound:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", BucketName=name) from None
        except errors.PermissionDenied:
            raise S3Error("AccessDenied", f"no access to bucket {name!r}") from None
        if write and not fs.writable:
            raise S3Error("AccessDenied", f"read-only access to bucket {name!r}")
        return fs

    def versioning(self, share: str | None = None):
        """The S3 versioning status history of a bucket (see :mod:`.versioning`)."""
        return self.app.versioning.get(self.bucket if share is None else share)

    def key_path(self, key: str | None = None) -> str:
        """Validate a key: it must name one archive path exactly (no "//", no leading or
        trailing "/", NFC, no control characters, no "." or ".." components)."""
        key = self.key if key is None else key
        if not key:
            raise S3Error("InvalidObjectName", "empty key")
        if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise S3Error("KeyTooLongError", "Your key is too long")
        try:
            parts = split(key)
        except errors.InvalidPath as e:
            raise S3Error("InvalidObjectName", f"key not accepted by the archive: {e}") from None
        if "/".join(parts) != key:
            raise S3Error("InvalidObjectName", "keys with empty, '.'/'..' components or not in Unicode NFC "
                                               "are not accepted by the archive")
        if parts[0] == ".snapshots":
            raise S3Error("InvalidObjectName", ".snapshots is the archive's read-only history")
        return key


class S3App:
    def __init__(self, repo, config: dict, ctx) -> None:
        from .handlers import route
        self.repo = repo
        self.config = config
        self.ctx = ctx
        self.log = getattr(ctx, "logger", None) or logging.getLogger("edge_archive")
        self.route = route
        self.staging = Staging(repo)
        self.versioning = VersioningStore(repo)
        self.region = str(config.get("region") or "us-east-1")
        self._last_reclaim = 0.0
        self._keys: dict[str, tuple[float, Any, str]] = {}     # access key -> (checked at, user, secret)
        self._shares: dict[tuple, tuple[float, Any]] = {}      # (user, share) -> (checked at, ShareFS)

    # -- shares ------------------------------------------------------------------------------
    def share_fs(self, name: str, user, origin: Origin):
        """The user's ShareFS of a share, with this request's origin.  The share row and the
        grant are looked up at most every KEY_TTL seconds per (user, share) (two catalog reads
        a request otherwise); CreateBucket/DeleteBucket here drop the cached entries at once,
        a grant the admin revokes takes effect within KEY_TTL, as a revoked access key does."""
        uname = getattr(user, "name", None)
        hit = self._shares.get((uname, name))
        if hit is None or time.monotonic() - hit[0] >= self.KEY_TTL:
            fs = self.repo.share(name, user=user, origin=origin)
            if len(self._shares) > 10_000:
                self._shares.clear()
            self._shares[(uname, name)] = (time.monotonic(), fs)
            return fs
        fs = copy.copy(hit[1])
        fs.origin = origin
        return fs

    def forget_share(self, name: str) -> None:
        for k in [k for k in self._shares if k[1] == name]:
            self._shares.pop(k, None)

    # -- authentication ----------------------------------------------------------------------
    #: seconds a looked-up access key is trusted without asking the catalog again (revocation delay)
    KEY_TTL = 5.0

    def _secret(self, cache: dict):
        def secret_for(akid: str) -> str:
            hit = self._keys.get(akid)
            if hit is not None and time.monotonic() - hit[0] < self.KEY_TTL:
                cache["user"] = hit[1]
                return hit[2]
            try:
                user, secret = accesskeys.lookup(self.repo, akid)
                if len(self._keys) > 10_000:
                    self._keys.clear()
                self._keys[akid] = (time.monotonic(), user, secret)
            except errors.AuthFailed:
                raise sigv4.SignatureError("InvalidAccessKeyId",
                                           "The AWS Access Key Id you provided does not exist in our records.") from None
            cache["user"] = user
            return secret
        return secret_for

    def authenticate(self, environ: dict, method: str, raw_path: str, query: list, headers: dict):
        cache: dict = {}
        req = sigv4.Request(method, raw_path, query, headers, environ.get("QUERY_STRING", ""))
        try:
            auth = sigv4.verify(req, self._secret(cache))
        except sigv4.SignatureError as e:
            self.ctx.event("s3", "login_failed", address=environ.get("REMOTE_ADDR"), code=e.code)
            raise S3Error(e.code, str(e)) from None
        if auth is None:
            return ANONYMOUS, None
        return cache["user"], auth

    # -- WSGI --------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response) -> Iterator[bytes]:
        rid = uuid.uuid4().hex[:16].upper()
        method = environ["REQUEST_METHOD"].upper()
        uri = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
        raw_path, _, qs = uri.partition("?")
        if raw_path.startswith(("http://", "https://")):
            raw_path = "/" + raw_path.split("/", 3)[-1]
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        if environ.get("CONTENT_LENGTH"):
            headers["content-length"] = environ["CONTENT_LENGTH"]
        call = None
        try:
            query = sigv4.parse_query(qs)
            path = unquote(raw_path, errors="strict")
            bucket, _, key = path.lstrip("/").partition("/")
            user, auth = self.authenticate(environ, method, raw_path, query, headers)
            call = Call(self, environ, method, bucket, key, dict(query), headers, user, auth,
                        environ.get("REMOTE_ADDR", ""), rid)
            self._maybe_reclaim()
            resp = self.route(call)
        except S3Error as e:
            resp = self._error(e, raw_path, rid)
        except errors.ArchiveError as e:
            resp = self._error(from_archive(e), raw_path, rid)
        except UnicodeDecodeError:
            resp = self._error(S3Error("InvalidURI", "Couldn't parse the specified URI."), raw_path, rid)
        except Exception:
            self.log.exception("s3: internal error on %s %s", method, raw_path)
            resp = self._error(S3Error("InternalError", "We encountered an internal error. Please try again."),
                               raw_path, rid)
        if call is not None and call._body is not None and not call._body.finished:
            call._body.drain()
        elif call is None and method in ("PUT", "POST"):
            Body(environ, headers, None).drain()
        hdrs = [("x-amz-request-id", rid), ("Server", "EdgeArchive")] + resp.headers
        names = {h.lower() for h, _ in hdrs}
        body = resp.body
        if isinstance(body, (bytes, bytearray)):
            if "content-length" not in names:
                hdrs.append(("Content-Length", str(len(body))))
            if body and "content-type" not in names:
                hdrs.append(("Content-Type", "application/xml"))
            body = [bytes(body)] if method != "HEAD" else []
        elif method == "HEAD":
            body = []
        start_response(f"{resp.status} {_REASONS.get(resp.status, 'Status')}", hdrs)
        return body

    def _error(self, e: S3Error, resource: str, rid: str) -> Response:
        doc = error_document(e.code, e.message, resource, rid, **e.extra)
        if e.status == 304:
            doc = b""
        return Response(e.status, list(e.headers), doc)

    def _maybe_reclaim(self) -> None:
        """Abandoned multipart uploads are reclaimed now and then (config: multipart_expiry)."""
        now = time.time()
        if now - self._last_reclaim < 600:
            return
        self._last_reclaim = now
        try:
            n = self.staging.reclaim(float(self.config.get("multipart_expiry", 7 * 86400)))
            if n:
                self.log.info("s3: reclaimed %d abandoned multipart uploads", n)
        except OSError:
            self.log.exception("s3: multipart reclaim failed")


_REASONS = {200: "OK", 204: "No Content", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            411: "Length Required", 412: "Precondition Failed", 416: "Requested Range Not Satisfiable",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
            507: "Insufficient Storage"}
