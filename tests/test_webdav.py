"""WebDAV adapter, driven by real clients: litmus, cadaver, curl and requests."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time
import xml.etree.ElementTree as ET

import pytest
import requests

from protocols.base import ServeContext
from webdav_helpers import (
    QUOTA,
    USERS,
    curl,
    make_repo,
    propfind,
    run_cadaver,
    run_litmus,
    self_signed,
    start_server,
)

MS = "urn:schemas-microsoft-com:"


@pytest.fixture(scope="module")
def dav(tmp_path_factory):
    root = tmp_path_factory.mktemp("webdav")
    repo = make_repo(root)
    server = start_server(repo, root)
    yield server
    server.stop()
    repo.close()


def _body(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


# -- conformance: litmus, every suite, nothing failed, nothing skipped -----------------------
def test_litmus_all_suites_pass_without_skips(dav, tmp_path):
    s = dav.session()
    assert s.request("MKCOL", f"{dav.url}/docs/litmus-root/").status_code == 201
    out, suites = run_litmus(f"{dav.url}/docs/litmus-root/", "alice", USERS["alice"], tmp_path)
    assert set(suites) == {"basic", "copymove", "props", "locks", "http"}, out
    for name, r in suites.items():
        assert r["run"] > 0, (name, out)
        assert r["failed"] == 0 and r["marked_fail"] == 0, (name, out)
        assert r["skipped"] == 0 and r["marked_skip"] == 0, (name, out)
        assert r["passed"] == r["run"], (name, out)


# -- cadaver scripted session --------------------------------------------------------------
def test_cadaver_session(dav, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "local.txt").write_bytes(b"hello from cadaver\n")
    out = run_cadaver(f"{dav.url}/docs/", "bob", USERS["bob"], [  # .netrc: no spaces
        "mkcol cad", "put local.txt cad/a.txt", "ls cad", "get cad/a.txt back.txt",
        "copy cad/a.txt cad/b.txt", "move cad/b.txt cad/c.txt",
        "propset cad/a.txt colour blue", "propget cad/a.txt colour",
        "lock cad/a.txt", "unlock cad/a.txt", "delete cad/c.txt", "ls cad",
    ], home)
    assert "failed" not in out.lower(), out
    assert "Value of colour is: blue" in out, out
    assert (home / "back.txt").read_bytes() == b"hello from cadaver\n"
    fs = dav.admin()
    assert [e.name for e in fs.listdir("/cad")] == ["a.txt"]
    with fs.open_read("/cad/a.txt") as r:
        assert r.read() == b"hello from cadaver\n"
    assert fs.versions("/cad/c.txt")[-1].deleted      # DELETE is a tombstone


# -- PUT / GET / HEAD / Range / chunked ----------------------------------------------------
def test_put_get_versions_and_etag(dav):
    s = dav.session()
    url = f"{dav.url}/docs/v/one.bin"
    assert s.request("MKCOL", f"{dav.url}/docs/v/").status_code == 201
    a, b = _body(70000, 1), _body(50000, 2)
    assert s.put(url, data=a).status_code == 201
    r = s.put(url, data=b)
    assert r.status_code == 204
    fs = dav.admin()
    vs = fs.versions("/v/one.bin")
    assert [v.size for v in vs] == [70000, 50000]
    entry = fs.stat("/v/one.bin")
    g = s.get(url)
    assert g.content == b
    assert g.headers["ETag"].strip('"') == entry.etag
    assert r.headers.get("ETag", "").strip('"') == entry.etag
    h = s.head(url)
    assert h.status_code == 200 and h.headers["Content-Length"] == "50000" and not h.content
    # Range
    rg = s.get(url, headers={"Range": "bytes=1000-1999"})
    assert rg.status_code == 206 and rg.content == b[1000:2000]
    assert rg.headers["Content-Range"] == "bytes 1000-1999/50000"
    # conditional requests
    etag = g.headers["ETag"]
    assert s.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert s.put(url, data=b"x", headers={"If-Match": '"not-the-etag"'}).status_code == 412
    assert s.put(url, data=b"xyz", headers={"If-Match": etag}).status_code == 204
    assert s.put(f"{dav.url}/docs/v/new.txt", data=b"n",
                 headers={"If-None-Match": "*"}).status_code == 201
    assert s.put(f"{dav.url}/docs/v/new.txt", data=b"n2",
                 headers={"If-None-Match": "*"}).status_code == 412
    assert len(fs.versions("/v/one.bin")) == 3


def test_chunked_put_with_curl(dav, tmp_path):
    src = tmp_path / "chunked.txt"
    data = b"".join(b"line %d\n" % i for i in range(200000))
    src.write_bytes(data)
    p = curl("-T", str(src), "-H", "Transfer-Encoding: chunked", "-o", "/dev/null",
             "-w", "%{http_code}", f"{dav.url}/docs/chunked.txt")
    assert p.stdout == b"201", p
    fs = dav.admin()
    assert fs.stat("/chunked.txt").size == len(data)
    assert len(fs.versions("/chunked.txt")) == 1
    got = curl(f"{dav.url}/docs/chunked.txt").stdout
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    part = curl("-r", "100-199", f"{dav.url}/docs/chunked.txt").stdout
    assert part == data[100:200]


def _raw(dav, head: str, body: bytes, user: str = "alice") -> None:
    auth = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", dav.port))
    sock.sendall(f"{head}\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n".encode()
                 + body)
    time.sleep(0.2)
    sock.close()


def _wait_idle(dav, path: str) -> None:
    # the server notices the dropped connection asynchronously; a request after it on a
    # fresh connection is served after the worker gave up on the broken body
    for _ in range(50):
        if dav.session().get(f"{dav.url}/docs/").status_code == 200:
            break
    time.sleep(0.5)


def test_dropped_body_never_becomes_a_version(dav):
    s = dav.session()
    url = f"{dav.url}/docs/drop.txt"
    assert s.put(url, data=b"old content").status_code == 201
    _raw(dav, "PUT /docs/drop.txt HTTP/1.1",
         b"Content-Length: 100000\r\n\r\n" + b"x" * 5000)
    _raw(dav, "PUT /docs/drop.txt HTTP/1.1",
         b"Transfer-Encoding: chunked\r\n\r\n1000\r\n" + b"y" * 4096 + b"\r\n1000\r\nyy")
    _raw(dav, "PUT /docs/drop-new.txt HTTP/1.1",
         b"Transfer-Encoding: chunked\r\n\r\n10\r\n" + b"z" * 16 + b"\r\n")
    # Finder style: chunked, size announced, body complete but shorter than announced
    r = s.put(url, data=iter([b"short"]), headers={"X-Expected-Entity-Length": "100"})
    assert r.status_code == 400
    _wait_idle(dav, "/drop.txt")
    fs = dav.admin()
    assert [v.size for v in fs.versions("/drop.txt")] == [11]
    assert s.get(url).content == b"old content"
    assert s.get(f"{dav.url}/docs/drop-new.txt").status_code == 404
    assert not fs.exists("/drop-new.txt")


def test_empty_put_is_one_version(dav):
    s = dav.session()
    assert s.put(f"{dav.url}/docs/empty.txt", data=b"").status_code == 201
    vs = dav.admin().versions("/empty.txt")
    assert [v.size for v in vs] == [0]


def test_put_to_missing_parent_is_409(dav):
    r = dav.session().put(f"{dav.url}/docs/no/such/dir/f.txt", data=b"x")
    assert r.status_code == 409


# -- authentication and grants -------------------------------------------------------------
def test_auth_and_share_list(dav):
    assert requests.get(f"{dav.url}/docs/").status_code == 401
    assert requests.get(f"{dav.url}/docs/", auth=("alice", "wrong")).status_code == 401
    assert requests.get(f"{dav.url}/docs/", auth=("nobody", "x")).status_code == 401
    code, items = propfind(dav.session("alice"), f"{dav.url}/")
    assert code == 207
    names = sorted(h.strip("/") for h in items if h.strip("/"))
    assert names == ["docs", "ro", "small"]
    code, items = propfind(dav.session("bob"), f"{dav.url}/")
    assert sorted(h.strip("/") for h in items if h.strip("/")) == ["docs", "secret"]
    # a share that is not granted does not exist for this user
    assert dav.session("alice").get(f"{dav.url}/secret/").status_code == 404
    assert dav.session("alice").put(f"{dav.url}/secret/x", data=b"x").status_code in (404, 409)


def test_readonly_grant_refuses_writes(dav):
    fs = dav.admin("ro")
    with fs.open_write("/keep.txt") as w:
        w.write(b"keep")
    s = dav.session("alice")
    base = f"{dav.url}/ro"
    assert s.get(f"{base}/keep.txt").content == b"keep"
    assert s.put(f"{base}/keep.txt", data=b"no").status_code == 403
    assert s.put(f"{base}/new.txt", data=b"no").status_code == 403
    assert s.delete(f"{base}/keep.txt").status_code == 403
    assert s.request("MKCOL", f"{base}/d/").status_code == 403
    assert s.request("MOVE", f"{base}/keep.txt",
                     headers={"Destination": f"{base}/moved.txt"}).status_code == 403
    assert s.request("COPY", f"{dav.url}/docs/empty.txt",
                     headers={"Destination": f"{base}/copied.txt"}).status_code == 403
    lock = s.request("LOCK", f"{base}/keep.txt", data=_lockinfo("exclusive"))
    assert lock.status_code == 403
    assert [v.size for v in fs.versions("/keep.txt")] == [4]
    # carol has docs read-only
    c = dav.session("carol")
    assert c.put(f"{dav.url}/docs/carol.txt", data=b"x").status_code == 403


# -- hostile input -----------------------------------------------------------------------
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&lol4;</D:displayname></D:prop></D:propfind>"""


