"""Item metadata end to end, with planted truth (issue 14): generated usage and the records
the OAI-PMH test provider serves for it, harvested and indexed through Dagster
(`item_metadata` → `item_metadata_index`), then the usage assets of the generated days into
the DuckDB stats store; the web app answers from there.

The generator tracks every item under its OAI identifier. Here the national node (site 4)
records the items of harvested records with a DOI under that DOI (a resolver URL, upper
case), and the portal (site 5) records every harvested item under its handle URL: the
identifier cross-walk must count all of it on the record's OAI item and its repository, so
the stored item rows are exactly the manifest's (which counts every use under the OAI key).
SUSHI IR describes each item by its planted record; IR_A1 lists its journal articles only.
The cross-walk's aliases reach the web too: the API asked for a DOI answers the OAI item.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, materialize
from fastapi.testclient import TestClient
from test_pipeline import RANGE_TAGS, run

from conftest import DAYS, GeneratedData, generate
from definitions import build_resources
from oai_support import Provider
from resources import HarvestSettings
from support import item_metrics, manifest_items
from usage_stats.admin.registry import DayStatus, list_sources, record_processing, update_source
from usage_stats.admin.sushi import add_customer
from usage_stats.demo.oai_records import planted_records, provider_dataset
from usage_stats.demo.synthetic import SyntheticConfig, items_per_site
from usage_stats.pipeline.identifiers import normalize_identifier
from usage_stats.pipeline.metrics import METRICS
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.web import create_app, sushi

CONFIG = SyntheticConfig(start=dt.date(2026, 1, 1), days=3)  # conftest.generate's default
NODE, PORTAL = 4, 5
CUSTOMER, REQUESTOR = "repo1-e2e", "harvester-e2e"
COAR_TYPE = "http://purl.org/coar/resource_type/"
COAR_ACCESS = "http://purl.org/coar/access_right/"
# COUNTER R5.1 Data_Type of each COAR type the generator plants (none: Unspecified).
DATA_TYPES = {
    COAR_TYPE + "c_6501": "Article",
    COAR_TYPE + "c_7a1f": "Thesis_or_Dissertation",
    COAR_TYPE + "c_bdcc": "Thesis_or_Dissertation",
    COAR_TYPE + "c_db06": "Thesis_or_Dissertation",
    COAR_TYPE + "c_c94f": "Conference_Item",
    COAR_TYPE + "c_2f33": "Book_Segment",
    COAR_TYPE + "c_93fc": "Report",
    None: "Unspecified",
}
# Access_Type in January 2026 (every planted embargo ends in 2027).
ACCESS_TYPES = {
    COAR_ACCESS + "c_abf2": "Open",
    COAR_ACCESS + "c_f1cf": "Controlled",
    COAR_ACCESS + "c_16ec": "Controlled",
    COAR_ACCESS + "c_14cb": "Controlled",
}
COUNTER = {
    "Total_Item_Investigations": "total_item_investigations",
    "Unique_Item_Investigations": "unique_item_investigations",
    "Total_Item_Requests": "total_item_requests",
    "Unique_Item_Requests": "unique_item_requests",
}


def _respell(data: GeneratedData, records: dict[str, dict]) -> dict[str, int]:
    """Rewrite the node's and the portal's events in the lake: a harvested item's OAI id
    becomes its DOI (node; `https://doi.org/10.5555/…` upper-cased) or its handle URL
    (portal). Returns how many events each site now records under a DOI or handle."""
    rewritten: dict[str, int] = {}
    lake = Path(data.settings.lake_url)
    for site in (NODE, PORTAL):
        for path in sorted((lake / "events" / f"idsite={site}").rglob("*.parquet")):
            events = pl.read_parquet(path)
            slots = [c.removeprefix("custom_var_k") for c in events.columns if "_var_k" in c]
            for slot in slots:
                values = events.get_column(f"custom_var_v{slot}")
                spelled = {}
                for value in values.drop_nulls().unique():
                    record = records.get(normalize_identifier(value) or "")
                    if record is None:
                        continue
                    if site == NODE and record["doi"]:
                        spelled[value] = f"https://doi.org/{record['doi'].upper()}"
                    elif site == PORTAL:
                        spelled[value] = f"https://hdl.handle.net/{record['handle'][4:]}"
                if spelled:
                    new = values.replace(spelled)
                    rewritten[str(site)] = rewritten.get(str(site), 0) + int((new != values).sum())
                    events = events.with_columns(new.alias(f"custom_var_v{slot}"))
            events.write_parquet(path)
    return rewritten


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    provider = Provider()
    data = generate(tmp_path_factory.mktemp("e2e") / "data", CONFIG)
    url = data.settings.admin_db_url
    manifest = data.manifest
    # A record the provider serves as deleted carries no metadata (its identifiers are not
    # known to a first harvest): only the live records' DOIs and handles can resolve.
    records = {r["item_key"]: r for r in manifest["metadata"]["records"] if not r["deleted"]}
    deleted = {r["item_key"] for r in manifest["metadata"]["records"] if r["deleted"]}
    assert deleted
    rewritten = _respell(data, records)
    assert rewritten[str(NODE)] > 0 and rewritten[str(PORTAL)] > 0
    sources = list_sources(url)
    for source in sources:
        if source.type == "R":
            update_source(url, source.site_id, oai_base_url=provider.url(source.source_key))
    sources = list_sources(url)
    served = planted_records(sources, items_per_site(CONFIG), CONFIG.seed)
    provider.put(provider_dataset(sources, served, 7))  # small pages: resumption tokens
    resources = build_resources(data.settings) | {
        "harvest_settings": HarvestSettings(delay=0, timeout=10, max_retries=1)
    }
    from assets.item_metadata import item_metadata
    from assets.item_metadata_index import item_metadata_index

    instance = DagsterInstance.ephemeral()
    harvested = materialize(
        [item_metadata, item_metadata_index], resources=resources, instance=instance
    )
    assert harvested.success
    index_events = harvested.asset_materializations_for_node("item_metadata_index")
    result = run(data, tags=RANGE_TAGS, instance=instance)
    assert result.success
    # processing complete for all of January, so SUSHI delivers the month
    now = dt.datetime.now(dt.UTC)
    days = [dt.date(2026, 1, d) for d in range(4, 32)]
    record_processing(
        url, [DayStatus(s.site_id, d, 0, 0, 0, {}, "test", now) for s in sources for d in days]
    )
    _, api_key = add_customer(url, CUSTOMER, "Repository 1", [1], requestor_id=REQUESTOR)
    store = DuckDBStatsStore(Path(data.settings.duckdb_path))
    client = TestClient(create_app(store, url), raise_server_exceptions=False)
    yield {
        "data": data,
        "manifest": manifest,
        "records": records,
        "deleted": deleted,
        "sources": {s.source_key: s.site_id for s in sources},
        "index_metadata": {k: v.value for k, v in index_events[0].metadata.items()},
        "result": result,
        "store": store,
        "client": client,
        "api_key": api_key,
    }
    provider.close()


def test_use_under_a_doi_or_handle_counts_on_the_records_item_and_owner(e2e):
    """Every stored item row is the manifest's (which counts the node's DOIs and the
    portal's handles under the OAI key), on every day; the moved rows are owned by the
    record's repository; the cleaning says how many events it moved."""
    data, manifest, records = e2e["data"], e2e["manifest"], e2e["records"]
    owner_of_record = {k: e2e["sources"][r["source_key"]] for k, r in records.items()}
    warehouse = data.warehouse()
    moved_owners = set()
    for day in DAYS:
        date = dt.date.fromisoformat(day)
        deltas = warehouse.read("item_daily_deltas", date)
        assert item_metrics(deltas) == manifest_items(manifest, [day])
        items = deltas.filter((pl.col("scope") == "item") & pl.col("site_id").is_in([NODE, PORTAL]))
        for key, owner in items.select("key", "owner_site_id").iter_rows():
            assert not key.startswith(("10.", "hdl:")), key  # nothing left under an alias
            if key in records:
                assert owner == owner_of_record[key], key
                moved_owners.add(owner)
    assert moved_owners == {1, 2, 3}
    reported = [
        {k: v.value for k, v in e.materialization.metadata.items()}
        for e in e2e["result"].get_asset_materialization_events()
        if e.materialization.asset_key.path == ["sessions"]
    ]
    assert sum(r["crosswalk_rekeyed"] for r in reported) > 0
    assert all(r["crosswalk_ambiguous"] == 0 for r in reported)
    # the stats store holds the same: item totals per key over the days
    stored = e2e["store"].sums("item", dt.date(2026, 1, 1), dt.date(2026, 1, 3), by=("key",))
    want: dict[str, list[int]] = defaultdict(lambda: [0] * len(METRICS))
    for entry in manifest["items"]:
        for n, metric in enumerate(METRICS):
            want[entry["item_id"]][n] += entry[metric]
    got = {row["key"]: [row[m] for m in METRICS] for row in stored.iter_rows(named=True)}
    assert got == dict(want)


