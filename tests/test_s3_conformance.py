"""Ceph's s3-tests against Edge Archive (see tests/s3_conformance.py and docs/s3-conformance.md).

Without ../shared/peers/s3-tests it fails under tests/run.sh (EDGE_ARCHIVE_REQUIRE_CLIENTS=1, as in
CI) and is skipped only in a bare pytest run; it fails when the passes drop below the
recorded floor (the suite's known failures are features the archive does not have, listed in
docs/s3-conformance.md)."""
from __future__ import annotations

import os

import pytest

from tests import s3_conformance as conf


@pytest.mark.timeout(1500)
def test_ceph_s3_tests_selection(tmp_path):
    if conf.suite_folder() is None:
        missing = f"Ceph s3-tests not present at {conf.SUITE}"
        if os.environ.get("EDGE_ARCHIVE_REQUIRE_CLIENTS") == "1":
            pytest.fail(missing + " (a peer's suite that is missing is a failure in CI)")
        pytest.skip(missing)
    results = conf.run(tmp_path)
    passed, failed = conf.summary(results)
    report = "\n".join(f"{g}: {len(r['passed'])} passed, {len(r['failed'])} failed" for g, r in results.items())
    assert passed >= conf.FLOOR, f"s3-tests: {passed} passed (floor {conf.FLOOR}), {failed} failed\n{report}"
