"""One contract, two stats stores: the same queries give the same, exact numbers."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import duckdb
import metadata_support as md
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from conftest import DAYS, generate
from stores import opensearch_store
from support import day_tables
from usage_stats.pipeline.crosswalk import crosswalk_table
from usage_stats.pipeline.metrics import DELTA_SCHEMA, METRICS
from usage_stats.pipeline.spikes import SPIKE_SCHEMA
from usage_stats.storage.duckdb_store import DuckDBStatsStore, _create_table_sql
from usage_stats.storage.store import (
    STORE_TABLES,
    STORED_METADATA_SCHEMA,
    RowFilter,
    StatsStoreError,
)

DATES = [dt.date.fromisoformat(d) for d in DAYS]
# A generated day is 750-800 delta rows and 750-1,300 snapshot rows: runs of this size merge
# two or three days, so the contract and the maintenance tests below go through merges.
SMALL_RUNS = 2_000


@pytest.fixture(scope="module", params=["duckdb", "duckdb-runs", "opensearch"])
def store(request, tmp_path_factory):
    if request.param.startswith("duckdb"):
        run_rows = SMALL_RUNS if request.param == "duckdb-runs" else 10**9
        yield DuckDBStatsStore(
            tmp_path_factory.mktemp("duckdb") / "stats.duckdb", run_rows=run_rows
        )
        return
    store = opensearch_store(batch_size=500)
    yield store
    store.delete_all()


@pytest.fixture(scope="module")
def contract_data(tmp_path_factory):
    """The generated days, once for every store of the module."""
    generated = generate(tmp_path_factory.mktemp("data"))
    return generated, day_tables(generated)


@pytest.fixture(scope="module")
def loaded(store, contract_data):
    """Loaded once per store, `optimize` after each day as stats_index does; tests that change
    a day restore it before they end."""
    generated, tables = contract_data
    for day, deltas, snapshot in tables:
        write = store.replace_day(day, deltas, snapshot)
        assert (write.delta_rows, write.snapshot_rows) == (deltas.height, snapshot.height)
        store.optimize()
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


def test_sums_of_some_metrics_are_those_of_all(loaded):
    """`metrics` narrows the sums to the columns asked (in `METRICS` order, whatever order
    they are asked in), equal to the same columns of the full sums: grouped, ungrouped, a
    few keys (DuckDB sums those rows itself), nothing matching, and `sums_where` with its
    `rows` too; an unknown metric or none is refused."""
    store, data, _ = loaded
    some = ("unique_item_requests", "views", "total_item_investigations")
    ordered = ["views", "total_item_investigations", "unique_item_requests"]
    item = "oai:repo1.example.org:1001/0"
    asks = [
        dict(owner_site_ids=(1,), by=("key", "month")),
        dict(owner_site_ids=(1, 2), by=("key", "date", "country")),
        dict(keys=(item,), by=("date", "level")),
        dict(keys=(item,)),
        dict(keys=("oai:nowhere:1",), by=("key", "month")),
        dict(by=("level",)),
    ]
    for ask in asks:
        full = store.sums("item", DATES[0], DATES[-1], **ask)
        part = store.sums("item", DATES[0], DATES[-1], metrics=some, **ask)
        groups = list(ask.get("by", ()))
        assert part.columns == [*groups, *ordered], ask
        assert_frame_equal(part, full.select(*groups, *ordered))
    where = (RowFilter(owner_site_ids=(1,)),)
    full = store.sums_where("item", DATES[0], DATES[-1], where, by=("month",))
    part = store.sums_where("item", DATES[0], DATES[-1], where, by=("month",), metrics=some)
    assert_frame_equal(part, full.select("month", *ordered, "rows"))
    assert part.get_column("rows").sum() > 0
    for bad in [("views", "likes"), ()]:
        with pytest.raises(ValueError, match="metric"):
            store.sums("item", DATES[0], DATES[-1], metrics=bad)


def test_sum_rows_are_the_rows_of_the_sums(loaded):
    """`sum_rows` (what a SUSHI item report walks) gives the values of `sums`, row for row in
    its order and column for column, whichever way the store fetches them: a repository's
    items by month or day (and country), a few keys, every row, nothing matching."""
    store, _, _ = loaded
    item = "oai:repo1.example.org:1001/0"
    counter = ("total_item_investigations", "unique_item_requests")
    asks = [
        dict(owner_site_ids=(1,), by=("key", "month")),
        dict(owner_site_ids=(1, 2), by=("key", "month", "country"), metrics=counter),
        dict(owner_site_ids=(2,), by=("key", "date"), metrics=counter),
        dict(keys=(item,), owner_site_ids=(1,), by=("key", "date", "country")),
        dict(site_ids=(1,), by=("key", "month")),
        dict(by=("level",)),
        dict(keys=(item,)),
        dict(owner_site_ids=(99,), by=("key", "month")),
    ]
    for ask in asks:
        frame = store.sums("item", DATES[0], DATES[-1], **ask)
        found = store.sum_rows("item", DATES[0], DATES[-1], **ask)
        assert found == frame.rows(), ask
        assert all(isinstance(row, tuple) for row in found)
    assert len(store.sum_rows("item", DATES[0], DATES[-1], owner_site_ids=(1,), by=("key",)))
    with pytest.raises(ValueError, match="group"):
        store.sum_rows("item", DATES[0], DATES[-1], by=("url",))
    with pytest.raises(ValueError, match="metric"):
        store.sum_rows("item", DATES[0], DATES[-1], by=("key",), metrics=("likes",))


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


def test_compaction_keeps_every_answer(loaded):
    """Periodic compaction of a closed period (the three days' week, closed by `before`)
    changes no answer on any store; a second call moves nothing (OpenSearch: nothing to do)."""
    store, data, tables = loaded
    every = ("date", "site_id", "level", "country", "owner_site_id", "key")
    before = [
        rows(store.sums(scope, DATES[0], DATES[-1], by=every), every)
        for scope in ("item", "source", "site", "global")
    ]
    top = store.top("item", DATES[0], DATES[-1], "views", 10)
    snapshot = store.snapshot("global", "global", DATES[-1])
    closed = DATES[-1] + dt.timedelta(days=7)
    first = store.compact(period="week", before=closed)
    again = store.compact(period="week", before=closed)
    assert (again.rewritten, again.rows_moved) == (0, 0)
    assert again.runs_before == again.runs_after == first.runs_after
    after = [
        rows(store.sums(scope, DATES[0], DATES[-1], by=every), every)
        for scope in ("item", "source", "site", "global")
    ]
    assert after == before
    assert_frame_equal(store.top("item", DATES[0], DATES[-1], "views", 10), top)
    assert_frame_equal(store.snapshot("global", "global", DATES[-1]), snapshot)
    for day, deltas, snapshot_rows in tables:
        assert store.row_count("usage_deltas", day) == deltas.height
        assert store.row_count("usage_snapshots", day) == snapshot_rows.height
    assert rows(store.totals("global", "global", DATES[0], DATES[-1]), ()) == manifest_sums(
        data.manifest
    )


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
    # one batch of new and known keys (the DuckDB store inserts the new ones first): each
    # known key keeps its rule, an older day's title refused, a later one taken
    new = f"oai:titles.example.org:{id(store)}/3"
    assert store.record_titles(DATES[1], titles((new, "New"), (key, "Old again"))) == 2
    assert store.titles((key, other, new)) == {key: "Third day", other: "Other", new: "New"}
    assert store.record_titles(DATES[2], titles((other, "Other, later"), (new, "New, later"))) == 2
    assert store.titles((other, new)) == {other: "Other, later", new: "New, later"}


def test_item_metadata_exact_rows_upsert_and_idempotent_re_record(store):
    """Harvested records come back exactly (lists, dates, the deleted flag); a later
    datestamp replaces, an older one does not, the same one replaces (a correction), and
    recording the same frame twice changes nothing (on both stores)."""
    base = f"oai:metadata.example.org:{id(store)}"
    article, thesis, gone = f"{base}/1", f"{base}/2", f"{base}/3"
    assert store.item_metadata((article,)).is_empty()
    assert store.item_metadata(()).schema == STORED_METADATA_SCHEMA
    records = [
        md.record(
            article,
            title="Artículo: “comillas” y ñ",
            creators=["Pérez, Ana", "Silva, João", "Smith, J."],
            publication_date=dt.date(2019, 5, 17),
            publication_year=2019,
            resource_type=md.ARTICLE,
            access_rights=md.EMBARGOED,
            embargo_end=dt.date(2026, 2, 2),
            publisher="Revista de Pruebas",
            doi="10.1234/abc.1",
            handle="hdl:10669/1",
            urls=["https://repo.example.org/handle/10669/1"],
            article_version="VoR",
        ),
        md.record(thesis, title="Tesis", resource_type=md.THESIS, access_rights=md.RESTRICTED),
        md.record(gone, title="Retirado", deleted=True, resource_type=md.BOOK),
    ]
    assert store.record_item_metadata(md.frame(*records)) == 3
    got = store.item_metadata((gone, "oai:nowhere:1", article, thesis, article))
    assert_frame_equal(got, md.stored(*records))
    assert store.record_item_metadata(md.frame(*records)) == 3  # idempotent
    assert_frame_equal(store.item_metadata((article, thesis, gone)), md.stored(*records))
    # some columns only, in the stored order: the same values (a date, a datestamp, a list)
    for columns in [("title",), ("embargo_end", "datestamp", "creators", "deleted"), ()]:
        wanted = [c for c in STORED_METADATA_SCHEMA if c == "item_key" or c in columns]
        got = store.item_metadata((thesis, article, "oai:nowhere:1"), columns)
        assert_frame_equal(got, md.stored(records[0], records[1]).select(wanted))
        assert store.item_metadata((), columns).columns == wanted
    with pytest.raises(ValueError, match="'titel'"):
        store.item_metadata((article,), ("titel",))

    later = md.record(
        article,
        title="Corrected",
        datestamp=dt.datetime(2026, 2, 1, 12, 30, 15, 123456, tzinfo=dt.UTC),
        access_rights=md.OPEN,
    )
    older = md.record(thesis, title="Old state", datestamp=dt.datetime(2025, 6, 1, tzinfo=dt.UTC))
    same_day = md.record(gone, title="Retirado (corregido)", deleted=True)
    assert store.record_item_metadata(md.frame(later, older, same_day)) == 3
    expected = md.stored(later, records[1], same_day)
    assert_frame_equal(store.item_metadata((article, thesis, gone)), expected)
    # two rows of one item in one frame: the later datestamp wins, whatever the order
    first = md.record(thesis, title="A", datestamp=dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    second = md.record(thesis, title="B", datestamp=dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
    assert store.record_item_metadata(md.frame(second, first)) == 1
    assert store.item_metadata((thesis,))["title"].to_list() == ["B"]
    assert store.record_item_metadata(md.frame()) == 0
    # a key longer than an OpenSearch id (its document id is a digest), and more keys asked
    # than the store asks at once (the OpenSearch store here: pages of 500)
    long_key = f"{base}/" + "x" * 600
    many = [md.record(f"{base}/many/{i}", title=f"Record {i}") for i in range(700)]
    assert store.record_item_metadata(md.frame(md.record(long_key, title="Long"), *many)) == 701
    asked = (long_key, *(f"{base}/many/{i}" for i in range(0, 1400, 2)))  # half missing
    got = store.item_metadata(asked, ("title",))
    assert got.columns == ["item_key", "title"]
    assert dict(got.iter_rows()) == {
        long_key: "Long",
        **{f"{base}/many/{i}": f"Record {i}" for i in range(0, 700, 2)},
    }


def test_report_titles_prefer_the_harvested_title(store):
    base = f"oai:report-titles.example.org:{id(store)}"
    harvested, untitled, tracked_only = f"{base}/1", f"{base}/2", f"{base}/3"
    pairs = [(harvested, "Tracker 1"), (untitled, "Tracker 2"), (tracked_only, "Tracker 3")]
    store.record_titles(DATES[0], pl.DataFrame(pairs, schema=["key", "title"], orient="row"))
    store.record_item_metadata(
        md.frame(md.record(harvested, title="Harvested 1"), md.record(untitled, title=None))
    )
    assert store.report_titles((harvested, untitled, tracked_only, "oai:nowhere:2")) == {
        harvested: "Harvested 1",
        untitled: "Tracker 2",
        tracked_only: "Tracker 3",
    }
    assert store.titles((harvested,)) == {harvested: "Tracker 1"}  # the tracker's, kept
    assert store.report_titles(()) == {}


def test_aliases_resolve_exactly_replace_whole_and_are_idempotent(store):
    """The cross-walk table into the store: each alias of another key resolves to its record's
    item; own keys, ambiguous aliases and unknown keys do not; re-recording changes nothing;
    a new table replaces the old one whole (an alias that became ambiguous stops resolving)."""
    base = f"oai:aliases.example.org:{id(store)}"
    a, b, c = f"{base}/1", f"{base}/2", f"{base}/3"
    doi_a, hdl_a, url_b, shared = "10.999/a", "hdl:999/1", "https://x.example.org/b", "10.999/s"
    first = md.frame(
        md.record(a, item_keys=[a, doi_a, hdl_a, shared]),
        md.record(b, site_id=2, item_keys=[b, url_b]),
    )
    assert store.resolve_aliases((doi_a,)) == {}  # nothing recorded yet: no error
    table = crosswalk_table(first)
    assert store.record_aliases(table) == 4
    asked = (doi_a, hdl_a, url_b, shared, a, b, "10.999/none", doi_a)
    expected = {doi_a: a, hdl_a: a, url_b: b, shared: a}
    assert store.resolve_aliases(asked) == expected
    assert store.record_aliases(table) == 4  # idempotent
    assert store.resolve_aliases(asked) == expected
    assert store.resolve_aliases(()) == {}

    # A third record now lists the shared DOI (ambiguous), `a` dropped its handle.
    second = md.frame(
        md.record(a, item_keys=[a, doi_a, shared]),
        md.record(b, site_id=2, item_keys=[b, url_b]),
        md.record(c, site_id=3, item_keys=[c, shared]),
    )
    table = crosswalk_table(second)
    assert table.filter(pl.col("alias") == shared)["ambiguous"].to_list() == [True]
    assert store.record_aliases(table) == 2
    assert store.resolve_aliases(asked) == {doi_a: a, url_b: b}
    assert store.record_aliases(crosswalk_table(md.frame())) == 0  # an empty table empties
    assert store.resolve_aliases(asked) == {}


def _record_rows(day: dt.date, *rows: tuple) -> pl.DataFrame:
    """Record rows (scope, key, level, basis, field, value, added, removed[, files,
    data_volume, files_unknown, volume_unknown]) of `day`; `total` is added − removed, what
    the records hold 0 unless given."""
    from usage_stats.pipeline.records import RECORD_SCHEMA

    full = [(*r, 0, 0, 0, 0) if len(r) == 8 else r for r in rows]
    frame = pl.DataFrame(
        [(day, *r[:6], r[6], r[7], r[6] - r[7], *r[8:]) for r in full],
        schema=RECORD_SCHEMA,
        orient="row",
    )
    return frame


def test_record_days_exact_rows_replaced_and_idempotent(store):
    day, other = dt.date(2025, 6, 1), dt.date(2025, 6, 2)
    art, thesis = "coar:article", "coar:thesis"
    big = 5 * 2**40  # 5 TiB: volumes need 64 bits
    deltas = _record_rows(
        day,
        ("global", "global", "R", "datestamp", "total", "", 3, 1, 4, big + 700, 0, 1),
        ("global", "global", "R", "datestamp", "resource_type", art, 2, 1, 1, 700, 0, 1),
        ("global", "global", "R", "datestamp", "resource_type", thesis, 1, 0, 3, big, 0, 0),
        ("source", "7", None, "publication", "total", "", 1, 0, -2, -30, 1, -1),
    )
    snapshot = deltas.with_columns(
        pl.col("added") + 10, pl.col("total") + 10, pl.col("files") + 20, pl.col("data_volume") * 2
    )
    assert store.replace_record_day(other, _record_rows(other), _record_rows(other)).delta_rows == 0
    for _ in range(2):  # the second write replaces the first: idempotent
        write = store.replace_record_day(day, deltas, snapshot)
        assert (write.delta_rows, write.snapshot_rows) == (4, 4)
        assert store.record_row_count("record_deltas", day) == 4
        assert store.record_row_count("record_snapshots", day) == 4
    by_type = store.record_totals(
        "global", "global", day, other, field="resource_type", by=("value",)
    )
    # (value, added, removed, total, files, data_volume, files_unknown, volume_unknown)
    assert by_type.rows() == [(art, 2, 1, 1, 1, 700, 0, 1), (thesis, 1, 0, 1, 3, big, 0, 0)]
    assert store.record_totals("source", "7", day, day, basis="publication").rows() == [
        (1, 0, 1, -2, -30, 1, -1)
    ]
    assert store.record_totals("global", "global", day, day, by=("month",)).rows() == [
        (dt.date(2025, 6, 1), 3, 1, 2, 4, big + 700, 0, 1)
    ]
    assert store.record_snapshot("global", "global", day, field="resource_type").rows() == [
        ("R", art, 12, 1, 11, 21, 1400, 0, 1),
        ("R", thesis, 11, 0, 11, 23, 2 * big, 0, 0),
    ]
    assert store.record_snapshot("source", "7", day, basis="publication", level=None).rows() == [
        (None, "", 11, 0, 11, 18, -60, 1, -1)
    ]
    # A smaller day replaces the day whole: no stale row stays behind.
    store.replace_record_day(day, deltas.head(1), snapshot.head(1))
    assert store.record_row_count("record_deltas", day) == 1
    assert store.record_snapshot("global", "global", day, field="resource_type").is_empty()
    assert store.record_totals("global", "global", day, day, level="R").rows() == [
        (3, 1, 2, 4, big + 700, 0, 1)
    ]
    with pytest.raises(ValueError):
        store.record_totals("global", "global", day, day, field="colour")
    with pytest.raises(StatsStoreError):
        store.replace_record_day(other, deltas, snapshot)
    assert store.record_row_count("record_deltas", day) == 1  # a refused write changed nothing


# --- DuckDB maintenance: sorted runs answer exactly as the old arrangements ------------------
# The reference stores are loaded the old ways: "unsorted", rows appended in shuffled order into
# a file without `store_runs` (as before runs, between a write and the nightly sort; it is only
# read, so it is never migrated), and "sorted whole" (`sort_fully`, the old `optimize`).


def history(
    tables: list, days: int = 16, start: dt.date = DATES[0]
) -> list[tuple[dt.date, pl.DataFrame, pl.DataFrame]]:
    """`days` days made of the generated ones: other dates, other counts, some days without
    item rows (small days) so runs of different sizes form."""
    out = []
    for i in range(days):
        _, deltas, snapshot = tables[i % len(tables)]
        day = start + dt.timedelta(days=i)
        if i % 5 == 3:
            deltas = deltas.filter(pl.col("scope") != "item")
        out.append((day, *(shifted(f, day, i) for f in (deltas, snapshot))))
    return out


def shifted(frame: pl.DataFrame, day: dt.date, by: int) -> pl.DataFrame:
    return frame.with_columns(pl.lit(day).alias("date"), *[pl.col(m) + by for m in METRICS])


def raw_replace(path: Path, day: dt.date, deltas: pl.DataFrame, snapshot: pl.DataFrame) -> None:
    """A day written as before runs: no `store_runs`, rows in no particular order."""
    con = duckdb.connect(str(path))
    try:
        for table, frame in (("usage_deltas", deltas), ("usage_snapshots", snapshot)):
            con.execute(_create_table_sql(table, coded=False))
            con.execute(f"DELETE FROM {table} WHERE date = ?", [day])
            shuffled = (
                frame.select(list(DELTA_SCHEMA))
                .cast(DELTA_SCHEMA)
                .sample(fraction=1.0, shuffle=True, seed=day.toordinal())
            )
            con.register("incoming", shuffled.to_arrow())
            con.execute(f"INSERT INTO {table} SELECT * FROM incoming")
            con.unregister("incoming")
    finally:
        con.close()


class Stores:
    """The store under test and the two references, written alike."""

    def __init__(self, tmp_path: Path, run_rows: int = SMALL_RUNS) -> None:
        self.runs = DuckDBStatsStore(tmp_path / "runs.duckdb", run_rows=run_rows)
        self.whole = DuckDBStatsStore(tmp_path / "whole.duckdb")
        self.unsorted = DuckDBStatsStore(tmp_path / "unsorted.duckdb")

    def write(self, day: dt.date, deltas: pl.DataFrame, snapshot: pl.DataFrame) -> None:
        """One stats_index run of `day` on each store."""
        self.runs.replace_day(day, deltas, snapshot)
        self.runs.optimize()
        self.whole.replace_day(day, deltas, snapshot)  # sorted whole when compared
        raw_replace(self.unsorted.path, day, deltas, snapshot)


def table_rows(store: DuckDBStatsStore, table: str) -> list[tuple]:
    """Every row, sorted: equal lists mean no row lost, none doubled."""
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        rows = con.execute(f"SELECT {', '.join(DELTA_SCHEMA)} FROM {table}").fetchall()
    finally:
        con.close()
    return sorted(rows, key=repr)


def answers(store: DuckDBStatsStore, days: list[dt.date], frames: list[pl.DataFrame]) -> list:
    """The StatsStore queries over every scope, some keys of each, the whole history and a
    part of it, grouped and filtered in the ways the web services ask."""
    deltas = pl.concat(frames)
    first, last, middle = days[0], days[-1], days[len(days) // 2]
    out: list = [store.days()]
    for scope in ("item", "source", "site", "global"):
        keys = deltas.filter(pl.col("scope") == scope).get_column("key").unique().sort()
        for key in keys.gather_every(max(1, len(keys) // 3)).to_list():
            out.append(store.totals(scope, key, first, last, by=("month",)))
            out.append(store.totals(scope, key, middle, last, by=("date", "level", "country")))
            out.append(store.snapshot(scope, key, middle))
        for metric in ("views", "unique_item_requests"):
            out.append(store.top(scope, first, last, metric, 7))
            out.append(store.top(scope, middle, last, metric, 3, site_ids=(1, 2)))
        out.append(store.sums(scope, first, last, by=("date", "level")))
    owners = deltas.filter(pl.col("scope") == "item").get_column("owner_site_id")
    owner = owners.drop_nulls().min()
    filters = (
        RowFilter(None, (owner,), (owner,)),
        RowFilter(None, None, (None, owner)),
        RowFilter(tuple(deltas.get_column("key").unique().sort().head(5).to_list())),
    )
    for where in (filters, filters[:1], filters[1:2], ()):
        for by in (("key",), ("country",), ("month", "site_id")):
            out.append(store.sums_where("item", first, last, where, by=by))
        out.append(
            store.sums_where(
                "item", first, last, where, by=("country",), distinct=("site_id", "key", "month")
            )
        )
        out.append(store.top_where("item", first, last, "views", 10, where))
    return out


def assert_same(stores: Stores, written: dict) -> None:
    days = sorted(written)
    frames = [written[d] for d in days]
    stores.whole.sort_fully()
    for table in STORE_TABLES:
        expected = table_rows(stores.unsorted, table)
        assert table_rows(stores.runs, table) == expected, table
        assert table_rows(stores.whole, table) == expected, table
    reference = answers(stores.unsorted, days, frames)
    for store in (stores.runs, stores.whole):
        got = answers(store, days, frames)
        assert len(got) == len(reference)
        for mine, theirs in zip(got, reference, strict=True):
            if isinstance(theirs, pl.DataFrame):
                assert_frame_equal(mine, theirs)
            else:
                assert mine == theirs


def runs_are_sorted(store: DuckDBStatsStore) -> bool:
    """Each run's rows lie in scope, key code, key, date order in the file (what reading fast
    needs)."""
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        for table in STORE_TABLES:
            unsorted = con.execute(
                f"SELECT count(*) FROM (SELECT r.run, t.scope, t.key_code, t.key, t.date, "
                f"lag(t.scope) OVER w AS ps, lag(t.key_code) OVER w AS pc, lag(t.key) OVER w "
                f"AS pk, lag(t.date) OVER w AS pd FROM {table} t "
                f"JOIN store_runs r ON r.tbl = '{table}' AND r.date = t.date AND r.part = "
                f"CASE WHEN t.scope = 'item' THEN 'item' ELSE 'rollup' END "
                f"WINDOW w AS (PARTITION BY r.run ORDER BY t.rowid)) "
                f"WHERE ps IS NOT NULL AND (scope, key_code, key, date) < (ps, pc, pk, pd)"
            ).fetchone()[0]
            if unsorted:
                return False
    finally:
        con.close()
    return True


@pytest.fixture
def maintained(contract_data, tmp_path):
    """16 days written day by day, each followed by its maintenance, on the three stores."""
    _, tables = contract_data
    stores = Stores(tmp_path)
    written = {}
    for day, deltas, snapshot in history(tables):
        stores.write(day, deltas, snapshot)
        written[day] = deltas
    return stores, written, tables


@pytest.mark.parametrize("rewrite", ["none", "middle", "last", "middle-then-new-day"])
def test_runs_answer_exactly_like_an_unsorted_and_a_sorted_store(maintained, rewrite):
    stores, written, tables = maintained
    days = sorted(written)
    arranged = stores.runs.runs()
    runs = arranged[("usage_deltas", "item")]
    assert 1 < len(runs) < len(days) // 2  # days were merged, into more than one run
    assert len(arranged[("usage_deltas", "rollup")]) < len(runs)  # smaller, fewer runs
    stored = sum(r for p in ("item", "rollup") for _, _, r in arranged[("usage_deltas", p)])
    assert stored == sum(f.height for f in written.values())
    if rewrite != "none":
        index = len(days) - 1 if rewrite == "last" else len(days) // 2
        day, deltas, snapshot = tables[(index + 1) % len(tables)]
        deltas, snapshot = (shifted(f, days[index], 100) for f in (deltas, snapshot))
        stores.write(days[index], deltas, snapshot)
        written[days[index]] = deltas
    if rewrite == "middle-then-new-day":
        day, deltas, snapshot = tables[0]
        new_day = days[-1] + dt.timedelta(days=1)
        stores.write(new_day, shifted(deltas, new_day, 7), shifted(snapshot, new_day, 7))
        written[new_day] = shifted(deltas, new_day, 7)
    assert_same(stores, written)
    assert runs_are_sorted(stores.runs)
    for runs in stores.runs.runs().values():  # merges stop once a run is large enough
        assert all(rows < 3 * SMALL_RUNS for _, _, rows in runs[:-1])


def test_repeated_maintenance_changes_nothing(maintained):
    stores, written, _ = maintained
    before = stores.runs.runs()
    rows = {t: table_rows(stores.runs, t) for t in STORE_TABLES}
    for _ in range(3):
        stores.runs.optimize()
        assert stores.runs.runs() == before
    stores.runs.sort_fully()
    stores.runs.sort_fully()
    assert [len(r) for r in stores.runs.runs().values()] == [1, 1, 1, 1]
    stores.runs.optimize()
    assert {t: table_rows(stores.runs, t) for t in STORE_TABLES} == rows
    assert_same(stores, written)


def test_every_day_alone_when_days_are_larger_than_runs(contract_data, tmp_path):
    """Days above the run size are runs of their own: maintenance merges nothing."""
    _, tables = contract_data
    stores = Stores(tmp_path, run_rows=100)
    written = {}
    for day, deltas, snapshot in history(tables, days=6):
        stores.write(day, deltas, snapshot)
        written[day] = deltas
    for runs in stores.runs.runs().values():
        assert [days for _, days, _ in runs] == [1] * len(runs)
    assert_same(stores, written)


def test_a_store_from_before_runs_is_sorted_once_at_its_first_write(contract_data, tmp_path):
    _, tables = contract_data
    stores = Stores(tmp_path)
    written = {}
    for day, deltas, snapshot in history(tables, days=8):
        raw_replace(stores.runs.path, day, deltas, snapshot)  # the store under test too
        stores.whole.replace_day(day, deltas, snapshot)
        raw_replace(stores.unsorted.path, day, deltas, snapshot)
        written[day] = deltas
    assert_same(stores, written)  # read as it is, without store_runs
    with_items = sum(d.get_column("scope").eq("item").any() for d in written.values())
    day, deltas, snapshot = history(tables, days=9)[-1]
    stores.write(day, deltas, snapshot)
    written[day] = deltas
    runs = stores.runs.runs()[("usage_deltas", "item")]
    assert runs[0][1] == with_items  # the old days' items, one sorted run
    assert_same(stores, written)
    assert runs_are_sorted(stores.runs)


def test_a_merge_that_would_lose_or_double_rows_is_refused(maintained):
    """The registry says how many rows each day has: a merge reading other counts stops
    and leaves the store as it was."""
    stores, written, tables = maintained
    for day, deltas, snapshot in history(tables, days=len(written) + 2)[-2:]:
        stores.runs.replace_day(day, deltas, snapshot)  # two small runs: the next optimize
        stores.whole.replace_day(day, deltas, snapshot)  # merges them at least
        raw_replace(stores.unsorted.path, day, deltas, snapshot)
        written[day] = deltas
    con = duckdb.connect(str(stores.runs.path))
    con.execute(
        "UPDATE store_runs SET rows = rows + 1 WHERE tbl = 'usage_deltas' AND date = ?", [day]
    )
    con.close()
    with pytest.raises(StatsStoreError, match="rows, .* registered"):
        stores.runs.optimize()
    assert_same(stores, written)


# --- DuckDB compaction of closed periods: exactly the same store, fewer runs -------------------


def runs_registry_is_consistent(store: DuckDBStatsStore) -> None:
    """`store_runs` lists each day's part once, with the rows the table holds, and a run id
    belongs to one table and part."""
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        for table in STORE_TABLES:
            actual = con.execute(
                f"SELECT date, CASE WHEN scope = 'item' THEN 'item' ELSE 'rollup' END AS part, "
                f"count(*) FROM {table} GROUP BY ALL ORDER BY ALL"
            ).fetchall()
            listed = con.execute(
                "SELECT date, part, rows FROM store_runs WHERE tbl = ? ORDER BY ALL", [table]
            ).fetchall()
            assert listed == actual, table
        shared = con.execute(
            "SELECT run FROM store_runs GROUP BY run HAVING count(DISTINCT (tbl, part)) > 1"
        ).fetchall()
        assert not shared
    finally:
        con.close()


def closed_periods_are_one_run_each(store: DuckDBStatsStore, period: str, before: dt.date):
    """Every closed period of at least `run_rows` rows is one run holding exactly its days."""
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        rows = con.execute(
            "SELECT tbl, part, date, run, rows FROM store_runs WHERE date < ?", [before]
        ).fetchall()
        days_of_run: dict = defaultdict(set)
        for table, part, day, run, _ in con.execute(
            "SELECT tbl, part, date, run, rows FROM store_runs"
        ).fetchall():
            days_of_run[(table, part, run)].add(day)
    finally:
        con.close()
    periods: dict = defaultdict(list)
    for table, part, day, run, count in rows:
        start = day.replace(day=1) if period == "month" else day - dt.timedelta(day.weekday())
        periods[(table, part, start)].append((day, run, count))
    compacted = 0
    for (table, part, _), days in periods.items():
        if sum(c for _, _, c in days) < store.run_rows:
            continue
        runs = {run for _, run, _ in days}
        assert len(runs) == 1, (table, part, days)
        assert days_of_run[(table, part, runs.pop())] == {day for day, _, _ in days}
        compacted += 1
    return compacted


@pytest.fixture
def long_history(contract_data, tmp_path):
    """21 days (2026-01-20..02-09: January's last 12 days, a closed month, and three closed
    ISO weeks) written day by day with the nightly maintenance, on the three stores."""
    _, tables = contract_data
    stores = Stores(tmp_path)
    written = {}
    for day, deltas, snapshot in history(tables, days=21, start=dt.date(2026, 1, 20)):
        stores.write(day, deltas, snapshot)
        written[day] = deltas
    return stores, written, tables


@pytest.mark.parametrize("period", ["week", "month"])
def test_compaction_answers_exactly_as_before_and_is_idempotent(long_history, period):
    stores, written, _ = long_history
    days = sorted(written)
    frames = [written[d] for d in days]
    reference = answers(stores.runs, days, frames)
    rows_before = {t: table_rows(stores.runs, t) for t in STORE_TABLES}
    runs_before = stores.runs.runs()

    report = stores.runs.compact(period=period)
    before = dt.date(2026, 2, 1) if period == "month" else dt.date(2026, 2, 9)
    assert report.before == before
    assert report.rewritten > 0 and report.rows_moved > 0
    assert report.runs_before == sum(len(r) for r in runs_before.values())
    assert report.runs_after == sum(len(r) for r in stores.runs.runs().values())
    assert report.runs_after < report.runs_before
    assert closed_periods_are_one_run_each(stores.runs, period, before) == (
        report.rewritten + report.already_compact
    )
    runs_registry_is_consistent(stores.runs)
    assert runs_are_sorted(stores.runs)
    assert {t: table_rows(stores.runs, t) for t in STORE_TABLES} == rows_before
    got = answers(stores.runs, days, frames)
    for mine, theirs in zip(got, reference, strict=True):
        if isinstance(theirs, pl.DataFrame):
            assert_frame_equal(mine, theirs)
        else:
            assert mine == theirs
    assert_same(stores, written)

    arranged = stores.runs.runs()
    again = stores.runs.compact(period=period)
    assert (again.rewritten, again.rows_moved) == (0, 0)
    assert again.already_compact == report.rewritten + report.already_compact
    assert stores.runs.runs() == arranged
    stores.runs.optimize()  # the nightly maintenance leaves compacted runs alone
    assert stores.runs.runs() == arranged


def test_a_day_rewritten_inside_a_compacted_run(long_history):
    """replace_day takes the day out of its compacted run and appends it as a run of its own;
    the registry stays exact, answers match the references, and the next compaction puts
    that period (only) back together."""
    stores, written, tables = long_history
    stores.runs.compact(period="month")
    january = [d for d in sorted(written) if d.month == 1]
    with_items = len(january) - 2  # days 3 and 8 of the history have no item rows
    (january_run,) = {
        run for run, days, _ in stores.runs.runs()[("usage_deltas", "item")] if days == with_items
    }
    day = january[5]
    _, deltas, snapshot = tables[2]
    deltas, snapshot = (shifted(f, day, 1000) for f in (deltas, snapshot))
    stores.write(day, deltas, snapshot)  # replace_day and optimize, as stats_index
    written[day] = deltas
    runs_registry_is_consistent(stores.runs)
    assert runs_are_sorted(stores.runs)
    assert_same(stores, written)
    left = {run: days for run, days, _ in stores.runs.runs()[("usage_deltas", "item")]}
    assert left[january_run] == with_items - 1  # the day left its compacted run
    report = stores.runs.compact(period="month")
    # January of each table and part whose month is rewritten, nothing else
    assert report.rewritten == closed_periods_are_one_run_each(
        stores.runs, "month", dt.date(2026, 2, 1)
    )
    assert 2 <= report.rewritten <= 4
    runs_registry_is_consistent(stores.runs)
    assert runs_are_sorted(stores.runs)
    assert_same(stores, written)


def test_compaction_with_a_run_size_bound(long_history):
    """`max_run_rows` cuts a period into runs of consecutive days, each at least `run_rows`
    and at most `max_run_rows` + `run_rows` (a short tail joins the run before it)."""
    stores, written, _ = long_history
    bound = 2 * SMALL_RUNS
    report = stores.runs.compact(period="month", max_run_rows=bound)
    con = duckdb.connect(str(stores.runs.path), read_only=True)
    try:
        closed = con.execute(
            "SELECT tbl, part, run, min(date), max(date), sum(rows) FROM store_runs "
            "GROUP BY ALL HAVING max(date) < ? ORDER BY 1, 2, 4",
            [dt.date(2026, 2, 1)],
        ).fetchall()
    finally:
        con.close()
    for (table, part, _, _, last, _), (other, other_part, _, first, _, _) in zip(
        closed, closed[1:], strict=False
    ):
        if (table, part) == (other, other_part):
            assert last < first  # consecutive days, no overlap
    assert all(SMALL_RUNS <= rows_ <= bound + SMALL_RUNS for *_, rows_ in closed)
    items = [r for r in closed if r[:2] == ("usage_deltas", "item")]
    assert len(items) > 1 and report.rewritten > len({r[:2] for r in closed})
    runs_registry_is_consistent(stores.runs)
    assert runs_are_sorted(stores.runs)
    assert_same(stores, written)
    again = stores.runs.compact(period="month", max_run_rows=bound)
    assert (again.rewritten, again.rows_moved) == (0, 0)
    with pytest.raises(ValueError, match="period"):
        stores.runs.compact(period="fortnight")
    with pytest.raises(ValueError, match="max_run_rows"):
        stores.runs.compact(max_run_rows=SMALL_RUNS - 1)


def test_a_compaction_that_would_lose_or_double_rows_is_refused(long_history):
    stores, written, _ = long_history
    con = duckdb.connect(str(stores.runs.path))
    con.execute(
        "UPDATE store_runs SET rows = rows + 1 WHERE tbl = 'usage_deltas' AND date = ?",
        [dt.date(2026, 1, 25)],
    )
    con.close()
    rows_before = {t: table_rows(stores.runs, t) for t in STORE_TABLES}
    with pytest.raises(StatsStoreError, match="read, .* registered"):
        stores.runs.compact(period="month")
    assert {t: table_rows(stores.runs, t) for t in STORE_TABLES} == rows_before


def _subcount_rows(day: dt.date, *rows: tuple) -> pl.DataFrame:
    """Usage-subcount rows (scope, key, level, field, value, views, downloads) of `day`; the
    other metrics 0."""
    from usage_stats.pipeline.usage_subcounts import USAGE_SUBCOUNT_SCHEMA

    zeros = (0,) * (len(METRICS) - 2)
    return pl.DataFrame(
        [(day, *r, *zeros, None) for r in rows], schema=USAGE_SUBCOUNT_SCHEMA, orient="row"
    )


def test_subcount_visitors_and_days_exact_and_replaced_with_the_day(store):
    """Unique visitors ride on the deltas' total rows: read back per day and level, never
    summed, replaced with the day; the field rows and the snapshot hold none."""
    first, second = dt.date(2025, 8, 1), dt.date(2025, 8, 2)
    rows = [
        ("global", "global", "R", "total", "", 10, 4),
        ("global", "global", "N", "total", "", 5, 0),
        ("global", "global", "R", "referrer", "search:google", 10, 4),
        ("global", "global", "N", "referrer", "direct", 5, 0),
        ("national", "CR", "R", "total", "", 7, 1),
        ("national", "CR", "R", "referrer", "", 7, 1),
    ]
    visitors = {("global", "R"): 6, ("global", "N"): 3, ("national", "R"): 4}

    def deltas(day: dt.date, extra: int) -> pl.DataFrame:
        frame = _subcount_rows(day, *rows)
        counts = pl.DataFrame(
            [(s, lv, n + extra) for (s, lv), n in visitors.items()],
            schema={"scope": pl.String, "level": pl.String, "_n": pl.Int64},
            orient="row",
        )
        return (
            frame.join(counts, on=["scope", "level"], how="left")
            .with_columns(pl.when(pl.col("field") == "total").then(pl.col("_n")).alias("visitors"))
            .drop("_n")
        )

    assert store.subcount_days() == []
    for day, extra in ((first, 0), (second, 1)):
        store.replace_subcount_day(day, deltas(day, extra), _subcount_rows(day, *rows))
    assert store.subcount_days() == [first, second]
    got = store.subcount_visitors("global", "global", first, second)
    assert got.rows() == [(first, "N", 3), (first, "R", 6), (second, "N", 4), (second, "R", 7)]
    only_r = store.subcount_visitors("national", "CR", first, second, level="R")
    assert only_r.rows() == [(first, "R", 4), (second, "R", 5)]
    assert store.subcount_visitors("source", "1", first, second).is_empty()
    referrers = store.subcounts("global", "global", first, second, field="referrer")
    assert referrers.select("value", "views").rows() == [("search:google", 20), ("direct", 10)]
    # the day replaced without visitors (older deltas): none left behind
    store.replace_subcount_day(
        second, _subcount_rows(second, *rows).drop("visitors"), _subcount_rows(second, *rows)
    )
    assert store.subcount_visitors("global", "global", second, second).is_empty()
    assert store.subcount_visitors("global", "global", first, first, level="R").rows() == [
        (first, "R", 6)
    ]
    with pytest.raises(ValueError):
        store.subcount_visitors("site", "1", first, second)


def test_subcount_days_exact_rows_replaced_and_idempotent(store):
    from usage_stats.pipeline.usage_subcounts import OTHER

    day, other = dt.date(2025, 7, 1), dt.date(2025, 7, 2)
    art, thesis, book = "coar:article", "coar:thesis", "coar:book"
    deltas = _subcount_rows(
        day,
        ("global", "global", "R", "total", "", 10, 4),
        ("global", "global", "R", "resource_type", art, 6, 1),
        ("global", "global", "R", "resource_type", thesis, 2, 3),
        ("global", "global", "R", "resource_type", "", 1, 0),
        ("global", "global", "R", "resource_type", OTHER, 1, 0),
        ("global", "global", "N", "total", "", 5, 0),
        ("global", "global", "N", "resource_type", book, 5, 0),
        ("source", "7", "R", "item", "oai:x" * 200, 3, 2),  # a value longer than an id
    )
    snapshot = deltas.with_columns(pl.col("views") + 100)
    assert store.replace_subcount_day(other, deltas.clear(), deltas.clear()).delta_rows == 0
    for _ in range(2):  # the second write replaces the first: idempotent
        write = store.replace_subcount_day(day, deltas, snapshot)
        assert (write.delta_rows, write.snapshot_rows) == (8, 8)
        assert store.subcount_row_count("usage_subcount_deltas", day) == 8
        assert store.subcount_row_count("usage_subcount_snapshots", day) == 8
    cols = ["value", "views", "downloads"]
    by_type = store.subcounts("global", "global", day, other, field="resource_type")
    assert by_type.select(cols).rows() == [
        (art, 6, 1),
        (book, 5, 0),
        (thesis, 2, 3),
        ("", 1, 0),
        (OTHER, 1, 0),
    ]
    top = store.subcounts(
        "global", "global", day, day, field="resource_type", metric="downloads", limit=1
    )
    assert top.select(cols).rows() == [(thesis, 2, 3), ("", 1, 0), (OTHER, 12, 1)]
    assert top.get_column("views").sum() == 15  # the remainder keeps the sum
    level_r = store.subcounts("global", "global", day, day, level="R")
    assert level_r.select(cols).rows() == [("", 10, 4)]
    assert store.subcounts("source", "7", day, day, field="item").select(cols).rows() == [
        ("oai:x" * 200, 3, 2)
    ]
    snap = store.subcount_snapshot("global", "global", day, field="resource_type", limit=2)
    assert snap.select(cols).rows() == [
        (art, 106, 1),
        (book, 105, 0),
        ("", 101, 0),
        (OTHER, 203, 3),
    ]
    # A smaller day replaces the day whole: no stale row stays behind.
    store.replace_subcount_day(day, deltas.head(1), snapshot.head(1))
    assert store.subcount_row_count("usage_subcount_deltas", day) == 1
    assert store.subcounts("global", "global", day, day, field="resource_type").is_empty()
    with pytest.raises(ValueError):
        store.subcounts("global", "global", day, day, field="colour")
    with pytest.raises(ValueError):
        store.subcounts("site", "1", day, day)
    with pytest.raises(StatsStoreError):
        store.replace_subcount_day(other, deltas, snapshot)
    assert store.subcount_row_count("usage_subcount_deltas", day) == 1  # refused: unchanged


def test_snapshot_sums_are_the_cumulative_series(loaded):
    """`snapshot_sums_where` per day equals the stored snapshots' rows added up, and the last
    day's equals the whole manifest (every use so far)."""
    from usage_stats.storage.store import RowFilter

    store, data, _ = loaded
    every = (RowFilter(),)
    series = store.snapshot_sums_where("global", DATES[0], DATES[-1], every)
    assert series.get_column("date").to_list() == DATES
    last = series.filter(pl.col("date") == DATES[-1]).select(METRICS).row(0)
    assert last == manifest_sums(data.manifest)[()]
    item = "oai:repo2.example.org:1002/0"
    one = store.snapshot_sums_where("item", DATES[0], DATES[-1], (RowFilter(keys=(item,)),))
    for day, *metrics in one.select("date", *METRICS).iter_rows():
        snapshot = store.snapshot("item", item, day)
        assert tuple(metrics) == tuple(int(snapshot.get_column(m).sum()) for m in METRICS)
    with pytest.raises(ValueError):
        store.snapshot_sums_where("global", DATES[0], DATES[-1], every, by=("month",))


