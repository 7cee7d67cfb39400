"""What a user reads when something is refused: each message asserted as the user sees it,
and each refusal checked to have changed nothing (issue 8, items 2 and 17)."""
from __future__ import annotations

import json
import socket
import subprocess

import pytest

from webdav_helpers import USERS, make_repo, need, start_server


@pytest.fixture
def office(cli, tmp_path):
    """A repository with share 'office' holding a small tree (made through the core: fast),
    and the real CLI on it."""
    from archive import Repository
    from conftest import put_bytes
    repo = Repository.init(cli.repo_path)
    try:
        repo.add_share("office")
        fs = repo.share("office")
        for d in ("/site", "/site/img", "/z", "/z/deep"):
            fs.mkdir(d)
        for path, data in {"/a.txt": b"a", "/site/index.html": b"<html>", "/site/img/logo.png": b"png",
                           "/z/deep/f": b"f"}.items():
            put_bytes(fs, path, data)
    finally:
        repo.close()
    return cli


@pytest.fixture
def bare(cli):
    """An empty repository (made through the core) and the real CLI on it."""
    from archive import Repository
    Repository.init(cli.repo_path).close()
    return cli


def current_files(cli) -> dict[str, tuple[int, bool]]:
    """path -> (number of versions, deleted?) of every file of /office (read through the core)."""
    from archive import Repository
    repo = Repository.open(cli.repo_path)
    try:
        fs = repo.share("office")
        out = {}
        for rel in ("/a.txt", "/site/index.html", "/site/img/logo.png", "/z/deep/f"):
            vs = fs.versions(rel)
            out["/office" + rel] = (len(vs), vs[-1].deleted)
        return out
    finally:
        repo.close()


# ----------------------------------------------------------------------------- rm -r of a share (item 2)

@pytest.mark.parametrize("args", [("rm", "-r", "/office"), ("rm", "-r", "/office/"), ("rm", "/office")])
def test_rm_of_a_share_root_is_refused_before_anything_is_touched(office, args):
    before = current_files(office)
    res = office(*args, ok=False)
    assert res.returncode == 1
    assert current_files(office) == before == {p: (1, False) for p in before}     # nothing deleted
    assert res.stderr.decode().strip() == (
        "Error: /office is the root of share 'office' and cannot be removed; nothing was changed.  "
        "Remove what is inside by name (archivectl rm -r /office/FOLDER).")


def test_rm_r_of_a_folder_still_removes_it(office):
    office("rm", "-r", "/office/site")
    assert [e["name"] for e in json.loads(office("ls", "/office", "--json").stdout)] == ["a.txt", "z"]


# ----------------------------------------------------------------------------- mv (item 17)

@pytest.mark.parametrize("src, dst", [("/office/site", "/office/site"), ("/office/a.txt", "/office//a.txt"),
                                      ("/office/site/", "/office/site")])
def test_mv_to_the_same_path_says_so_and_changes_nothing(office, src, dst):
    res = office("mv", src, dst, ok=False)
    assert res.returncode == 1
    assert res.stderr.decode().strip() == f"Error: {src} and {dst} are the same path: nothing to move"
    from archive import Repository
    with Repository.open(office.repo_path) as repo:
        assert "rename" not in {a.action for a in repo.audit_events()}


def test_mv_of_a_missing_path_to_itself_is_not_found(office):
    res = office("mv", "/office/nope", "/office/nope", ok=False)
    assert res.returncode == 3
    assert res.stderr.decode().strip() == "error: /office/nope: no such file or folder"


def test_renaming_a_path_to_itself_in_the_core_writes_no_event(fs):
    from conftest import put_bytes
    put_bytes(fs, "/same.txt", b"x")
    fs.rename("/same.txt", "/same.txt")
    assert [v.number for v in fs.versions("/same.txt")] == [1]
    assert "rename" not in {a.action for a in fs.repo.audit_events()}
    from archive.errors import NotFound
    with pytest.raises(NotFound, match=r"^/office/missing: no such file or folder$"):
        fs.rename("/missing", "/missing")


