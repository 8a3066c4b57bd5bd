"""New files and late data: the sensors request exactly what needs redoing, and results equal
a from-scratch run."""

from __future__ import annotations

import datetime as dt
import io
import time
from dataclasses import replace

import polars as pl
import pytest
from dagster import DagsterInstance, Definitions, RunRequest, SkipReason, build_sensor_context
from dagster import build_resources as initialized

from assets import usage_assets
from assets.jobs import usage_pipeline_job
from conftest import DAYS, GeneratedData, generate
from definitions import build_resources
from resources import LakeResource
from sensors.late_data import evaluate_late_data, snapshot_refresh_job
from sensors.raw_files import evaluate_raw_files
from usage_stats.demo.synthetic import (
    SyntheticConfig,
    _event_columns,
    _visit_columns,
    build_sources,
    generate_day,
)
from usage_stats.storage.lake import day_leaf

FIVE_DAYS = [f"2026-01-0{d}" for d in range(1, 6)]
TODAY = dt.date(2026, 1, 6)


def definitions(data: GeneratedData) -> Definitions:
    return Definitions(
        assets=usage_assets,
        jobs=[usage_pipeline_job, snapshot_refresh_job],
        resources=build_resources(data.settings),
    )


def execute(defs: Definitions, instance: DagsterInstance, request: RunRequest) -> None:
    job = defs.resolve_job_def(request.job_name or "usage_pipeline")
    result = job.execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=dict(request.tags)
    )
    assert result.success


def raw_tick(data: GeneratedData, instance: DagsterInstance, cursor: str | None):
    context = build_sensor_context(instance=instance, cursor=cursor)
    # as Dagster hands it to the sensor: configured, its EnvVars resolved
    with initialized({"lake": build_resources(data.settings)["lake"]}) as resources:
        assert isinstance(resources.lake, LakeResource)
        return evaluate_raw_files(context, resources.lake, today=TODAY)


def add_late_file(data: GeneratedData, site: int, day: dt.date) -> int:
    """A second export file for a day already processed: new visits, more usage."""
    config = SyntheticConfig(days=1, start=day, seed=777, events_per_day=600)
    sources = build_sources(5)
    frame, visits, _ = generate_day(config, sources, 0, visit_base=5_000_000)
    source = next(s for s in sources if s.site_id == site)
    lake = data.lake
    events = frame.filter(pl.col("idsite") == site)
    for table, out in (
        ("events", _event_columns(events, source)),
        ("visits", _visit_columns(visits.filter(pl.col("idsite") == site), site % 3 == 0)),
    ):
        buffer = io.BytesIO()
        out.write_parquet(buffer)
        lake.write_bytes(f"{day_leaf(table, site, day)}/late-0.parquet", buffer.getvalue())
    return events.height


@pytest.fixture(params=["local", "s3"])
def five_days(request, tmp_path) -> GeneratedData:
    config = SyntheticConfig(start=dt.date(2026, 1, 1), days=5)
    return generate(tmp_path / "data", config, kind=request.param)


def touch(data: GeneratedData, key: str) -> None:
    """Rewrite a file with the same bytes: a new modification time, as a re-export would give.

    S3 keeps modification times to the second, so wait past the current one first."""
    time.sleep(1.1)
    data.lake.write_bytes(key, data.lake.read_bytes(key))


