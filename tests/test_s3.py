"""The S3 adapter driven by real clients: boto3, the AWS CLI, s3cmd and rclone.

Every test runs against a real server on a free loopback port and asserts what a user would
see: bytes, ETags, version ids, error codes, and the same data through archivectl's view
(ShareFS), FTP and WebDAV.
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import time
import zlib
import base64
from pathlib import Path

import boto3
import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from archive import Origin
from archive.multipart import Staging
from protocols.s3 import chunked
from tests.s3_helpers import make_server, need, run, s3cmd_config

MiB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = make_server(tmp_path_factory.mktemp("s3"))
    yield s
    s.adapter.stop(1.0)
    s.repo.close()


@pytest.fixture
def s3(server):
    return server.client()


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def versions(server, share: str, path: str):
    return server.admin(share).versions(path)


# -- boto3 -------------------------------------------------------------------------------
def test_put_get_range_metadata(server, s3):
    body = os.urandom(300_000)
    r = s3.put_object(Bucket="data", Key="docs/a.bin", Body=body, ContentType="application/x-test",
                      Metadata={"sensor": "t-17"})
    assert r["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket="data", Key="docs/a.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test" and got["Metadata"] == {"sensor": "t-17"}
    assert got["VersionId"] == r["VersionId"]
    part = s3.get_object(Bucket="data", Key="docs/a.bin", Range="bytes=1000-1999")
    assert part["Body"].read() == body[1000:2000] and part["ContentRange"] == f"bytes 1000-1999/{len(body)}"
    assert s3.get_object(Bucket="data", Key="docs/a.bin", Range="bytes=-10")["Body"].read() == body[-10:]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="data", Key="docs/a.bin", Range=f"bytes={len(body)}-")
    assert status(e.value) == 416
    # conditionals
    etag = r["ETag"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="data", Key="docs/a.bin", IfNoneMatch=etag)
    assert status(e.value) == 304
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="data", Key="docs/a.bin", IfMatch='"0000"')
    assert status(e.value) == 412
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="data", Key="docs/a.bin", Body=b"x", IfNoneMatch="*")
    assert status(e.value) == 412
    # the archive's view: one version, origin s3, the folder exists
    vs = versions(server, "data", "/docs/a.bin")
    assert len(vs) == 1 and vs[0].origin.protocol == "s3" and vs[0].origin.user == "alice"
    assert server.admin("data").stat("/docs").is_dir


def test_versions_delete_markers_and_restore_by_copy(server, s3):
    v1 = s3.put_object(Bucket="data", Key="v/k.txt", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket="data", Key="v/k.txt", Body=b"two")["VersionId"]
    d = s3.delete_object(Bucket="data", Key="v/k.txt")
    assert d["DeleteMarker"] is True
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="data", Key="v/k.txt")
    assert code(e.value) == "NoSuchKey"
    lv = s3.list_object_versions(Bucket="data", Prefix="v/")
    assert [x["VersionId"] for x in lv["Versions"]] == [v2, v1]
    assert [(m["VersionId"], m["IsLatest"]) for m in lv["DeleteMarkers"]] == [(d["VersionId"], True)]
    assert s3.get_object(Bucket="data", Key="v/k.txt", VersionId=v1)["Body"].read() == b"one"
    # restore v1 by copying it onto the key
    c = s3.copy_object(Bucket="data", Key="v/k.txt", CopySource={"Bucket": "data", "Key": "v/k.txt", "VersionId": v1})
    assert s3.get_object(Bucket="data", Key="v/k.txt")["Body"].read() == b"one"
    assert c["CopySourceVersionId"] == v1
    vs = versions(server, "data", "/v/k.txt")
    assert [v.deleted for v in vs] == [False, False, True, False]
    assert str(vs[-1].number) == c["VersionId"]
    # no purge on a share that does not allow it
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket="data", Key="v/k.txt", VersionId=v1)
    assert code(e.value) == "AccessDenied"
    assert len(versions(server, "data", "/v/k.txt")) == 4
    # a share the admin made is versioned; a share with a WORM hold cannot be suspended
    assert s3.get_bucket_versioning(Bucket="data")["Status"] == "Enabled"
    with pytest.raises(ClientError) as e:
        s3.put_bucket_versioning(Bucket="locked", VersioningConfiguration={"Status": "Suspended"})
    assert code(e.value) == "InvalidBucketState"


def test_suspended_versioning_is_an_s3_view_the_archive_keeps_every_version(server, s3):
    """Suspended: S3 clients see one "null" version that PUTs replace; the archive underneath
    still has every write, and DELETE ?versionId=null purges only where purging is allowed."""
    s3.put_bucket_versioning(Bucket="purgeable", VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket="purgeable", Key="susp/k", Body=b"kept")["VersionId"]
    s3.put_bucket_versioning(Bucket="purgeable", VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket="purgeable")["Status"] == "Suspended"
    assert "VersionId" not in s3.put_object(Bucket="purgeable", Key="susp/k", Body=b"null-1")
    s3.put_object(Bucket="purgeable", Key="susp/k", Body=b"null-2")
    assert s3.get_object(Bucket="purgeable", Key="susp/k")["Body"].read() == b"null-2"
    assert s3.get_object(Bucket="purgeable", Key="susp/k", VersionId="null")["Body"].read() == b"null-2"
    lv = s3.list_object_versions(Bucket="purgeable", Prefix="susp/")["Versions"]
    assert [(x["VersionId"], x["IsLatest"]) for x in lv] == [("null", True), (v1, False)]
    # the archive kept all three writes
    assert [v.size for v in versions(server, "purgeable", "/susp/k")] == [4, 6, 6]
    s3.delete_object(Bucket="purgeable", Key="susp/k", VersionId="null")
    assert s3.get_object(Bucket="purgeable", Key="susp/k")["Body"].read() == b"kept"
    assert [x["VersionId"] for x in s3.list_object_versions(Bucket="purgeable", Prefix="susp/")["Versions"]] == [v1]
    s3.put_bucket_versioning(Bucket="purgeable", VersioningConfiguration={"Status": "Enabled"})
    s3.delete_object(Bucket="purgeable", Key="susp/k", VersionId=v1)
    assert versions(server, "purgeable", "/susp/k") == []
    # on a share without --allow-purge, a suspended PUT still only adds a version
    s3.put_bucket_versioning(Bucket="data", VersioningConfiguration={"Status": "Suspended"})
    try:
        s3.put_object(Bucket="data", Key="susp/x", Body=b"a")
        s3.put_object(Bucket="data", Key="susp/x", Body=b"b")
        with pytest.raises(ClientError) as e:
            s3.delete_object(Bucket="data", Key="susp/x", VersionId="null")
        assert code(e.value) == "AccessDenied"
        assert [v.size for v in versions(server, "data", "/susp/x")] == [1, 1]
    finally:
        s3.put_bucket_versioning(Bucket="data", VersioningConfiguration={"Status": "Enabled"})


def test_purge_and_worm(server, s3):
    v1 = s3.put_object(Bucket="purgeable", Key="p", Body=b"a")["VersionId"]
    v2 = s3.put_object(Bucket="purgeable", Key="p", Body=b"b")["VersionId"]
    s3.delete_object(Bucket="purgeable", Key="p", VersionId=v2)
    assert s3.get_object(Bucket="purgeable", Key="p")["Body"].read() == b"a"
    marker = s3.delete_object(Bucket="purgeable", Key="p")["VersionId"]
    s3.delete_object(Bucket="purgeable", Key="p", VersionId=marker)     # removing the marker brings it back
    assert s3.get_object(Bucket="purgeable", Key="p")["Body"].read() == b"a"
    s3.delete_object(Bucket="purgeable", Key="p", VersionId=v1)
    assert "Versions" not in s3.list_object_versions(Bucket="purgeable")
    # WORM: purging is allowed on the share but not for a version under its 30-day hold
    v = s3.put_object(Bucket="locked", Key="w", Body=b"keep")["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket="locked", Key="w", VersionId=v)
    assert code(e.value) == "AccessDenied"
    assert s3.get_object(Bucket="locked", Key="w")["Body"].read() == b"keep"
    lock = s3.get_object_lock_configuration(Bucket="locked")["ObjectLockConfiguration"]
    assert lock["Rule"]["DefaultRetention"] == {"Mode": "COMPLIANCE", "Days": 30}
    ret = s3.get_object_retention(Bucket="locked", Key="w")["Retention"]
    assert ret["Mode"] == "COMPLIANCE"


def test_listing_delimiter_and_pagination(server, s3):
    keys = [f"list/{d}/f{i:02d}" for d in ("a", "b") for i in range(5)] + ["list/top-1", "list/top.2"]
    for k in keys:
        s3.put_object(Bucket="data", Key=k, Body=k.encode())
    got = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="data", Prefix="list/",
                                                                             PaginationConfig={"PageSize": 3})
           for o in p.get("Contents", [])]
    assert got == sorted(keys)
    got1 = [o["Key"] for p in s3.get_paginator("list_objects").paginate(Bucket="data", Prefix="list/",
                                                                         PaginationConfig={"PageSize": 4})
            for o in p.get("Contents", [])]
    assert got1 == sorted(keys)
    r = s3.list_objects_v2(Bucket="data", Prefix="list/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["list/a/", "list/b/"]
    assert [o["Key"] for o in r["Contents"]] == ["list/top-1", "list/top.2"]
    r = s3.list_objects_v2(Bucket="data", Prefix="list/", StartAfter="list/b/f02")
    assert [o["Key"] for o in r["Contents"]] == ["list/b/f03", "list/b/f04", "list/top-1", "list/top.2"]
    with pytest.raises(ClientError) as e:
        s3.list_objects(Bucket="data", MaxKeys=-1)
    assert code(e.value) == "InvalidArgument"


def test_multipart_one_version_and_abort(server, s3, tmp_path):
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(MiB)]
    up = s3.create_multipart_upload(Bucket="data", Key="mp/big.bin", ContentType="video/mp4")["UploadId"]
    etags = [s3.upload_part(Bucket="data", Key="mp/big.bin", UploadId=up, PartNumber=i + 1, Body=p)["ETag"]
             for i, p in enumerate(parts)]
    assert [p["PartNumber"] for p in s3.list_parts(Bucket="data", Key="mp/big.bin", UploadId=up)["Parts"]] == [1, 2, 3]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="data")["Uploads"]] == [up]
    assert not server.admin("data").exists("/mp/big.bin")          # no version before Complete
    r = s3.complete_multipart_upload(Bucket="data", Key="mp/big.bin", UploadId=up, MultipartUpload={
        "Parts": [{"ETag": e, "PartNumber": i + 1} for i, e in enumerate(etags)]})
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert r["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-3"'
    got = s3.get_object(Bucket="data", Key="mp/big.bin")
    assert got["Body"].read() == b"".join(parts) and got["ContentType"] == "video/mp4"
    assert len(versions(server, "data", "/mp/big.bin")) == 1
    assert s3.get_object(Bucket="data", Key="mp/big.bin", PartNumber=2)["Body"].read() == parts[1]
    # UploadPartCopy from that object, then abort: nothing is left
    up2 = s3.create_multipart_upload(Bucket="data", Key="mp/aborted")["UploadId"]
    s3.upload_part_copy(Bucket="data", Key="mp/aborted", UploadId=up2, PartNumber=1,
                        CopySource={"Bucket": "data", "Key": "mp/big.bin"}, CopySourceRange="bytes=0-99")
    s3.abort_multipart_upload(Bucket="data", Key="mp/aborted", UploadId=up2)
    assert not server.admin("data").exists("/mp/aborted")
    assert not (Staging(server.repo).root / up2).exists()
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="data", Key="mp/aborted", UploadId=up2, PartNumber=1, Body=b"x")
    assert code(e.value) == "NoSuchUpload"
    # a small non-last part is refused at Complete
    up3 = s3.create_multipart_upload(Bucket="data", Key="mp/small")["UploadId"]
    e1 = s3.upload_part(Bucket="data", Key="mp/small", UploadId=up3, PartNumber=1, Body=b"a")["ETag"]
    e2 = s3.upload_part(Bucket="data", Key="mp/small", UploadId=up3, PartNumber=2, Body=b"b")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket="data", Key="mp/small", UploadId=up3, MultipartUpload={
            "Parts": [{"ETag": e1, "PartNumber": 1}, {"ETag": e2, "PartNumber": 2}]})
    assert code(e.value) == "EntityTooSmall"


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def test_multipart_checksums_composite_and_full_object(server, s3):
    """A multipart upload created with a checksum algorithm keeps each part's checksum and the
    object's (SHA256: checksum of the part checksums "-N"; CRC32: the whole object's CRC), checks
    the client's values at Complete and returns them on HEAD/GET(partNumber)/GetObjectAttributes."""
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(MiB + 17)]
    whole = b"".join(parts)
    sha = [_b64(hashlib.sha256(p).digest()) for p in parts]
    key = "ck/sha.bin"
    up = s3.create_multipart_upload(Bucket="data", Key=key, ChecksumAlgorithm="SHA256")
    assert up["ChecksumAlgorithm"] == "SHA256" and up["ChecksumType"] == "COMPOSITE"
    uid = up["UploadId"]
    done = []
    for i, p in enumerate(parts):
        r = s3.upload_part(Bucket="data", Key=key, UploadId=uid, PartNumber=i + 1, Body=p, ChecksumAlgorithm="SHA256")
        assert r["ChecksumSHA256"] == sha[i]
        done.append({"ETag": r["ETag"], "PartNumber": i + 1, "ChecksumSHA256": r["ChecksumSHA256"]})
    assert [p["ChecksumSHA256"] for p in s3.list_parts(Bucket="data", Key=key, UploadId=uid)["Parts"]] == sha
    # UploadPartCopy into such an upload computes the copied range's checksum
    s3.put_object(Bucket="data", Key="ck/src", Body=parts[2])
    cp = s3.upload_part_copy(Bucket="data", Key=key, UploadId=uid, PartNumber=9, CopySource={"Bucket": "data",
                             "Key": "ck/src"}, CopySourceRange="bytes=0-999")["CopyPartResult"]
    assert cp["ChecksumSHA256"] == _b64(hashlib.sha256(parts[2][:1000]).digest())
    want = _b64(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()) + "-3"
    # a wrong object checksum, or a wrong part checksum, is refused and leaves no version
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket="data", Key=key, UploadId=uid, ChecksumSHA256="bad",
                                     MultipartUpload={"Parts": done})
    assert code(e.value) == "BadDigest"
    bad = [dict(done[0], ChecksumSHA256=sha[1])] + done[1:]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket="data", Key=key, UploadId=uid, MultipartUpload={"Parts": bad})
    assert code(e.value) == "InvalidPart"
    assert not server.admin("data").exists("/" + key)
    r = s3.complete_multipart_upload(Bucket="data", Key=key, UploadId=uid, ChecksumSHA256=want,
                                     MultipartUpload={"Parts": done})
    assert r["ChecksumSHA256"] == want and r["ChecksumType"] == "COMPOSITE"
    again = s3.complete_multipart_upload(Bucket="data", Key=key, UploadId=uid, MultipartUpload={"Parts": done})
    assert again["ChecksumSHA256"] == want and again["ETag"] == r["ETag"]
    assert "ChecksumSHA256" not in s3.head_object(Bucket="data", Key=key)
    assert s3.head_object(Bucket="data", Key=key, ChecksumMode="ENABLED")["ChecksumSHA256"] == want
    for i, p in enumerate(parts):
        got = s3.get_object(Bucket="data", Key=key, PartNumber=i + 1, ChecksumMode="ENABLED")
        assert got["ChecksumSHA256"] == sha[i] and got["Body"].read() == p
    ranged = s3.get_object(Bucket="data", Key=key, Range="bytes=0-9", ChecksumMode="ENABLED")
    assert "ChecksumSHA256" not in ranged and ranged["Body"].read() == whole[:10]
    attrs = s3.get_object_attributes(Bucket="data", Key=key, ObjectAttributes=["Checksum", "ObjectParts"])
    assert attrs["Checksum"] == {"ChecksumSHA256": want, "ChecksumType": "COMPOSITE"}
    assert [(p["PartNumber"], p["Size"], p["ChecksumSHA256"]) for p in attrs["ObjectParts"]["Parts"]] == \
        [(i + 1, len(p), sha[i]) for i, p in enumerate(parts)]

    # CRC32 is COMPOSITE unless asked; FULL_OBJECT: the CRC of the whole body, which boto3 checks on GET
    default = s3.create_multipart_upload(Bucket="data", Key="ck/default", ChecksumAlgorithm="CRC32")
    assert default["ChecksumType"] == "COMPOSITE"
    s3.abort_multipart_upload(Bucket="data", Key="ck/default", UploadId=default["UploadId"])
    key = "ck/crc.bin"
    up = s3.create_multipart_upload(Bucket="data", Key=key, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")
    assert up["ChecksumType"] == "FULL_OBJECT"
    uid = up["UploadId"]
    done = [{"ETag": s3.upload_part(Bucket="data", Key=key, UploadId=uid, PartNumber=i + 1, Body=p,
                                    ChecksumAlgorithm="CRC32")["ETag"], "PartNumber": i + 1} for i, p in enumerate(parts)]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket="data", Key=key, UploadId=uid, ChecksumType="COMPOSITE",
                                     MultipartUpload={"Parts": done})
    assert code(e.value) == "BadDigest"
    r = s3.complete_multipart_upload(Bucket="data", Key=key, UploadId=uid, ChecksumType="FULL_OBJECT",
                                     MultipartUpload={"Parts": done})
    crc = _b64(zlib.crc32(whole).to_bytes(4, "big"))
    assert r["ChecksumCRC32"] == crc and r["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket="data", Key=key, ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == crc and got["Body"].read() == whole

    # CRC64NVME (s3-tests' published values of 5 MiB of "A" and of "B"; the object's is combined)
    key = "ck/crc64.bin"
    uid = s3.create_multipart_upload(Bucket="data", Key=key, ChecksumAlgorithm="CRC64NVME")["UploadId"]
    done = []
    for i, (fill, value) in enumerate([(b"A", "L/E4WYn8v98="), (b"B", "xW1l19VobYM=")]):
        r = s3.upload_part(Bucket="data", Key=key, UploadId=uid, PartNumber=i + 1, Body=fill * (5 * MiB),
                           ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=value)
        done.append({"ETag": r["ETag"], "PartNumber": i + 1, "ChecksumCRC64NVME": r["ChecksumCRC64NVME"]})
    r = s3.complete_multipart_upload(Bucket="data", Key=key, UploadId=uid, MultipartUpload={"Parts": done})
    crc = chunked.new_checksum("crc64nvme")
    crc.update(b"A" * (5 * MiB) + b"B" * (5 * MiB))
    assert r["ChecksumCRC64NVME"] == chunked.checksum_b64(crc) and r["ChecksumType"] == "FULL_OBJECT"


def test_get_object_attributes(server, s3):
    """GetObjectAttributes of a multipart object pages its parts; a single PUT has no parts and
    keeps the checksum it was sent with; a delete marker is NoSuchKey."""
    parts = [os.urandom(5 * MiB)] * 3 + [b"tail"]
    key = "attrs/mp.bin"
    uid = s3.create_multipart_upload(Bucket="data", Key=key)["UploadId"]
    done = [{"ETag": s3.upload_part(Bucket="data", Key=key, UploadId=uid, PartNumber=i + 1, Body=p)["ETag"],
             "PartNumber": i + 1} for i, p in enumerate(parts)]
    etag = s3.complete_multipart_upload(Bucket="data", Key=key, UploadId=uid,
                                        MultipartUpload={"Parts": done})["ETag"].strip('"')
    every = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
    a = s3.get_object_attributes(Bucket="data", Key=key, ObjectAttributes=every, MaxParts=2, PartNumberMarker=1)
    assert a["ETag"] == etag and a["ObjectSize"] == sum(map(len, parts)) and a["StorageClass"] == "STANDARD"
    assert "Checksum" not in a
    op = a["ObjectParts"]
    assert (op["TotalPartsCount"], op["PartNumberMarker"], op["NextPartNumberMarker"], op["MaxParts"],
            op["IsTruncated"]) == (4, 1, 3, 2, True)
    assert [(p["PartNumber"], p["Size"]) for p in op["Parts"]] == [(2, 5 * MiB), (3, 5 * MiB)]
    last = s3.get_object_attributes(Bucket="data", Key=key, ObjectAttributes=["ObjectParts"], PartNumberMarker=3)
    assert [(p["PartNumber"], p["Size"]) for p in last["ObjectParts"]["Parts"]] == [(4, 4)]
    assert last["ObjectParts"]["IsTruncated"] is False
    body = b"single put"
    sha = _b64(hashlib.sha256(body).digest())
    v = s3.put_object(Bucket="data", Key="attrs/one", Body=body, ChecksumAlgorithm="SHA256")["VersionId"]
    a = s3.get_object_attributes(Bucket="data", Key="attrs/one", ObjectAttributes=every)
    assert a["ETag"] == hashlib.md5(body).hexdigest() and a["ObjectSize"] == len(body) and "ObjectParts" not in a
    assert a["Checksum"]["ChecksumSHA256"] == sha and a["VersionId"] == v
    assert s3.get_object(Bucket="data", Key="attrs/one", ChecksumMode="ENABLED")["ChecksumSHA256"] == sha
    s3.delete_object(Bucket="data", Key="attrs/one")
    with pytest.raises(ClientError) as e:
        s3.get_object_attributes(Bucket="data", Key="attrs/one", ObjectAttributes=every)
    assert code(e.value) == "NoSuchKey"
    assert s3.get_object_attributes(Bucket="data", Key="attrs/one", VersionId=v,
                                    ObjectAttributes=["ObjectSize"])["ObjectSize"] == len(body)


def test_abandoned_uploads_are_reclaimed(server, s3):
    up = s3.create_multipart_upload(Bucket="data", Key="mp/dropped")["UploadId"]
    s3.upload_part(Bucket="data", Key="mp/dropped", UploadId=up, PartNumber=1, Body=b"x" * 1000)
    staging = Staging(server.repo)
    assert staging.reclaim(3600) == 0
    assert staging.reclaim(0) >= 1
    assert not (staging.root / up).exists()
    assert not server.admin("data").exists("/mp/dropped")


def test_presigned_v4_and_v2(server, s3):
    s3.put_object(Bucket="data", Key="pre/x", Body=b"presigned")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "data", "Key": "pre/x"}, ExpiresIn=60)
    assert requests.get(url).content == b"presigned"
    put = s3.generate_presigned_url("put_object", Params={"Bucket": "data", "Key": "pre/up"}, ExpiresIn=60)
    assert requests.put(put, data=b"via presigned put").status_code == 200
    assert s3.get_object(Bucket="data", Key="pre/up")["Body"].read() == b"via presigned put"
    v2 = server.client(signature_version="s3")
    url2 = v2.generate_presigned_url("get_object", Params={"Bucket": "data", "Key": "pre/x"}, ExpiresIn=60)
    assert "Signature=" in url2 and "AWSAccessKeyId=" in url2
    assert requests.get(url2).content == b"presigned"
    tampered = url.replace("pre/x", "pre/up")
    r = requests.get(tampered)
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content
    expired = s3.generate_presigned_url("get_object", Params={"Bucket": "data", "Key": "pre/x"}, ExpiresIn=1)
    time.sleep(2.2)
    r = requests.get(expired)
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content and b"expired" in r.content