def test_record_cumulative_and_record_days(store):
    first, second = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    art = "coar:article"
    snap1 = _record_rows(
        first,
        ("global", "global", "R", "datestamp", "total", "", 5, 1, 6, 6000, 1, 2),
        ("global", "global", "R", "datestamp", "resource_type", art, 5, 1, 6, 6000, 1, 2),
    )
    snap2 = _record_rows(
        second,
        ("global", "global", "R", "datestamp", "total", "", 7, 1, 9, 9000, 1, 2),
        ("global", "global", "N", "datestamp", "total", "", 2, 0, 2, 10, 0, 0),
    )
    store.replace_record_day(first, snap1.head(0), snap1)
    store.replace_record_day(second, snap2.head(0), snap2)
    assert {first, second} <= set(store.record_days())
    assert store.record_cumulative("global", "global", first, second).rows() == [
        (first, 5, 1, 4, 6, 6000, 1, 2),
        (second, 9, 1, 8, 11, 9010, 1, 2),
    ]
    assert store.record_cumulative(
        "global", "global", first, second, level="R", field="resource_type", by=("date", "value")
    ).rows() == [(first, art, 5, 1, 4, 6, 6000, 1, 2)]
    assert store.record_cumulative("global", "nowhere", first, second).is_empty()
    with pytest.raises(ValueError):
        store.record_cumulative("global", "global", first, second, by=("value",))


