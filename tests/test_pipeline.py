"""The Dagster pipeline on generated data: every planted number comes out exactly."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from pathlib import Path

import duckdb
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from assets import usage_assets
from conftest import DAYS, GeneratedData
from definitions import build_resources
from support import item_metrics, manifest_items
from usage_stats.pipeline.metrics import METRICS
from usage_stats.pipeline.robots import load_robot_list
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.lake import day_leaf
from usage_stats.storage.warehouse import Warehouse

RANGE_TAGS = {
    "dagster/asset_partition_range_start": DAYS[0],
    "dagster/asset_partition_range_end": DAYS[-1],
}


def run(
    data: GeneratedData,
    *,
    partition: str | None = None,
    tags=None,
    run_config=None,
    raise_on_error: bool = True,
    instance: DagsterInstance | None = None,
):
    return materialize(
        usage_assets,
        partition_key=partition,
        tags=tags,
        run_config=run_config,
        resources=build_resources(data.settings),
        instance=instance or DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def warehouse(data: GeneratedData) -> Warehouse:
    return data.warehouse()


def store(data: GeneratedData) -> DuckDBStatsStore:
    return DuckDBStatsStore(Path(data.settings.duckdb_path))


def store_table(data: GeneratedData, table: str) -> pl.DataFrame:
    with duckdb.connect(data.settings.duckdb_path, read_only=True) as con:
        frame = pl.from_arrow(con.sql(f"SELECT * FROM {table}").to_arrow_table())
    return frame.sort(frame.columns, nulls_last=True)


def assert_day_matches_manifest(data: GeneratedData, day: str) -> None:
    expected = data.manifest["days"][day]
    wh = warehouse(data)
    date = dt.date.fromisoformat(day)
    rejected = wh.read("rejected_events", date)
    by_reason = dict(rejected.group_by("reason").len().iter_rows())
    assert by_reason == {k: v for k, v in expected["rejected"].items() if v}
    assert wh.row_count("sessions", date) == expected["kept"]
    assert wh.row_count("raw_events", date) == expected["input_events"]
    # Robot visits by behaviour and by user agent.
    robot_visits = (
        rejected.filter(pl.col("reason").is_in(["robot_behaviour", "robot_user_agent"]))
        .group_by("reason")
        .agg(pl.col("visit_id").n_unique())
    )
    assert dict(robot_visits.iter_rows()) == expected["robot_visits"]
    # Every item metric, per site and visitor country, from the warehouse and from the store.
    want = manifest_items(data.manifest, [day])
    assert item_metrics(wh.read("item_daily_deltas", date)) == want
    stored = store_table(data, "usage_deltas").filter(pl.col("date") == date)
    assert item_metrics(stored) == want
    # Country subcounts of the global rollup equal the planted countries.
    per_country: dict[str, int] = {}
    for (_, _, _, country), metrics in want.items():
        per_country[country] = per_country.get(country, 0) + metrics[0]
    global_rows = stored.filter(pl.col("scope") == "global")
    views = dict(global_rows.group_by("country").agg(pl.col("views").sum()).iter_rows())
    assert views == per_country


def expected_snapshot_totals(manifest: dict, upto: str) -> dict[tuple, tuple]:
    totals: dict[tuple, list[int]] = {}
    for (day, site, item, country), metrics in manifest_items(manifest).items():
        if day <= upto:
            acc = totals.setdefault((site, item, country), [0] * len(METRICS))
            for i, value in enumerate(metrics):
                acc[i] += value
    return {k: tuple(v) for k, v in totals.items()}


def snapshot_items(frame: pl.DataFrame) -> dict[tuple, tuple]:
    return {
        (r["site_id"], r["key"], r["country"]): tuple(r[m] for m in METRICS)
        for r in frame.filter(pl.col("scope") == "item").iter_rows(named=True)
    }


def test_one_day(generated):
    instance = DagsterInstance.ephemeral()
    result = run(generated, partition=DAYS[0], instance=instance)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert sorted((c.check_name, c.passed) for c in checks) == [
        ("kept_plus_rejected_equals_input", True),
        ("no_duplicate_delta_keys", True),
        # the first day has no baseline: nothing is judged, so nothing is flagged
        ("no_usage_spikes", True),
        ("snapshot_equals_previous_plus_delta", True),
        ("store_rows_equal_delta_rows", True),
    ]
    assert_day_matches_manifest(generated, DAYS[0])
    assert store(generated).days() == [dt.date(2026, 1, 1)]
    # The run records which robots list decided, on the materialisation and on the run.
    robots = load_robot_list().version
    rejected = [
        m.materialization
        for m in result.get_asset_materialization_events()
        if m.materialization.asset_key.path == ["rejected_events"]
    ]
    assert rejected[0].metadata["robots_list"].value == robots
    assert instance.get_run_by_id(result.run_id).tags["usage_stats/robots_list"] == robots


def test_identifier_variants_are_one_item(generated):
    run(generated, partition=DAYS[0])
    variants = generated.manifest["identifier_variants"]
    keys = set(
        warehouse(generated)
        .read("item_daily_deltas", dt.date(2026, 1, 1))
        .filter(pl.col("scope") == "item")
        .get_column("key")
    )
    spelled_differently = [item for item in variants if item in keys]
    assert spelled_differently, "the generator plants several spellings of the same items"
    for item in spelled_differently:
        assert not (set(variants[item]) - {item}) & keys


def test_three_day_backfill_in_one_run(generated):
    result = run(generated, tags=RANGE_TAGS)
    assert result.success
    for day in DAYS:
        assert_day_matches_manifest(generated, day)
    wh = warehouse(generated)
    for day in DAYS:
        snapshot = wh.read("usage_snapshots", dt.date.fromisoformat(day))
        assert snapshot_items(snapshot) == expected_snapshot_totals(generated.manifest, day)
    assert [d.isoformat() for d in store(generated).days()] == DAYS


def test_each_day_of_a_range_run_carries_its_own_numbers(generated):
    """One run over three days: every partition's materialisation shows that day's rows,
    counts and warehouse path, as plain numbers, not the range's totals."""
    instance = DagsterInstance.ephemeral()
    result = run(generated, tags=RANGE_TAGS, instance=instance)
    assert result.success
    wh = warehouse(generated)
    seen: dict[tuple[str, str], dict] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        key = (materialization.asset_key.to_user_string(), materialization.partition)
        assert key not in seen, f"{key} materialised twice"
        seen[key] = {k: v.value for k, v in materialization.metadata.items()}
    tables = ["raw_events", "sessions", "rejected_events", "item_daily_deltas", "usage_snapshots"]
    for day in DAYS:
        date = dt.date.fromisoformat(day)
        expected = generated.manifest["days"][day]
        for table in [*tables, "item_titles"]:
            metadata = seen[(table, day)]
            assert metadata["dagster/row_count"] == wh.row_count(table, date), (table, day)
            assert isinstance(metadata["dagster/row_count"], int)
            assert metadata["dagster/uri"].endswith(f"{table}/date={day}/part-0.parquet")
        assert seen[("raw_events", day)]["dagster/row_count"] == expected["input_events"]
        assert seen[("sessions", day)]["dagster/row_count"] == expected["kept"]
        assert seen[("sessions", day)]["input_events"] == expected["input_events"]
        rejected = seen[("rejected_events", day)]
        for reason, count in expected["rejected"].items():
            assert rejected[f"rejected_{reason}"] == count, (day, reason)
        views = sum(i["views"] for i in generated.manifest["items"] if i["date"] == day)
        assert seen[("item_daily_deltas", day)]["views"] == views
        stats = seen[("stats_index", day)]
        assert stats["delta_rows"] == wh.row_count("item_daily_deltas", date)
    # the days differ, so a range total shown on every day would have been caught
    assert len({seen[("sessions", day)]["dagster/row_count"] for day in DAYS}) == len(DAYS)
    # and a long range says how far it is, stage by stage
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    for stage in ("raw_events", "cleaning", "item_daily_deltas", "stats_index"):
        for n, day in enumerate(DAYS, 1):
            assert any(f"{stage}: day {n} of {len(DAYS)}, {day}" in m for m in messages), stage
    assert any("s left)" in m for m in messages)