def metadata_keys(e2e) -> set[str]:
    """Every record's own key: the cross-walk resolves it to itself, the store keeps none."""
    return set(e2e["records"]) | e2e["deleted"]


def test_item_metadata_index_records_the_items_and_the_aliases(e2e):
    """The materialisation `item_metadata_index` lacked a test of: every harvested record
    in the store with its planted fields, and each DOI and handle resolving to its item."""
    records, store = e2e["records"], e2e["store"]
    metadata = e2e["index_metadata"]
    assert metadata["dagster/row_count"] == len(records) + len(e2e["deleted"])
    assert metadata["deleted"] == len(e2e["deleted"])
    assert metadata["crosswalk_ambiguous_aliases"] == 0
    assert metadata["aliases_stored"] == metadata["crosswalk_aliases"] - len(metadata_keys(e2e))
    gone = store.item_metadata(tuple(e2e["deleted"]))
    assert gone.height == len(e2e["deleted"]) and gone.get_column("deleted").all()
    stored = store.item_metadata(tuple(records))
    assert stored.height == len(records)
    for row in stored.iter_rows(named=True):
        planted = records[row["item_key"]]
        for field in ("title", "creators", "publication_year", "resource_type", "doi"):
            assert row[field] == planted[field], (row["item_key"], field)
        assert row["handle"] == planted["handle"] and not row["deleted"]
    aliases = {r["doi"]: k for k, r in records.items() if r["doi"]} | {
        r["handle"]: k for k, r in records.items()
    }
    assert store.resolve_aliases(tuple(aliases)) == aliases
    assert store.resolve_aliases(tuple(records)) == {}  # own keys are themselves