def test_copy_across_buckets_with_metadata(server, s3):
    s3.put_object(Bucket="data", Key="c/src", Body=b"copy me", Metadata={"a": "1"}, ContentType="text/x")
    s3.copy_object(Bucket="other", Key="dst/copied", CopySource={"Bucket": "data", "Key": "c/src"})
    got = s3.get_object(Bucket="other", Key="dst/copied")
    assert got["Body"].read() == b"copy me" and got["Metadata"] == {"a": "1"} and got["ContentType"] == "text/x"
    s3.copy_object(Bucket="other", Key="dst/replaced", CopySource="data/c/src", MetadataDirective="REPLACE",
                   Metadata={"b": "2"}, ContentType="text/y")
    got = s3.get_object(Bucket="other", Key="dst/replaced")
    assert got["Metadata"] == {"b": "2"} and got["ContentType"] == "text/y"
    bob = server.client("bob")
    with pytest.raises(ClientError) as e:        # bob may read data but not write other
        bob.copy_object(Bucket="other", Key="x", CopySource="data/c/src")
    assert code(e.value) == "AccessDenied"


def test_buckets_create_list_delete(server, s3):
    s3.create_bucket(Bucket="made-by-s3")
    assert "made-by-s3" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "secret" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.put_object(Bucket="made-by-s3", Key="k", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="made-by-s3")
    assert code(e.value) == "BucketNotEmpty"
    with pytest.raises(ClientError) as e:
        server.client("bob").create_bucket(Bucket="bobs-bucket")
    assert code(e.value) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket="Bad_Name")
    assert code(e.value) == "InvalidBucketName"
    s3.create_bucket(Bucket="empty-one")
    s3.delete_bucket(Bucket="empty-one")
    assert "empty-one" not in [s.name for s in server.repo.list_shares()]