def test_days_one_by_one_equal_the_single_run_backfill(generated, tmp_path):
    from conftest import generate

    one_run = generate(tmp_path / "range", kind=generated.kind)
    run(one_run, tags=RANGE_TAGS)
    for day in DAYS:
        run(generated, partition=day)
    for table in ("usage_deltas", "usage_snapshots"):
        assert store_table(generated, table).equals(store_table(one_run, table))
    for day in DAYS:
        date = dt.date.fromisoformat(day)
        for name in ("sessions", "rejected_events", "item_daily_deltas", "usage_snapshots"):
            assert warehouse(generated).read(name, date).equals(warehouse(one_run).read(name, date))


def test_rematerialising_a_day_replaces_exactly_that_day(generated):
    run(generated, tags=RANGE_TAGS)
    before = {t: store_table(generated, t) for t in ("usage_deltas", "usage_snapshots")}
    run(generated, partition=DAYS[1])
    for table, frame in before.items():
        assert store_table(generated, table).equals(frame)


def in_pieces(data: GeneratedData) -> GeneratedData:
    """The same data, processed one site at a time (the smallest piece there is)."""
    return dataclasses.replace(data, settings=dataclasses.replace(data.settings, piece_mib=0))


PIECE_TABLES = ("raw_events", "page_titles", "sessions", "rejected_events", "item_titles")


