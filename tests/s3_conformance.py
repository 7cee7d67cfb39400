"""Run Ceph's s3-tests (unchanged, from ../shared/peers/s3-tests) against Edge Archive's S3 adapter.

Used by tests/test_s3_conformance.py (CI: fails only when passes drop below the recorded floor)
and by hand to refresh docs/s3-conformance.md:

    .venv/bin/python tests/s3_conformance.py            # prints passes/failures by group
    .venv/bin/python tests/s3_conformance.py 'test_versioning_obj_suspend_versions or ...'  # a few, by hand

The suite folder is read-only; it is copied to a temporary folder (pytest writes caches).  A
repository with the users the suite's config names (main, alt, tenant) and their access keys is
created, the adapter serves it on a free loopback port, and the suite runs in a subprocess with
the selection radosgw was measured on (see ../shared/peers/README.md).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: ../shared/peers/s3-tests from the project root (a git worktree one level deeper also finds it;
#: S3TESTS_DIR overrides).
CANDIDATES = [Path(os.environ["S3TESTS_DIR"])] if os.environ.get("S3TESTS_DIR") else [
    ROOT.parent / "shared" / "peers" / "s3-tests", ROOT.parent.parent / "shared" / "peers" / "s3-tests"]
SUITE = CANDIDATES[0]
MARKERS = "not fails_on_rgw"
SELECTION = "bucket_list or object_write or multipart or versioning or object_copy or ranged"
GROUPS = ("bucket_list", "object_write", "multipart", "versioning", "object_copy", "ranged")
#: Passes recorded in docs/s3-conformance.md; CI fails below this.
FLOOR = 165
#: A test that hangs (a client waiting for an answer that never comes) fails after this long.
PER_TEST_TIMEOUT = 90

USERS = {  # name -> (access key, secret)
    "main": ("MAINKEY0000000000000", "mainsecretmainsecretmainsecretmainsecret"),
    "alt": ("ALTKEY00000000000000", "altsecretaltsecretaltsecretaltsecret0000"),
    "tenant": ("TENANTKEY00000000000", "tenantsecrettenantsecrettenantsecret0000"),
}


def suite_folder() -> Path | None:
    return next((c for c in CANDIDATES if (c / "s3tests" / "functional" / "test_s3.py").is_file()), None)


def config_text(port: int) -> str:
    users = "".join(f"""
[s3 {name}]
display_name = {name}
user_id = {name}
email = {name}@example.com
api_name = default
access_key = {key}
secret_key = {secret}
""" + ("tenant = testx\n" if name == "tenant" else "") for name, (key, secret) in USERS.items())
    return f"""[DEFAULT]
host = 127.0.0.1
port = {port}
is_secure = False
ssl_verify = False

[fixtures]
bucket prefix = ea-{{random}}-
iam name prefix = s3-tests-
iam path prefix = /s3-tests/
{users}
[iam]
email = iam@example.com
user_id = iam
access_key = IAMKEY00000000000000
secret_key = iamsecretiamsecretiamsecretiamsecret0000
display_name = iam

[iam root]
access_key = ROOTKEY0000000000000
secret_key = rootsecretrootsecretrootsecretrootsecret
user_id = root
email = root@example.com

[iam alt root]
access_key = ALTROOTKEY0000000000
secret_key = altrootsecretaltrootsecretaltrootsecret0
user_id = altroot
email = altroot@example.com
"""


def make_repo(path: Path):
    from archive import Repository, accesskeys
    repo = Repository.init(path)
    for name, (key, secret) in USERS.items():
        repo.add_user(name, secret)
        accesskeys.set_create_shares(repo, name, True)
        accesskeys.create_key(repo, name, key_id=key, secret=secret)
    return repo


def run(workdir: Path, timeout: float = 1400, selection: str = SELECTION) -> dict[str, dict[str, list[str]]]:
    """Serve a fresh repository, run the selection, return {group: {"passed": [...], "failed": [...]}}.
    (`selection`: another -k expression, for trying a few tests by hand.)"""
    from protocols.base import ServeContext
    from protocols.s3 import S3Adapter
    suite = suite_folder()
    assert suite is not None, f"s3-tests not found at {SUITE}"
    copy = workdir / "s3-tests"
    shutil.copytree(suite, copy, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    repo = make_repo(workdir / "repo")
    adapter = S3Adapter(repo, {"listen": "127.0.0.1:0", "new_buckets": {"allow_purge": True, "versioning": "unset"}, "threads": 32},
                        ServeContext())
    adapter.start()
    try:
        conf = workdir / "s3tests.conf"
        conf.write_text(config_text(adapter.port))
        junit = workdir / "junit.xml"
        env = {**os.environ, "S3TEST_CONF": str(conf)}
        env.pop("PYTEST_ADDOPTS", None)
        log = open(workdir / "s3-tests.log", "wb")
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                        f"--timeout={PER_TEST_TIMEOUT}",
                        "s3tests/functional/test_s3.py", "-m", MARKERS, "-k", selection, f"--junitxml={junit}"],
                       cwd=copy, env=env, timeout=timeout, stdout=log, stderr=subprocess.STDOUT)
        return parse_junit(junit)
    finally:
        adapter.stop(1.0)
        repo.close()


def group_of(name: str) -> str:
    return next((g for g in GROUPS if g in name), "other")


def parse_junit(path: Path) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {g: {"passed": [], "failed": []} for g in GROUPS}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        if case.find("skipped") is not None:
            continue
        bad = case.find("failure") is not None or case.find("error") is not None
        out.setdefault(group_of(name), {"passed": [], "failed": []})["failed" if bad else "passed"].append(name)
    return out


def summary(results: dict[str, dict[str, list[str]]]) -> tuple[int, int]:
    return (sum(len(r["passed"]) for r in results.values()), sum(len(r["failed"]) for r in results.values()))


def main() -> None:
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        results = run(Path(d), selection=sys.argv[1] if len(sys.argv) > 1 else SELECTION)
    for g, r in results.items():
        print(f"{g}: {len(r['passed'])} passed, {len(r['failed'])} failed")
        for name in r["failed"]:
            print(f"    FAIL {name}")
    p, f = summary(results)
    print(f"total: {p} passed, {f} failed")


if __name__ == "__main__":
    main()


def markdown(results: dict[str, dict[str, list[str]]]) -> str:
    """The per-group table and failure list of docs/s3-conformance.md."""
    p, f = summary(results)
    lines = ["| group (first -k word in a test's name) | passed | failed |", "|---|---:|---:|"]
    lines += [f"| {g} | {len(r['passed'])} | {len(r['failed'])} |" for g, r in results.items()]
    lines += [f"| **total** | **{p}** | **{f}** |", "", "Failed tests:", ""]
    for g, r in results.items():
        if r["failed"]:
            lines.append(f"* {g}: " + ", ".join(f"`{n}`" for n in r["failed"]))
    return "\n".join(lines)
