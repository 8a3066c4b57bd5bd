"""Usage spikes on small planted cases: a crawler concentrated in one network block is
flagged, a reading-list spike from many blocks and countries is not, a steady item is not;
the asset stores the flags (warehouse and stats store), replaces its day on a re-run, and its
check warns."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from breakdown_support import app_client, get
from dagster import AssetCheckSeverity, DagsterInstance, materialize
from test_record_stats import SOURCES

from assets.spikes import NO_SPIKES, spikes_of_day, usage_spikes
from definitions import build_resources
from stores import opensearch_store
from usage_stats.pipeline.cleaning import SESSION_SCHEMA
from usage_stats.pipeline.metrics import DELTA_SCHEMA
from usage_stats.pipeline.spikes import (
    SPIKE_SCHEMA,
    SpikeRules,
    candidates,
    day_origins,
    day_usage,
    flag_spikes,
    over_baseline,
    unit_column,
)
from usage_stats.settings import Settings
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.lake import LakeReadError
from usage_stats.storage.open import open_lake
from usage_stats.storage.warehouse import Warehouse

DAY = dt.date(2026, 1, 15)
HISTORY = [DAY - dt.timedelta(days=n) for n in range(10, 0, -1)]
RULES = SpikeRules(factor=5, baseline_days=28, min_history_days=7, min_count=50)
COUNTRIES = ["BR", "AR", "CL", "MX", "CO", "PE", "UY", "EC", "CR", "SV"]
# owners: the crawled repository 1, the course's repository 2, the steady one 3
CRAWLED, READING, STEADY, QUIET = "oai:r1:crawled", "oai:r2:course", "oai:r3:steady", "oai:r1:q"


def events(item: str, owner: int, n: int, *, blocks: int, countries: list[str], first: int = 0):
    """`n` views of `item`, spread round-robin over `blocks` blocks (and sessions) and the
    given countries."""
    return [
        {
            "item_id": item,
            "owner_site_id": owner,
            "action": "view",
            "country": countries[i % len(countries)],
            "block_hash": first + i % blocks,
            "session_id": 10_000 * owner + i,
        }
        for i in range(n)
    ]


def planted_day() -> pl.DataFrame:
    """The day: a crawler (300 views of one item from one block, one country), a reading list
    (300 views of one paper from 150 blocks in 10 countries), steady items as every day."""
    rows = (
        events(CRAWLED, 1, 300, blocks=1, countries=["US"], first=9_000)
        + events(CRAWLED, 1, 10, blocks=10, countries=["BR"])
        + events(READING, 2, 300, blocks=150, countries=COUNTRIES, first=100)
        + events(READING, 2, 10, blocks=10, countries=["BR"])
        + events(STEADY, 3, 60, blocks=40, countries=["BR", "AR"], first=500)
        + events(QUIET, 1, 5, blocks=5, countries=["BR"])
    )
    frame = pl.DataFrame(rows).with_columns(
        pl.lit(DAY).alias("date"),
        pl.lit(1, dtype=pl.Int32).alias("site_id"),
        pl.lit("R").alias("level"),
        pl.col("session_id").alias("visit_id"),
        pl.lit(dt.datetime(2026, 1, 15, 12, tzinfo=dt.UTC)).alias("event_time"),
        pl.col("block_hash").cast(pl.UInt64),
    )
    return frame.select(*SESSION_SCHEMA).cast(SESSION_SCHEMA)


def stored_history() -> list[tuple[dt.date, pl.DataFrame]]:
    """What the store holds for the 10 days before: each item 10 a day in BR, the steady one
    55 a day; and the `source` rollups of them."""
    days = []
    for day in HISTORY:
        rows = []
        for key, owner, n in ((CRAWLED, 1, 10), (READING, 2, 10), (STEADY, 3, 55)):
            for scope, k in (("item", key), ("source", str(owner))):
                rows.append(
                    {"date": day, "scope": scope, "key": k, "site_id": 1, "level": "R"}
                    | {"owner_site_id": owner, "country": "BR"}
                    | {m: n for m in DELTA_SCHEMA if m.startswith("total_item_inv")}
                )
        deltas = pl.DataFrame(rows).with_columns(
            *(pl.lit(0).alias(m) for m in DELTA_SCHEMA if m not in rows[0])
        )
        days.append((day, deltas.select(list(DELTA_SCHEMA)).cast(DELTA_SCHEMA)))
    return days


def history_frame() -> pl.DataFrame:
    frames = [d.filter(pl.col("scope").is_in(["item", "source"])) for _, d in stored_history()]
    return pl.concat(frames).select(
        "scope", "key", "date", "country", pl.col("total_item_investigations").alias("usage")
    )


def flags(day: pl.DataFrame, rules: SpikeRules = RULES, unit: str = "block_hash"):
    return flag_spikes(DAY, day_origins([day], unit), history_frame(), HISTORY, rules, unit)


def test_a_crawler_in_one_block_is_flagged_a_reading_list_and_a_steady_item_are_not():
    got = flags(planted_day())
    assert got.schema == SPIKE_SCHEMA
    rows = {(r["scope"], r["key"]): r for r in got.to_dicts()}
    assert set(rows) == {("item", CRAWLED), ("source", "1")}
    crawler = rows[("item", CRAWLED)]
    assert crawler["usage"] == 310 and crawler["baseline"] == 10.0 and crawler["factor"] == 31.0
    # top 3 blocks: 300 + 1 + 1 of an excess of 300 → capped at 1
    assert crawler["top_blocks_share"] == 1.0 and crawler["units"] == 11
    assert crawler["top_countries"] == "US"
    assert crawler["top_countries_share"] == pytest.approx(300 / 300)
    assert crawler["reason"] == "blocks+countries" and crawler["unit"] == "block_hash"
    assert crawler["owner_site_id"] == 1 and crawler["history_days"] == 10
    # the repository: 310 + 5 against a baseline of 10
    assert rows[("source", "1")]["usage"] == 315
    # top 3 blocks: the crawler's and two shared by both items (2 each) of 305 over 10
    assert rows[("source", "1")]["top_blocks_share"] == pytest.approx(304 / 305, abs=1e-4)


def test_the_reading_list_spike_is_a_spike_but_not_concentrated():
    """Its figures pass the spike test (310 > 5 × 10) and fail both concentration tests;
    lowering the block threshold below its real share flags it, so the rule can fail."""
    lax = dataclasses.replace(RULES, block_share=0.015, country_share=2.0)
    got = flags(planted_day(), lax).filter(pl.col("key") == READING)
    assert got.height == 1
    # top 3 blocks: 2 + 2 + 2 (300 views from 150 blocks) of an excess of 310 - 10
    assert got.item(0, "top_blocks_share") == pytest.approx(6 / 300, abs=1e-4)
    assert got.item(0, "top_countries_share") < RULES.country_share


def test_steady_usage_and_too_little_history_are_not_flagged():
    day = planted_day().filter(pl.col("item_id").cast(pl.String) == STEADY)
    assert flags(day).is_empty()
    short = flag_spikes(
        DAY, day_origins([planted_day()], "block_hash"), history_frame(), HISTORY[:6], RULES, "x"
    )
    assert short.is_empty()  # 6 stored days < min_history_days


def test_without_block_hash_the_origin_is_the_session():
    """A day's sessions without `block_hash` (before network blocks were hashed): the unit is
    the COUNTER session, so a crawler spread over many sessions is not concentrated."""
    day = planted_day().drop("block_hash")
    unit = unit_column(day.columns)
    assert unit == "session_id"
    got = flag_spikes(DAY, day_origins([day], unit), history_frame(), HISTORY, RULES, unit)
    crawler = got.filter(pl.col("key") == CRAWLED)
    assert crawler.item(0, "unit") == "session_id"
    assert crawler.item(0, "reason") == "countries"  # one country still; 300 sessions


def test_bad_rules_are_refused_naming_the_parameter():
    with pytest.raises(ValueError, match="factor"):
        SpikeRules(factor=0.5)
    with pytest.raises(ValueError, match="min_history_days"):
        SpikeRules(baseline_days=3, min_history_days=5)


def _run(settings: Settings, instance: DagsterInstance):
    return materialize(
        [usage_spikes],
        partition_key=DAY.isoformat(),
        resources=build_resources(settings),
        instance=instance,
    )


def test_the_asset_stores_the_flags_replaces_its_day_and_its_check_warns(tmp_path: Path):
    settings = dataclasses.replace(
        Settings.current(),
        warehouse_url=str(tmp_path / "warehouse"),
        duckdb_path=str(tmp_path / "stats.duckdb"),
        stats_store="duckdb",
    )
    store = DuckDBStatsStore(Path(settings.duckdb_path))
    for day, deltas in stored_history():
        store.replace_day(day, deltas, deltas)  # (a snapshot makes it a stored day)
    warehouse = Warehouse(open_lake(settings.warehouse_url))
    warehouse.write("sessions", DAY, planted_day())
    instance = DagsterInstance.ephemeral()

    result = _run(settings, instance)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed, c.severity) for c in checks] == [
        (NO_SPIKES, False, AssetCheckSeverity.WARN)
    ]
    stored = store.spikes(DAY, DAY)
    assert stored.select("scope", "key").rows() == [("item", CRAWLED), ("source", "1")]
    assert warehouse.read("usage_spikes", DAY).to_dicts() == stored.to_dicts()
    metadata = result.asset_materializations_for_node("usage_spikes")[0].metadata
    assert CRAWLED in metadata["spikes"].value

    # the crawler's events removed (as a cleaning rule would): the re-run clears the day
    warehouse.write("sessions", DAY, planted_day().filter(pl.col("block_hash") != 9_000))
    again = _run(settings, instance)
    assert again.success
    assert store.spikes(DAY, DAY).is_empty()
    (check,) = again.get_asset_check_evaluations()
    assert check.passed


@pytest.fixture(scope="module", params=["duckdb", "opensearch"])
def spike_client(request, tmp_path_factory):
    """The web app over a store holding the planted day's flags (source 1: the crawler)."""
    tmp = tmp_path_factory.mktemp("spikes-web")
    store = (
        DuckDBStatsStore(tmp / "stats.duckdb")
        if request.param == "duckdb"
        else opensearch_store(batch_size=200)
    )
    store.replace_spike_day(DAY, flags(planted_day()))
    yield app_client(store, tmp, SOURCES)
    if request.param == "opensearch":
        store.delete_all()