# -- bad input ---------------------------------------------------------------------------
def test_wrong_secret_and_unknown_key(server):
    key, _ = server.keys["alice"]
    bad = boto3.client("s3", endpoint_url=server.url, aws_access_key_id=key, aws_secret_access_key="wrong",
                       region_name="us-east-1")
    with pytest.raises(ClientError) as e:
        bad.put_object(Bucket="data", Key="never", Body=b"x")
    assert code(e.value) == "SignatureDoesNotMatch"
    nobody = boto3.client("s3", endpoint_url=server.url, aws_access_key_id="NOSUCHKEY",
                          aws_secret_access_key="x", region_name="us-east-1")
    with pytest.raises(ClientError) as e:
        nobody.list_buckets()
    assert code(e.value) == "InvalidAccessKeyId"
    assert not server.admin("data").exists("/never")


def _signed(server, method: str, path: str, body: bytes, headers: dict | None = None,
            date: datetime.datetime | None = None, payload_hash: str | None = None):
    key, secret = server.keys["alice"]
    req = AWSRequest(method=method, url=server.url + path, data=body, headers=headers or {})
    auth = S3SigV4Auth(Credentials(key, secret), "s3", "us-east-1")
    declared = payload_hash or hashlib.sha256(body).hexdigest()
    auth.payload = lambda request: declared          # what the client declares it sends
    if date is not None:                      # a client with a wrong clock
        import botocore.auth
        from unittest import mock
        with mock.patch.object(botocore.auth, "get_current_datetime", lambda: date):
            auth.add_auth(req)
    else:
        auth.add_auth(req)
    return dict(req.headers.items())