def test_hostile_xml_is_refused_and_server_survives(dav):
    s = dav.session()
    url = f"{dav.url}/docs/"
    assert s.request("PROPFIND", url, headers={"Depth": "0"},
                     data=BILLION_LAUGHS).status_code == 400
    deep = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
            '<x:a xmlns:x="urn:x">' + "<b>" * 20000 + "</b>" * 20000 +
            "</x:a></D:prop></D:set></D:propertyupdate>")
    assert s.put(f"{dav.url}/docs/xml-target.txt", data=b"t").status_code == 201
    assert s.request("PROPPATCH", f"{dav.url}/docs/xml-target.txt",
                     data=deep).status_code == 400
    assert s.request("PROPFIND", url, headers={"Depth": "0"},
                     data=b"<" * (2 << 20)).status_code == 413
    assert s.request("PROPFIND", url, headers={"Depth": "0"},
                     data="<D:propfind xmlns:D='DAV:'><D:prop>").status_code == 400
    assert s.request("LOCK", f"{dav.url}/docs/xml-target.txt",
                     data="<not-a-lockinfo/>").status_code == 400
    # alive and nothing leaked into the properties
    assert s.get(f"{dav.url}/docs/xml-target.txt").content == b"t"
    assert dav.admin().get_props("/xml-target.txt") == {}


