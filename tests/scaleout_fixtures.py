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