OLD_RECORD_COLUMNS = ("added", "removed", "total")


def test_record_tables_from_before_files_gain_the_new_columns(tmp_path):
    """A store whose record tables (DuckDB) or indices (OpenSearch) were created before files
    and data volume existed takes new days with them; the old day's rows count 0 files."""
    from usage_stats.pipeline.records import RECORD_COUNTS

    old_day, new_day = dt.date(2023, 5, 1), dt.date(2023, 5, 2)
    old = _record_rows(old_day, ("global", "global", "R", "datestamp", "total", "", 4, 1))
    new = _record_rows(
        new_day, ("global", "global", "R", "datestamp", "total", "", 2, 0, 3, 9, 0, 1)
    )
    keep = [c for c in old.columns if c not in RECORD_COUNTS or c in OLD_RECORD_COLUMNS]

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    for table in ("record_deltas", "record_snapshots"):
        con.execute(
            f"CREATE TABLE {table} (date DATE, scope VARCHAR, key VARCHAR, level VARCHAR, "
            "basis VARCHAR, field VARCHAR, value VARCHAR, added BIGINT, removed BIGINT, "
            "total BIGINT)"
        )
        con.register("old_rows", old.select(keep).to_arrow())
        con.execute(f"INSERT INTO {table} SELECT * FROM old_rows")
        con.unregister("old_rows")
    con.close()
    migrated = DuckDBStatsStore(path)
    migrated.replace_record_day(new_day, new, new)
    assert migrated.record_totals("global", "global", old_day, new_day, by=("date",)).rows() == [
        (old_day, 4, 1, 3, 0, 0, 0, 0),
        (new_day, 2, 0, 2, 3, 9, 0, 1),
    ]
    assert migrated.record_snapshot("global", "global", old_day).rows() == [
        ("R", "", 4, 1, 3, None, None, None, None)
    ]

    store = opensearch_store(batch_size=50)
    try:
        alias = store.record_alias("record_deltas")
        properties = {
            "date": {"type": "date", "format": "yyyy-MM-dd"},
            "write_id": {"type": "keyword"},
        }
        properties |= {
            k: {"type": "keyword"} for k in ("scope", "key", "level", "basis", "field", "value")
        }
        properties |= {c: {"type": "long"} for c in OLD_RECORD_COLUMNS}
        client = store.connection.client
        client.indices.create(
            index=f"{alias}-2023",
            body={
                "mappings": {"dynamic": "strict", "properties": properties},
                "aliases": {alias: {}},
            },
        )
        store.replace_record_day(new_day, new, new)
        assert store.record_totals("global", "global", old_day, new_day, by=("date",)).rows() == [
            (new_day, 2, 0, 2, 3, 9, 0, 1)
        ]
    finally:
        store.delete_all()