def test_tampered_body_and_clock_skew(server):
    h = _signed(server, "PUT", "/data/tampered", b"original")
    r = requests.put(server.url + "/data/tampered", data=b"modified", headers=h)
    assert r.status_code == 400 and b"XAmzContentSHA256Mismatch" in r.content
    assert not server.admin("data").exists("/tampered")
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    h = _signed(server, "PUT", "/data/skewed", b"x", date=old)
    r = requests.put(server.url + "/data/skewed", data=b"x", headers=h)
    assert r.status_code == 403 and b"RequestTimeTooSkewed" in r.content
    assert not server.admin("data").exists("/skewed")


def test_bad_checksum_trailer(server, s3):
    data = b"sensor reading 42\n"
    good = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()

    def chunked(crc: str) -> bytes:
        return (f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n"
                + f"x-amz-checksum-crc32:{crc}\r\n\r\n".encode())
    for crc, ok in (("AAAAAA==", False), (good, True)):
        body = chunked(crc)
        h = _signed(server, "PUT", "/data/trailer", body, payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                    headers={"Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
                             "x-amz-decoded-content-length": str(len(data))})
        r = requests.put(server.url + "/data/trailer", data=body, headers=h)
        if ok:
            assert r.status_code == 200, r.content
        else:
            assert r.status_code == 400 and b"BadDigest" in r.content
            assert not server.admin("data").exists("/trailer")
    assert s3.get_object(Bucket="data", Key="trailer")["Body"].read() == data
    # boto3's own aws-chunked upload with a CRC32 trailer (its default) works
    s3.put_object(Bucket="data", Key="crc", Body=io.BytesIO(data), ChecksumAlgorithm="SHA256")
    assert s3.get_object(Bucket="data", Key="crc")["Body"].read() == data


