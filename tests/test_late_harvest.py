"""Late harvests: a harvest whose changes fall on days record_stats already stored makes the
late-harvest sensor ask for exactly those days and every later one, in one run; after it,
nothing; the schedules of the harvest, record and subcount jobs exist (stopped)."""

from __future__ import annotations

import datetime as dt

import metadata_support as md
import polars as pl
import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    RunRequest,
    SkipReason,
    build_sensor_context,
)
from dagster import build_resources as initialized
from dagster_aws.s3 import S3Resource
from test_record_stats import SOURCES, rec

from assets.jobs import record_stats_job
from assets.records import record_deltas, record_snapshots
from resources import AdminDbResource, DuckDBStatsStoreResource, WarehouseResource
from sensors.late_data import evaluate_late_harvest
from usage_stats.admin import db
from usage_stats.admin.registry import add_source
from usage_stats.metadata.store import MetadataStore, apply_harvest
from usage_stats.pipeline.record_changes import change_days, first_stale_record_day
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.lake import LocalLake

D1, D2, D3, D4 = (dt.date(2026, 1, d) for d in (10, 11, 12, 13))
RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def at(hour: int) -> dt.datetime:
    return dt.datetime(2026, 3, 1, hour, tzinfo=dt.UTC)


# --- the rule, on planted change logs --------------------------------------------------------


def changes(*rows: tuple[str, str, dt.date | None, dt.datetime]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "source_key": "s",
                "oai_identifier": identifier,
                "item_key": identifier,
                "change": change,
                "datestamp": dt.datetime.combine(day, dt.time(12), dt.UTC) if day else None,
                "harvested_at": harvested,
            }
            for identifier, change, day, harvested in rows
        ],
        schema={
            "source_key": pl.String,
            "oai_identifier": pl.String,
            "item_key": pl.String,
            "change": pl.String,
            "datestamp": pl.Datetime("us", "UTC"),
            "harvested_at": pl.Datetime("us", "UTC"),
        },
    )


def current(*rows: tuple[str, dt.date | None]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"source_key": "s", "oai_identifier": i, "publication_date": p} for i, p in rows],
        schema={"source_key": pl.String, "oai_identifier": pl.String, "publication_date": pl.Date},
    )


def test_change_days_is_the_earliest_day_a_change_alters():
    log = changes(
        ("a", "added", D3, at(1)),  # plain: its datestamp's day
        ("b", "added", D2, at(1)),
        ("b", "updated", D4, at(2)),  # an update: from the day b was added (D2)
        ("c", "added", D4, at(2)),  # published on D1: the publication basis changes from D1
        ("d", "deleted", None, at(3)),  # no datestamp: its harvest's day
    )
    days = change_days(current(("a", None), ("b", None), ("c", D1), ("d", None)), log)
    assert days.rows() == [
        (at(1), D3),
        (at(1), D2),
        (at(2), D2),
        (at(2), D1),
        (at(3), at(3).date()),
    ]


def test_first_stale_record_day():
    runs = {D1: at(5), D2: at(5), D3: at(5)}  # D1..D3 stored by a run started at 05:00
    affected = pl.DataFrame(
        {"harvested_at": [at(1), at(6), at(6)], "day": [D1, D2, D4]},
        schema={"harvested_at": pl.Datetime("us", "UTC"), "day": pl.Date},
    )
    # Harvested at 01:00 (recorded 01:30: seen by the 05:00 run) and 06:00 (recorded 06:30).
    stale = first_stale_record_day(affected, [at(1) + dt.timedelta(minutes=30), at(6)], runs)
    assert (stale.first, stale.last, stale.trigger) == (D2, D3, at(6))
    # Not yet recorded as materialised (the harvest is still running): nothing yet.
    assert first_stale_record_day(affected, [at(1)], runs) is None
    # D2 and D3 re-run after it: nothing.
    assert first_stale_record_day(affected, [at(1), at(6)], {**runs, D2: at(7), D3: at(7)}) is None
    # Changes before the first stored day make it stale (its snapshot holds the history).
    early = affected.with_columns(pl.lit(dt.date(2025, 6, 1)).alias("day"))
    assert first_stale_record_day(early, [at(6)], runs).first == D1
    # Only after the last stored day: nothing stored is stale.
    late = affected.with_columns(pl.lit(D4).alias("day"))
    assert first_stale_record_day(late, [at(6)], runs) is None


# --- the sensor, on a Dagster instance -------------------------------------------------------


