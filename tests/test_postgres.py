"""The core, FTP and WebDAV tests again, on a real PostgreSQL catalog.

Every test imported here runs a second time in this module, where `Repository.init` is made
to put the catalog in a fresh PostgreSQL database: the same assertions, the other engine.
The test bodies are not copied: they are the same functions.
"""
from __future__ import annotations

import pytest

from archive import Repository

from test_sharefs import *  # noqa: F401,F403  (every core ShareFS test)
from test_ftp import (  # noqa: F401
    test_stor_retr_overwrite_makes_versions, test_dele_is_a_tombstone_and_rename_keeps_history,
    test_snapshots_are_browsable_downloadable_and_readonly, test_client_dropping_mid_stor_keeps_previous_version,
    test_mkd_rmd_and_bad_folder_operations, test_appe_makes_new_version_with_appended_bytes, srv)
from test_webdav import (  # noqa: F401
    test_litmus_all_suites_pass_without_skips, test_put_get_versions_and_etag)
from test_commit_path import (  # noqa: F401  (the plain-SQL commit path, on psycopg)
    test_a_grant_changed_behind_a_stale_login_is_honoured_inside_the_commit,
    test_a_commit_that_fails_at_its_durable_step_leaves_no_row_and_the_next_one_works,
    test_the_entry_of_create_file_and_mkdir_is_what_stat_reads_back,
    test_set_times_shares_the_commit_path_and_refuses_what_is_not_there)
from test_catalog_migration import (  # noqa: F401  (the schema migration's SQL, on PostgreSQL)
    test_downgrade_to_0007_and_upgrade_again_keep_every_version,
    test_0011_downgrade_and_upgrade_with_alembic_keep_every_name_and_version,
    test_0013_audit_without_its_time_index_lists_the_same_both_ways,
    test_0014_etags_as_bytes_show_the_same_hex_everywhere_both_ways,
    test_0015_usage_counter_is_computed_for_existing_data_both_ways,
    test_0016_times_read_the_same_everywhere_both_ways,
    test_0017_0018_audit_and_chunks_read_the_same_both_ways)
from test_quota_usage import (  # noqa: F401  (the usage counter and the quota at commit, on PostgreSQL)
    test_the_counter_is_exact_after_every_kind_of_change,
    test_a_commit_over_the_quota_is_refused_inside_its_transaction,
    test_one_batch_commits_what_fits_and_refuses_the_rest,
    test_parallel_writers_in_threads_cannot_exceed_the_quota,
    test_two_repositories_on_one_catalog_cannot_exceed_the_quota, q)
import webdav_helpers
from pg_helpers import writer_process

_real_init = Repository.init.__func__


def _on(pg_cluster):
    def init(cls, path, *args, catalog_url=None, **kw):
        return _real_init(cls, path, *args, catalog_url=catalog_url or pg_cluster.new_url(), **kw)
    return classmethod(init)


@pytest.fixture(autouse=True)
def _postgres_catalog(pg, monkeypatch):
    monkeypatch.setattr(Repository, "init", _on(pg))


@pytest.fixture(scope="module")
def dav(tmp_path_factory, pg):
    root = tmp_path_factory.mktemp("webdav-pg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Repository, "init", _on(pg))
        repo = webdav_helpers.make_repo(root)
    assert repo.catalog.url.startswith("postgresql")
    server = webdav_helpers.start_server(repo, root)
    yield server
    server.stop()
    repo.close()


def test_the_catalog_really_is_postgresql(repo):
    assert repo.catalog.engine.dialect.name == "postgresql"


def test_two_processes_committing_at_once_lose_no_update(pg, tmp_path):
    import multiprocessing as mp
    catalog = pg.new_url("procs")
    r = _real_init(Repository, tmp_path / "repo", catalog_url=catalog)
    r.add_share("office")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=writer_process, args=(str(tmp_path / "repo"), catalog, t, 25)) for t in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    fs = r.share("office")
    vs = fs.versions("/shared.txt")
    assert [v.number for v in vs] == list(range(1, 51))          # every commit of both is a version
    seen = set()
    for v in vs:
        with fs.open_read("/shared.txt", version=v.number) as rd:
            seen.add(rd.read().decode())
    assert seen == {f"{t}-{i}" for t in "ab" for i in range(25)}
    assert len([e for e in fs.listdir("/") if e.name != "shared.txt"]) == 50
    r.close()