def test_folder_removed_while_a_put_streams(server, s3):
    """A PUT makes its key's folders, then streams the body; another client removes the folder
    meanwhile: the commit (which resolves the folder again in its write transaction) fails with
    NoSuchKey and leaves no version, and the next PUT makes the folder again."""
    import http.client
    from urllib.parse import urlsplit
    body = os.urandom(64_000)
    h = _signed(server, "PUT", "/data/race/dir/obj", body)
    u = urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.putrequest("PUT", "/data/race/dir/obj", skip_accept_encoding=True)
    for k, v in h.items():
        conn.putheader(k, v)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    conn.send(body[:1000])
    admin = server.admin("data")
    for _ in range(3000):          # the server has made the folders and waits for the rest of the body
        if admin.exists("/race/dir"):
            break
        time.sleep(0.01)
    admin.rmdir("/race/dir")
    conn.send(body[1000:])
    r = conn.getresponse()
    assert (r.status, b"<Code>NoSuchKey</Code>" in r.read()) == (404, True)
    conn.close()
    assert not admin.exists("/race/dir") and admin.exists("/race")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="data", Key="race/dir/obj")
    assert code(e.value) == "NoSuchKey"
    r = s3.put_object(Bucket="data", Key="race/dir/obj", Body=body)
    assert r["VersionId"] == "1"
    assert s3.get_object(Bucket="data", Key="race/dir/obj")["Body"].read() == body
    # keys without "/" and keys whose folders exist: no folder work, same bytes and versions
    s3.put_object(Bucket="data", Key="race-top", Body=b"top")
    r2 = s3.put_object(Bucket="data", Key="race/dir/obj", Body=b"second")
    assert r2["VersionId"] == "2"
    assert [e.name for e in admin.listdir("/race")] == ["dir"]
    assert s3.get_object(Bucket="data", Key="race-top")["Body"].read() == b"top"
    with pytest.raises(ClientError) as e:              # a folder where the object should go
        s3.put_object(Bucket="data", Key="race/dir", Body=b"x")
    assert code(e.value) == "ObjectNameConflict"


