"""A generated day drawn in batches (`SyntheticConfig.batch_events`): how `run_bench.py` writes
a day too large to draw whole (100M events), and what the pipeline must read as one day."""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl
import pytest
from test_pipeline import DAYS, assert_day_matches_manifest, run

from conftest import generate
from usage_stats.demo.synthetic import SyntheticConfig, day_batches
from usage_stats.storage.lake import day_leaf, raw_files_for_day, read_parquet_file

DAY = dt.date(2026, 1, 1)


def test_a_day_is_cut_into_batches_that_add_up_to_it_each_with_its_own_seed():
    config = SyntheticConfig(events_per_day=10_001, batch_events=2_500, seed=7)
    batches = day_batches(config)
    assert [b.events_per_day for b in batches] == [2_001, 2_000, 2_000, 2_000, 2_000]
    assert len({b.seed for b in batches}) == 5 and batches[0].seed == 7
    # drawn whole (no batch size, or one at least the day): the config itself, so a day's
    # events are what they were before batches existed
    for whole in (None, 10_001):
        drawn_whole = dataclasses.replace(config, batch_events=whole)
        assert day_batches(drawn_whole) == [drawn_whole]
    with pytest.raises(ValueError, match="batch_events must be at least 1, got 0"):
        day_batches(dataclasses.replace(config, batch_events=0))


def test_a_day_drawn_in_batches_is_read_and_counted_as_one_day(tmp_path):
    config = SyntheticConfig(start=DAY, days=1, events_per_day=6_000, batch_events=2_000)
    data = generate(tmp_path / "data", config)
    lake = data.lake
    # each batch is one more file of a site's leaf (site 2 writes a month-level leaf)
    parts = [f.key for f in raw_files_for_day(lake, "events", DAY, [1])]
    assert parts == [f"{day_leaf('events', 1, DAY)}/part-{b}.parquet" for b in range(3)]
    # ... with visits numbered on, as one Matomo counter numbers them all day
    visits = pl.concat(
        read_parquet_file(lake, f.key, ["idvisit"])
        for f in raw_files_for_day(lake, "visits", DAY)
        if not f.month_level
    )
    assert visits.get_column("idvisit").is_unique().all()
    # every event is read, kept or rejected as the manifest of all batches says
    assert data.manifest["days"][DAYS[0]]["input_events"] == sum(
        read_parquet_file(lake, f.key).height for f in raw_files_for_day(lake, "events", DAY)
    )
    assert run(data, partition=DAYS[0]).success
    assert_day_matches_manifest(data, DAYS[0])