def test_the_spikes_endpoint_answers_a_sources_flags_and_4xx_on_bad_input(spike_client):
    body = get(spike_client, "/api/v1/sources/1/spikes", start="2026-01-01", end="2026-01-31")
    assert body["days"] == ["2026-01-15"]
    assert [(s["scope"], s["key"], s["reason"]) for s in body["spikes"]] == [
        ("item", CRAWLED, "blocks+countries"),
        ("source", "1", "blocks+countries"),
    ]
    first = body["spikes"][0]
    assert (first["usage"], first["baseline"], first["factor"]) == (310, 10.0, 31.0)
    assert (first["top_countries"], first["top_blocks_share"]) == ("US", 1.0)
    assert get(spike_client, "/api/v1/sources/2/spikes", start="2026-01-01")["spikes"] == []
    outside = get(spike_client, "/api/v1/sources/1/spikes", start="2026-01-16", end="2026-02-01")
    assert outside["days"] == []
    assert spike_client.get("/api/v1/sources/404/spikes").status_code == 404
    assert spike_client.get("/api/v1/sources/x/spikes").status_code in (400, 404)
    bad = spike_client.get("/api/v1/sources/1/spikes", params={"start": "2026-13-01"})
    assert bad.status_code == 400 and "start" in bad.text
    backwards = {"start": "2026-02-01", "end": "2026-01-01"}
    assert spike_client.get("/api/v1/sources/1/spikes", params=backwards).status_code == 400