@pytest.mark.parametrize("key,want", [("a/../b", "InvalidObjectName"), ("a\x00b", None),
                                      ("x" * 300, "InvalidObjectName"), ("y/" * 600, "KeyTooLongError"),
                                      ("a//b", "InvalidObjectName"), (".snapshots/x", "InvalidObjectName")])
def test_bad_keys(server, s3, key, want):
    if want is None:      # botocore itself refuses to send a NUL; a raw request gets the S3 error
        h = _signed(server, "PUT", "/data/a%00b", b"x")
        r = requests.put(server.url + "/data/a%00b", data=b"x", headers=h)
        assert r.status_code == 400 and b"InvalidObjectName" in r.content
    else:
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="data", Key=key, Body=b"x")
        assert code(e.value) == want
    s3.list_objects_v2(Bucket="data", MaxKeys=1)        # the server is still up


def test_ungranted_and_readonly_and_anonymous(server, s3):
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="secret", Key="x")
    assert code(e.value) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket="no-such-bucket")
    assert code(e.value) == "NoSuchBucket"
    bob = server.client("bob")
    s3.put_object(Bucket="data", Key="ro/x", Body=b"readable")
    assert bob.get_object(Bucket="data", Key="ro/x")["Body"].read() == b"readable"
    with pytest.raises(ClientError) as e:
        bob.put_object(Bucket="data", Key="ro/y", Body=b"no")
    assert code(e.value) == "AccessDenied"
    with server.admin("pub").open_write("/open.txt") as w:
        w.write(b"public")
    assert requests.get(server.url + "/pub/open.txt").content == b"public"
    assert requests.put(server.url + "/pub/x", data=b"no").status_code == 403
    assert requests.get(server.url + "/data/ro/x").status_code == 403