def test_the_api_by_doi_or_handle_answers_the_oai_items_figures(e2e):
    manifest, records, client = e2e["manifest"], e2e["records"], e2e["client"]
    per_item: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(METRICS, 0))
    for entry in manifest["items"]:
        for metric in METRICS:
            per_item[entry["item_id"]][metric] += entry[metric]
    used = [k for k in records if k in per_item and records[k]["doi"]]
    assert used
    for key in used[:5]:
        record = records[key]
        for asked in (
            f"https://doi.org/{record['doi'].upper()}",
            f"https://hdl.handle.net/{record['handle'][4:]}",
        ):
            response = client.get(
                "/api/v1/items",
                params={"identifier": asked, "start": "2026-01-01", "end": "2026-01-03"},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["key"] == key
            assert body["totals"] == per_item[key]
            assert body["title"] == record["title"]


def _report(e2e, path: str, **extra) -> dict:
    params = {
        "customer_id": CUSTOMER,
        "requestor_id": REQUESTOR,
        "api_key": e2e["api_key"],
        "begin_date": "2026-01",
        "end_date": "2026-01",
    } | extra
    response = e2e["client"].get(f"/r51/reports/{path}", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body["Report_Header"].get("Exceptions"), body["Report_Header"]
    return body


def _items(body: dict) -> dict[str, dict]:
    out = {}
    for report_item in body["Report_Items"]:
        for item in report_item.get("Items", [report_item]):
            out[item["Item_ID"]["Proprietary"].removeprefix("usage_stats:")] = item
    return out


def _counter_sums(manifest: dict, site_prefix: str) -> dict[str, dict[str, int]]:
    """Per item of repository 1: its COUNTER figures on every site (R, N, L)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTER, 0))
    for entry in manifest["items"]:
        if entry["item_id"].startswith(site_prefix):
            for name, metric in COUNTER.items():
                out[entry["item_id"]][name] += entry[metric]
    return {k: v for k, v in out.items() if any(v.values())}


@pytest.fixture
def pinned_today(monkeypatch):
    monkeypatch.setattr(sushi, "today", lambda: dt.date(2026, 6, 15))


def test_sushi_ir_describes_each_item_by_its_planted_record(e2e, pinned_today):
    """IR of repository 1's customer: exactly its items with usage, each with the planted
    title, authors (first three), publication date, DOI, Data_Type, YOP and Access_Type,
    and the use of the node's DOIs and the portal's handles in its figures."""
    records, manifest = e2e["records"], e2e["manifest"]
    body = _report(e2e, "ir", attributes_to_show="Authors|Publication_Date|YOP|Access_Type")
    items = _items(body)
    expected = _counter_sums(manifest, "oai:repo1.example.org:")
    assert set(items) == set(expected)
    described = 0
    for key, item in items.items():
        record = records.get(key)
        totals = dict.fromkeys(COUNTER, 0)
        for performance in item["Attribute_Performance"]:
            for name, months in performance["Performance"].items():
                totals[name] += sum(months.values())
        assert totals == expected[key], key
        if record is None:  # beyond the planted records, or deleted: nothing described
            assert item["Attribute_Performance"][0]["Data_Type"] == "Unspecified"
            continue
        described += 1
        assert item["Item"] == record["title"]
        assert [a["Name"] for a in item.get("Authors", [])] == record["creators"][:3]
        assert item.get("Publication_Date") == record["publication_date"]
        assert item["Item_ID"].get("DOI") == record["doi"]
        year = str(record["publication_year"]) if record["publication_year"] else "0001"
        for performance in item["Attribute_Performance"]:
            assert performance["Data_Type"] == DATA_TYPES[record["resource_type"]], key
            assert performance["YOP"] == year, key
            assert performance["Access_Type"] == ACCESS_TYPES[record["access_rights"]], key
    assert described > 10


def test_sushi_ir_a1_lists_only_the_journal_articles(e2e, pinned_today):
    records, manifest = e2e["records"], e2e["manifest"]
    items = _items(_report(e2e, "ir_a1"))
    expected = _counter_sums(manifest, "oai:repo1.example.org:")
    articles = {
        k
        for k in expected
        if k in records
        and DATA_TYPES[records[k]["resource_type"]] == "Article"
        and (expected[k]["Total_Item_Requests"] or expected[k]["Unique_Item_Requests"])
    }
    assert articles and set(items) == articles
    for key, item in items.items():
        assert item["Item"] == records[key]["title"]
        requests = sum(
            sum(p["Performance"].get("Total_Item_Requests", {}).values())
            for p in item["Attribute_Performance"]
        )
        assert requests == expected[key]["Total_Item_Requests"]


def test_the_sushi_item_id_filter_by_doi_reports_the_oai_item(e2e, pinned_today):
    records = e2e["records"]
    expected = _counter_sums(e2e["manifest"], "oai:repo1.example.org:")
    key = next(k for k in sorted(expected) if k in records and records[k]["doi"])
    items = _items(_report(e2e, "ir", item_id=f"doi:{records[key]['doi']}"))
    assert list(items) == [key]