def test_traversal_stays_inside_the_users_shares(dav):
    alice = dav.session("alice")
    bob = dav.session("bob")
    assert bob.put(f"{dav.url}/secret/s.txt", data=b"top secret").status_code == 201
    for path in ("/docs/../secret/s.txt", "/docs/%2e%2e/secret/s.txt",
                 "/docs/..%2fsecret/s.txt", "/docs/%2e%2e%2fsecret%2fs.txt"):
        p = curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", dav.url + path)
        assert p.stdout in (b"400", b"404"), (path, p.stdout)
    src = f"{dav.url}/docs/empty.txt"
    for dest in (f"{dav.url}/docs/../secret/stolen.txt", "/docs/%2e%2e/secret/stolen.txt",
                 f"{dav.url}/secret/stolen.txt"):
        r = alice.request("COPY", src, headers={"Destination": dest})
        assert r.status_code in (400, 403, 404, 409), (dest, r.status_code)
    assert not dav.admin("secret").exists("/stolen.txt")
    r = alice.request("COPY", src, headers={"Destination": "http://elsewhere.example/docs/x"})
    assert r.status_code == 502
    r = alice.request("MOVE", src, headers={"Destination": "https://127.0.0.1:1/docs/x"})
    assert r.status_code == 502
    assert bob.get(f"{dav.url}/secret/s.txt").content == b"top secret"


