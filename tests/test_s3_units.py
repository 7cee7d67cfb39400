"""The S3 wire parsers (SigV4/SigV2, aws-chunked, XML, ranges) and the core pieces S3 needs
(key-ordered listing, access keys, purge, multipart staging, recover), example- and
property-based."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import sqlite3
import zlib

import pytest
from botocore.auth import HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archive import Origin, Repository, accesskeys, errors, objects
from archive.multipart import Staging
from protocols.s3 import checksums, chunked, sigv4
from protocols.s3.errors import S3Error
from protocols.s3.handlers.common import parse_range
from protocols.s3.xml import parse

KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SCOPE = "20130524/us-east-1/s3/aws4_request"


# -- SigV4: AWS's published examples ---------------------------------------------------------
def test_sigv4_aws_example_get_object():
    key = sigv4.signing_key(KEY, "20130524", "us-east-1", "s3")
    h = {"host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9",
         "x-amz-content-sha256": sigv4.EMPTY_SHA256, "x-amz-date": "20130524T000000Z"}
    creq = sigv4.canonical_request("GET", "/test.txt", [], h, ["host", "range", "x-amz-content-sha256", "x-amz-date"],
                                   sigv4.EMPTY_SHA256)
    assert sigv4.sign(key, sigv4.string_to_sign("20130524T000000Z", SCOPE, creq)) == \
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"


def _aws_streaming_example():
    key = sigv4.signing_key(KEY, "20130524", "us-east-1", "s3")
    h = {"host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z", "x-amz-storage-class": "REDUCED_REDUNDANCY",
         "x-amz-content-sha256": sigv4.STREAMING, "content-encoding": "aws-chunked",
         "x-amz-decoded-content-length": "66560", "content-length": "66824"}
    signed = sorted(h)
    creq = sigv4.canonical_request("PUT", "/examplebucket/chunkObject.txt", [], h, signed, sigv4.STREAMING)
    seed = sigv4.sign(key, sigv4.string_to_sign("20130524T000000Z", SCOPE, creq))
    return sigv4.Auth("AKIAIOSFODNN7EXAMPLE", sigv4.STREAMING, 4, seed, "20130524T000000Z", SCOPE, key)


def test_sigv4_aws_example_streaming_chunks():
    auth = _aws_streaming_example()
    assert auth.signature == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    sigs = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]
    body = b"".join(f"{n:x};chunk-signature={s}\r\n".encode() + b"a" * n + b"\r\n"
                    for n, s in zip((65536, 1024, 0), sigs))
    r = chunked.ChunkedReader(io.BytesIO(body), auth, signed=True, decoded_length=66560)
    assert b"".join(iter(lambda: r.read(10_000), b"")) == b"a" * 66560
    bad = body.replace(b"a" * 1024, b"a" * 1023 + b"b")
    r = chunked.ChunkedReader(io.BytesIO(bad), auth, signed=True)
    with pytest.raises(chunked.ChunkError) as e:
        while r.read(10_000):
            pass
    assert e.value.code == "SignatureDoesNotMatch"


# -- SigV4 / SigV2 against botocore's signer -------------------------------------------------
SAFE_KEY = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="/?#%"),
                   min_size=1, max_size=20)


def _server_request(req: AWSRequest) -> sigv4.Request:
    from urllib.parse import urlsplit
    u = urlsplit(req.url)
    headers = {k.lower(): v for k, v in req.headers.items()}
    headers["host"] = u.netloc
    return sigv4.Request(req.method, u.path, sigv4.parse_query(u.query), headers, u.query)


@settings(max_examples=60, deadline=None)
@given(st.lists(SAFE_KEY, min_size=1, max_size=3), st.dictionaries(SAFE_KEY, st.text(max_size=10), max_size=3),
       st.sampled_from(["GET", "PUT", "DELETE", "HEAD"]), st.binary(max_size=64))
def test_sigv4_header_matches_botocore(parts, query, method, body):
    from urllib.parse import quote, urlencode
    url = "http://127.0.0.1:9000/bucket/" + "/".join(quote(p, safe="") for p in parts)
    if query:
        url += "?" + urlencode(query)
    req = AWSRequest(method=method, url=url, data=body, headers={"x-amz-meta-a": " two  spaces "})
    S3SigV4Auth(Credentials("AKID", "secret"), "s3", "eu-west-1").add_auth(req)
    auth = sigv4.verify(_server_request(req), lambda k: "secret")
    assert auth.access_key == "AKID" and auth.payload_hash == hashlib.sha256(body).hexdigest()
    with pytest.raises(sigv4.SignatureError) as e:
        sigv4.verify(_server_request(req), lambda k: "other")
    assert e.value.code == "SignatureDoesNotMatch"


@settings(max_examples=30, deadline=None)
@given(st.lists(SAFE_KEY, min_size=1, max_size=3))
def test_presigned_v4_and_v2_match_botocore(parts):
    from urllib.parse import quote
    url = "http://127.0.0.1:9000/bucket/" + "/".join(quote(p, safe="") for p in parts)
    req = AWSRequest(method="GET", url=url)
    S3SigV4QueryAuth(Credentials("AKID", "secret"), "s3", "us-east-1", expires=60).add_auth(req)
    assert sigv4.verify(_server_request(req), lambda k: "secret").access_key == "AKID"
    req2 = AWSRequest(method="GET", url=url)
    HmacV1QueryAuth(Credentials("AKID", "secret"), expires=60).add_auth(req2)
    r2 = _server_request(AWSRequest(method="GET", url=req2.url))
    assert sigv4.verify(r2, lambda k: "secret").version == 2
    with pytest.raises(sigv4.SignatureError):
        sigv4.verify(r2, lambda k: "wrong")


def test_presigned_expiry_and_skew():
    req = AWSRequest(method="GET", url="http://h/b/k")
    S3SigV4QueryAuth(Credentials("AKID", "secret"), "s3", "us-east-1", expires=10).add_auth(req)
    import time
    with pytest.raises(sigv4.SignatureError) as e:
        sigv4.verify(_server_request(req), lambda k: "secret", now=time.time() + 60)
    assert e.value.code == "AccessDenied"
    req = AWSRequest(method="GET", url="http://h/b/k")
    S3SigV4Auth(Credentials("AKID", "secret"), "s3", "us-east-1").add_auth(req)
    with pytest.raises(sigv4.SignatureError) as e:
        sigv4.verify(_server_request(req), lambda k: "secret", now=time.time() + 16 * 60)
    assert e.value.code == "RequestTimeTooSkewed"


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["authorization", "x-amz-date", "x-amz-content-sha256", "host"]),
                       st.text(max_size=80)),
       st.lists(st.tuples(st.sampled_from(["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                                           "X-Amz-SignedHeaders", "X-Amz-Signature", "AWSAccessKeyId",
                                           "Signature", "Expires"]), st.text(max_size=40)), max_size=9))
def test_verify_garbage_is_a_clean_error(headers, query):
    try:
        sigv4.verify(sigv4.Request("GET", "/b/k", query, headers), lambda k: "secret")
    except sigv4.SignatureError as e:
        assert e.code


# -- aws-chunked ------------------------------------------------------------------------------
def _unsigned(chunks: list[bytes], trailer: str | None = None) -> bytes:
    out = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks if c) + b"0\r\n"
    if trailer:
        out += trailer.encode() + b"\r\n"
    return out + b"\r\n"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=6), st.sampled_from(["crc32", "crc32c", "crc64nvme", "sha256", "sha1"]),
       st.integers(1, 64))
def test_chunked_roundtrip_with_checksum(chunks, kind, step):
    data = b"".join(chunks)
    h = chunked.new_checksum(kind)
    h.update(data)
    body = _unsigned(chunks, f"x-amz-checksum-{kind}:{chunked.checksum_b64(h)}")
    r = chunked.ChunkedReader(io.BytesIO(body), None, signed=False, trailer=f"x-amz-checksum-{kind}",
                              decoded_length=len(data))
    assert b"".join(iter(lambda: r.read(step), b"")) == data
    bad = _unsigned(chunks, f"x-amz-checksum-{kind}:AAAA")
    r = chunked.ChunkedReader(io.BytesIO(bad), None, signed=False, trailer=f"x-amz-checksum-{kind}")
    with pytest.raises(chunked.ChunkError) as e:
        while r.read(step):
            pass
    assert e.value.code == "BadDigest"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=6), st.sampled_from(["crc32", "crc32c", "crc64nvme"]))
def test_full_object_crc_is_combined_from_parts(parts, kind):
    """The FULL_OBJECT checksum of a multipart object, combined from part CRCs and sizes, equals
    the CRC of the concatenated bytes (what a client checks the body against)."""
    def b64(data: bytes) -> str:
        h = chunked.new_checksum(kind)
        h.update(data)
        return chunked.checksum_b64(h)
    assert checksums.full_object(kind, [(b64(p), len(p)) for p in parts]) == b64(b"".join(parts))


def test_composite_checksum_known_value():
    """s3-tests' published SHA256 composite of three 5 MiB parts of 'A', 'B', 'C'."""
    parts = [base64.b64encode(hashlib.sha256(c * (5 << 20)).digest()).decode() for c in (b"A", b"B", b"C")]
    assert checksums.composite("sha256", parts) == "uWBwpe1dxI4Vw8Gf0X9ynOdw/SS6VBzfWm9giiv1sf4=-3"