def _spike_rows(day: dt.date, *rows: tuple) -> pl.DataFrame:
    """Flags (scope, key, owner, usage, share, reason) with the other columns filled."""
    return pl.DataFrame(
        [
            {
                "date": day,
                "scope": scope,
                "key": key,
                "owner_site_id": owner,
                "usage": usage,
                "baseline": 2.0,
                "history_days": 7,
                "factor": usage / 2.0,
                "units": 4,
                "unit": "block_hash",
                "top_blocks_share": share,
                "top_countries": "BR,AR",
                "top_countries_share": 0.25,
                "reason": reason,
            }
            for scope, key, owner, usage, share, reason in rows
        ],
        schema=SPIKE_SCHEMA,
    )


def test_usage_spikes_exact_rows_replaced_per_day_and_idempotent(store):
    d1, d2 = dt.date(2031, 3, 1), dt.date(2031, 3, 2)
    first = _spike_rows(
        d1, ("item", "oai:a:1", 7, 120, 0.9, "blocks"), ("source", "7", 7, 300, 0.6, "blocks")
    )
    other = _spike_rows(d2, ("item", "oai:b:2", 8, 90, 0.3, "countries"))
    assert store.replace_spike_day(d1, first) == 2
    assert store.replace_spike_day(d2, other) == 1
    assert store.replace_spike_day(d2, other) == 1  # idempotent
    got = store.spikes(d1, d2)
    assert got.to_dicts() == pl.concat([first, other]).sort("date", "scope", "key").to_dicts()
    assert store.spikes(d1, d2, owner_site_ids=(8,)).get_column("key").to_list() == ["oai:b:2"]
    assert store.spikes(d2, d2, owner_site_ids=(7,)).is_empty()
    # a re-run of d1 that flags less replaces the day (and only that day); none clears it
    fewer = _spike_rows(d1, ("item", "oai:a:1", 7, 130, 0.95, "blocks+countries"))
    assert store.replace_spike_day(d1, fewer) == 1
    assert store.spikes(d1, d1).to_dicts() == fewer.to_dicts()
    assert store.spikes(d2, d2).to_dicts() == other.to_dicts()
    assert store.replace_spike_day(d1, fewer.clear()) == 0
    assert store.spikes(d1, d1).is_empty() and store.spikes(d2, d2).height == 1
    # a frame holding another day's row or a key twice is refused, the stored day untouched
    with pytest.raises(StatsStoreError, match="other days"):
        store.replace_spike_day(d2, first)
    with pytest.raises(StatsStoreError, match="twice"):
        store.replace_spike_day(d2, pl.concat([other, other]))
    assert store.spikes(d2, d2).to_dicts() == other.to_dicts()