# -- PROPFIND / PROPPATCH --------------------------------------------------------------------
def test_propfind_large_folder_and_depth(dav):
    fs = dav.admin()
    fs.mkdir("/many")
    for i in range(300):
        with fs.open_write(f"/many/f{i:04d}.txt") as w:
            w.write(b"%d" % i)
    s = dav.session()
    code, items = propfind(s, f"{dav.url}/docs/many/")
    assert code == 207
    files = {h.rsplit("/", 1)[1]: p for h, p in items.items() if not h.endswith("/")}
    assert len(files) == 300
    e = fs.stat("/many/f0123.txt")
    p = files["f0123.txt"]
    assert p["{DAV:}getcontentlength"] == "3"
    assert p["{DAV:}getetag"].strip('"') == e.etag
    r = s.request("PROPFIND", f"{dav.url}/docs/", headers={"Depth": "infinity"})
    assert r.status_code == 403
    # a listing bigger than the buffer is streamed (chunked) as listdir produces it
    from protocols.webdav import propfind as pf
    saved, pf.BUFFER = pf.BUFFER, 4096
    try:
        r = s.request("PROPFIND", f"{dav.url}/docs/many/", headers={"Depth": "1"})
        assert r.status_code == 207 and "Content-Length" not in r.headers
        assert r.headers.get("Transfer-Encoding") == "chunked"
        hrefs = [h.text for h in ET.fromstring(r.content).iter("{DAV:}href")]
        assert len(hrefs) == 301 and hrefs[-1].endswith("/f0299.txt")
    finally:
        pf.BUFFER = saved


def test_proppatch_win32_props_persist(dav):
    s = dav.session()
    url = f"{dav.url}/docs/win.docx"
    assert s.put(url, data=b"doc").status_code == 201
    body = f"""<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="{MS}"><D:set><D:prop>
<Z:Win32CreationTime>Tue, 03 Mar 2026 10:00:00 GMT</Z:Win32CreationTime>
<Z:Win32LastModifiedTime>Wed, 04 Mar 2026 11:30:00 GMT</Z:Win32LastModifiedTime>
<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes>
</D:prop></D:set></D:propertyupdate>"""
    r = s.request("PROPPATCH", url, data=body)
    assert r.status_code == 207 and r.text.count("200 OK") >= 1 and "403" not in r.text
    props = dav.admin().get_props("/win.docx")
    assert any("Win32FileAttributes" in k for k in props)
    code, items = propfind(s, url, depth="0", body=f"""<?xml version="1.0"?>
<D:propfind xmlns:D="DAV:" xmlns:Z="{MS}"><D:prop><Z:Win32FileAttributes/>
<Z:Win32CreationTime/><D:getlastmodified/></D:prop></D:propfind>""")
    (p,) = items.values()
    assert p[f"{{{MS}}}Win32FileAttributes"] == "00000020"
    assert p[f"{{{MS}}}Win32CreationTime"] == "Tue, 03 Mar 2026 10:00:00 GMT"
    assert p["{DAV:}getlastmodified"] == "Wed, 04 Mar 2026 11:30:00 GMT"
    assert len(dav.admin().versions("/win.docx")) == 1   # props never create versions