def test_crc32c_known_value():
    h = chunked.new_checksum("crc64nvme")
    h.update(b"123456789")
    assert h.digest().hex() == "ae8b14860a799888"          # CRC-64/NVME check value
    h = chunked.new_checksum("crc32c")
    h.update(b"123456789")
    assert h.digest().hex() == "e3069283"
    h = chunked.new_checksum("crc32")
    h.update(b"123456789")
    assert int.from_bytes(h.digest(), "big") == zlib.crc32(b"123456789")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_chunked_garbage_is_a_clean_error(raw):
    r = chunked.ChunkedReader(io.BytesIO(raw), None, signed=False)
    try:
        while r.read(50):
            pass
    except chunked.ChunkError as e:
        assert e.code


# -- XML and ranges ---------------------------------------------------------------------------
def test_xml_delete_document_and_refusals():
    doc = parse(b'<?xml version="1.0"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>'
                b"<Object><Key>a &amp; b</Key><VersionId>3</VersionId></Object></Delete>", "Delete")
    assert doc.findtext("Quiet") == "true"
    assert [(o.findtext("Key"), o.findtext("VersionId")) for o in doc.findall("Object")] == [("a & b", "3")]
    for bad in (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><Delete>&a;</Delete>', b"<Delete>", b"<Other/>",
                b"<Delete>" * 40 + b"</Delete>" * 40):
        with pytest.raises(S3Error) as e:
            parse(bad, "Delete")
        assert e.value.code == "MalformedXML"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_xml_garbage_is_malformed_xml(raw):
    try:
        parse(raw, "CompleteMultipartUpload")
    except S3Error as e:
        assert e.code == "MalformedXML"