def test_a_day_in_pieces_counts_as_the_day_whole():
    """An item used on two sites is in two pieces: its origins add up across them."""
    day = planted_day()
    other_site = day.filter(pl.col("item_id").cast(pl.String) == CRAWLED).head(100)
    other_site = other_site.with_columns(pl.lit(2, dtype=pl.Int32).alias("site_id"))
    whole = pl.concat([day, other_site])
    order = ["scope", "key", "unit", "country"]
    one = day_origins([whole], "block_hash", 50).sort(order)
    two = day_origins([day, other_site], "block_hash", 50).sort(order)
    assert one.equals(two)
    crawled = one.filter((pl.col("scope") == "item") & (pl.col("key") == CRAWLED))
    assert crawled.get_column("n").sum() == 410
    # keys below min_count are left out (QUIET: 5 uses; repository 3: 60 ≥ 50 stays)
    assert QUIET not in one.get_column("key").to_list()
    assert "3" in one.filter(pl.col("scope") == "source").get_column("key").to_list()


def test_the_two_pass_path_flags_exactly_what_the_full_breakdown_does():
    """The asset looks at usage per key first (`day_usage`), breaks down by origin only the
    keys above baseline (`over_baseline`): the flags are the same as from every key's
    origins."""
    day = planted_day()
    usage = day_usage([day])
    assert usage.equals(candidates(day_origins([day], "block_hash"), SpikeRules(min_count=1)))
    wanted = usage.filter(pl.col("usage") >= RULES.min_count)
    above = over_baseline(wanted, history_frame(), HISTORY, RULES)
    assert above.select("scope", "key").rows() == [
        ("item", CRAWLED),
        ("item", READING),
        ("source", "1"),
        ("source", "2"),
    ]
    origins = day_origins([day], "block_hash", RULES.min_count, only=above)
    assert set(origins.select("scope", "key").unique().rows()) == set(
        above.select("scope", "key").rows()
    )
    narrow = flag_spikes(DAY, origins, history_frame(), HISTORY, RULES, "block_hash")
    assert narrow.equals(flags(day))