# -- other protocols ---------------------------------------------------------------------
def test_ftp_and_webdav_see_the_same_objects(server, s3, tmp_path):
    import ftplib
    from protocols.base import ServeContext
    from protocols.ftp import FTPAdapter
    from protocols.webdav import WebDAVAdapter
    ftp = FTPAdapter(server.repo, {"listen": "127.0.0.1:0"}, ServeContext())
    ftp.start()
    dav = WebDAVAdapter(server.repo, {"listen": "127.0.0.1:0", "require_tls_for_basic": False}, ServeContext())
    dav.start()
    try:
        port = int(ftp.urls()[0].rsplit(":", 1)[1].strip("/"))
        f = ftplib.FTP()
        f.connect("127.0.0.1", port)
        f.login("alice", "alice-pw")
        f.storbinary("STOR /data/from-ftp.txt", io.BytesIO(b"written over ftp"))
        s3.put_object(Bucket="data", Key="to-ftp/s3.txt", Body=b"written over s3")
        out = io.BytesIO()
        f.retrbinary("RETR /data/to-ftp/s3.txt", out.write)
        assert out.getvalue() == b"written over s3"
        f.quit()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="data")["Contents"]]
        assert "from-ftp.txt" in keys
        head = s3.head_object(Bucket="data", Key="from-ftp.txt")
        assert head["ETag"].endswith('-1"')              # not an MD5: clients do not check it
        assert s3.get_object(Bucket="data", Key="from-ftp.txt")["Body"].read() == b"written over ftp"
        url = dav.urls()[0].rstrip("/") + "/data/to-ftp/s3.txt"
        assert requests.get(url, auth=("alice", "alice-pw")).content == b"written over s3"
        assert versions(server, "data", "/to-ftp/s3.txt")[-1].origin.protocol == "s3"
    finally:
        ftp.stop(1.0)
        dav.stop(1.0)


