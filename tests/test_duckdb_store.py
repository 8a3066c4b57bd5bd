"""The DuckDB stats store: atomic day replacement and the query interface."""

import datetime as dt
import subprocess
import sys
import time

import polars as pl
import pytest

from support import DAY, at, events, registry
from usage_stats.pipeline.cleaning import clean_events
from usage_stats.pipeline.metrics import daily_deltas
from usage_stats.pipeline.snapshots import next_snapshot
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.store import StatsStoreError

DAY2 = DAY + dt.timedelta(days=1)


def day_frames(day: dt.date, n_visits: int):
    rows = [{"visit_id": v, "event_time": at(v)} for v in range(n_visits)]
    deltas = daily_deltas(clean_events(events(*rows), registry()).sessions).with_columns(
        pl.lit(day).alias("date")
    )
    return deltas, next_snapshot(None, deltas, day)


@pytest.fixture
def store(tmp_path) -> DuckDBStatsStore:
    return DuckDBStatsStore(tmp_path / "stats.duckdb")


def test_replace_day_writes_and_replaces_only_that_day(store):
    d1, s1 = day_frames(DAY, 2)
    d2, s2 = day_frames(DAY2, 3)
    assert store.replace_day(DAY, d1, s1).delta_rows == d1.height
    store.replace_day(DAY2, d2, s2)
    store.replace_day(DAY, d1, s1)  # again: no duplicates
    assert store.row_count("usage_deltas", DAY) == d1.height
    assert store.row_count("usage_deltas", DAY2) == d2.height
    assert store.days() == [DAY, DAY2]
    item = "oai:www.kerwa.ucr.ac.cr:10669/578"
    assert store.totals("item", item, DAY, DAY2).get_column("views").to_list() == [5]
    assert store.totals("item", item, DAY2, DAY2).get_column("views").to_list() == [3]
    by_day = store.totals("item", item, DAY, DAY2, by=("date",))
    assert by_day.select("date", "views").rows() == [(DAY, 2), (DAY2, 3)]
    assert store.snapshot("item", item, DAY2).get_column("views").to_list() == [3]
    assert store.top("item", DAY, DAY2, "views", 1).rows() == [(item, 5)]


def test_rows_of_another_day_are_refused_and_nothing_changes(store):
    d1, s1 = day_frames(DAY, 2)
    store.replace_day(DAY, d1, s1)
    wrong = d1.with_columns(pl.lit(DAY2).alias("date"))
    with pytest.raises(StatsStoreError, match="hold .* row\\(s\\) of other days"):
        store.replace_day(DAY, wrong, s1)
    assert store.row_count("usage_deltas", DAY) == d1.height


def test_failed_write_rolls_back(store, monkeypatch):
    d1, s1 = day_frames(DAY, 2)
    store.replace_day(DAY, d1, s1)
    # Fail while inserting the snapshot, after the day's deltas were already replaced.
    real_to_arrow = pl.DataFrame.to_arrow
    calls = []

    def failing_to_arrow(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_to_arrow(self, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "to_arrow", failing_to_arrow)
    with pytest.raises(OSError, match="disk full"):
        store.replace_day(DAY, d1.head(1), s1.head(1))
    monkeypatch.undo()
    assert store.row_count("usage_deltas", DAY) == d1.height
    assert store.row_count("usage_snapshots", DAY) == s1.height


def test_query_parameters_are_never_sql(store):
    d1, s1 = day_frames(DAY, 1)
    store.replace_day(DAY, d1, s1)
    evil = "x' OR '1'='1"
    assert store.totals("item", evil, DAY, DAY).get_column("views").to_list() == [0]
    with pytest.raises(ValueError):
        store.totals("item", "x", DAY, DAY, by=("views; DROP TABLE usage_deltas",))
    with pytest.raises(ValueError):
        store.top("item", DAY, DAY, "views desc; --", 3)


def test_a_file_locked_by_another_process_is_waited_for(store):
    d1, s1 = day_frames(DAY, 1)
    store.replace_day(DAY, d1, s1)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(1.5); c.close()",
            str(store.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        store.replace_day(DAY, d1, s1)
        assert time.monotonic() - started > 0.5  # it really had to wait for the other writer
    finally:
        holder.wait(timeout=30)
    assert store.row_count("usage_deltas", DAY) == d1.height


def test_lock_held_too_long_fails_with_a_clear_message(tmp_path):
    path = tmp_path / "stats.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(5); c.close()",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StatsStoreError, match=f"DuckDB stats store {path}: .*lock"):
            DuckDBStatsStore(path, lock_timeout_seconds=0.5).days()
    finally:
        holder.kill()
        holder.wait()


def test_store_compaction_job_compacts_closed_months_and_reports(tmp_path):
    """The Dagster op job runs `compact` on the configured store and reports what it did; the
    answers are the same before and after, and a second run moves nothing."""
    from pathlib import Path

    from assets.store_compaction import store_compaction_job
    from resources import StatsStoreResource

    class SmallRuns(StatsStoreResource):
        path: str

        def get_store(self) -> DuckDBStatsStore:
            return DuckDBStatsStore(Path(self.path), run_rows=2)

    path = tmp_path / "stats.duckdb"
    store = DuckDBStatsStore(path, run_rows=2)
    days = [dt.date(2026, 1, 29), dt.date(2026, 1, 30), dt.date(2026, 1, 31), dt.date(2026, 2, 1)]
    for n, day in enumerate(days, start=2):
        deltas, snapshot = day_frames(day, n)
        store.replace_day(day, deltas, snapshot)
        store.optimize()

    def answers():
        return (
            store.totals("global", "global", days[0], days[-1], by=("date", "level")).rows(),
            store.top("item", days[0], days[-1], "views", 10).rows(),
            store.sums("item", days[0], days[-1], by=("key", "date", "country")).rows(),
            store.snapshot("global", "global", days[-1]).rows(),
        )

    before = answers()
    resources = {"stats_store": SmallRuns(path=str(path))}
    result = store_compaction_job.execute_in_process(resources=resources)
    assert result.success
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = {k: v.value for k, v in output.event_specific_data.metadata.items()}
    assert metadata["period"] == "month" and metadata["before"] == "2026-02-01"
    assert metadata["rows_moved"] > 0 and metadata["periods_rewritten"] > 0
    assert metadata["runs_after"] < metadata["runs_before"]
    assert answers() == before
    again = store_compaction_job.execute_in_process(
        resources=resources, run_config={"ops": {"compact_stats_store": {"config": {}}}}
    )
    (output,) = [e for e in again.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert output.event_specific_data.metadata["rows_moved"].value == 0
    assert answers() == before
