"""Session-scoped engines for the scale-out tests: a PostgreSQL cluster and an S3 endpoint.

Imported by conftest.py so that one cluster (and one `rclone serve s3`) serves every module.
"""
from __future__ import annotations

import pytest

from pg_helpers import PgCluster


@pytest.fixture(scope="session")
def pg():
    """A running throwaway PostgreSQL cluster (see pg_helpers)."""
    cluster = PgCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def s3():
    """`rclone serve s3` on a free loopback port, with the AWS_* variables set for boto3."""
    import os
    from s3store_helpers import RcloneS3
    server = RcloneS3().start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.close()
