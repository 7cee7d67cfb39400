"""pandas, Dask and DuckDB on `edgearchive://` (the fsspec filesystem), on any past state.

The repository is the scale-out one (S3 bucket through rclone + PostgreSQL catalog), read
directly by the filesystem: no server in between.
"""
from __future__ import annotations

import time

import fsspec
import pandas as pd
import pytest

from archive import Repository

CSV1 = "sensor,value\na,1\nb,2\n"
CSV2 = "sensor,value\na,10\nb,20\nc,30\n"


@pytest.fixture(scope="module")
def opts(tmp_path_factory, pg, s3):
    tmp = tmp_path_factory.mktemp("fsspec")
    url, catalog = s3.url(), pg.new_url("fss")
    r = Repository.init(url, catalog_url=catalog, cache=str(tmp / "cache-init"))
    r.add_share("lab")
    fs = r.share("lab")
    fs.mkdir("/runs")
    for name, text in (("/runs/r1.csv", CSV1), ("/runs/r2.csv", "sensor,value\nz,5\n")):
        with fs.open_write(name) as w:
            w.write(text.encode())
    time.sleep(1.1)
    r.close()
    o = {"repo": url, "catalog": catalog, "cache": str(tmp / "cache-tools")}
    before = time.time()
    time.sleep(1.1)
    f = fsspec.filesystem("edgearchive", **o)
    with f.open("lab/runs/r1.csv", "wb") as out:         # a write through fsspec: version 2
        out.write(CSV2.encode())
    return {**o, "_before": before}


def _o(opts, **kw):
    return {k: v for k, v in opts.items() if not k.startswith("_")} | kw


def test_listing_info_and_versions_through_fsspec(opts):
    f = fsspec.filesystem("edgearchive", **_o(opts))
    assert f.ls("", detail=False) == ["lab"]
    assert sorted(f.ls("lab/runs", detail=False)) == ["lab/runs/r1.csv", "lab/runs/r2.csv"]
    info = f.info("edgearchive://lab/runs/r1.csv")
    assert info["type"] == "file" and info["size"] == len(CSV2) and info["version"] == 2
    assert f.modified("lab/runs/r1.csv").timestamp() == pytest.approx(info["mtime"])
    with f.open("lab/runs/r1.csv", version=1) as r:
        assert r.read().decode() == CSV1
    r = Repository.open(opts["repo"], catalog_url=opts["catalog"], cache=opts["cache"] + "-check")
    assert [v.origin.protocol for v in r.share("lab").versions("/runs/r1.csv")][-1] == "fsspec"
    r.close()
    with pytest.raises(FileNotFoundError):
        f.info("lab/runs/nope.csv")


def test_pandas_csv_now_and_in_the_past(opts):
    now = pd.read_csv("edgearchive://lab/runs/r1.csv", storage_options=_o(opts))
    assert now["value"].sum() == 60
    past = pd.read_csv("edgearchive://lab/runs/r1.csv", storage_options=_o(opts, at=opts["_before"]))
    assert past["value"].sum() == 3


def test_pandas_parquet_round_trip_makes_a_version(opts):
    df = pd.DataFrame({"t": range(1000), "v": [i * 0.5 for i in range(1000)]})
    df.to_parquet("edgearchive://lab/runs/table.parquet", storage_options=_o(opts))
    back = pd.read_parquet("edgearchive://lab/runs/table.parquet", storage_options=_o(opts))
    assert back.equals(df)
    f = fsspec.filesystem("edgearchive", **_o(opts))
    assert f.info("lab/runs/table.parquet")["version"] == 1


def test_dask_reads_every_csv_of_a_folder(opts):
    import dask.dataframe as dd
    ddf = dd.read_csv("edgearchive://lab/runs/*.csv", storage_options=_o(opts))
    assert int(ddf["value"].sum().compute()) == 65


def test_duckdb_queries_the_archive_at_a_past_instant(opts):
    import duckdb
    con = duckdb.connect()
    con.register_filesystem(fsspec.filesystem("edgearchive", **_o(opts)))
    assert con.execute("SELECT sum(value) FROM read_csv('edgearchive://lab/runs/r1.csv')").fetchone()[0] == 60
    past = fsspec.filesystem("edgearchive", **_o(opts, at=opts["_before"]), skip_instance_cache=True)
    past.protocol = ("edgearchive-past",)
    con.register_filesystem(past)
    assert con.execute("SELECT sum(value) FROM read_csv('edgearchive-past://lab/runs/r1.csv')").fetchone()[0] == 3


def test_a_past_instant_is_read_only(opts):
    from archive.errors import ReadOnly
    f = fsspec.filesystem("edgearchive", **_o(opts, at=opts["_before"]))
    with pytest.raises(ReadOnly):
        f.open("lab/runs/new.csv", "wb")
