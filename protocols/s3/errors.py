"""S3 errors: the one table from archive errors to S3 error codes, and the error documents.

Handlers raise :class:`S3Error` for protocol-level problems and let archive errors through;
the application turns both into an S3 XML error document with the right HTTP status here.
"""
from __future__ import annotations

from archive import errors

#: S3 code -> HTTP status (the codes this server sends).
STATUS: dict[str, int] = {
    "AccessDenied": 403, "AccountProblem": 403, "AllAccessDisabled": 403,
    "AuthorizationHeaderMalformed": 400, "AuthorizationQueryParametersError": 400,
    "BadDigest": 400, "BucketAlreadyExists": 409, "BucketAlreadyOwnedByYou": 409, "BucketNotEmpty": 409,
    "EntityTooLarge": 400, "EntityTooSmall": 400, "IllegalVersioningConfigurationException": 400,
    "IncompleteBody": 400, "InternalError": 500, "InvalidAccessKeyId": 403, "InvalidArgument": 400,
    "InvalidBucketName": 400, "InvalidBucketState": 409, "InvalidDigest": 400, "InvalidPart": 400, "InvalidPartOrder": 400,
    "InvalidRange": 416, "InvalidRequest": 400, "KeyTooLongError": 400, "MalformedXML": 400,
    "MethodNotAllowed": 405, "MissingContentLength": 411, "NoSuchBucket": 404, "NoSuchKey": 404,
    "NoSuchUpload": 404, "NoSuchVersion": 404, "NotImplemented": 501, "PreconditionFailed": 412,
    "NotModified": 304, "RequestTimeTooSkewed": 403, "SignatureDoesNotMatch": 403,
    "XAmzContentSHA256Mismatch": 400, "ServiceUnavailable": 503, "SlowDown": 503,
    "ObjectLockConfigurationNotFoundError": 404, "NoSuchObjectLockConfiguration": 404,
    "InvalidObjectName": 400, "ObjectNameConflict": 409, "QuotaExceeded": 507,
    "NoSuchTagSet": 404, "NoSuchBucketPolicy": 404, "NoSuchLifecycleConfiguration": 404,
    "ServerSideEncryptionConfigurationNotFoundError": 404, "NoSuchCORSConfiguration": 404,
}


class S3Error(Exception):
    def __init__(self, code: str, message: str = "", status: int | None = None, **extra: str):
        super().__init__(message or code)
        self.code = code
        self.message = message or code
        self.status = status or STATUS.get(code, 400)
        self.extra = extra
        self.headers: list[tuple[str, str]] = []


#: The one table: archive error -> S3 code (most specific first; the first match wins).
#: `NotFound` depends on what was looked up, so handlers pass the code for it (NoSuchKey,
#: NoSuchBucket, NoSuchVersion, NoSuchUpload).
ERROR_TABLE: list[tuple[type[BaseException], str]] = [
    (errors.WormLocked, "AccessDenied"),
    (errors.AuthFailed, "InvalidAccessKeyId"),
    (errors.PermissionDenied, "AccessDenied"),
    (errors.ReadOnly, "AccessDenied"),
    (errors.NotFound, "NoSuchKey"),
    (errors.NotEmpty, "BucketNotEmpty"),
    (errors.Exists, "BucketAlreadyOwnedByYou"),
    (errors.NotADirectory, "ObjectNameConflict"),     # "a/b" when "a" is an object
    (errors.IsADirectory, "ObjectNameConflict"),      # "a" when "a/..." objects exist
    (errors.InvalidPath, "InvalidObjectName"),
    (errors.Conflict, "ObjectNameConflict"),
    (errors.QuotaExceeded, "QuotaExceeded"),
    (errors.NoSpace, "ServiceUnavailable"),
    (errors.Corrupt, "InternalError"),
    (errors.ArchiveError, "InternalError"),
]


def from_archive(exc: BaseException, not_found: str = "NoSuchKey") -> S3Error:
    """The S3Error for an archive error (InternalError for anything unexpected)."""
    if isinstance(exc, S3Error):
        return exc
    for cls, code in ERROR_TABLE:
        if isinstance(exc, cls):
            if cls is errors.NotFound:
                code = not_found
            return S3Error(code, str(exc) or code)
    return S3Error("InternalError", "internal error")
