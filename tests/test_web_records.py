"""`/api/v1/records` and the cumulative usage series on planted truth, on both stores: the
record statistics of the planted harvests of `test_record_stats` (built by the pipeline's own
functions), the endpoints' JSON exact, CSV and XLSX the same rows, top-N remainders adding up;
the cumulative usage series equal to the generated manifest."""

from __future__ import annotations

import datetime as dt
import io

import metadata_support as md
import pytest
from breakdown_support import app_client, csv_rows, get, text_row
from openpyxl import load_workbook
from test_record_stats import D1, D2, D3, D4, LEVELS, SOURCES, planted
from web_support import END, START, national, sums, web_client

from stores import opensearch_store
from usage_stats.pipeline.metrics import METRICS
from usage_stats.pipeline.records import record_deltas, record_snapshot
from usage_stats.storage.duckdb_store import DuckDBStatsStore


@pytest.fixture(scope="module", params=["duckdb", "opensearch"])
def records(request, tmp_path_factory):
    """A store with the record statistics of D1..D4 and an admin DB with the sources."""
    tmp = tmp_path_factory.mktemp("records")
    if request.param == "duckdb":
        store = DuckDBStatsStore(tmp / "stats.duckdb")
    else:
        store = opensearch_store(batch_size=50)
    current, changes = planted(tmp).state()
    for day in (D1, D2, D3, D4):
        deltas = record_deltas(current, changes, LEVELS, day)
        store.replace_record_day(day, deltas, record_snapshot(current, changes, LEVELS, day))
    yield app_client(store, tmp, SOURCES)
    if request.param == "opensearch":
        store.delete_all()


HOLDINGS = ("files", "data_volume", "files_unknown", "volume_unknown")
NONE = (0, 0, 0, 0)
# What the planted records hold (files, bytes, records not stating files, not stating bytes)
# after each day, global, level R: D1 two articles (2 files of 3 MB; 1 file of unknown size),
# D2 a thesis (1 file, 5 MB) and a book saying nothing, D3 an article (3 files, 1,000 bytes)
# in, the 3 MB article out.
HELD_D1, HELD_D2, HELD_D3 = (3, 3_000_000, 0, 1), (4, 8_000_000, 1, 2), (5, 5_001_000, 1, 2)


def period(counts: tuple, net: tuple = NONE) -> dict:
    """A period's counts: (added, removed, net) and the change of each holding."""
    return dict(zip(("added", "removed", "net"), counts, strict=True)) | {
        f"net_{c}": v for c, v in zip(HOLDINGS, net, strict=True)
    }


def held(counts: tuple, holdings: tuple = NONE) -> dict:
    """Cumulative counts: (added, removed, total) and the holdings."""
    return dict(zip(("added", "removed", "total"), counts, strict=True)) | dict(
        zip(HOLDINGS, holdings, strict=True)
    )


def bucket(
    name: str,
    start: str,
    end: str,
    counts: tuple,
    as_of: str | None,
    total,
    net: tuple = NONE,
    holdings: tuple | None = None,
) -> dict:
    after = dict(zip(HOLDINGS, holdings or (None,) * 4, strict=True))
    return (
        {"period": name, "start": start, "end": end}
        | period(counts, net)
        | {"as_of": as_of, "total": total}
        | after
    )


def test_global_records_period_cumulative_and_daily_series(records):
    body = get(records, "/api/v1/records/global", start="2026-01-11", end="2026-01-14")
    assert body["granularity"] == "month"
    body = get(
        records, "/api/v1/records/global", start="2026-01-11", end="2026-01-14", granularity="day"
    )
    assert (body["scope"], body["key"], body["level"], body["basis"]) == (
        "global",
        "global",
        "R",
        "datestamp",
    )
    assert body["period"] == period((3, 1, 2), (2, 2_001_000, 1, 1))
    assert body["as_of"] == "2026-01-13"
    assert body["cumulative"] == held((5, 1, 4), HELD_D3)
    d2, d3 = (1, 5_000_000, 1, 1), (1, -2_999_000, 0, 0)
    assert body["series"] == [
        bucket("2026-01-11", "2026-01-11", "2026-01-11", (2, 0, 2), "2026-01-11", 4, d2, HELD_D2),
        bucket("2026-01-12", "2026-01-12", "2026-01-12", (1, 1, 0), "2026-01-12", 4, d3, HELD_D3),
        bucket("2026-01-13", "2026-01-13", "2026-01-13", (0, 0, 0), "2026-01-13", 4, NONE, HELD_D3),
        bucket("2026-01-14", "2026-01-14", "2026-01-14", (0, 0, 0), None, None),
    ]