def test_quota_properties(dav):
    code, items = propfind(dav.session(), f"{dav.url}/docs/", depth="0", body="""<?xml
 version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/>
 <D:quota-available-bytes/></D:prop></D:propfind>""")
    (p,) = items.values()
    used, quota = dav.admin().usage()
    assert int(p["{DAV:}quota-used-bytes"]) == used


# -- COPY / MOVE / DELETE -----------------------------------------------------------------
def test_copy_move_delete_keep_history(dav):
    s = dav.session()
    base = f"{dav.url}/docs/cm"
    assert s.request("MKCOL", base + "/").status_code == 201
    for content in (b"v1", b"version two"):
        s.put(f"{base}/a.txt", data=content)
    r = s.request("COPY", f"{base}/a.txt", headers={"Destination": f"{base}/b.txt"})
    assert r.status_code == 201
    fs = dav.admin()
    assert fs.stat("/cm/b.txt").etag == fs.stat("/cm/a.txt").etag
    node = fs.stat("/cm/a.txt").node_id
    r = s.request("MOVE", f"{base}/a.txt", headers={"Destination": f"{base}/c.txt"})
    assert r.status_code == 201
    assert fs.stat("/cm/c.txt").node_id == node
    assert [v.size for v in fs.versions("/cm/c.txt") if not v.deleted][-2:] == [2, 11]
    assert s.get(f"{base}/a.txt").status_code == 404
    # overwrite: COPY onto an existing file makes a new version of it
    r = s.request("COPY", f"{base}/c.txt", headers={"Destination": f"{base}/b.txt",
                                                       "Overwrite": "T"})
    assert r.status_code == 204
    r = s.request("COPY", f"{base}/c.txt", headers={"Destination": f"{base}/b.txt",
                                                       "Overwrite": "F"})
    assert r.status_code == 412
    # collections
    r = s.request("COPY", base + "/", headers={"Destination": f"{dav.url}/docs/cm2/"})
    assert r.status_code == 201
    assert sorted(e.name for e in fs.listdir("/cm2")) == ["b.txt", "c.txt"]
    before = time.time()
    time.sleep(0.01)
    r = s.request("DELETE", base + "/")
    assert r.status_code == 204
    assert not fs.exists("/cm")
    # DELETE wrote tombstones: the folder comes back as it was.  (Core: restore of a deleted
    # folder does not re-create the folder itself, so MKCOL it first.)
    assert s.request("MKCOL", base + "/").status_code == 201
    assert fs.restore("/cm", at=before) == 2
    assert s.get(f"{base}/c.txt").content == b"version two"


# -- locks --------------------------------------------------------------------------------
def _lockinfo(scope: str, owner: str = "tests") -> str:
    return (f'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:{scope}/>'
            f'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>{owner}</D:owner>'
            f'</D:lockinfo>')


