"""AWS request signatures: SigV4 (header and presigned query) and SigV2 (header and query).

Written from AWS's specification ("Signature Version 4 signing process", "Authenticating
Requests: Using Query Parameters", the streaming-payload pages, and the SigV2 REST pages) and
tested against AWS's published examples and against botocore's signer.  The server recomputes
the signature from the request as received with the caller's secret and compares in constant
time; which headers are signed is the client's choice (SignedHeaders), `host` must be among them.

Nothing here reads a body: the payload hash the client declared (`x-amz-content-sha256`) is
returned for the caller to check while it streams the body.
"""
from __future__ import annotations

import base64
import calendar
import functools
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
MAX_SKEW = 15 * 60
MAX_PRESIGN = 7 * 24 * 3600

#: SigV2's sub-resources that are part of the signed resource.
V2_SUBRESOURCES = frozenset("""acl cors delete lifecycle location logging notification partNumber policy
requestPayment response-cache-control response-content-disposition response-content-encoding
response-content-language response-content-type response-expires restore tagging torrent uploadId uploads
versionId versioning versions website object-lock retention legal-hold""".split())


class SignatureError(Exception):
    """`code` is the S3 error code the client gets."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Request:
    """What signing needs of an HTTP request, as received."""
    method: str
    raw_path: str                     # as on the request line, percent-encoded, no query
    query: list[tuple[str, str]]      # decoded (name, value) pairs in order
    headers: Mapping[str, str]        # lower-case names
    raw_query: str = ""               # the query string as sent (some signers sort it unencoded)


@dataclass
class Auth:
    """A verified request: whose key, and how the payload must be checked."""
    access_key: str
    payload_hash: str                 # hex sha256, UNSIGNED-PAYLOAD or a STREAMING-* marker
    version: int = 4
    signature: str = ""               # seed signature (streaming chunks chain from it)
    amz_date: str = ""
    scope: str = ""
    signing_key: bytes = b""


def uri_encode(text: str, slash: bool = True) -> str:
    return quote(text, safe="-_.~/" if not slash else "-_.~")


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two signatures as sent (any text, never an exception)."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def parse_query(qs: str) -> list[tuple[str, str]]:
    """Query pairs as SigV4 sees them: split on & and the first =, percent-decoded, and '+'
    kept as '+' (clients encode spaces as %20; botocore signs a literal '+' as %2B)."""
    out = []
    for part in qs.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        out.append((unquote(k, errors="strict"), unquote(v, errors="strict")))
    return out


@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The day's key of a secret (four HMACs), derived once per (secret, date, region, service):
    a client signs every request of a day with the same one.  Whether the access key still
    exists is not cached here: the caller looks the secret up first (and a revoked key fails
    there)."""
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    enc = sorted((uri_encode(k), uri_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in enc)


def _trim(v: str) -> str:
    return " ".join(v.strip().split())


def canonical_request(method: str, path: str, query: Iterable[tuple[str, str]] | str, headers: Mapping[str, str],
                      signed: list[str], payload_hash: str) -> str:
    lines = "".join(f"{h}:{_trim(headers.get(h, ''))}\n" for h in signed)
    q = query if isinstance(query, str) else canonical_query(query)
    return "\n".join([method, path, q, lines, ";".join(signed), payload_hash])


def _raw_sorted(raw: str, drop: str | None) -> str:
    pairs = sorted(p.partition("=")[::2] for p in raw.split("&") if p)
    return "&".join(f"{k}={v}" for k, v in pairs if k != drop)


def string_to_sign(amz_date: str, scope: str, creq: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])


def sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def canonical_paths(raw_path: str) -> list[str]:
    """The canonical URI as the client most likely computed it: the path as sent (S3 clients
    send it already encoded), else re-encoded from its decoded form."""
    canon = uri_encode(unquote(raw_path), slash=False)
    return [raw_path] if canon == raw_path else [raw_path, canon]


@functools.lru_cache(maxsize=256)
def _amz_time(value: str) -> float:
    return calendar.timegm(time.strptime(value, "%Y%m%dT%H%M%SZ"))