def test_new_files_then_late_file_then_snapshot_refresh(five_days, tmp_path):
    data = five_days
    defs = definitions(data)
    instance = DagsterInstance.ephemeral()

    # First tick: every day has new files.
    first = raw_tick(data, instance, None)
    assert [r.partition_key for r in first.run_requests] == FIVE_DAYS
    for request in first.run_requests:
        execute(defs, instance, request)
    cursor = first.cursor

    # The same tick again (cursor not advanced, e.g. a retried tick) asks for the same run keys,
    # which Dagster de-duplicates; with the advanced cursor nothing is requested.
    again = raw_tick(data, instance, None)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
    assert isinstance(raw_tick(data, instance, cursor), SkipReason)
    assert isinstance(evaluate_late_data(build_sensor_context(instance=instance)), SkipReason)

    # A late file for day 2 arrives.
    time.sleep(1.1)  # modification times must move past the cursor (S3: whole seconds)
    late_rows = add_late_file(data, site=1, day=dt.date(2026, 1, 2))
    assert late_rows > 0
    late = raw_tick(data, instance, cursor)
    assert [r.partition_key for r in late.run_requests] == ["2026-01-02"]
    execute(defs, instance, late.run_requests[0])

    # The late-data sensor rebuilds snapshots 3..5 (2 was rebuilt by the day's own run).
    refresh = evaluate_late_data(build_sensor_context(instance=instance))
    assert isinstance(refresh, RunRequest)
    assert refresh.tags["dagster/asset_partition_range_start"] == "2026-01-03"
    assert refresh.tags["dagster/asset_partition_range_end"] == "2026-01-05"
    execute(defs, instance, refresh._replace(job_name="snapshot_refresh"))
    assert isinstance(evaluate_late_data(build_sensor_context(instance=instance)), SkipReason)

    # From scratch on the same lake, in one run, with a fresh warehouse and store.
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    scratch_settings = replace(
        data.settings,
        warehouse_url=str(scratch_dir / "warehouse"),
        duckdb_path=str(scratch_dir / "stats.duckdb"),
    )
    scratch = replace(data, data_dir=scratch_dir, settings=scratch_settings, kind="local")
    result = (
        definitions(scratch)
        .resolve_job_def("usage_pipeline")
        .execute_in_process(
            instance=DagsterInstance.ephemeral(),
            tags={
                "dagster/asset_partition_range_start": FIVE_DAYS[0],
                "dagster/asset_partition_range_end": FIVE_DAYS[-1],
            },
        )
    )
    assert result.success
    ours, theirs = data.warehouse(), scratch.warehouse()
    for day in FIVE_DAYS[1:]:
        date = dt.date.fromisoformat(day)
        assert ours.read("usage_snapshots", date).equals(theirs.read("usage_snapshots", date))
    # The late rows really changed day 2 and everything after it.
    before = data.manifest["days"]["2026-01-02"]["input_events"]
    assert ours.row_count("raw_events", dt.date(2026, 1, 2)) == before + late_rows


def test_changed_file_is_requested_again(generated):
    instance = DagsterInstance.ephemeral()
    first = raw_tick(generated, instance, None)
    touch(generated, f"{day_leaf('events', 1, dt.date(2026, 1, 3))}/part-0.parquet")
    changed = raw_tick(generated, instance, first.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["2026-01-03"]
    assert changed.run_requests[0].run_key not in {r.run_key for r in first.run_requests}
    # The same tick again, with the cursor it returned: nothing new.
    assert isinstance(raw_tick(generated, instance, changed.cursor), SkipReason)


def test_month_level_file_affects_the_days_it_holds(generated):
    instance = DagsterInstance.ephemeral()
    first = raw_tick(generated, instance, None)
    touch(generated, "events/idsite=2/year=2026/month=1/part-0.parquet")
    changed = raw_tick(generated, instance, first.cursor)
    assert [r.partition_key for r in changed.run_requests] == DAYS


def test_work_per_tick_is_bounded_and_nothing_is_skipped(generated, monkeypatch):
    import sensors.raw_files as raw_files

    monkeypatch.setattr(
        raw_files, "_settings", replace(raw_files._settings, sensor_max_days_per_tick=2)
    )
    instance = DagsterInstance.ephemeral()
    cursor, ticks = None, []
    for _ in range(10):
        tick = raw_tick(generated, instance, cursor)
        if isinstance(tick, SkipReason):
            break
        ticks.append([r.partition_key for r in tick.run_requests])
        cursor = tick.cursor
    # At most two days a tick, except when one file alone (the month-level one) holds more.
    assert all(len(days) <= 2 or days == DAYS for days in ticks)
    assert len(ticks) >= 2
    assert sorted({d for days in ticks for d in days}) == DAYS


def test_days_of_files():
    from usage_stats.pipeline.raw_changes import days_of_file

    today = dt.date(2026, 2, 10)
    assert days_of_file("events/idsite=3/year=2026/month=2/day=9/a.parquet", today) == [
        dt.date(2026, 2, 9)
    ]
    assert days_of_file("events/idsite=3/year=2026/month=2/day=10/a.parquet", today) == []
    month = "events/idsite=3/year=2026/month=1/a.parquet"
    assert len(days_of_file(month, today)) == 31  # unknown content: the whole month
    held = [dt.date(2026, 1, 5), dt.date(2026, 1, 7)]
    assert days_of_file(month, today, lambda key: held) == held
    assert days_of_file("events/idsite=3/other/a.parquet", today) == []