def test_lock_conflicts_and_lock_null(dav):
    alice, bob = dav.session("alice"), dav.session("bob")
    url = f"{dav.url}/docs/locked.txt"
    alice.put(url, data=b"mine")
    r = alice.request("LOCK", url, data=_lockinfo("exclusive"), headers={"Timeout": "Second-60"})
    assert r.status_code == 200
    token = r.headers["Lock-Token"]
    assert bob.put(url, data=b"theirs").status_code == 423
    assert bob.request("LOCK", url, data=_lockinfo("exclusive")).status_code == 423
    assert bob.request("LOCK", url, data=_lockinfo("shared")).status_code == 423
    assert alice.put(url, data=b"no token").status_code == 423
    assert alice.put(url, data=b"with token", headers={"If": f"({token})"}).status_code == 204
    assert bob.request("UNLOCK", url, headers={"Lock-Token": token}).status_code == 403
    assert alice.request("UNLOCK", url, headers={"Lock-Token": token}).status_code == 204
    assert bob.put(url, data=b"theirs").status_code == 204
    # shared locks coexist
    r1 = alice.request("LOCK", url, data=_lockinfo("shared"))
    r2 = bob.request("LOCK", url, data=_lockinfo("shared"))
    assert (r1.status_code, r2.status_code) == (200, 200)
    for sess, r in ((alice, r1), (bob, r2)):
        sess.request("UNLOCK", url, headers={"Lock-Token": r.headers["Lock-Token"]})
    # lock-null: LOCK on an unmapped URL creates no version; UNLOCK makes it vanish
    nurl = f"{dav.url}/docs/lock-null.txt"
    r = alice.request("LOCK", nurl, data=_lockinfo("exclusive"))
    assert r.status_code == 201
    code, items = propfind(alice, f"{dav.url}/docs/")
    assert any(h.endswith("/lock-null.txt") for h in items)
    assert not dav.admin().exists("/lock-null.txt")
    assert alice.request("UNLOCK", nurl, headers={"Lock-Token": r.headers["Lock-Token"]}
                         ).status_code == 204
    assert alice.get(nurl).status_code == 404
    code, items = propfind(alice, f"{dav.url}/docs/")
    assert not any(h.endswith("/lock-null.txt") for h in items)


def test_locks_are_shared_between_processes(dav, tmp_path):
    """A second adapter on the same repository (another appliance process) honours locks."""
    from archive import Repository

    repo2 = Repository.open(str(dav.root / "repo"))
    other = start_server(repo2, dav.root)
    try:
        alice = dav.session("alice")
        url = "/docs/shared-lock.txt"
        alice.put(dav.url + url, data=b"x")
        r = alice.request("LOCK", dav.url + url, data=_lockinfo("exclusive"))
        token = r.headers["Lock-Token"]
        bob = other.session("bob")
        assert bob.put(other.url + url, data=b"y").status_code == 423
        code, items = propfind(bob, other.url + url, depth="0")
        (p,) = items.values()
        assert token.strip("<>") in p["{DAV:}lockdiscovery"]
        alice.request("UNLOCK", dav.url + url, headers={"Lock-Token": token})
        assert bob.put(other.url + url, data=b"y").status_code == 204
    finally:
        other.stop()
        repo2.close()


# -- Windows / Office save sequence, versions over HTTP --------------------------------------
def test_windows_save_sequence_and_history_urls(dav):
    s = dav.session()
    url = f"{dav.url}/docs/report.docx"
    assert s.put(url, data=b"").status_code == 201
    r = s.request("LOCK", url, data=_lockinfo("exclusive", "WINDOWS\\alice"))
    token = r.headers["Lock-Token"]
    assert s.put(url, data=b"real content", headers={"If": f"({token})"}).status_code == 204
    patch = f"""<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="{MS}">
<D:set><D:prop><Z:Win32LastModifiedTime>Thu, 05 Mar 2026 09:00:00 GMT</Z:Win32LastModifiedTime>
</D:prop></D:set></D:propertyupdate>"""
    assert s.request("PROPPATCH", url, data=patch, headers={"If": f"({token})"}).status_code == 207
    s.request("UNLOCK", url, headers={"Lock-Token": token})
    versions = s.get(url + "?versions").json()["versions"]
    assert [(v["version"], v["size"], v["placeholder"]) for v in versions] == [
        (versions[0]["version"], 0, True), (versions[1]["version"], 12, False)]
    core = dav.admin().versions("/report.docx")
    assert [v.number for v in core] == [v["version"] for v in versions]
    assert [v.etag for v in core] == [v["etag"] for v in versions]
    old = s.get(url + f"?version={versions[0]['version']}")
    assert old.status_code == 200 and old.content == b""
    new = s.get(url + f"?version={versions[1]['version']}")
    assert new.content == b"real content"
    assert s.get(url + "?version=999").status_code == 404
    assert s.get(url + "?version=abc").status_code == 400
    assert "<table>" in s.get(url + "?versions=html").text


