"""Metric definitions on hand-made sessions."""

import datetime as dt

import polars as pl

from support import DAY, at, events, registry
from usage_stats.pipeline.cleaning import clean_events
from usage_stats.pipeline.metrics import METRICS, SESSION_COLUMNS, daily_deltas, duplicate_keys
from usage_stats.pipeline.snapshots import next_snapshot, snapshot_mismatches

ITEM = "oai:www.kerwa.ucr.ac.cr:10669/578"


def deltas_of(*rows: dict) -> pl.DataFrame:
    return daily_deltas(clean_events(events(*rows), registry()).sessions)


def item_row(deltas: pl.DataFrame, key: str = ITEM, site: int = 1) -> dict:
    rows = deltas.filter(
        (pl.col("scope") == "item") & (pl.col("key") == key) & (pl.col("site_id") == site)
    )
    assert rows.height == 1
    return {m: rows.get_column(m)[0] for m in METRICS}


VIEW = {"action": "view", "action_type": 1}
DOWNLOAD = {"action": "download", "action_type": 3, "url": "https://x.org/bitstream/1/a.pdf"}
OUTLINK = {"action": "outlink", "action_type": 2, "url": "https://doi.org/10.1/x"}


def test_landing_view_and_download_in_one_session():
    deltas = deltas_of({**VIEW, "event_time": at(0)}, {**DOWNLOAD, "event_time": at(60)})
    assert item_row(deltas) == {
        "views": 1,
        "downloads": 1,
        "outlinks": 0,
        "conversions": 1,
        "total_item_investigations": 2,
        "unique_item_investigations": 1,
        "total_item_requests": 1,
        "unique_item_requests": 1,
    }


def test_la_referencia_metrics_count_visits_not_actions():
    deltas = deltas_of(
        {**VIEW, "event_time": at(0)},
        {**VIEW, "event_time": at(100)},  # second view, same visit, outside double-click
        {**DOWNLOAD, "event_time": at(200)},
        {**DOWNLOAD, "event_time": at(400)},
    )
    row = item_row(deltas)
    assert (row["views"], row["downloads"], row["conversions"]) == (1, 1, 1)
    assert (row["total_item_investigations"], row["total_item_requests"]) == (4, 2)
    assert (row["unique_item_investigations"], row["unique_item_requests"]) == (1, 1)


def test_conversions_need_view_and_download_or_outlink_of_the_same_item():
    deltas = deltas_of(
        {**VIEW, "visit_id": 1},  # view only: no conversion
        {**DOWNLOAD, "visit_id": 2},  # download only: no conversion
        {**VIEW, "visit_id": 3},
        {**OUTLINK, "visit_id": 3, "event_time": at(50)},  # view + outlink: conversion
        {**VIEW, "visit_id": 4},
        {
            **DOWNLOAD,
            "visit_id": 4,
            "event_time": at(50),
            "raw_identifier": "oai:www.kerwa.ucr.ac.cr:10669/9",
        },  # view of one item and download of another: no conversion for either
    )
    row = item_row(deltas)
    assert (row["views"], row["downloads"], row["outlinks"], row["conversions"]) == (3, 1, 1, 1)
    # Outlinks are neither investigations nor requests in COUNTER.
    assert row["total_item_investigations"] == 4
    assert row["total_item_requests"] == 1


def test_rollups_add_items_up_per_country_and_level():
    deltas = deltas_of(
        {**VIEW, "visit_id": 1, "visitor_country": "CR"},
        {
            **VIEW,
            "visit_id": 2,
            "visitor_country": "AR",
            "raw_identifier": "oai:repo2.example.org:7",
        },
        {**VIEW, "visit_id": 3, "visitor_country": None, "site_id": 4},  # national node
        {**VIEW, "visit_id": 4, "site_id": 5, "raw_identifier": None},  # portal, no id
        {
            **DOWNLOAD,
            "visit_id": 5,
            "site_id": 5,
            "visitor_country": "CR",
            "raw_identifier": "oai:www.kerwa.ucr.ac.cr:10669/578",
        },
    )
    assert duplicate_keys(deltas) == 0

    def rows(scope: str) -> set[tuple]:
        return {
            (r["key"], r["site_id"], r["level"], r["country"], r["views"], r["downloads"])
            for r in deltas.filter(pl.col("scope") == scope).iter_rows(named=True)
        }

    assert rows("source") == {
        ("1", 1, "R", "CR", 1, 0),
        ("1", 4, "N", "ZZ", 1, 0),
        ("1", 5, "L", "CR", 0, 1),
        ("2", 1, "R", "AR", 1, 0),  # item of repository 2, used on site 1
    }
    assert rows("site") == {
        ("1", 1, "R", "CR", 1, 0),
        ("1", 1, "R", "AR", 1, 0),
        ("4", 4, "N", "ZZ", 1, 0),
        ("5", 5, "L", "CR", 0, 1),
    }
    assert rows("global") == {
        ("global", None, "R", "CR", 1, 0),
        ("global", None, "R", "AR", 1, 0),
        ("global", None, "N", "ZZ", 1, 0),
        ("global", None, "L", "CR", 0, 1),
    }


def test_deltas_need_only_the_session_columns_they_name():
    """The deltas stage decodes `SESSION_COLUMNS` of the stored sessions and no more: the
    deltas of those columns alone are the deltas of the whole rows (a column the metrics
    start to read must be added there, or this fails)."""
    sessions = clean_events(
        events(
            {**VIEW, "visit_id": 1, "visitor_country": "CR"},
            {**DOWNLOAD, "visit_id": 1, "event_time": at(60), "visitor_country": "CR"},
            {**VIEW, "visit_id": 2, "site_id": 4, "raw_identifier": "oai:repo2.example.org:7"},
            {**OUTLINK, "visit_id": 3, "site_id": 5, "event_time": at(90)},
        ),
        registry(),
    ).sessions
    assert set(SESSION_COLUMNS) < set(sessions.columns)
    whole = daily_deltas(sessions)
    assert whole.height > 4
    assert daily_deltas(sessions.select(SESSION_COLUMNS)).equals(whole)


def test_snapshot_is_previous_plus_delta():
    day1 = deltas_of({**VIEW, "visit_id": 1})
    day2 = deltas_of({**VIEW, "visit_id": 2}, {**DOWNLOAD, "visit_id": 2}).with_columns(
        pl.lit(DAY + dt.timedelta(days=1)).alias("date")
    )
    s1 = next_snapshot(None, day1, DAY)
    s2 = next_snapshot(s1, day2, DAY + dt.timedelta(days=1))
    assert item_row(s2)["views"] == 2
    assert item_row(s2)["downloads"] == 1
    assert snapshot_mismatches(s2, s1, day2) == 0
    # A day without usage carries the totals over unchanged.
    s3 = next_snapshot(s2, day2.clear(), DAY + dt.timedelta(days=2))
    assert s3.drop("date").equals(s2.drop("date"))


def test_snapshot_check_detects_a_wrong_total():
    day1 = deltas_of({**VIEW})
    s1 = next_snapshot(None, day1, DAY)
    broken = s1.with_columns(pl.col("views") + 1)
    assert snapshot_mismatches(broken, None, day1) == s1.height
