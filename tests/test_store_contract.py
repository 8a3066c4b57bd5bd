"""One contract, two stats stores: the same queries give the same, exact numbers."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import polars as pl
import pytest

from conftest import DAYS, generate
from stores import opensearch_store
from support import day_tables
from usage_stats.pipeline.metrics import METRICS
from usage_stats.storage.duckdb_store import DuckDBStatsStore

DATES = [dt.date.fromisoformat(d) for d in DAYS]


@pytest.fixture(scope="module", params=["duckdb", "opensearch"])
def store(request, tmp_path_factory):
    if request.param == "duckdb":
        yield DuckDBStatsStore(tmp_path_factory.mktemp("duckdb") / "stats.duckdb")
        return
    store = opensearch_store(batch_size=500)
    yield store
    store.delete_all()


@pytest.fixture(scope="module")
def loaded(store, tmp_path_factory):
    """Loaded once per store; tests that change a day restore it before they end."""
    generated = generate(tmp_path_factory.mktemp("data"))
    tables = day_tables(generated)
    for day, deltas, snapshot in tables:
        write = store.replace_day(day, deltas, snapshot)
        assert (write.delta_rows, write.snapshot_rows) == (deltas.height, snapshot.height)
    return store, generated, tables


def manifest_sums(manifest: dict, keep=lambda item: True, by=lambda item: ()) -> dict:
    sums: dict = defaultdict(lambda: [0] * len(METRICS))
    for item in manifest["items"]:
        if keep(item):
            acc = sums[by(item)]
            for i, metric in enumerate(METRICS):
                acc[i] += item[metric]
    return {k: tuple(v) for k, v in sums.items()}


def rows(frame: pl.DataFrame, by: tuple[str, ...]) -> dict:
    return {
        tuple(r[c] for c in by): tuple(r[m] for m in METRICS) for r in frame.iter_rows(named=True)
    }


def test_days_and_row_counts(loaded):
    store, _, tables = loaded
    assert store.days() == DATES
    for day, deltas, snapshot in tables:
        assert store.row_count("usage_deltas", day) == deltas.height
        assert store.row_count("usage_snapshots", day) == snapshot.height


def test_item_totals_over_a_range_and_by_day(loaded):
    store, data, _ = loaded
    item = "oai:repo1.example.org:1001/0"
    expected = manifest_sums(data.manifest, keep=lambda i: i["item_id"] == item)
    totals = store.totals("item", item, DATES[0], DATES[-1])
    assert rows(totals, ()) == expected
    by_day = store.totals("item", item, DATES[0], DATES[-1], by=("date",))
    assert rows(by_day, ("date",)) == {
        (dt.date.fromisoformat(k[0]),): v
        for k, v in manifest_sums(
            data.manifest, keep=lambda i: i["item_id"] == item, by=lambda i: (i["date"],)
        ).items()
    }
    only_day2 = store.totals("item", item, DATES[1], DATES[1])
    assert rows(only_day2, ()) == manifest_sums(
        data.manifest, keep=lambda i: i["item_id"] == item and i["date"] == DAYS[1]
    )


def test_global_by_country_and_source_by_level(loaded):
    store, data, _ = loaded
    by_country = store.totals("global", "global", DATES[0], DATES[-1], by=("country",))
    assert rows(by_country, ("country",)) == manifest_sums(
        data.manifest, by=lambda i: (i["country"],)
    )
    levels = {s["site_id"]: s["type"] for s in data.manifest["sources"]}
    by_level = store.totals("source", "1", DATES[0], DATES[-1], by=("level",))
    assert rows(by_level, ("level",)) == manifest_sums(
        data.manifest,
        keep=lambda i: i["item_id"].startswith("oai:repo1.example.org:"),
        by=lambda i: (levels[i["site_id"]],),
    )


def test_snapshot_is_cumulative(loaded):
    store, data, _ = loaded
    item = "oai:repo2.example.org:1002/0"
    snapshot = store.snapshot("item", item, DATES[-1])
    per_site_country = rows(snapshot, ("site_id", "country"))
    assert per_site_country == manifest_sums(
        data.manifest,
        keep=lambda i: i["item_id"] == item,
        by=lambda i: (i["site_id"], i["country"]),
    )


def test_top_items(loaded):
    store, data, _ = loaded
    views = manifest_sums(data.manifest, by=lambda i: (i["item_id"],))
    expected = sorted(((k[0], v[0]) for k, v in views.items()), key=lambda kv: (-kv[1], kv[0]))
    assert store.top("item", DATES[0], DATES[-1], "views", 5).rows() == expected[:5]


def test_reindexing_a_day_leaves_no_stale_rows(loaded):
    store, _, tables = loaded
    day, deltas, snapshot = tables[1]
    smaller = deltas.filter(pl.col("scope") != "item")
    store.replace_day(day, smaller, snapshot)
    assert store.row_count("usage_deltas", day) == smaller.height
    assert store.row_count("usage_deltas", tables[0][0]) == tables[0][1].height
    store.replace_day(day, deltas, snapshot)
    assert store.row_count("usage_deltas", day) == deltas.height


def test_user_text_never_becomes_query_syntax(loaded):
    store, _, _ = loaded
    for evil in ["x' OR '1'='1", "*", "key:* OR scope:item", '{"match_all": {}}', "oai:*"]:
        totals = store.totals("item", evil, DATES[0], DATES[-1])
        assert rows(totals, ()) == {(): (0,) * len(METRICS)}


def test_optimize_keeps_every_row_and_later_days_still_replace(loaded):
    """The DuckDB store rewrites its tables sorted (OpenSearch has nothing to do): the same
    rows before and after, twice in a row, and a day written after it replaces that day."""
    store, data, tables = loaded
    every = ("date", "site_id", "level", "country", "owner_site_id", "key")
    before = rows(store.sums("item", DATES[0], DATES[-1], by=every), every)
    assert store.optimize() >= 0
    assert store.optimize() >= 0
    assert rows(store.sums("item", DATES[0], DATES[-1], by=every), every) == before
    day, deltas, snapshot = tables[1]
    store.replace_day(day, deltas.head(3), snapshot.head(3))
    assert store.row_count("usage_deltas", day) == 3
    store.replace_day(day, deltas, snapshot)
    assert store.row_count("usage_deltas", day) == deltas.height
    assert rows(store.sums("item", DATES[0], DATES[-1], by=every), every) == before
    global_total = rows(store.totals("global", "global", DATES[0], DATES[-1]), ())
    assert global_total == manifest_sums(data.manifest)


def test_item_titles_latest_day_wins_and_old_days_do_not_bring_old_titles_back(store):
    """Titles are kept per item: a later day's title replaces, re-running the same day
    replaces, an earlier day's does not (on both stores)."""
    key, other = f"oai:titles.example.org:{id(store)}/1", f"oai:titles.example.org:{id(store)}/2"
    assert store.titles((key, other)) == {}

    def titles(*pairs: tuple[str, str]) -> pl.DataFrame:
        return pl.DataFrame(pairs, schema=["key", "title"], orient="row")

    assert store.record_titles(DATES[1], titles((key, "Second day"), (other, "Other"))) == 2
    assert store.titles((key, other, "oai:nowhere:1")) == {key: "Second day", other: "Other"}
    store.record_titles(DATES[0], titles((key, "First day")))  # an older day: refused
    assert store.titles((key,)) == {key: "Second day"}
    store.record_titles(DATES[1], titles((key, "Second day, corrected")))  # same day: replaces
    assert store.titles((key,)) == {key: "Second day, corrected"}
    store.record_titles(DATES[2], titles((key, "Third day")))
    assert store.titles((key, other)) == {key: "Third day", other: "Other"}
    assert store.record_titles(DATES[2], titles()) == 0