def test_snapshots_tree_is_read_only(dav):
    s = dav.session()
    s.put(f"{dav.url}/docs/snap.txt", data=b"before")
    # a token names the state at the end of its second: pick the second of "before" and
    # write "after" in a later second
    instant = time.strftime("@GMT-%Y.%m.%d-%H.%M.%S", time.gmtime(time.time()))
    time.sleep(1.1)
    s.put(f"{dav.url}/docs/snap.txt", data=b"after")
    old = s.get(f"{dav.url}/docs/.snapshots/{instant}/snap.txt")
    assert old.status_code == 200 and old.content == b"before"
    assert s.get(f"{dav.url}/docs/snap.txt").content == b"after"
    # COPY out of a snapshot is a restore: a new version with the old content
    r = s.request("COPY", f"{dav.url}/docs/.snapshots/{instant}/snap.txt",
                  headers={"Destination": f"{dav.url}/docs/snap.txt"})
    assert r.status_code == 204
    assert s.get(f"{dav.url}/docs/snap.txt").content == b"before"
    assert len(dav.admin().versions("/snap.txt")) == 3
    fs = dav.admin()
    tokens = fs.snapshot_tokens()
    assert tokens
    token = tokens[-1]
    r = s.request("PROPFIND", f"{dav.url}/docs/.snapshots/", headers={"Depth": "1"})
    assert r.status_code == 207 and token in r.text
    snap = f"{dav.url}/docs/.snapshots/{token}"
    assert s.put(f"{snap}/new.txt", data=b"x").status_code == 403
    assert s.delete(f"{snap}/snap.txt").status_code == 403
    assert s.request("MKCOL", f"{snap}/d/").status_code == 403
    assert s.request("PROPPATCH", f"{snap}/snap.txt", data="""<?xml version="1.0"?>
<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><x:y xmlns:x="urn:x">1</x:y></D:prop>
</D:set></D:propertyupdate>""").status_code == 403


def test_html_listing(dav):
    s = dav.session()
    s.put(f"{dav.url}/docs/listed-file.txt", data=b"x")
    r = s.get(f"{dav.url}/docs/", headers={"Accept": "text/html"})
    assert r.status_code == 200 and "listed-file.txt" in r.text


def test_nfc_names(dav):
    s = dav.session()
    nfd = "Cafe\u0301.txt"
    nfc = "Caf\u00e9.txt"
    assert s.put(f"{dav.url}/docs/{nfd}", data=b"cafe").status_code == 201
    assert s.get(f"{dav.url}/docs/{nfc}").content == b"cafe"
    assert dav.admin().exists("/" + nfc)


# -- configuration variants -------------------------------------------------------------------
def test_junk_policy_ignore(dav):
    server = start_server(dav.repo, dav.root, junk_policy="ignore")
    try:
        s = server.session()
        for name in ("._report.docx", ".DS_Store"):
            r = s.put(f"{server.url}/docs/{name}", data=b"\x00\x05\x16\x07 metadata")
            assert r.status_code in (201, 204)
            assert s.get(f"{server.url}/docs/{name}").status_code == 404
            assert not dav.admin().exists("/" + name)
    finally:
        server.stop()


def test_basic_refused_over_plain_http_when_required(dav):
    server = start_server(dav.repo, dav.root, require_tls_for_basic=True)
    try:
        r = server.session().get(f"{server.url}/docs/")
        assert r.status_code == 401
    finally:
        server.stop()
    # the default ("remote") lets loopback clients use Basic over plain HTTP
    server = start_server(dav.repo, dav.root, require_tls_for_basic=None)
    try:
        assert server.adapter.config["require_tls_for_basic"] == "remote"
        assert server.session().get(f"{server.url}/docs/").status_code == 200
    finally:
        server.stop()
    with pytest.raises(ValueError):
        start_server(dav.repo, dav.root, junk_policy="shred")