def test_a_day_in_pieces_equals_the_day_whole(generated, tmp_path):
    """Forced to one site per piece, every table, store row, check and status is what the
    whole day gives; the parts are the pieces, and a restricted re-run keeps them whole."""
    from conftest import generate

    whole = generate(tmp_path / "whole", kind=generated.kind)
    assert run(whole, tags=RANGE_TAGS).success
    pieces = in_pieces(generated)
    instance = DagsterInstance.ephemeral()
    result = run(pieces, tags=RANGE_TAGS, instance=instance)
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    wh_whole, wh_pieces = warehouse(whole), warehouse(pieces)

    def same_day(table: str, date: dt.date) -> None:
        ours, theirs = wh_pieces.read(table, date), wh_whole.read(table, date)
        assert ours.schema == theirs.schema, table
        assert ours.sort(ours.columns, nulls_last=True).equals(
            theirs.sort(theirs.columns, nulls_last=True)
        ), (table, date)

    for day in DAYS:
        date = dt.date.fromisoformat(day)
        for table in (*PIECE_TABLES, "item_daily_deltas", "usage_snapshots"):
            same_day(table, date)
        sites = wh_pieces.read("raw_events", date).get_column("site_id").n_unique()
        parts = list(wh_pieces.parts("raw_events", date))
        assert len(parts) == sites > 1  # one part per site, and each site in one part
        assert all(part.get_column("site_id").n_unique() == 1 for part in parts)
        # (a piece with nothing kept writes no part)
        kept_parts = list(wh_pieces.parts("sessions", date))
        assert 1 < len(kept_parts) <= sites
        assert all(part.get_column("site_id").n_unique() == 1 for part in kept_parts)
        assert len(list(wh_whole.parts("raw_events", date))) == 1
    for table in ("usage_deltas", "usage_snapshots"):
        assert store_table(pieces, table).equals(store_table(whole, table))
    seen = {
        (e.materialization.asset_key.to_user_string(), e.materialization.partition): {
            k: v.value for k, v in e.materialization.metadata.items()
        }
        for e in result.get_asset_materialization_events()
    }
    for day in DAYS:
        expected = generated.manifest["days"][day]
        assert seen[("raw_events", day)]["dagster/row_count"] == expected["input_events"]
        assert seen[("sessions", day)]["dagster/row_count"] == expected["kept"]
        assert seen[("raw_events", day)]["parts"] > 1
        assert seen[("raw_events", day)]["dagster/uri"].endswith(f"raw_events/date={day}")

    # a re-run of one site, in pieces: the other sites' parts stay whole sites
    date = dt.date.fromisoformat(DAYS[0])
    config = {"ops": {"raw_events": {"config": {"sites": [1]}}}}
    assert run(pieces, partition=DAYS[0], run_config=config).success
    for table in (*PIECE_TABLES, "item_daily_deltas", "usage_snapshots"):
        same_day(table, date)
    assert all(p.get_column("site_id").n_unique() == 1 for p in wh_pieces.parts("raw_events", date))
    for table in ("usage_deltas", "usage_snapshots"):
        assert store_table(pieces, table).equals(store_table(whole, table))


def test_site_restricted_run_keeps_the_other_sites(generated):
    run(generated, partition=DAYS[0])
    before = store_table(generated, "usage_deltas")
    # Site 1's day leaf is re-exported with fewer rows; only site 1 is re-read.
    key = f"{day_leaf('events', 1, dt.date(2026, 1, 1))}/part-0.parquet"
    events = pl.read_parquet(io.BytesIO(generated.lake.read_bytes(key)))
    buffer = io.BytesIO()
    events.filter(pl.col("action_type") != 3).write_parquet(buffer)  # drop site 1's downloads
    generated.lake.write_bytes(key, buffer.getvalue())
    config = {"ops": {"raw_events": {"config": {"sites": [1]}}}}
    run(generated, partition=DAYS[0], run_config=config)
    after = store_table(generated, "usage_deltas")
    other_sites = (pl.col("scope") == "item") & (pl.col("site_id") != 1)
    assert after.filter(other_sites).equals(before.filter(other_sites))
    site1 = after.filter((pl.col("scope") == "item") & (pl.col("site_id") == 1))
    assert site1.get_column("downloads").sum() == 0
    assert site1.get_column("views").sum() > 0
    raw = warehouse(generated).read("raw_events", dt.date(2026, 1, 1))
    assert (
        raw.filter(pl.col("site_id") == 1).height
        == events.filter(pl.col("action_type") != 3).height
    )