def test_archivectl_sees_s3_versions_and_keys(server, s3):
    import subprocess
    import sys
    s3.put_object(Bucket="data", Key="cli/seen.txt", Body=b"1")
    s3.put_object(Bucket="data", Key="cli/seen.txt", Body=b"22")
    env = {**os.environ, "EDGE_ARCHIVE_REPO": str(server.root / "repo")}
    p = subprocess.run([sys.executable, "-m", "archive", "versions", "/data/cli/seen.txt", "--json"],
                       env=env, capture_output=True, check=True)
    vs = json.loads(p.stdout)
    assert [v["size"] for v in vs] == [1, 2] and {v["origin"]["protocol"] for v in vs} == {"s3"}
    p = subprocess.run([sys.executable, "-m", "archive", "user", "s3-key", "bob", "--list", "--json"],
                       env=env, capture_output=True, check=True)
    assert [k["access_key_id"] for k in json.loads(p.stdout)] == [server.keys["bob"][0]]


# -- other real clients ------------------------------------------------------------------
def test_aws_cli(server, tmp_path):
    aws = need("aws")
    env = server.env()
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(24 * MiB))
    ep = ["--endpoint-url", server.url]
    run([aws, *ep, "s3", "cp", str(src), "s3://data/cli/big.bin"], env)     # multipart (8 MiB parts)
    run([aws, *ep, "s3", "cp", "s3://data/cli/big.bin", str(tmp_path / "back.bin")], env)
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    ls = run([aws, *ep, "s3", "ls", "s3://data/cli/"], env).stdout.decode()
    assert "big.bin" in ls
    out = run([aws, *ep, "s3api", "list-object-versions", "--bucket", "data", "--prefix", "cli/big"], env)
    assert json.loads(out.stdout)["Versions"][0]["ETag"].endswith('-3"')
    assert len(versions(server, "data", "/cli/big.bin")) == 1


def test_s3cmd(server, tmp_path):
    s3cmd = need("s3cmd")
    cfg = s3cmd_config(server)
    f = tmp_path / "s.txt"
    f.write_bytes(b"from s3cmd\n" * 100)
    run([s3cmd, "-c", str(cfg), "put", str(f), "s3://data/s3cmd/s.txt"], os.environ.copy())
    run([s3cmd, "-c", str(cfg), "get", "s3://data/s3cmd/s.txt", str(tmp_path / "o.txt")], os.environ.copy())
    assert (tmp_path / "o.txt").read_bytes() == f.read_bytes()
    ls = run([s3cmd, "-c", str(cfg), "ls", "s3://data/s3cmd/"], os.environ.copy()).stdout.decode()
    assert "s3://data/s3cmd/s.txt" in ls


def test_rclone(server, tmp_path):
    rclone = need("rclone")
    env = server.env()
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    run([rclone, "copy", str(src), "ea:data/rclone"], env)
    out = run([rclone, "lsf", "-R", "ea:data/rclone"], env).stdout.decode().split()
    assert sorted(out) == ["a.txt", "sub/", "sub/b.bin"]
    run([rclone, "check", str(src), "ea:data/rclone"], env)          # compares MD5s with our ETags
    assert run([rclone, "cat", "ea:data/rclone/a.txt"], env).stdout == b"alpha"