def _usage_rows(day: dt.date, *rows: tuple) -> pl.DataFrame:
    """Delta rows (scope, key, site, level, owner, country, views), other metrics 0."""
    names = ("scope", "key", "site_id", "level", "owner_site_id", "country", "views")
    schema = {n: DELTA_SCHEMA[n] for n in names}
    frame = pl.DataFrame([dict(zip(names, r, strict=True)) for r in rows], schema=schema)
    return (
        frame.with_columns(pl.lit(day).alias("date"))
        .with_columns(pl.lit(0).alias(m) for m in METRICS if m != "views")
        .select(list(DELTA_SCHEMA))
        .cast(DELTA_SCHEMA)
    )


def _fresh_store_like(store, path: Path):
    if isinstance(store, DuckDBStatsStore):
        return DuckDBStatsStore(path)
    return opensearch_store(batch_size=500)


def test_sparse_snapshots_read_as_whole_ones(store, contract_data, tmp_path):
    """A store given each day only the item rows that changed (`stored_snapshot`) answers
    every snapshot read as a store given whole snapshots: planted days where an item goes
    unused for days, an item changes owner and a day has no item use at all; then the
    generated days."""
    from usage_stats.pipeline.snapshots import next_snapshot, stored_snapshot

    d = [dt.date(2024, 5, 1) + dt.timedelta(days=i) for i in range(4)]
    a, b, c = "oai:x:a", "oai:x:b", "oai:x:c"
    planted = [
        _usage_rows(d[0], ("item", a, 1, "R", 1, "AR", 3), ("item", b, 1, "R", None, "BR", 2)),
        _usage_rows(d[1], ("item", a, 1, "R", 1, "AR", 1), ("item", c, 2, "N", 2, "AR", 4)),
        _usage_rows(d[2], ("item", b, 1, "R", 1, "BR", 5)),  # b claimed by site 1 now
        _usage_rows(d[3]),  # no item used
    ]
    planted = [
        pl.concat([f, _usage_rows(day, ("global", "global", 1, "R", None, "AR", 1))])
        for day, f in zip(d, planted, strict=True)
    ]
    generated = [(day, deltas) for day, deltas, _ in contract_data[1]]
    for n, days_deltas in enumerate((list(zip(d, planted, strict=True)), generated)):
        sparse = _fresh_store_like(store, tmp_path / f"sparse{n}.duckdb")
        reference = _fresh_store_like(store, tmp_path / f"whole{n}.duckdb")
        previous = None
        for i, (day, deltas) in enumerate(days_deltas):
            previous = next_snapshot(previous, deltas, day)
            reference.replace_day(day, deltas, previous)
            kept = stored_snapshot(previous, deltas if i else None)
            write = sparse.replace_day(day, deltas, kept)
            assert write.snapshot_rows == kept.height
        try:
            days = [day for day, _ in days_deltas]
            assert sparse.days() == reference.days() == days
            items = pl.concat(f for _, f in days_deltas).filter(pl.col("scope") == "item")
            keys = items.get_column("key").unique().sort().to_list()[:12]
            owner = items.get_column("owner_site_id").drop_nulls().min()
            sites = items.get_column("site_id").unique().to_list()
            for day in days:
                for key in keys:
                    assert_frame_equal(
                        sparse.snapshot("item", key, day), reference.snapshot("item", key, day)
                    )
            filters = [
                (RowFilter(keys=(keys[0],)),),
                (RowFilter(owner_site_ids=(owner,)),),
                (RowFilter(owner_site_ids=(None,)), RowFilter(site_ids=(sites[-1],))),
                (RowFilter(),),
            ]
            for where in filters:
                for by in (("date",), ("date", "country"), ("date", "owner_site_id")):
                    got = sparse.snapshot_sums_where("item", days[0], days[-1], where, by)
                    want = reference.snapshot_sums_where("item", days[0], days[-1], where, by)
                    assert_frame_equal(got, want)
            if days_deltas[0][0] == d[0]:
                # the planted truth: b counts for owner 1 from the day it was claimed
                owned = sparse.snapshot_sums_where(
                    "item", d[0], d[-1], (RowFilter(None, None, (1,)),)
                )
                assert owned.select("date", "views").rows() == [
                    (d[0], 3),
                    (d[1], 4),
                    (d[2], 11),
                    (d[3], 11),
                ]
                assert sparse.row_count("usage_snapshots", d[3]) == 1  # the global row only
                assert reference.row_count("usage_snapshots", d[3]) == 4
        finally:
            for s in (sparse, reference):
                if not isinstance(s, DuckDBStatsStore):
                    s.delete_all()