class CountingWarehouse(Warehouse):
    """Records which columns of which tables the spikes stage decodes."""

    reads: list

    def parts(self, table, day, read_ahead=False, columns=None):
        self.reads.append((table, None if columns is None else tuple(columns)))
        yield from super().parts(table, day, read_ahead, columns)


def _spike_stores(tmp_path: Path, history: list) -> tuple[CountingWarehouse, DuckDBStatsStore]:
    store = DuckDBStatsStore(tmp_path / "stats.duckdb")
    for day, deltas in history:
        store.replace_day(day, deltas, deltas)
    warehouse = CountingWarehouse(open_lake(str(tmp_path / "warehouse")))
    object.__setattr__(warehouse, "reads", [])
    warehouse.write("sessions", DAY, planted_day())
    return warehouse, store


def test_too_little_history_reads_nothing_of_the_day(tmp_path: Path):
    """Fewer stored days than `min_history_days`: no spike is possible, and not one part of
    the day's events is decoded (only the footer, for the origin column)."""
    warehouse, store = _spike_stores(tmp_path, stored_history()[:6])
    assert spikes_of_day(warehouse, store, DAY, RULES).is_empty()
    assert warehouse.reads == []


def test_the_stage_decodes_only_the_columns_it_counts(tmp_path: Path):
    """With a baseline: three columns for the usage per key, five for the candidates'
    origins, and the same flags as from the whole day."""
    warehouse, store = _spike_stores(tmp_path, stored_history())
    got = spikes_of_day(warehouse, store, DAY, RULES)
    assert got.equals(flags(planted_day()))
    assert warehouse.reads == [
        ("sessions", ("action", "item_id", "owner_site_id")),
        ("sessions", ("action", "item_id", "owner_site_id", "block_hash", "country")),
    ]


def test_a_day_not_materialised_is_named(tmp_path: Path):
    warehouse, store = _spike_stores(tmp_path, stored_history())
    with pytest.raises(LakeReadError, match="no 'sessions' for 2026-01-16"):
        spikes_of_day(warehouse, store, DAY + dt.timedelta(days=1), RULES)
