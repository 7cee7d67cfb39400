"""Request routing: (method, bucket?/key?, sub-resource) -> handler."""
from __future__ import annotations

from ..errors import S3Error
from . import buckets, listing, multipart, objects


def route(call) -> "object":
    m, q = call.method, call.query
    if not call.bucket:
        if m == "GET":
            return buckets.list_buckets(call)
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")
    if not call.key:
        return _bucket(call, m, q)
    return _object(call, m, q)


def _bucket(call, m, q):
    if m == "GET":
        for sub, handler in (("location", buckets.get_location), ("versioning", buckets.get_versioning),
                             ("object-lock", buckets.get_object_lock), ("versions", listing.list_versions),
                             ("uploads", multipart.list_uploads), ("acl", objects.get_acl),
                             ("tagging", buckets.not_configured("NoSuchTagSet", "The TagSet does not exist")),
                             ("policy", buckets.not_configured("NoSuchBucketPolicy", "The bucket policy does not exist")),
                             ("lifecycle", buckets.not_configured("NoSuchLifecycleConfiguration",
                                                                  "The lifecycle configuration does not exist")),
                             ("cors", buckets.not_configured("NoSuchCORSConfiguration",
                                                             "The CORS configuration does not exist")),
                             ("encryption", buckets.not_configured("ServerSideEncryptionConfigurationNotFoundError",
                                                                   "The server side encryption configuration was not found"))):
            if sub in q:
                return handler(call)
        return listing.list_objects(call)
    if m == "HEAD":
        return buckets.head_bucket(call)
    if m == "PUT":
        if "versioning" in q:
            return buckets.put_versioning(call)
        if q:
            raise S3Error("NotImplemented", "This bucket configuration is not supported by the archive.")
        return buckets.create_bucket(call)
    if m == "DELETE":
        if q:
            raise S3Error("NotImplemented", "This bucket configuration is not supported by the archive.")
        return buckets.delete_bucket(call)
    if m == "POST" and "delete" in q:
        return objects.delete_objects(call)
    raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")


def _object(call, m, q):
    if m == "GET":
        if "attributes" in q:
            return objects.get_attributes(call)
        if "uploadId" in q:
            return multipart.list_parts(call)
        if "retention" in q:
            return objects.get_retention(call)
        if "acl" in q:
            return objects.get_acl(call)
        if "tagging" in q:
            return objects.get_tagging(call)
        return objects.get_object(call)
    if m == "HEAD":
        return objects.get_object(call, head=True)
    if m == "PUT":
        if "uploadId" in q and "partNumber" in q:
            return multipart.upload_part(call)
        if "acl" in q or "tagging" in q or "retention" in q or "legal-hold" in q:
            raise S3Error("NotImplemented", "Object ACLs, tags and per-object retention are not kept by the archive "
                          "(grants and the share's WORM period apply).")
        return objects.put_object(call)
    if m == "DELETE":
        if "uploadId" in q:
            return multipart.abort(call)
        return objects.delete_object(call)
    if m == "POST":
        if "uploads" in q:
            return multipart.create(call)
        if "uploadId" in q:
            return multipart.complete(call)
    raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")