@given(st.text(max_size=30), st.integers(0, 10_000))
def test_range_is_inside_the_object_or_refused(header, size):
    try:
        r = parse_range(header, size)
    except S3Error as e:
        assert e.status == 416
        return
    if r is not None:
        start, end = r
        assert 0 <= start <= end < size or (size == 0 and end == -1)


def test_range_examples():
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-5", 100) == (95, 99)
    assert parse_range("bytes=50-500", 100) == (50, 99)
    assert parse_range("bytes=5-1", 100) is None
    with pytest.raises(S3Error):
        parse_range("bytes=100-", 100)


# -- core -------------------------------------------------------------------------------------
@pytest.fixture
def bucket(repo):
    repo.add_share("b")
    return repo.share("b", user=None, origin=Origin("s3", "127.0.0.1", "alice"))


NAME = st.text(st.sampled_from("ab-./!~0z"), min_size=1, max_size=4).filter(
    lambda s: s not in (".", "..") and "/" not in s)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(NAME, min_size=1, max_size=3).map("/".join), min_size=1, max_size=12, unique=True),
       st.data())
def test_iter_keys_is_key_order_with_start_after_and_prefix(tmp_path_factory, keys, data):
    repo = Repository.init(tmp_path_factory.mktemp("r") / "repo")
    repo.add_share("b")
    fs = repo.share("b")
    stored = []
    for k in keys:
        try:
            objects.ensure_folders(fs, k)
            with fs.open_write(k) as w:
                w.write(k.encode())
            stored.append(k)
        except (errors.NotADirectory, errors.IsADirectory, errors.Exists):
            pass          # a key and a folder of the same name cannot both exist in a tree
    stored.sort()
    assert [v.key for _, v in objects.iter_keys(fs)] == stored
    after = data.draw(st.sampled_from(stored + ["", "a", "b/", "~"]))
    assert [v.key for _, v in objects.iter_keys(fs, after=after)] == [k for k in stored if k > after]
    prefix = data.draw(st.sampled_from(["", "a", "a/", "b!", "z/0"] + [k[:2] for k in stored]))
    assert [v.key for _, v in objects.iter_keys(fs, prefix=prefix)] == [k for k in stored if k.startswith(prefix)]
    repo.close()


def test_access_keys_are_sealed_and_survive_recover(repo, tmp_path):
    key_id, secret = accesskeys.create_key(repo, "alice")
    user, got = accesskeys.lookup(repo, key_id)
    assert (user.name, got) == ("alice", secret)
    db = sqlite3.connect(repo.path / "catalog.sqlite")
    sealed = db.execute("SELECT sealed_secret FROM access_keys").fetchone()[0]
    assert secret not in sealed and secret.encode() not in base64.b64decode(sealed)
    dump = "\n".join(db.iterdump())
    assert secret not in dump
    accesskeys.set_create_shares(repo, "alice", True)
    path, key = repo.path, repo.key
    repo.close()
    from archive.catalog.db import sqlite_url
    from archive.codec import Codec
    from archive.recover import recover
    recover(path, key, Codec(key), sqlite_url(path / "catalog.sqlite"), force=True)
    r2 = Repository.open(path)
    assert accesskeys.lookup(r2, key_id)[1] == secret
    assert accesskeys.can_create_shares(r2, "alice")
    accesskeys.revoke_key(r2, "alice", key_id)
    with pytest.raises(errors.AuthFailed):
        accesskeys.lookup(r2, key_id)
    r2.close()


