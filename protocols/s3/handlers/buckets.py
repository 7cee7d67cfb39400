"""Service and bucket operations: ListBuckets, Create/Delete/HeadBucket, location, versioning,
Object Lock configuration.  A bucket is a share."""
from __future__ import annotations

import re

from archive import ANONYMOUS, accesskeys, errors, objects

from ..errors import S3Error
from ..xml import document, el, iso, owner, parse
from ..app import Call, Response

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def list_buckets(call: Call) -> Response:
    if call.user is ANONYMOUS:
        raise S3Error("AccessDenied", "Anonymous users cannot list buckets")
    granted = dict(call.repo.shares_for(call.user))
    buckets = [el("Bucket", children=[el("Name", s.name), el("CreationDate", iso(s.created_at))])
               for s in call.repo.list_shares() if s.name in granted]
    return Response(200, [], document("ListAllMyBucketsResult",
                                      [owner(call.user_name), el("Buckets", children=buckets)]))


def create_bucket(call: Call) -> Response:
    name = call.bucket
    if call.user is ANONYMOUS:
        raise S3Error("AccessDenied", "Anonymous users cannot create buckets")
    if not _BUCKET.match(name) or ".." in name or re.match(r"^\d+\.\d+\.\d+\.\d+$", name):
        raise S3Error("InvalidBucketName", "The specified bucket is not valid.", BucketName=name)
    body = call.body().read_all(64 << 10)
    if body.strip():
        parse(body, "CreateBucketConfiguration")
    if name in {s.name for s in call.repo.list_shares()}:
        if name in dict(call.repo.shares_for(call.user)):
            if call.app.region == "us-east-1":      # S3's default region re-creates one's own bucket: 200
                return Response(200, [("Location", f"/{name}")])
            raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded "
                          "and you already own it.", BucketName=name)
        raise S3Error("BucketAlreadyExists", "The requested bucket name is not available.", BucketName=name)
    if not accesskeys.can_create_shares(call.repo, call.user):
        raise S3Error("AccessDenied", f"user {call.user_name!r} may not create buckets "
                      f"(archivectl user set {call.user_name} --create-shares)")
    opts = dict(call.app.config.get("new_buckets") or {})
    try:
        call.repo.add_share(name, retention=opts.get("retention"), worm_days=int(opts.get("worm_days", 0)))
    except errors.Exists:
        raise S3Error("BucketAlreadyExists", "The requested bucket name is not available.", BucketName=name) from None
    if opts.get("allow_purge"):
        call.repo.set_share(name, allow_purge=True)
    call.repo.grant(call.user_name, name, "rw")
    call.app.forget_share(name)
    lock = call.headers.get("x-amz-bucket-object-lock-enabled", "").lower() == "true"
    status = opts.get("versioning", "Enabled")
    call.app.versioning.created(name, None if status == "unset" else "Enabled", lock)
    return Response(200, [("Location", f"/{name}")])


def delete_bucket(call: Call) -> Response:
    fs = call.share(write=True)
    try:
        objects.remove_share(call.repo, fs.share_name)
        call.app.forget_share(fs.share_name)
        call.app.versioning.dropped(fs.share_name)
        for up in call.app.staging.uploads(fs.share_name):      # unfinished uploads go with it
            call.app.staging.abort(up.upload_id)
    except errors.NotEmpty:
        raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty (versions are kept).",
                      BucketName=fs.share_name) from None
    return Response(204)


def head_bucket(call: Call) -> Response:
    call.share()
    return Response(200, [("x-amz-bucket-region", call.app.region)])


def get_location(call: Call) -> Response:
    call.share()
    region = call.app.region
    return Response(200, [], document("LocationConstraint", []) if region == "us-east-1" else
                    ('<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns='
                     f'"http://s3.amazonaws.com/doc/2006-03-01/">{region}</LocationConstraint>').encode())


def get_versioning(call: Call) -> Response:
    """The S3 view's status (none until a bucket made unversioned is first enabled); the
    archive keeps every version whatever it says (see :mod:`..versioning`)."""
    fs = call.share()
    status = call.versioning(fs.share_name).status
    return Response(200, [], document("VersioningConfiguration", [el("Status", status)] if status else []))


def put_versioning(call: Call) -> Response:
    """Enabled or Suspended, as S3 clients see it; Suspended only changes the S3 view (null
    versions replace each other there) - the archive still keeps every version."""
    fs = call.share(write=True)
    doc = parse(call.body().read_all(64 << 10), "VersioningConfiguration")
    status = doc.findtext("Status")
    if status not in ("Enabled", "Suspended"):
        raise S3Error("MalformedXML", "Status must be Enabled or Suspended")
    if status == "Suspended" and (call.versioning(fs.share_name).lock
                                  or objects.share_policy(call.repo, fs.share_name)["worm_days"]):
        raise S3Error("InvalidBucketState", "An Object Lock configuration is present on this bucket, "
                      "so the versioning state cannot be changed.")
    call.app.versioning.set(fs.share_name, status)
    return Response(200)


def get_object_lock(call: Call) -> Response:
    fs = call.share()
    days = objects.share_policy(call.repo, fs.share_name)["worm_days"]
    if not days:
        raise S3Error("ObjectLockConfigurationNotFoundError", "Object Lock configuration does not exist for this bucket",
                      BucketName=fs.share_name)
    rule = el("Rule", children=[el("DefaultRetention", children=[el("Mode", "COMPLIANCE"), el("Days", days)])])
    return Response(200, [], document("ObjectLockConfiguration", [el("ObjectLockEnabled", "Enabled"), rule]))


def not_configured(code: str, message: str):
    def handler(call: Call) -> Response:
        call.share()
        raise S3Error(code, message, BucketName=call.bucket)
    return handler