def test_records_by_month_before_any_day_and_by_publication(records):
    body = get(records, "/api/v1/records/global", start="2025-12", end="2026-02")
    assert body["series"] == [
        bucket("2025-12", "2025-12-01", "2025-12-31", (0, 0, 0), None, None),
        bucket("2026-01", "2026-01-01", "2026-01-31", (5, 1, 4), "2026-01-13", 4, HELD_D3, HELD_D3),
        bucket("2026-02", "2026-02-01", "2026-02-28", (0, 0, 0), None, None),
    ]
    before = get(records, "/api/v1/records/global", start="2025-01-01", end="2025-12-31")
    assert before["as_of"] is None
    assert before["cumulative"] == held((0, 0, 0))
    published = get(
        records, "/api/v1/records/global", start="2026-01-01", end="2026-01-31", basis="publication"
    )
    # Live records with a publication date: the thesis, the book, repository 3's article.
    assert published["period"] == period((3, 0, 3), (4, 5_001_000, 1, 1))
    assert published["cumulative"] == held((3, 0, 3), (4, 5_001_000, 1, 1))


def test_source_and_national_node_records(records):
    one = get(records, "/api/v1/records/sources/1", start="2026-01-10", end="2026-01-13")
    assert (one["scope"], one["key"], one["level"]) == ("source", "1", "all")
    assert one["source"]["source_key"] == "repo::one"
    assert one["period"] == period((3, 1, 2), (2, 5_000_000, 0, 1))
    assert one["cumulative"] == held((3, 1, 2), (2, 5_000_000, 0, 1))
    node = get(
        records, "/api/v1/records/nodes/9", start="2026-01-10", end="2026-01-13", granularity="day"
    )
    assert (node["scope"], node["key"]) == ("national", "CR")
    assert node["cumulative"] == held((4, 1, 3), (2, 5_000_000, 1, 2))
    assert [b["net"] for b in node["series"]] == [2, 2, -1, 0]
    assert [b["total"] for b in node["series"]] == [2, 4, 3, 3]
    assert [b["data_volume"] for b in node["series"]] == [3_000_000, 8_000_000] + [5_000_000] * 2
    assert [b["net_files"] for b in node["series"]] == [3, 1, -2, 0]
    portal = get(records, "/api/v1/records/nodes/10", start="2026-01-10", end="2026-01-13")
    assert (portal["scope"], portal["cumulative"]["total"]) == ("global", 4)
    # No record at another level: level N of the country is empty, not an error.
    empty = get(records, "/api/v1/records/nodes/9", end="2026-01-13", level="N")
    assert empty["cumulative"] == held((0, 0, 0))


def row(counts: tuple, holdings: tuple, share: float) -> dict:
    """A breakdown row of values all counted within the period: (added, removed, net) and
    the holdings, held and net alike."""
    added, removed, net = counts
    return period(counts, holdings) | held((added, removed, net), holdings) | {"share": share}


def test_breakdown_by_type_top_n_with_remainder(records):
    body = get(
        records,
        "/api/v1/records/global/breakdown/resource_type",
        start="2026-01-10",
        end="2026-01-13",
        limit="2",
    )
    assert body["whole"] == period((5, 1, 4), HELD_D3) | held((5, 1, 4), HELD_D3)
    assert (body["rank_by"], body["limit"], body["multi_valued"]) == ("total", 2, False)
    assert body["values"] == [
        {"rank": 1, "value": md.ARTICLE, "values": 1} | row((3, 1, 2), (4, 1000, 0, 1), 0.5),
        # ties by value
        {"rank": 2, "value": md.BOOK, "values": 1} | row((1, 0, 1), (0, 0, 1, 1), 0.25),
    ]
    assert body["other"] == {"rank": None, "value": None, "values": 1} | row(
        (1, 0, 1), (1, 5_000_000, 0, 0), 0.25
    )
    everything = get(records, "/api/v1/records/global/breakdown/resource_type", end="2026-01-13")
    assert len(everything["values"]) == 3
    assert everything["other"]["values"] == 0
    columns = ("added", "removed", "net", "total", *HOLDINGS, *(f"net_{c}" for c in HOLDINGS))
    for column in columns:
        listed = sum(r[column] for r in body["values"]) + body["other"][column]
        assert listed == body["whole"][column] == sum(r[column] for r in everything["values"])
    assert sum(r["share"] for r in body["values"]) + body["other"]["share"] == 1.0


def test_file_formats_ranked_by_data_volume_and_files(records):
    by_volume = get(
        records,
        "/api/v1/records/global/breakdown/file_format",
        end="2026-01-13",
        rank_by="data_volume",
    )
    # The PDF article states no size; the records with no format hold all 5,001,000 bytes.
    assert [
        (r["value"], r["data_volume"], r["volume_unknown"], r["share"]) for r in by_volume["values"]
    ] == [("", 5_001_000, 1, 1.0), ("application/pdf", 0, 1, 0.0)]
    by_files = get(
        records, "/api/v1/records/global/breakdown/file_format", end="2026-01-13", rank_by="files"
    )
    assert [(r["value"], r["files"], r["share"]) for r in by_files["values"]] == [
        ("", 4, 0.8),
        ("application/pdf", 1, 0.2),
    ]


