"""Matomo (a real MariaDB with Matomo's log tables) → lake → pipeline: the same statistics."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import replace
from pathlib import Path

import duckdb
import polars as pl
import pytest
from dagster import DagsterInstance, materialize
from sqlalchemy import create_engine, text

from assets import ingest_assets, usage_assets
from conftest import DAYS, GeneratedData, generate, register_sources
from definitions import build_resources
from resources import MatomoDbResource
from stores import fresh_matomo_database
from support import item_metrics, manifest_items
from usage_stats.demo.synthetic import SyntheticConfig
from usage_stats.demo.synthetic_matomo import load_lake_into_matomo
from usage_stats.ingest.matomo import MatomoExportError, MatomoTables, export_site_day
from usage_stats.pipeline.referrers import read_visit_referrers
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.lake import LocalLake, day_leaf
from usage_stats.storage.open import open_lake
from usage_stats.storage.warehouse import Warehouse

RANGE = {
    "dagster/asset_partition_range_start": DAYS[0],
    "dagster/asset_partition_range_end": DAYS[-1],
}


@pytest.fixture
def matomo_url():
    yield from fresh_matomo_database()


@pytest.fixture
def source_data(tmp_path) -> GeneratedData:
    # Four sites: repositories 1 and 2 (2 archived month-level), a national node, the portal
    # (custom variable 6). Matomo keeps no user agent, so no site of this set carries one.
    return generate(tmp_path / "generated", SyntheticConfig(sites=4, start=dt.date(2026, 1, 1)))


def exported_copy(source: GeneratedData, tmp_path: Path) -> GeneratedData:
    """Same sources, an empty lake that only the export fills, its own warehouse and store."""
    data_dir = tmp_path / "exported"
    settings = replace(
        source.settings,
        data_dir=data_dir,
        lake_url=str(data_dir / "lake"),
        warehouse_url=str(data_dir / "warehouse"),
        duckdb_path=str(data_dir / "stats.duckdb"),
        admin_db_url=f"sqlite:///{data_dir / 'admin.db'}",
    )
    register_sources(settings)
    return GeneratedData(data_dir, settings, source.manifest)


def run(data: GeneratedData, assets, matomo_url: str | None = None, **kwargs):
    resources = build_resources(data.settings)
    if matomo_url:
        resources["matomo_db"] = MatomoDbResource(url=matomo_url)
    return materialize(assets, resources=resources, instance=DagsterInstance.ephemeral(), **kwargs)


def store_deltas(data: GeneratedData) -> pl.DataFrame:
    with duckdb.connect(data.settings.duckdb_path, read_only=True) as con:
        frame = pl.from_arrow(con.sql("SELECT * FROM usage_deltas").to_arrow_table())
    return frame.sort(frame.columns, nulls_last=True)


def kept_by_referrer(data: GeneratedData) -> dict[str, dict[str, int]]:
    """Kept events per referrer value of their visit, per day: the warehouse's `sessions`
    joined to the lake's visits (`read_visit_referrers`)."""
    warehouse = Warehouse(open_lake(data.settings.warehouse_url))
    found = {}
    for day in data.manifest["days"]:
        date = dt.date.fromisoformat(day)
        visits, problems = read_visit_referrers(open_lake(data.settings.lake_url), date)
        assert problems.as_dict() == {"unknown_type": 0, "unreadable_url": 0}
        counts = (
            warehouse.read("sessions", date)
            .join(visits, on=["site_id", "visit_id"], how="left")
            .group_by("referrer")
            .len()
        )
        found[day] = dict(sorted(counts.iter_rows()))
    return found