def test_version_meta_survives_copy_restore_and_purge_rules(repo, bucket):
    with bucket.open_write("k") as w:
        w.meta = json.dumps({"md5": "m1", "content-type": "text/a"})
        w.write(b"one")
    with bucket.open_write("k") as w:
        w.write(b"two")
    bucket.restore("/k", version=1)
    vs = objects.versions_of(bucket, objects.node_of(bucket, "k"), "k")
    assert [v.meta.get("md5") for v in vs] == ["m1", None, "m1"]
    with pytest.raises(errors.PermissionDenied):
        objects.purge_version(bucket, "k", vs[0].node, 2)
    repo.set_share("b", allow_purge=True)
    objects.purge_version(bucket, "k", vs[0].node, 3)
    assert bucket.open_read("/k").read() == b"two"
    repo.set_share("b", worm_days=1)
    with pytest.raises(errors.WormLocked):
        objects.purge_version(bucket, "k", vs[0].node, 2)


def test_multipart_staging_commits_one_version(repo, bucket):
    st_ = Staging(repo)
    up = st_.create("b", "big", "alice", {"content-type": "x"})
    st_.put_part(up.upload_id, 2, io.BytesIO(b"world"))
    p1 = st_.put_part(up.upload_id, 1, io.BytesIO(b"hello "))
    assert p1.md5 == hashlib.md5(b"hello ").hexdigest()

    def refuse():
        raise ValueError("bad checksum")
    with pytest.raises(ValueError):
        st_.put_part(up.upload_id, 3, io.BytesIO(b"x"), check=refuse)
    assert [p.number for p in st_.parts(up.upload_id)] == [1, 2]
    v = st_.complete(up.upload_id, bucket, "big", [1, 2], json.dumps({"etag": "e-2"}), record={"etag": "e-2"})
    assert bucket.open_read("/big").read() == b"hello world" and len(bucket.versions("/big")) == 1
    assert st_.completed(up.upload_id)["version"] == v.number
    assert list(st_.uploads("b")) == []


# -- bucket versioning status: the S3 view over every archive version ------------------------
_STATUS = st.sampled_from([None, "Enabled", "Suspended"])


@settings(max_examples=200, deadline=None)
@given(changes=st.lists(st.tuples(st.integers(1, 50), _STATUS), max_size=6),
       writes=st.lists(st.integers(0, 60), min_size=1, max_size=12, unique=True))
def test_versioning_view_hides_only_replaced_null_versions(changes, writes):
    """Whatever the status history: every version written while Enabled stays visible under its
    number, at most one null version is visible and it is the newest null one, and the archive's
    newest version (what a plain GET returns) is always visible."""
    from protocols.s3.handlers.common import version_id
    from protocols.s3.versioning import BucketState, visible
    history = sorted({t * 1_000_000: s for t, s in changes}.items())
    state = BucketState(history)
    vs = [objects.ObjectVersion("k", 1, i + 1, 0, float(t) + 0.5, 0.0, False, "")
          for i, t in enumerate(sorted(writes))][::-1]               # newest first, as versions_of gives them
    shown = visible(vs, state)
    assert shown[0] is vs[0]
    nulls = [v for v in vs if state.is_null(v)]
    assert [v for v in shown if state.is_null(v)] == nulls[:1]
    assert [v for v in shown if not state.is_null(v)] == [v for v in vs if not state.is_null(v)]
    for v in shown:
        assert version_id(v, state) == ("null" if state.is_null(v) else str(v.number))
    if not history:                                                    # a share the admin made: Enabled
        assert shown == vs and not nulls


def test_versioning_store_survives_a_restart_and_refuses_nothing_it_wrote(tmp_path):
    from protocols.s3.versioning import Store
    repo = Repository.init(tmp_path / "repo")
    try:
        store = Store(repo)
        assert store.get("b").status == "Enabled"            # no file: the archive's own default
        store.created("b", None, lock=False)
        assert store.get("b").status is None
        store.set("b", "Suspended")
        store.set("b", "Suspended")                           # no-op, not a second history entry
        again = Store(repo).get("b")
        assert again.status == "Suspended" and len(again.history) == 2
        (store.root / "b.json").write_text("{not json")       # a damaged file reads as Enabled, never crashes
        assert Store(repo).get("b").status == "Enabled"
        store.dropped("b")
        assert not (store.root / "b.json").exists()
    finally:
        repo.close()