class Setup:
    """Planted harvests applied as item_metadata applies them (harvested now, each recorded
    as an item_metadata materialisation), and the record_stats job over stored days."""

    def __init__(self, tmp_path) -> None:
        url = f"sqlite:///{tmp_path / 'admin.db'}"
        db.upgrade(url)
        for s in SOURCES:
            add_source(url, s)
        self.metadata = MetadataStore(LocalLake(tmp_path / "warehouse"))
        self.warehouse = WarehouseResource(url=str(tmp_path / "warehouse"), s3=S3Resource())
        self.defs = Definitions(
            assets=[record_deltas, record_snapshots],
            jobs=[record_stats_job],
            resources={
                "warehouse": self.warehouse,
                "admin_db": AdminDbResource(url=url),
                "stats_store": DuckDBStatsStoreResource(path=str(tmp_path / "stats.duckdb")),
            },
        )
        self.instance = DagsterInstance.ephemeral()
        self.store = DuckDBStatsStore(tmp_path / "stats.duckdb")
        self.cursor: str | None = None

    def harvest(self, source: int, *records: dict) -> None:
        now = dt.datetime.now(dt.UTC)
        key = SOURCES[source - 1].source_key
        rows = [r | {"harvested_at": now} for r in records]
        applied = apply_harvest(self.metadata.read_current(key), md.frame(*rows), now)
        self.metadata.write(key, applied, now.isoformat().replace("+00:00", "Z"))
        self.instance.report_runless_asset_event(AssetMaterialization("item_metadata"))

    def run(self, first: dt.date, last: dt.date, tags: dict | None = None) -> None:
        job = self.defs.resolve_job_def("record_stats")
        range_tags = dict(zip(RANGE, (first.isoformat(), last.isoformat()), strict=True))
        result = job.execute_in_process(instance=self.instance, tags=tags or range_tags)
        assert result.success

    def tick(self) -> RunRequest | SkipReason:
        """One tick, with the cursor the last one left; its request, or why none."""
        context = build_sensor_context(instance=self.instance, cursor=self.cursor)
        with initialized({"warehouse": self.warehouse}) as resources:
            result = evaluate_late_harvest(context, resources.warehouse)
        if isinstance(result, SkipReason):
            return result
        self.cursor = result.cursor
        return result.run_requests[0] if result.run_requests else result.skip_reason


def test_a_late_harvest_requests_exactly_the_affected_days_and_every_later_one(tmp_path):
    s = Setup(tmp_path)
    assert isinstance(s.tick(), SkipReason)  # nothing stored yet
    s.harvest(1, rec(1, 1, D1, resource_type=md.ARTICLE), rec(1, 2, D3, resource_type=md.BOOK))
    s.run(D1, D3)
    assert isinstance(s.tick(), SkipReason)  # every stored day saw the harvest
    assert s.store.record_snapshot("global", "global", D3).rows() == [("R", "", 2, 0, 2)]

    # Repository 2, harvested late, reveals a record of D2 (and one of D4, not stored yet).
    s.harvest(2, rec(2, 1, D2, resource_type=md.THESIS), rec(2, 2, D4, resource_type=md.BOOK))
    request = s.tick()
    assert isinstance(request, RunRequest)
    assert (request.tags[RANGE[0]], request.tags[RANGE[1]]) == ("2026-01-11", "2026-01-12")
    assert request.tags["usage_stats/trigger"] == "late harvest"
    # The next tick, the run not made yet: nothing new since (its cursor); a tick that lost
    # its cursor asks for the same run, which Dagster de-duplicates by its key.
    assert isinstance(s.tick(), SkipReason)
    s.cursor = None
    assert s.tick().run_key == request.run_key

    s.run(D2, D3, dict(request.tags))
    assert isinstance(s.tick(), SkipReason)
    assert s.store.record_snapshot("global", "global", D3).rows() == [("R", "", 3, 0, 3)]
    assert s.store.record_totals("global", "global", D1, D3, by=("date",)).rows() == [
        (D1, 1, 0, 1),
        (D2, 1, 0, 1),
        (D3, 1, 0, 1),
    ]

    # A record of repository 1 is retyped: its figures change from the day it was added (D1).
    s.harvest(1, rec(1, 1, D1, resource_type=md.THESIS), rec(1, 2, D3, resource_type=md.BOOK))
    request = s.tick()
    assert (request.tags[RANGE[0]], request.tags[RANGE[1]]) == ("2026-01-10", "2026-01-12")
    s.run(D1, D3, dict(request.tags))
    assert isinstance(s.tick(), SkipReason)
    by_type = s.store.record_snapshot("global", "global", D3, field="resource_type")
    assert by_type.rows() == [("R", md.BOOK, 1, 0, 1), ("R", md.THESIS, 2, 0, 2)]


def test_schedules_and_sensor_are_defined_and_stopped():
    from definitions import defs
    from usage_stats.settings import Settings

    settings = Settings.from_env()
    expected = {
        "item_metadata_schedule": ("item_metadata_job", settings.harvest_hour),
        "record_stats_schedule": ("record_stats", settings.breakdowns_hour),
        "usage_subcounts_schedule": ("usage_subcounts", settings.breakdowns_hour),
    }
    for name, (job, hour) in expected.items():
        schedule = defs.resolve_schedule_def(name)
        assert schedule.job_name == job
        assert schedule.cron_schedule == f"0 {hour} * * *"
        assert schedule.execution_timezone == "UTC"
        assert schedule.default_status == DefaultScheduleStatus.STOPPED
    sensor = defs.resolve_sensor_def("late_harvest_sensor")
    assert sensor.job_name == "record_stats"
    assert sensor.default_status == DefaultSensorStatus.STOPPED


@pytest.mark.parametrize("name", ["USAGE_STATS_HARVEST_HOUR", "USAGE_STATS_BREAKDOWNS_HOUR"])
def test_the_hours_come_from_the_environment(name):
    from usage_stats.settings import Settings

    settings = Settings.from_env({name: "7"})
    field = "harvest_hour" if "HARVEST" in name else "breakdowns_hour"
    assert getattr(settings, field) == 7