def lake_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_export_then_pipeline_gives_the_same_statistics(source_data, matomo_url, tmp_path):
    counts = load_lake_into_matomo(create_engine(matomo_url), "matomo_", source_data.lake)
    assert counts["log_link_visit_action"] == sum(
        d["input_events"] for d in source_data.manifest["days"].values()
    )
    exported = exported_copy(source_data, tmp_path)
    assert run(exported, ingest_assets, matomo_url, tags=RANGE).success
    assert run(exported, usage_assets, tags=RANGE).success
    assert run(source_data, usage_assets, tags=RANGE).success
    assert store_deltas(exported).equals(store_deltas(source_data))
    assert item_metrics(store_deltas(exported)) == manifest_items(source_data.manifest)
    # Page titles travel through log_action (type 4) and idaction_name.
    titles = source_data.manifest["titles"]
    assert DuckDBStatsStore(Path(exported.settings.duckdb_path)).titles(tuple(titles)) == titles
    # Referrers travel in log_visit: the kept events by their visit's referrer, as planted.
    assert kept_by_referrer(exported) == {
        day: info["kept_by_referrer"] for day, info in source_data.manifest["days"].items()
    }

    # Re-export of a day: the same files, the same statistics.
    root = Path(exported.settings.lake_url)
    before = {k: pl.read_parquet(io.BytesIO(v)) for k, v in lake_files(root).items()}
    assert run(exported, ingest_assets, matomo_url, partition_key=DAYS[1]).success
    after = {k: pl.read_parquet(io.BytesIO(v)) for k, v in lake_files(root).items()}
    assert before.keys() == after.keys()
    assert all(before[k].equals(after[k]) for k in before)
    assert run(exported, usage_assets, partition_key=DAYS[1]).success
    assert store_deltas(exported).equals(store_deltas(source_data))


def test_a_visit_crossing_midnight_keeps_all_its_actions(source_data, matomo_url, tmp_path):
    engine = create_engine(matomo_url)
    load_lake_into_matomo(engine, "matomo_", source_data.lake)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO matomo_log_visit (idvisit, idsite, idvisitor, config_id, location_ip,"
                " visit_first_action_time, visit_last_action_time, visit_total_actions,"
                " visit_total_time, location_country) VALUES (900001, 1, :id, :id, :ip,"
                " '2026-01-01 23:59:30', '2026-01-02 00:00:20', 2, 50, 'cr')"
            ),
            {"id": b"12345678", "ip": b"\x7f\x00\x00\x01"},
        )
        for link, time in ((900001, "2026-01-01 23:59:50"), (900002, "2026-01-02 00:00:20")):
            conn.execute(
                text(
                    "INSERT INTO matomo_log_link_visit_action (idlink_va, idsite, idvisitor,"
                    " idvisit, server_time, idaction_url, custom_var_k1, custom_var_v1)"
                    " VALUES (:link, 1, :id, 900001, :time, 1, 'oaipmhID',"
                    " 'oai:repo1.example.org:1001/1')"
                ),
                {"link": link, "time": time, "id": b"12345678"},
            )
    tables = MatomoTables(engine, "matomo_")
    lake = LocalLake(tmp_path / "lake")
    export_site_day(tables, lake, 1, dt.date(2026, 1, 1))
    export_site_day(tables, lake, 1, dt.date(2026, 1, 2))

    def actions_of_visit(day: dt.date) -> list[str]:
        key = f"{day_leaf('events', 1, day)}/part-0.parquet"
        events = pl.read_parquet(io.BytesIO(lake.read_bytes(key)))
        times = events.filter(pl.col("idvisit") == 900001).get_column("server_time")
        return [t.isoformat() for t in times]

    assert actions_of_visit(dt.date(2026, 1, 1)) == ["2026-01-01T23:59:50", "2026-01-02T00:00:20"]
    assert actions_of_visit(dt.date(2026, 1, 2)) == []


def test_missing_table_fails_naming_database_and_table_and_replaces_nothing(
    source_data, matomo_url, tmp_path
):
    engine = create_engine(matomo_url)
    load_lake_into_matomo(engine, "matomo_", source_data.lake)
    exported = exported_copy(source_data, tmp_path)
    assert run(exported, ingest_assets, matomo_url, partition_key=DAYS[0]).success
    root = Path(exported.settings.lake_url)
    before = lake_files(root)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE matomo_log_action"))
    result = run(exported, ingest_assets, matomo_url, partition_key=DAYS[0], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.cause.message
    database = matomo_url.rsplit("/", 1)[1]
    assert f"{database}: table matomo_log_action does not exist" in message
    assert lake_files(root) == before


def test_unreachable_matomo_fails_naming_the_database(tmp_path):
    engine = create_engine("mysql+pymysql://matomo:matomo@127.0.0.1:9/matomo")
    with pytest.raises(MatomoExportError, match=r"127\.0\.0\.1:9/matomo is unreachable"):
        export_site_day(MatomoTables(engine), LocalLake(tmp_path), 1, dt.date(2026, 1, 1))
    assert not any(tmp_path.iterdir())


def test_no_matomo_configured_says_which_variable(source_data, tmp_path):
    exported = exported_copy(source_data, tmp_path)
    result = run(exported, ingest_assets, partition_key=DAYS[0], raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "set USAGE_STATS_MATOMO_URL" in failure.step_failure_data.error.cause.message