def test_unreadable_file_fails_the_run_naming_it_and_writes_nothing(generated):
    run(generated, partition=DAYS[0])
    before = {t: store_table(generated, t) for t in ("usage_deltas", "usage_snapshots")}
    key = f"{day_leaf('events', 3, dt.date(2026, 1, 2))}/part-0.parquet"
    generated.lake.write_bytes(key, b"PAR1 truncated")
    bad = generated.lake.describe(key)
    result = run(generated, tags=RANGE_TAGS, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failures[0].step_failure_data.error.cause.message
    assert bad in message and "cannot read Parquet file" in message
    for table, frame in before.items():
        assert store_table(generated, table).equals(frame)


@pytest.mark.parametrize("site", [999])
def test_unknown_sites_are_rejected_not_dropped(generated, site):
    run(generated, partition=DAYS[0])
    rejected = warehouse(generated).read("rejected_events", dt.date(2026, 1, 1))
    unknown = rejected.filter(pl.col("reason") == "unknown_site")
    assert unknown.get_column("site_id").unique().to_list() == [site]
    assert unknown.height == generated.manifest["days"][DAYS[0]]["rejected"]["unknown_site"]


def test_item_titles_are_the_last_page_titles_seen_whatever_the_order_of_days(generated):
    """Planted: untitled items (no title, an empty title) and items renamed at noon; the
    store keeps each item's last title, so days run in reverse order change nothing."""
    for day in reversed(DAYS):
        run(generated, partition=day)
    expected = generated.manifest["titles"]
    stored = store_table(generated, "item_titles")
    assert dict(stored.select("key", "title").iter_rows()) == expected
    assert stored.get_column("date").max() == dt.date.fromisoformat(DAYS[-1])
    assert any(t.endswith("(revised)") for t in expected.values())
    viewed = {i["item_id"] for i in generated.manifest["items"] if i["views"]}
    assert viewed - set(expected), "the generator plants items without a title"
    assert store(generated).titles(tuple(sorted(expected))) == expected


def test_a_day_stored_in_the_old_raw_layout_is_cleaned_the_same(generated):
    """A day whose raw_events were written before raw_visits existed (every column on every
    event) is re-cleaned, and re-read for one site, with the same results."""
    from usage_stats.pipeline.canonical import CANONICAL_SCHEMA, VISIT_COLUMNS
    from usage_stats.pipeline.raw_parts import RAW_VISITS, raw_parts

    date = dt.date.fromisoformat(DAYS[0])
    assert run(generated, partition=DAYS[0]).success
    wh = warehouse(generated)
    # the layout written now: events without their visits' columns, the visits beside
    assert not set(VISIT_COLUMNS) & set(wh.read("raw_events", date).columns)
    visits = wh.read(RAW_VISITS, date)
    assert 0 < visits.height < wh.row_count("raw_events", date)
    assert visits.select("site_id", "visit_id").is_unique().all()
    tables = ("sessions", "rejected_events", "item_daily_deltas", "usage_snapshots")
    before = {t: wh.read(t, date) for t in tables}
    stored = {t: store_table(generated, t) for t in ("usage_deltas", "usage_snapshots")}
    canonical = pl.concat(list(raw_parts(wh, date)))
    assert canonical.schema == pl.Schema(CANONICAL_SCHEMA)
    assert canonical.height == generated.manifest["days"][DAYS[0]]["input_events"]

    def old_layout() -> None:
        wh.write("raw_events", date, canonical)
        wh.lake.delete_prefix(f"{RAW_VISITS}/date={DAYS[0]}")
        assert not wh.exists(RAW_VISITS, date)

    def ordered(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.sort(frame.columns, nulls_last=True)

    def same(in_order: bool = True) -> None:
        for table, frame in before.items():
            ours = wh.read(table, date)
            if not in_order:  # the re-read site's rows come after the kept ones
                ours, frame = ordered(ours), ordered(frame)
            assert ours.equals(frame), table
        for table, frame in stored.items():
            assert store_table(generated, table).equals(frame), table

    old_layout()
    downstream = [a for a in usage_assets if AssetKey("raw_events") not in a.keys]
    result = materialize(
        downstream,
        partition_key=DAYS[0],
        resources=build_resources(generated.settings),
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    same()
    # a restricted re-run keeps the other sites' rows of the old layout, in the new one
    old_layout()
    assert run(generated, partition=DAYS[0], run_config=RESTRICTED).success
    assert wh.exists(RAW_VISITS, date)
    assert ordered(pl.concat(list(raw_parts(wh, date)))).equals(ordered(canonical))
    same(in_order=False)


RESTRICTED = {"ops": {"raw_events": {"config": {"sites": [1]}}}}