def test_mv_across_shares_names_both(office):
    office("share", "add", "other")
    res = office("mv", "/office/a.txt", "/other/a.txt", ok=False)
    assert res.stderr.decode().strip() == ("Error: mv works within one share: /office/a.txt is in 'office', "
                                           "/other/a.txt in 'other'")


# ----------------------------------------------------------------------------- share options (item 17)

BAD_VALUES = {
    "quota": ("10X", "Error: Invalid value for '--quota': '10X' is not a size: give a number of bytes with an "
                     "optional unit K, M, G, T or P (powers of 1024; 10G = 10GiB = 10GB), e.g. 500G or 1.5T; 'none' "
                     "removes the quota"),
    "retention": ("keep-lst=3", "Error: Invalid value for '--retention': bad retention rule 'keep-lst=3': use "
                                "keep-last=N, keep-hourly=N, keep-daily=N, keep-weekly=N, keep-monthly=N, "
                                "keep-yearly=N; or keep-all to keep every version"),
}


@pytest.mark.parametrize("option", sorted(BAD_VALUES))
def test_a_bad_share_option_says_what_is_accepted_and_creates_nothing(bare, option):
    value, text = BAD_VALUES[option]
    res = bare("share", "add", "s", f"--{option}", value, ok=False)
    assert res.returncode == 2
    assert text in res.stderr.decode()
    assert "could not convert" not in res.stderr.decode() and "Traceback" not in res.stderr.decode()
    assert json.loads(bare("share", "list", "--json").stdout) == []          # nothing created


def test_quota_units_and_none(bare):
    sizes = {"10G": 10 << 30, "10GiB": 10 << 30, "10gb": 10 << 30, "1.5T": int(1.5 * (1 << 40)), "4096": 4096,
             "500 M": 500 << 20}
    for i, text in enumerate(sizes):
        bare("share", "add", f"s{i}", "--quota", text)
    bare("share", "set", "s0", "--quota", "none")
    got = {s["name"]: s["quota"] for s in json.loads(bare("share", "list", "--json").stdout)}
    assert got == {"s0": None, **{f"s{i}": size for i, size in enumerate(sizes.values()) if i}}


def test_retention_keep_all_is_accepted_as_share_list_prints_it(bare):
    cli = bare
    cli("share", "add", "s", "--retention", "keep-all")
    assert cli("share", "list").stdout.decode().split("\t")[1] == "retention=keep-all"
    cli("share", "set", "s", "--retention", "keep-last=3")
    assert "retention=keep-last=3" in cli("share", "list").stdout.decode()
    cli("share", "set", "s", "--retention", "keep-all")          # back to keeping everything
    assert cli("share", "list").stdout.decode().split("\t")[1] == "retention=keep-all"
    assert json.loads(cli("share", "list", "--json").stdout)[0]["retention"] is None


# ----------------------------------------------------------------------------- share names in errors (item 17)

@pytest.mark.parametrize("args, code, text", [
    (("get", "/office/missing.txt", "-"), 3, "error: /office/missing.txt: no such file or folder"),
    (("ls", "/office/a.txt/x"), 1, "error: /office/a.txt is not a folder"),
    (("mkdir", "/office/site"), 1, "error: /office/site exists"),
    (("rm", "/office/z"), 1, "error: /office/z is not empty"),
    (("get", "/office/a.txt", "-", "--version", "7"), 3, "error: /office/a.txt has no version 7"),
    (("mv", "/office/a.txt", "/office/site"), 1, "error: /office/site is an existing folder"),
    (("restore", "/office/site", "--version", "1"), 1, "error: /office/site is a folder: restore it with a time"),
    (("put", "-", "/office/site"), 1, "error: /office/site is a folder"),
])
def test_errors_name_the_share_in_paths(office, args, code, text):
    res = office(*args, ok=False, input=b"x")
    assert (res.returncode, res.stderr.decode().strip()) == (code, text)


