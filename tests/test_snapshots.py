"""`next_snapshot` adds the day's summed deltas to the previous snapshot's rows instead of
grouping everything again, and `snapshot_mismatches` groups only the rows that differ from
the previous snapshot: both against what they replace, on random days full of what a join
can get wrong (keys with nulls, a key repeated in the deltas, owners that change or are
unknown, null metrics)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from usage_stats.pipeline.metrics import KEY_COLUMNS, METRICS
from usage_stats.pipeline.snapshots import SNAPSHOT_SCHEMA, next_snapshot, snapshot_mismatches

KEYS = [k for k in KEY_COLUMNS if k != "date"]
D0 = dt.date(2026, 3, 1)


def reference_snapshot(
    previous: pl.DataFrame | None, delta: pl.DataFrame, day: dt.date
) -> pl.DataFrame:
    """The former `next_snapshot`: one group-by of previous and delta, the last known owner."""
    frames = [
        f.select(list(SNAPSHOT_SCHEMA)).cast(SNAPSHOT_SCHEMA)
        for f in (previous, delta)
        if f is not None
    ]
    return (
        pl.concat(frames)
        .group_by(KEYS)
        .agg(pl.col("owner_site_id").drop_nulls().last(), *[pl.col(m).sum() for m in METRICS])
        .with_columns(pl.lit(day, dtype=pl.Date).alias("date"))
        .select(list(SNAPSHOT_SCHEMA))
        .sort(list(KEY_COLUMNS), nulls_last=True)
    )


def random_deltas(rng: np.random.Generator, rows: int, day: dt.date) -> pl.DataFrame:
    """Rows over a small key space, so that days share keys and a day repeats some."""
    pick = lambda values: [values[i] for i in rng.integers(0, len(values), rows)]  # noqa: E731
    owners = pick([1, 2, 3, None, -5, 2_147_483_647, -2_147_483_648])
    return pl.DataFrame(
        {
            "date": [day] * rows,
            "scope": pick(["item", "source", "global"]),
            "key": pick(["oai:a:1", "oai:a:2", "oai:b:1", "10.1/x", None]),
            "site_id": pick([1, 2, None]),
            "level": pick(["repository", "national", None]),
            "owner_site_id": owners,
            "country": pick(["BR", "AR", "--", None]),
            **{m: rng.integers(0, 4, rows) for m in METRICS},
        },
        schema=SNAPSHOT_SCHEMA,
    )


@pytest.mark.parametrize("seed", range(6))
def test_next_snapshot_equals_the_group_by_over_a_random_history(seed: int) -> None:
    rng = np.random.default_rng(seed)
    previous = reference = None
    for offset in range(5):
        day = D0 + dt.timedelta(days=offset)
        delta = random_deltas(rng, int(rng.integers(0, 60)), day)
        before = previous.rows() if previous is not None else None
        snapshot = next_snapshot(previous, delta, day)
        reference = reference_snapshot(reference, delta, day)
        # the previous snapshot's columns are added to in copies, not in place
        assert previous is None or previous.rows() == before
        assert snapshot.schema == pl.Schema(SNAPSHOT_SCHEMA)
        assert snapshot.sort(list(KEY_COLUMNS), nulls_last=True).equals(reference)
        assert snapshot_mismatches(snapshot, previous, delta) == 0
        previous = snapshot


def test_a_first_snapshot_is_in_key_order_and_new_keys_follow_the_carried_ones() -> None:
    rng = np.random.default_rng(7)
    first = next_snapshot(None, random_deltas(rng, 40, D0), D0)
    assert first.equals(first.sort(list(KEY_COLUMNS), nulls_last=True))
    later = D0 + dt.timedelta(days=1)
    new_key = random_deltas(rng, 1, later).with_columns(pl.lit("oai:new:1").alias("key"))
    second = next_snapshot(first, new_key, later)
    assert second.head(first.height).select(KEYS).equals(first.select(KEYS))
    assert second.row(-1, named=True)["key"] == "oai:new:1"


def test_null_metrics_of_a_previous_snapshot_count_as_zero() -> None:
    rng = np.random.default_rng(3)
    previous = next_snapshot(None, random_deltas(rng, 20, D0), D0).with_columns(
        pl.lit(None, dtype=pl.Int64).alias("views")
    )
    snapshot = next_snapshot(previous, random_deltas(rng, 0, D0), D0 + dt.timedelta(days=1))
    assert snapshot.get_column("views").to_list() == [0] * previous.height


@pytest.mark.parametrize("seed", range(4))
def test_the_chain_check_finds_every_key_a_snapshot_gets_wrong(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    previous = next_snapshot(None, random_deltas(rng, 50, D0), D0)
    delta = random_deltas(rng, 30, D0 + dt.timedelta(days=1))
    snapshot = next_snapshot(previous, delta, D0 + dt.timedelta(days=1))
    wrong = rng.choice(snapshot.height, size=min(3, snapshot.height), replace=False)
    broken = snapshot.with_columns(
        pl.when(pl.int_range(pl.len()).is_in(wrong.tolist()))
        .then(pl.col("downloads") + 1)
        .otherwise(pl.col("downloads"))
        .alias("downloads")
    )
    assert snapshot_mismatches(broken, previous, delta) == len(wrong)
    # a key lost from the snapshot, and a key it has twice
    assert snapshot_mismatches(snapshot.slice(1), previous, delta) == 1
    assert snapshot_mismatches(pl.concat([snapshot, snapshot.head(1)]), previous, delta) == 1


def reference_mismatches(
    snapshot: pl.DataFrame, previous: pl.DataFrame | None, delta: pl.DataFrame
) -> int:
    """Keys whose snapshot totals are not previous + delta, by joining the three per key."""

    def totals(frame: pl.DataFrame | None) -> dict[tuple, tuple]:
        if frame is None:
            return {}
        sums = frame.group_by(KEYS).agg(pl.col(m).fill_null(0).sum() for m in METRICS)
        return {tuple(r[: len(KEYS)]): tuple(r[len(KEYS) :]) for r in sums.iter_rows()}

    s, p, d = totals(snapshot), totals(previous), totals(delta)
    zero = (0,) * len(METRICS)
    return sum(
        1
        for key in s.keys() | p.keys() | d.keys()
        if tuple(
            a - b - c
            for a, b, c in zip(s.get(key, zero), p.get(key, zero), d.get(key, zero), strict=True)
        )
        != zero
    )


@pytest.mark.parametrize("seed", range(8))
def test_the_chain_check_counts_as_a_join_of_the_totals_in_either_row_order(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    previous = next_snapshot(None, random_deltas(rng, 60, D0), D0)
    delta = random_deltas(rng, 40, D0 + dt.timedelta(days=1))
    snapshot = next_snapshot(previous, delta, D0 + dt.timedelta(days=1))
    noise = pl.Series(rng.integers(-1, 2, snapshot.height) * (rng.random(snapshot.height) < 0.2))
    broken = snapshot.with_columns(pl.col("views") + noise)
    shuffled = broken.sample(fraction=1.0, shuffle=True, seed=seed)
    expected = reference_mismatches(broken, previous, delta)
    assert snapshot_mismatches(broken, previous, delta) == expected  # previous rows first
    assert snapshot_mismatches(shuffled, previous, delta) == expected  # any order
    assert snapshot_mismatches(shuffled.sort(KEYS), previous, delta) == expected