def test_breakdown_of_a_list_field_and_ranked_by_period(records):
    body = get(
        records, "/api/v1/records/sources/1/breakdown/subject", start="2026-01-10", end="2026-01-13"
    )
    assert body["multi_valued"] is True
    assert [
        (r["value"], r["added"], r["removed"], r["total"], r["share"]) for r in body["values"]
    ] == [
        ("", 1, 0, 1, 0.5),
        ("física", 2, 1, 1, 0.5),
        ("química", 1, 0, 1, 0.5),
    ]
    added = get(
        records,
        "/api/v1/records/nodes/9/breakdown/language",
        start="2026-01-11",
        end="2026-01-12",
        rank_by="added",
    )
    # D2: a thesis (por) and a book (spa) arrive; D3 removes a spa article.
    assert [(r["value"], r["added"], r["removed"], r["net"]) for r in added["values"]] == [
        ("por", 1, 0, 1),
        ("spa", 1, 1, 0),
    ]
    assert added["whole"]["added"] == 2
    assert [r["share"] for r in added["values"]] == [0.5, 0.5]


def test_csv_and_xlsx_hold_the_json_rows(records):
    for path, rows_of in (
        ("/api/v1/records/global", lambda b: b["series"]),
        ("/api/v1/records/global/breakdown/resource_type", lambda b: [*b["values"], b["other"]]),
    ):
        params = {"start": "2026-01-10", "end": "2026-01-14", "limit": "1"}
        if "breakdown" not in path:
            params = {"start": "2026-01-10", "end": "2026-01-14", "granularity": "day"}
        rows = rows_of(get(records, path, **params))
        response = records.get(path, params=params | {"format": "csv"})
        assert response.status_code == 200
        assert 'filename="records-global' in response.headers["content-disposition"]
        assert csv_rows(response.text) == [text_row(r) for r in rows]
        response = records.get(path, params=params | {"format": "xlsx"})
        sheet = load_workbook(io.BytesIO(response.content)).active
        table = list(sheet.iter_rows(values_only=True))
        assert list(table[0]) == list(rows[0])
        assert [dict(zip(table[0], r, strict=True)) for r in table[1:]] == rows


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/api/v1/records/global/breakdown/colour", {}, "field"),
        ("/api/v1/records/global", {"basis": "harvest"}, "basis"),
        ("/api/v1/records/global", {"level": "X"}, "level"),
        ("/api/v1/records/global", {"start": "2026-13-01"}, "start"),
        ("/api/v1/records/global", {"start": "2026-02-01", "end": "2026-01-01"}, "end"),
        ("/api/v1/records/global", {"granularity": "fortnight"}, "granularity"),
        ("/api/v1/records/global/breakdown/language", {"limit": "99999999999"}, "limit"),
        ("/api/v1/records/global/breakdown/language", {"limit": "0"}, "limit"),
        ("/api/v1/records/global/breakdown/language", {"rank_by": "views"}, "rank_by"),
        ("/api/v1/records/global", {"format": "pdf"}, "format"),
        ("/api/v1/records/sources/404", {}, "site_id"),
        ("/api/v1/records/sources/abc", {}, "site_id"),
        ("/api/v1/records/nodes/1", {}, "site_id"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_parameter(records, path, params, parameter):
    response = records.get(path, params=params)
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert body["error"]["parameter"] == parameter, body


web = pytest.fixture(scope="module", params=["duckdb", "opensearch"])(web_client)


def test_cumulative_usage_is_the_manifest_and_the_running_sum(web):
    client, loaded = web
    days = get(
        client,
        "/api/v1/global/cumulative",
        start=START.isoformat(),
        end=END.isoformat(),
        granularity="day",
    )["series"]
    daily = get(
        client, "/api/v1/global", start=START.isoformat(), end=END.isoformat(), granularity="day"
    )["series"]
    running = dict.fromkeys(METRICS, 0)
    for cumulative, delta in zip(days, daily, strict=True):
        running = {m: running[m] + delta[m] for m in METRICS}
        assert cumulative["as_of"] == cumulative["start"]
        assert {m: cumulative[m] for m in METRICS} == running
    assert running == sums(loaded.manifest)[()]
    node = next(s for s in loaded.sources if s.type == "N")
    later = (END + dt.timedelta(days=40)).isoformat()
    months = get(
        client,
        f"/api/v1/nodes/{node.site_id}/cumulative",
        start=START.isoformat(),
        end=(END + dt.timedelta(days=40)).isoformat(),
    )["series"]
    assert [(b["period"], b["as_of"]) for b in months] == [
        ("2026-01", "2026-01-31"),
        ("2026-02", END.isoformat()),
        ("2026-03", None),
    ]
    expected = sums(loaded.manifest, keep=national(loaded, node.country))[()]
    assert {m: months[1][m] for m in METRICS} == expected
    assert all(months[2][m] is None for m in METRICS)
    exported = csv_rows(
        client.get(
            f"/api/v1/nodes/{node.site_id}/cumulative",
            params={"start": START.isoformat(), "end": later, "format": "csv"},
        ).text
    )
    assert exported == [text_row(b) for b in months]
    repository = next(s for s in loaded.sources if s.type == "R")
    last = get(client, f"/api/v1/sources/{repository.site_id}/cumulative", end=END.isoformat())
    totals = get(
        client,
        f"/api/v1/sources/{repository.site_id}",
        start=START.isoformat(),
        end=END.isoformat(),
    )["totals"]
    assert {m: last["series"][-1][m] for m in METRICS} == totals