def test_ftp_error_replies_name_the_share(tmp_path):
    """The same core text reaches an FTP client: a real one (curl) shows it."""
    from archive import Repository
    repo = Repository.init(tmp_path / "r")
    repo.add_share("office")
    repo.add_user("alice", "pw")
    repo.grant("alice", "office", "rw")
    repo.close()
    from serve_helpers import archivectl, free_port
    import os
    import signal
    from serve_helpers import ServeProcess
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_ARCHIVE_")}
    env.update(EDGE_ARCHIVE_FTP_LISTEN=f"127.0.0.1:{port}", EDGE_ARCHIVE_METRICS_ENABLED="false")
    p = ServeProcess(archivectl() + ["--repo", str(tmp_path / "r"), "serve", "--only", "ftp"], cwd=str(tmp_path),
                     env=env, tmp=str(tmp_path))
    try:
        p.ready()
        res = subprocess.run([need("curl"), "-sS", "-v", f"ftp://alice:pw@127.0.0.1:{port}/office/nope.txt"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode != 0
        assert "550" in res.stderr and "/office/nope.txt" in res.stderr, res.stderr
        p.proc.send_signal(signal.SIGTERM)
        assert p.finish() == 0
    finally:
        p.kill()


# ----------------------------------------------------------------------------- versions: one shape (item 17)

def test_cli_versions_json_and_webdav_versions_are_the_same_records(tmp_path):
    root = tmp_path
    repo = make_repo(root)
    server = start_server(repo, root)
    try:
        url = f"{server.url}/docs/report.txt"
        curl = need("curl")
        for body in (b"first", b"second!"):
            src = tmp_path / "body"
            src.write_bytes(body)
            res = subprocess.run([curl, "-sS", "-f", "-u", f"alice:{USERS['alice']}", "-T", str(src), url],
                                 capture_output=True, timeout=60)
            assert res.returncode == 0, res.stderr
        res = subprocess.run([curl, "-sS", "-f", "-u", f"alice:{USERS['alice']}", url + "?versions"],
                             capture_output=True, timeout=60)
        dav = json.loads(res.stdout)["versions"]
    finally:
        server.stop()
        repo.close()
    from conftest import CLI
    cli = CLI(root / "repo")(*["versions", "/docs/report.txt", "--json"])
    mine = json.loads(cli.stdout)
    assert [{k: v for k, v in d.items() if k not in ("placeholder", "href")} for d in dav] == mine
    assert set(mine[0]) == {"version", "size", "created_at", "mtime", "deleted", "etag", "origin"}
    assert mine[0]["origin"] == {"protocol": "webdav", "user": "alice", "address": "127.0.0.1"}
    assert mine[0]["created_at"].endswith("Z") and "T" in mine[0]["created_at"]
    assert [(d["version"], d["size"], d["href"].endswith(f"?version={d['version']}")) for d in dav] == [
        (1, 5, True), (2, 7, True)]


def test_a_taken_webdav_port_is_named_like_ftp(tmp_path):
    from archive import Repository
    Repository.init(tmp_path / "r").close()
    from serve_helpers import archivectl
    import os
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_ARCHIVE_")}
        env.update(EDGE_ARCHIVE_WEBDAV_LISTEN=f"127.0.0.1:{port}", EDGE_ARCHIVE_METRICS_ENABLED="false")
        res = subprocess.run(archivectl() + ["--repo", str(tmp_path / "r"), "serve", "--only", "webdav"],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
    finally:
        busy.close()
    assert res.returncode == 1
    assert (f"archivectl serve: webdav: cannot listen on 127.0.0.1:{port}: address already in use "
            "(another server is listening there)") in res.stderr
    assert "OSError" not in res.stderr and "Traceback" not in res.stderr
