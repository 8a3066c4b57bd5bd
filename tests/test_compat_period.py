"""The compatibility set's month from the warehouse (`lareferencia_index.period_item_rows`,
`warehouse_period_items`): the planted sums, whatever the piece size, and None when the
warehouse lacks a day the store holds. Its equality with the store's own read-back is checked
on a real node in `test_opensearch.py`."""

from __future__ import annotations

import datetime as dt

import polars as pl

from usage_stats.pipeline.metrics import DELTA_SCHEMA, METRICS
from usage_stats.storage import lareferencia_index as compat
from usage_stats.storage.lake import LocalLake
from usage_stats.storage.warehouse import Warehouse

JUNE = [dt.date(2026, 6, 1) + dt.timedelta(days=n) for n in range(3)]
MS = 86_400_000  # a day in epoch milliseconds


def deltas(day: dt.date, rows: list[tuple[str, str, int, int | None, str | None, int]]):
    """(scope, key, site, owner, visitor country, views) rows of `day`; two downloads a view."""
    records = [
        {
            "date": day,
            "scope": scope,
            "key": key,
            "site_id": site,
            "level": "R",
            "owner_site_id": owner,
            "country": country,
            **dict.fromkeys(METRICS, 0),
            "views": views,
            "downloads": 2 * views,
        }
        for scope, key, site, owner, country, views in rows
    ]
    return pl.DataFrame(records, schema=DELTA_SCHEMA, orient="row")


DAYS = [
    deltas(JUNE[0], [("item", "a", 1, 1, "CR", 5), ("item", "b", 1, None, None, 2),
                     ("source", "1", 1, 1, None, 7)]),
    deltas(JUNE[1], [("item", "a", 1, 1, "CR", 100)]),
    deltas(JUNE[2], [("item", "a", 1, 1, "CR", 3), ("item", "b", 1, None, None, 4),
                     ("item", "a", 2, 1, "MX", 1), ("global", "global", 0, None, None, 8)]),
]  # fmt: skip


def epoch_ms(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * MS


def test_days_are_summed_per_site_item_level_owner_and_country_with_their_last_day(
    monkeypatch,
):
    expected = {
        (1, "a", "R", 1, "CR"): (8, 16, epoch_ms(JUNE[2])),
        (1, "b", "R", None, None): (6, 12, epoch_ms(JUNE[2])),
        (2, "a", "R", 1, "MX"): (1, 2, epoch_ms(JUNE[2])),
    }
    summed = compat.period_item_rows([DAYS[0], DAYS[2]])
    assert dict(summed.schema) == compat.PERIOD_ITEM_SCHEMA
    assert {
        row[:5]: (row[5 + compat.LA_REFERENCIA_METRICS.index("views")],
                  row[5 + compat.LA_REFERENCIA_METRICS.index("downloads")], row[-1])
        for row in summed.rows()
    } == expected  # fmt: skip
    monkeypatch.setattr(compat, "_PERIOD_REDUCE_ROWS", 1)  # summed after every day
    assert sorted(compat.period_item_rows([DAYS[0], DAYS[2]]).rows(), key=repr) == sorted(
        summed.rows(), key=repr
    )
    assert compat.period_item_rows([]).is_empty()


def test_the_warehouse_gives_the_stored_days_of_the_period_but_the_one_written(tmp_path):
    warehouse = Warehouse(LocalLake(tmp_path))
    for frame in DAYS:
        warehouse.write("item_daily_deltas", frame.item(0, "date"), frame)
    period = (JUNE[0], dt.date(2026, 6, 30))
    # the store holds the 1st and 3rd (and a day of May, outside the period): the 2nd's
    # month is those two, whatever the warehouse holds of the 2nd itself
    stored = [dt.date(2026, 5, 31), JUNE[0], JUNE[2]]
    found = compat.warehouse_period_items(warehouse, period, stored, JUNE[1])
    assert found is not None
    expected = compat.period_item_rows([DAYS[0], DAYS[2]])
    assert sorted(found.rows(), key=repr) == sorted(expected.rows(), key=repr)
    # writing the 3rd again: its own stored day is left out
    only_first = compat.warehouse_period_items(warehouse, period, stored, JUNE[2])
    assert only_first is not None
    assert sorted(only_first.rows(), key=repr) == sorted(
        compat.period_item_rows([DAYS[0]]).rows(), key=repr
    )
    # a stored day the warehouse lacks: the store is left to read the month back
    missing = [*stored, dt.date(2026, 6, 20)]
    assert compat.warehouse_period_items(warehouse, period, missing, JUNE[1]) is None