@pytest.mark.parametrize("rows, merged", [(60, False), (40, True)])
def test_days_of_half_a_run_stay_alone(tmp_path, rows, merged):
    """`optimize` leaves a day of half `run_rows` or more a run alone (merging two of them
    rewrites a run's worth of rows to save one run); smaller days still merge."""
    store = DuckDBStatsStore(tmp_path / "half.duckdb", run_rows=100)
    days = [dt.date(2024, 6, 1) + dt.timedelta(days=i) for i in range(4)]
    for n, day in enumerate(days):
        deltas = pl.concat(
            [
                _usage_rows(day, *[("item", f"k{n}-{i}", 1, "R", 1, "AR", 1) for i in range(rows)]),
                _usage_rows(day, *[("site", "1", 1, "R", None, f"C{i}", 1) for i in range(rows)]),
            ]
        )
        store.replace_day(day, deltas, deltas)
        store.optimize()
    for (table, part), runs in store.runs().items():
        days_per_run = [n for _, n, _ in runs]
        if merged:
            assert max(days_per_run) > 1, (table, part, runs)
        else:
            assert days_per_run == [1, 1, 1, 1], (table, part, runs)


def test_nightly_merges_stay_in_the_open_month(tmp_path):
    """`optimize` merges small runs within the month of the latest day only: re-sorting one
    run that grew across months (a year of rollups of large days grew one for ~170 days)
    made a day's maintenance grow with history. `compact` then merges the small runs of
    closed months with their neighbours, up to `run_rows`; rows and order are kept."""
    store = DuckDBStatsStore(tmp_path / "months.duckdb", run_rows=1000)
    days = [dt.date(2024, 1, 27) + dt.timedelta(days=i) for i in range(9)]  # Jan 27 .. Feb 4
    written = []
    for n, day in enumerate(days):
        deltas = pl.concat(
            [
                _usage_rows(day, *[("item", f"k{n}-{i}", 1, "R", 1, "AR", i) for i in range(8)]),
                _usage_rows(day, *[("site", "1", 1, "R", None, f"C{i}", n) for i in range(5)]),
            ]
        )
        store.replace_day(day, deltas, deltas)
        store.optimize()
        written.append(deltas)
    rows = {t: table_rows(store, t) for t in STORE_TABLES}
    con = duckdb.connect(str(store.path), read_only=True)
    spans = con.execute(
        "SELECT tbl, part, run, min(date), max(date), count(*) FROM store_runs "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    con.close()
    for table, part, _, first, last, count in spans:  # January's five days, February's four
        assert (first.month, last.month, count) in {(1, 1, 5), (2, 2, 4)}, (table, part, spans)
    assert len(spans) == 2 * len(STORE_TABLES) * 2
    report = store.compact(period="month")
    assert report.rows_moved == 0  # no month of run_rows: nothing rewritten, only merged
    assert [[(days, n) for _, days, n in runs] for runs in store.runs().values()] == [
        [(9, 72)],
        [(9, 45)],
        [(9, 72)],
        [(9, 45)],
    ]
    assert {t: table_rows(store, t) for t in STORE_TABLES} == rows
    assert runs_are_sorted(store)
    expected = pl.concat(written).filter(pl.col("scope") == "site")
    got = store.sums("site", days[0], days[-1], keys=("1",), by=("date",), metrics=("views",))
    assert (
        got.get_column("views").to_list()
        == (
            expected.group_by("date").agg(pl.col("views").sum()).sort("date").get_column("views")
        ).to_list()
    )