def test_recreated_file_starts_without_dead_props(dav):
    s = dav.session()
    url = f"{dav.url}/docs/reborn.txt"
    s.put(url, data=b"one")
    patch = """<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>
<x:colour xmlns:x="urn:x">red</x:colour></D:prop></D:set></D:propertyupdate>"""
    assert s.request("PROPPATCH", url, data=patch).status_code == 207
    assert s.delete(url).status_code == 204
    assert s.put(url, data=b"two").status_code == 201
    code, items = propfind(s, url, depth="0")
    (p,) = items.values()
    assert "{urn:x}colour" not in p
    assert [v.deleted for v in dav.admin().versions("/reborn.txt")] == [False, True, False]


def test_quota_is_507_and_stores_nothing(dav):
    s = dav.session()
    base = f"{dav.url}/small"
    assert s.put(f"{base}/fits.bin", data=_body(60_000)).status_code == 201
    # announced size over the quota: refused before the body is read
    r = s.put(f"{base}/big.bin", data=_body(QUOTA))
    assert r.status_code == 507
    # chunked, size unknown up front: refused when the writer crosses the quota
    r = s.put(f"{base}/big2.bin", data=iter([_body(30_000)] * 3))
    assert r.status_code == 507
    # the server drops the rest of that body and the connection: it says so, so the client does
    # not send its next request into the closing socket
    assert r.headers.get("Connection", "").lower() == "close"
    fs = dav.admin("small")
    assert sorted(e.name for e in fs.listdir("/")) == ["fits.bin"]
    assert fs.usage() == (60_000, QUOTA)
    code, items = propfind(s, base + "/", depth="0", body="""<?xml version="1.0"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/><D:quota-available-bytes/>
</D:prop></D:propfind>""")
    (p,) = items.values()
    assert p["{DAV:}quota-used-bytes"] == "60000"
    assert p["{DAV:}quota-available-bytes"] == str(QUOTA - 60_000)


def test_https_with_basic(dav, tmp_path):
    cert, key = self_signed(tmp_path)
    server = start_server(dav.repo, dav.root, ServeContext(tls_cert=cert, tls_key=key),
                          tls=True, require_tls_for_basic=True)
    try:
        assert server.url.startswith("https://")
        s = server.session()   # verify= per request: REQUESTS_CA_BUNDLE beats Session.verify
        assert s.put(f"{server.url}/docs/tls.txt", data=b"secure",
                     verify=cert).status_code == 201
        p = curl("--cacert", cert, f"{server.url}/docs/tls.txt")
        assert p.stdout == b"secure", p
        assert requests.get(f"{server.url}/docs/tls.txt", verify=cert).status_code == 401
    finally:
        server.stop()


def test_a_remembered_password_does_not_open_a_locked_out_account(tmp_path):
    """The Basic-auth cache must not answer for a locked-out user: otherwise a guesser learns
    that a guess was right while every wrong one is refused."""
    repo = make_repo(tmp_path)
    server = start_server(repo, tmp_path)
    try:
        url = f"{server.url}/docs/"
        assert server.session().request("PROPFIND", url, headers={"Depth": "0"}).status_code == 207
        repo.throttle.free_failures = 0                  # the first wrong guess locks alice
        repo.throttle.backoff = 600.0
        bad = requests.request("PROPFIND", url, auth=("alice", "a wrong guess"), headers={"Depth": "0"})
        assert bad.status_code == 401
        right = server.session().request("PROPFIND", url, headers={"Depth": "0"})
        assert right.status_code == 401                  # the right password, while locked
        assert server.session("bob").request("PROPFIND", url, headers={"Depth": "0"}).status_code == 207
    finally:
        server.stop()
        repo.close()