def parse_amz_date(value: str) -> float:
    """Seconds since the epoch of an X-Amz-Date (requests of one second share the text: the
    strptime result is kept; a malformed value raises and is never cached)."""
    try:
        return _amz_time(value)
    except (ValueError, TypeError):
        raise SignatureError("AccessDenied", f"bad X-Amz-Date {value!r}") from None


_CRED = re.compile(r"^([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request$")


def _parse_authorization(value: str) -> tuple[str, list[str], str]:
    rest = value[len(ALGORITHM):].strip()
    fields = {}
    for part in rest.split(","):
        k, _, v = part.strip().partition("=")
        fields[k] = v
    try:
        return fields["Credential"], fields["SignedHeaders"].split(";"), fields["Signature"]
    except KeyError:
        raise SignatureError("AuthorizationHeaderMalformed", "the Authorization header is malformed") from None


def verify(req: Request, secret_for: Callable[[str], str], now: float | None = None) -> Auth | None:
    """Check a request's signature (any supported kind).  Returns None for an anonymous request,
    raises SignatureError when a signature is present but wrong, expired or malformed.
    `secret_for(access_key)` raises SignatureError("InvalidAccessKeyId", ...) for unknown keys."""
    now = time.time() if now is None else now
    q = dict(req.query)
    authz = req.headers.get("authorization", "")
    if authz.startswith(ALGORITHM):
        return _verify_v4_header(req, authz, secret_for, now)
    if q.get("X-Amz-Algorithm") == ALGORITHM:
        return _verify_v4_query(req, q, secret_for, now)
    if authz.startswith("AWS "):
        return _verify_v2(req, authz[4:], None, secret_for, now)
    if "AWSAccessKeyId" in q and "Signature" in q:
        return _verify_v2(req, f"{q['AWSAccessKeyId']}:{q['Signature']}", q.get("Expires"), secret_for, now)
    if authz:
        raise SignatureError("AccessDenied", "unsupported Authorization scheme")
    return None


def _scope_parts(credential: str) -> tuple[str, str, str, str]:
    m = _CRED.match(credential)
    if not m:
        raise SignatureError("AuthorizationHeaderMalformed", f"bad credential scope {credential!r}")
    return m.group(1), m.group(2), m.group(3), m.group(4)


def _check(req: Request, signed: list[str], key: bytes, amz_date: str, scope: str, payload: str,
           query: list[tuple[str, str]], signature: str) -> None:
    if "host" not in signed:
        raise SignatureError("AccessDenied", "the host header must be signed")
    queries: list = [query]
    if req.raw_query:
        alt = _raw_sorted(req.raw_query, "X-Amz-Signature")
        if alt != canonical_query(query):
            queries.append(alt)
    for path in canonical_paths(req.raw_path):
        for q in queries:
            creq = canonical_request(req.method, path, q, req.headers, signed, payload)
            if same(sign(key, string_to_sign(amz_date, scope, creq)), signature):
                return
    raise SignatureError("SignatureDoesNotMatch",
                         "The request signature we calculated does not match the signature you provided.")


