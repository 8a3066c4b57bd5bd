"""A day in pieces: how sites are grouped, and how the warehouse keeps a day's parts."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from usage_stats.pipeline.pieces import plan_pieces, site_weights
from usage_stats.storage.lake import LocalLake, RawFile
from usage_stats.storage.warehouse import Warehouse

DAY = dt.date(2026, 1, 1)


def test_sites_are_grouped_in_order_up_to_the_piece_size():
    weights = {1: 40, 2: 30, 3: 50, 4: 10, 5: 10, 6: 5}
    assert plan_pieces(weights, 80) == [(1, 2), (3, 4, 5, 6)]
    assert plan_pieces(weights, 0) == [(1,), (2,), (3,), (4,), (5,), (6,)]
    assert plan_pieces(weights, 10**9) == [(1, 2, 3, 4, 5, 6)]


def test_a_site_heavier_than_a_piece_is_a_piece_of_its_own_never_split():
    assert plan_pieces({1: 5, 2: 500, 3: 5}, 100) == [(1,), (2,), (3,)]
    assert plan_pieces({}, 100) == []
    with pytest.raises(ValueError, match="negative"):
        plan_pieces({1: 1}, -1)


def test_site_weights_add_up_a_sites_files():
    files = [RawFile("a", 2, False, 10), RawFile("b", 1, False, 3), RawFile("c", 2, True, 5)]
    assert site_weights(files) == {1: 3, 2: 15}


def frame(values: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"site_id": values}, schema={"site_id": pl.Int32})


def test_parts_are_read_in_order_and_a_shorter_write_leaves_no_stale_part(tmp_path):
    warehouse = Warehouse(LocalLake(tmp_path))
    with warehouse.day_parts("t", DAY) as parts:
        for n in range(12):  # part-10 and part-11 come after part-9
            parts.append(frame([n]))
    assert parts.count == 12 and parts.rows == 12
    assert warehouse.read("t", DAY).get_column("site_id").to_list() == list(range(12))
    assert warehouse.row_count("t", DAY) == 12
    assert parts.uri.endswith("t/date=2026-01-01")
    with warehouse.day_parts("t", DAY) as parts:
        parts.append(frame([7, 8]))
        parts.append(frame([]))  # nothing to write
        parts.append(frame([9]))
    assert [p.height for p in warehouse.parts("t", DAY)] == [2, 1]
    uri = warehouse.write("t", DAY, frame([1]))
    assert uri.endswith("t/date=2026-01-01/part-0.parquet")
    assert warehouse.read("t", DAY).height == 1 and warehouse.describe("t", DAY) == uri


def test_a_day_without_rows_is_one_empty_part_with_its_schema(tmp_path):
    warehouse = Warehouse(LocalLake(tmp_path))
    with warehouse.day_parts("t", DAY) as parts:
        parts.append(frame([]))
    assert warehouse.exists("t", DAY)
    assert warehouse.read("t", DAY).schema == frame([]).schema
    assert warehouse.row_count("t", DAY) == 0


def test_parts_read_ahead_are_the_parts_in_order(tmp_path):
    warehouse = Warehouse(LocalLake(tmp_path))
    with warehouse.day_parts("t", DAY) as parts:
        for n in range(5):
            parts.append(frame([n, n]))
    ahead = [p.get_column("site_id").to_list() for p in warehouse.parts("t", DAY, read_ahead=True)]
    assert ahead == [[n, n] for n in range(5)]
    # a reader that stops early leaves nothing behind
    first = next(iter(warehouse.parts("t", DAY, read_ahead=True)))
    assert first.get_column("site_id").to_list() == [0, 0]
    warehouse.write("t", DAY, frame([3]))
    assert [p.height for p in warehouse.parts("t", DAY, read_ahead=True)] == [1]


def test_raw_events_without_their_visits_say_what_is_missing(tmp_path):
    from usage_stats.pipeline.canonical import empty_events, empty_visits
    from usage_stats.pipeline.raw_parts import raw_day_parts, raw_parts
    from usage_stats.storage.lake import LakeReadError

    warehouse = Warehouse(LocalLake(tmp_path))
    with raw_day_parts(warehouse, DAY) as raw:
        raw.append(empty_events(), empty_visits())
    assert raw.events.count == raw.visits.count == 1
    assert [p.height for p in raw_parts(warehouse, DAY)] == [0]
    warehouse.lake.delete_prefix("raw_visits/date=2026-01-01")
    with pytest.raises(LakeReadError, match="no 'raw_visits' for 2026-01-01"):
        list(raw_parts(warehouse, DAY))