def _verify_v4_header(req: Request, authz: str, secret_for, now: float) -> Auth:
    credential, signed, signature = _parse_authorization(authz)
    akid, date, region, service = _scope_parts(credential)
    amz_date = req.headers.get("x-amz-date") or ""
    if not amz_date:
        raise SignatureError("AccessDenied", "X-Amz-Date is required with AWS4-HMAC-SHA256")
    t = parse_amz_date(amz_date)
    if abs(now - t) > MAX_SKEW:
        raise SignatureError("RequestTimeTooSkewed",
                             "The difference between the request time and the server's time is too large.")
    if not amz_date.startswith(date):
        raise SignatureError("SignatureDoesNotMatch", "credential date does not match X-Amz-Date")
    payload = req.headers.get("x-amz-content-sha256")
    if payload is None:
        raise SignatureError("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    secret = secret_for(akid)
    key = signing_key(secret, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    _check(req, signed, key, amz_date, scope, payload, req.query, signature)
    return Auth(akid, payload, 4, signature, amz_date, scope, key)


def _verify_v4_query(req: Request, q: dict, secret_for, now: float) -> Auth:
    try:
        credential, amz_date = q["X-Amz-Credential"], q["X-Amz-Date"]
        signed, signature = q["X-Amz-SignedHeaders"].split(";"), q["X-Amz-Signature"]
        expires = int(q.get("X-Amz-Expires", "604800"))
    except (KeyError, ValueError):
        raise SignatureError("AuthorizationQueryParametersError", "incomplete presigned query") from None
    akid, date, region, service = _scope_parts(credential)
    t = parse_amz_date(amz_date)
    if not 0 <= expires <= MAX_PRESIGN:
        raise SignatureError("AuthorizationQueryParametersError", "X-Amz-Expires must be 0-604800 seconds")
    if now > t + expires:
        raise SignatureError("AccessDenied", "Request has expired")
    if t - now > MAX_SKEW:
        raise SignatureError("RequestTimeTooSkewed", "the presigned request is dated in the future")
    payload = req.headers.get("x-amz-content-sha256") or UNSIGNED
    secret = secret_for(akid)
    key = signing_key(secret, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    query = [(k, v) for k, v in req.query if k != "X-Amz-Signature"]
    _check(req, signed, key, amz_date, scope, UNSIGNED if payload.startswith("STREAMING") else payload,
           query, signature)
    return Auth(akid, payload, 4, signature, amz_date, scope, key)


def v2_string_to_sign(req: Request, expires: str | None) -> str:
    h = req.headers
    amz = sorted((k, _trim(v)) for k, v in h.items() if k.startswith("x-amz-"))
    date = expires if expires is not None else ("" if "x-amz-date" in h else h.get("date", ""))
    resource = req.raw_path
    sub = sorted((k, v) for k, v in req.query if k in V2_SUBRESOURCES)
    if sub:
        resource += "?" + "&".join(f"{k}={v}" if v != "" else k for k, v in sub)
    lines = [req.method, h.get("content-md5", ""), h.get("content-type", ""), date]
    return "\n".join(lines + [f"{k}:{v}" for k, v in amz] + [resource])


def _verify_v2(req: Request, cred: str, expires: str | None, secret_for, now: float) -> Auth:
    akid, _, signature = cred.partition(":")
    if expires is not None:
        try:
            if now > int(expires):
                raise SignatureError("AccessDenied", "Request has expired")
        except ValueError:
            raise SignatureError("AccessDenied", "bad Expires") from None
    secret = secret_for(akid)
    text = v2_string_to_sign(req, expires)
    want = base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()).decode()
    if not same(want, signature):
        alt = Request(req.method, uri_encode(unquote(req.raw_path), slash=False), req.query, req.headers)
        want2 = base64.b64encode(hmac.new(secret.encode(), v2_string_to_sign(alt, expires).encode(),
                                          hashlib.sha1).digest()).decode()
        if not same(want2, signature):
            raise SignatureError("SignatureDoesNotMatch",
                                 "The request signature we calculated does not match the signature you provided.")
    if expires is None:
        date = req.headers.get("x-amz-date") or req.headers.get("date")
        if date:
            from email.utils import parsedate_to_datetime
            try:
                t = parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                t = None
            if t is not None and abs(now - t) > MAX_SKEW:
                raise SignatureError("RequestTimeTooSkewed",
                                     "The difference between the request time and the server's time is too large.")
    return Auth(akid, UNSIGNED, 2)


def chunk_string_to_sign(auth: Auth, previous: str, chunk_sha256: str) -> str:
    return "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", auth.amz_date, auth.scope, previous, EMPTY_SHA256, chunk_sha256])


def trailer_string_to_sign(auth: Auth, previous: str, trailer_sha256: str) -> str:
    return "\n".join(["AWS4-HMAC-SHA256-TRAILER", auth.amz_date, auth.scope, previous, trailer_sha256])
