"""The identifier cross-walk (issue 14, item 3): use recorded under a harvested record's DOI,
handle or URL on any site counts on the record's OAI item and its repository. Planted
records and events, exact expected rows."""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl
import pytest

from support import at, events
from usage_stats.admin.sources import Source, sources_frame
from usage_stats.metadata.schema import ITEM_METADATA_SCHEMA
from usage_stats.metadata.store import MetadataStore, apply_harvest
from usage_stats.pipeline.cleaning import SESSION_SCHEMA, CleaningRules, clean_events
from usage_stats.pipeline.crosswalk import (
    AMBIGUOUS,
    CROSSWALK_SCHEMA,
    OWN_KEY,
    REKEYED,
    UNMATCHED,
    ambiguous_claims,
    crosswalk_summary,
    crosswalk_table,
    resolve_keys,
)
from usage_stats.pipeline.identifiers import normalize_identifier
from usage_stats.pipeline.metrics import METRICS, daily_deltas
from usage_stats.pipeline.processing import clean_piece, source_crosswalk

# Repository X (Kerwa) declares only its OAI prefix: its DOIs and handles reach it through
# its harvested records. Repository two declares the publisher's DOI prefix 10.15517, which
# Kerwa's records also use: the record is the more specific knowledge and wins.
KERWA = Source(1, "opendoar::1", "Kerwa", "R", "CR", "oai:www.kerwa.ucr.ac.cr:", 1, 4, 5)
REPO2 = Source(
    2, "opendoar::2", "Repo two", "R", "AR", "oai:repo2.example.org:", 1, 4, 5,
    doi_prefixes=("10.15517",),
)  # fmt: skip
NATIONAL = Source(4, "national::CR", "National node", "N", "CR", None, 1, None, 5)
PORTAL = Source(5, "regional::LA", "Portal", "L", None, None, 6)
SOURCES = [KERWA, REPO2, NATIONAL, PORTAL]
REPOSITORIES = [1, 2]

A = "oai:www.kerwa.ucr.ac.cr:10669/578"  # Kerwa's live record
B = "oai:www.kerwa.ucr.ac.cr:10669/9"  # Kerwa's deleted record
C = "oai:www.kerwa.ucr.ac.cr:10669/100"  # Kerwa's, shares a DOI with D
D = "oai:repo2.example.org:1/2"  # repository two's, lists A's key among its identifiers
E = "oai:repo2.example.org:1/3"  # repository two's, took over a DOI of deleted B
F = "oai:other.host:7"  # repository two's, under an OAI prefix nobody declares
G = "oai:www.kerwa.ucr.ac.cr:10669/777"  # harvested from repository two, Kerwa's prefix
NODE = "oai:node.cr:123"  # the national node's copy of A


def record(site: int, oai: str, *identifiers: str, deleted: bool = False) -> dict:
    """One harvested record: its identifiers as written, normalised as the mapping does."""
    written = [oai, *identifiers]
    return {
        "source_key": f"source::{site}",
        "site_id": site,
        "oai_identifier": oai,
        "item_key": normalize_identifier(oai),
        "deleted": deleted,
        "identifiers": written,
        "item_keys": [normalize_identifier(w) for w in written],
    }


def metadata(*rows: dict) -> pl.DataFrame:
    lists = {n for n, t in ITEM_METADATA_SCHEMA.items() if isinstance(t, pl.List)}
    full = [
        {n: row.get(n, [] if n in lists else None) for n in ITEM_METADATA_SCHEMA} for row in rows
    ]
    return pl.DataFrame(full, schema=ITEM_METADATA_SCHEMA, orient="row")


RECORDS = metadata(
    record(
        1, A, "https://doi.org/10.15517/REV.1", "http://hdl.handle.net/10669/578",
        "https://www.kerwa.ucr.ac.cr/items/abc",
    ),
    record(1, B, "doi:10.15517/old.9", "10.15517/moved", deleted=True),
    record(1, C, "10.9999/shared"),
    record(2, D, "info:doi/10.9999/SHARED", A),
    record(2, E, "10.15517/moved"),
    record(2, F),
    record(2, G),
    # the national node republishes A: an aggregator's record owns nothing
    record(4, NODE, "10.15517/rev.1", "hdl:10669/578"),
)  # fmt: skip

# Each event a visit of its own on the site named: (site, spelling, action).
PLANTED = [
    (5, "https://doi.org/10.15517/REV.1", "view"),  # the portal, a DOI
    (4, "https://hdl.handle.net/10669/578", "view"),  # the national node, a handle URL
    (4, "https://www.kerwa.ucr.ac.cr/handle/10669/578", "download"),  # a repository handle URL
    (5, "https://www.kerwa.ucr.ac.cr/items/abc", "view"),  # the record's landing page
    (1, A, "view"),  # the repository itself, the OAI id
    (5, "doi:10.15517/old.9", "view"),  # a deleted record's DOI
    (5, "10.9999/shared", "view"),  # ambiguous: C and D both carry it
    (5, "10.15517/moved", "view"),  # deleted B and live E carry it: E
    (5, F, "view"),  # own key, no declared prefix: the record's repository
    (1, F, "view"),  # … also on another repository's site
    (5, G, "view"),  # own key, declared prefix: the declaration's owner
    (4, NODE, "view"),  # the node's own OAI id: no repository's record
]
EXPECTED_ITEMS = {
    # (site, item key): (owner, views, downloads)
    (5, A): (1, 2, 0),
    (4, A): (1, 1, 1),
    (1, A): (1, 1, 0),
    (5, B): (1, 1, 0),
    (5, "10.9999/shared"): (None, 1, 0),
    (5, E): (2, 1, 0),
    (5, F): (2, 1, 0),
    (1, F): (2, 1, 0),
    (5, G): (1, 1, 0),
    (4, NODE): (None, 1, 0),
}


def planted_events(plan=PLANTED) -> pl.DataFrame:
    return events(
        *(
            {
                "site_id": site,
                "visit_id": i,
                "raw_identifier": spelling,
                "action": action,
                "action_type": 1 if action == "view" else 3,
                "url": f"https://site{site}.example.org/{i}",
                "event_time": at(i),
            }
            for i, (site, spelling, action) in enumerate(plan, start=1)
        )
    )


def crosswalk() -> pl.DataFrame:
    return crosswalk_table(RECORDS, REPOSITORIES)


def item_rows(deltas: pl.DataFrame) -> dict[tuple, tuple]:
    return {
        (r["site_id"], r["key"]): (r["owner_site_id"], r["views"], r["downloads"])
        for r in deltas.filter(pl.col("scope") == "item").iter_rows(named=True)
    }


def test_the_table_resolves_each_alias_to_its_record():
    table = crosswalk()
    assert table.schema == CROSSWALK_SCHEMA
    rows = {
        r["alias"]: (r["item_key"], r["owner_site_id"], r["ambiguous"]) for r in table.to_dicts()
    }
    assert rows == {
        A: (A, 1, False),  # D lists it too, but a record's own key wins
        "10.15517/rev.1": (A, 1, False),  # the node's copy claims nothing
        "hdl:10669/578": (A, 1, False),
        "https://www.kerwa.ucr.ac.cr/items/abc": (A, 1, False),
        B: (B, 1, False),
        "10.15517/old.9": (B, 1, False),  # deleted: still its record's
        "10.15517/moved": (E, 2, False),  # a live record's identifier beats a deleted one's
        C: (C, 1, False),
        "10.9999/shared": (None, None, True),  # ambiguous
        D: (D, 2, False),
        E: (E, 2, False),
        F: (F, 2, False),
        G: (G, 2, False),
    }
    assert crosswalk_summary(table) == {
        "crosswalk_aliases": 12,
        "crosswalk_ambiguous_aliases": 1,
    }
    assert ambiguous_claims(RECORDS, REPOSITORIES).rows() == [
        ("10.9999/shared", D, 2, False),
        ("10.9999/shared", C, 1, False),
    ]


def test_without_naming_the_repositories_every_record_claims():
    rows = {r["alias"]: r["ambiguous"] for r in crosswalk_table(RECORDS).to_dicts()}
    assert rows["10.15517/rev.1"] and rows["hdl:10669/578"]
    assert not rows[NODE]


def test_two_deleted_records_or_two_own_keys_are_ambiguous_too():
    table = crosswalk_table(
        metadata(
            record(1, B, "10.1/x", deleted=True),
            record(2, E, "10.1/x", deleted=True),
            record(1, F),
            record(2, F),  # one OAI id harvested from two repositories
        )
    )
    rows = {r["alias"]: (r["item_key"], r["ambiguous"]) for r in table.to_dicts()}
    assert rows["10.1/x"] == (None, True) and rows[F] == (None, True)
    assert crosswalk_table(metadata()).is_empty()


def test_resolve_keys_works_on_distinct_keys_and_keeps_the_declared_owner_of_own_keys():
    keys = pl.Series(["10.15517/rev.1", A, G, F, "10.9999/shared", "nothing", None])
    owners = pl.Series([2, 1, 1, None, None, None, None], dtype=pl.Int32)
    item, owner, status = resolve_keys(keys, owners, crosswalk())
    assert item.to_list() == [A, A, G, F, "10.9999/shared", "nothing", None]
    assert owner.to_list() == [1, 1, 1, 2, None, None, None]
    assert status.to_list() == [REKEYED, OWN_KEY, OWN_KEY, OWN_KEY, AMBIGUOUS, UNMATCHED, UNMATCHED]
    # a table without its hashes (hand-made) works the same
    same = resolve_keys(keys, owners, crosswalk().drop("alias_hash"))
    assert [s.to_list() for s in same] == [item.to_list(), owner.to_list(), status.to_list()]
    untouched = resolve_keys(keys, owners, None)
    assert untouched[0].to_list() == keys.to_list() and untouched[1].to_list() == owners.to_list()


def test_a_doi_on_the_portal_and_a_handle_on_the_node_count_on_the_repositorys_item():
    result = clean_events(planted_events(), sources_frame(SOURCES), crosswalk=crosswalk())
    assert result.rejected.height == 0 and result.sessions.height == len(PLANTED)
    assert result.sessions.schema == pl.Schema(SESSION_SCHEMA)
    # 10.15517/rev.1, the two handle URLs, the landing page, old.9 and moved
    assert result.crosswalk == {"crosswalk_rekeyed": 6, "crosswalk_ambiguous": 1}
    deltas = daily_deltas(result.sessions)
    assert item_rows(deltas) == EXPECTED_ITEMS
    sources = {
        (r["key"], r["site_id"], r["level"]): (r["views"], r["downloads"])
        for r in deltas.filter(pl.col("scope") == "source").iter_rows(named=True)
    }
    assert sources == {
        ("1", 1, "R"): (1, 0),
        ("1", 4, "N"): (1, 1),
        ("1", 5, "L"): (4, 0),  # A twice, deleted B, G
        ("2", 1, "R"): (1, 0),  # F used on Kerwa's site is still repository two's
        ("2", 5, "L"): (2, 0),  # E, F
    }


def test_without_a_crosswalk_the_same_events_count_as_before():
    """The control: no harvested records, no change (the DOI under repository two's declared
    prefix, the handles nobody declares unowned)."""
    plain = clean_events(planted_events(), sources_frame(SOURCES))
    assert plain.crosswalk == {}
    items = item_rows(daily_deltas(plain.sessions))
    assert items[(5, "10.15517/rev.1")] == (2, 1, 0)
    assert items[(4, "hdl:10669/578")] == (None, 1, 1)
    assert items[(1, F)] == (1, 1, 0)  # the site-of-use fallback
    assert (5, A) not in items
    # an empty table is no table
    empty = clean_events(planted_events(), sources_frame(SOURCES), crosswalk=crosswalk()[:0])
    assert empty.sessions.equals(plain.sessions)
    assert empty.crosswalk == {"crosswalk_rekeyed": 0, "crosswalk_ambiguous": 0}


def test_the_crosswalk_moves_use_between_keys_and_never_changes_a_total():
    plain = daily_deltas(clean_events(planted_events(), sources_frame(SOURCES)).sessions)
    walked = daily_deltas(
        clean_events(planted_events(), sources_frame(SOURCES), crosswalk=crosswalk()).sessions
    )

    def totals(deltas: pl.DataFrame, scope: str, by: str = "site_id") -> list[tuple]:
        rows = deltas.filter(pl.col("scope") == scope)
        return rows.group_by(by).agg(pl.col(m).sum() for m in METRICS).sort(by).rows()

    for scope in ("item", "site"):
        assert totals(walked, scope) == totals(plain, scope), scope
    assert totals(walked, "global", "level") == totals(plain, "global", "level")
    # every scope of the crosswalked day adds up to its items (a source's: its owned items)
    items = walked.filter(pl.col("scope") == "item")
    assert totals(walked, "site") == totals(items, "item")
    assert totals(walked, "global", "level") == totals(items, "item", "level")
    owned = items.filter(pl.col("owner_site_id").is_not_null())
    assert totals(walked, "source", "owner_site_id") == totals(owned, "item", "owner_site_id")
    assert totals(walked, "source") == totals(owned, "item")


def test_two_spellings_in_one_session_are_one_unique_investigation():
    """A visitor on the portal opening the DOI and then the landing page of one record used
    one item: COUNTER's unique investigations count it once (twice without the cross-walk)."""
    same_visit = events(
        {"site_id": 5, "visit_id": 1, "raw_identifier": "10.15517/rev.1", "url": "u1"},
        {"site_id": 5, "visit_id": 1, "raw_identifier": A, "url": "u2", "event_time": at(60)},
    )

    def unique(crosswalk_table_: pl.DataFrame | None) -> dict:
        deltas = daily_deltas(
            clean_events(same_visit, sources_frame(SOURCES), crosswalk=crosswalk_table_).sessions
        )
        rows = deltas.filter(pl.col("scope") == "item")
        return dict(rows.select("key", "unique_item_investigations").iter_rows())

    assert unique(None) == {"10.15517/rev.1": 1, A: 1}
    assert unique(crosswalk()) == {A: 1}


def test_the_day_in_pieces_equals_the_day_whole_with_the_crosswalk():
    """Pieces hold whole sites, and the cross-walk works per distinct key: each site cleaned
    on its own gives exactly the rows of the whole day."""
    raw = planted_events(PLANTED * 3)
    rules, table = CleaningRules(), source_crosswalk(RECORDS, SOURCES)
    whole = clean_piece(raw, SOURCES, rules, table)
    pieces = [
        clean_piece(raw.filter(pl.col("site_id") == site), SOURCES, rules, table)
        for site in sorted(set(raw.get_column("site_id")))
    ]

    def rows(frame: pl.DataFrame) -> pl.DataFrame:
        frame = frame.with_columns(pl.col(pl.Categorical).cast(pl.String))
        return frame.sort(frame.columns, nulls_last=True)

    assert rows(pl.concat([p.sessions for p in pieces])).equals(rows(whole.sessions))
    assert daily_deltas(p.sessions for p in pieces).equals(daily_deltas(whole.sessions))
    assert (
        {k: sum(p.crosswalk[k] for p in pieces) for k in whole.crosswalk}
        == whole.crosswalk
        == {"crosswalk_rekeyed": 18, "crosswalk_ambiguous": 3}
    )


@pytest.mark.parametrize("records", [None, metadata()])
def test_no_harvested_records_no_crosswalk(records):
    assert source_crosswalk(records, SOURCES) is None


def test_an_aggregator_record_is_nobodys_even_under_its_own_key():
    """Only repositories own items: a registry without repositories (here every source made a
    national node) leaves a cross-walk that resolves nothing."""
    table = source_crosswalk(RECORDS, [dataclasses.replace(s, type="N") for s in SOURCES])
    assert table is not None and table.is_empty()


def test_one_record_stored_twice_or_listing_an_identifier_twice_is_one_claim():
    twice = record(1, A, "10.1/a", "doi:10.1/A", "10.1/a")
    table = crosswalk_table(metadata(twice, {**twice, "source_key": "again", "deleted": True}))
    rows = {
        r["alias"]: (r["item_key"], r["owner_site_id"], r["ambiguous"]) for r in table.to_dicts()
    }
    assert rows == {A: (A, 1, False), "10.1/a": (A, 1, False)}
    assert ambiguous_claims(metadata(twice)).is_empty()


def test_three_repositories_holding_one_doi_are_all_named():
    three = metadata(
        record(1, A, "10.1/x"), record(2, D, "10.1/x"), record(3, "oai:r3:1", "10.1/x")
    )
    assert ambiguous_claims(three).select("item_key", "site_id").rows() == [
        ("oai:r3:1", 3),
        (D, 2),
        (A, 1),
    ]


def test_the_pipeline_in_pieces_with_harvested_records_counts_the_moved_items(generated, tmp_path):
    """Through Dagster, with the cleaning asset reading the harvested records the warehouse
    holds (`MetadataStore`, as the item_metadata asset writes them): a third of the
    generated items are records of another key that list the tracked OAI id among their
    identifiers. Each moved item's planted numbers come out under its record's key, owned by
    its repository, and the day in pieces (one site each) equals the day whole."""
    from test_pipeline import RANGE_TAGS, in_pieces, run, warehouse

    from conftest import DAYS, generate
    from support import item_metrics, manifest_items

    keys = sorted({i["item_id"] for i in generated.manifest["items"]})
    moved = {k: f"oai:records.example.org:{n}" for n, k in enumerate(keys) if n % 3 == 0}
    moved = {k: v for k, v in moved.items() if k.startswith("oai:repo")}
    owner = {v: int(k.split(":")[1].removeprefix("repo").split(".")[0]) for k, v in moved.items()}
    records = metadata(*(record(owner[new], new, old) for old, new in moved.items()))
    harvested_at = dt.datetime(2026, 1, 4, tzinfo=dt.UTC)

    def harvest(data) -> None:
        """The records stored as the item_metadata asset stores them, one source each."""
        store = MetadataStore(data.warehouse().lake)
        for (key,), frame in records.group_by("source_key"):
            applied = apply_harvest(store.read_current(key), frame, harvested_at)
            store.write(key, applied, "2026-01-04T00:00:00Z")

    whole = generate(tmp_path / "whole", kind=generated.kind)
    harvest(whole)
    assert run(whole, tags=RANGE_TAGS).success
    pieces = in_pieces(generated)
    harvest(pieces)
    result = run(pieces, tags=RANGE_TAGS)
    assert result.success
    reported = {
        e.materialization.partition: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.path == ["sessions"]
    }
    wh_whole, wh_pieces = warehouse(whole), warehouse(pieces)
    for day in DAYS:
        date = dt.date.fromisoformat(day)
        for table in ("sessions", "item_daily_deltas"):
            ours, theirs = wh_pieces.read(table, date), wh_whole.read(table, date)
            ours = ours.with_columns(pl.col(pl.Categorical).cast(pl.String))
            theirs = theirs.with_columns(pl.col(pl.Categorical).cast(pl.String))
            assert ours.sort(ours.columns, nulls_last=True).equals(
                theirs.sort(theirs.columns, nulls_last=True)
            ), (table, day)
        deltas = wh_pieces.read("item_daily_deltas", date)
        want = {
            (d, site, moved.get(item, item), country): metrics
            for (d, site, item, country), metrics in manifest_items(
                generated.manifest, [day]
            ).items()
        }
        assert item_metrics(deltas) == want
        items = deltas.filter((pl.col("scope") == "item") & pl.col("key").is_in(list(owner)))
        assert items.height > 0
        assert all(owner[k] == o for k, o in items.select("key", "owner_site_id").iter_rows())
        kept = wh_pieces.read("sessions", date).get_column("item_id").cast(pl.String)
        assert reported[day]["crosswalk_rekeyed"] == kept.is_in(list(owner)).sum() > 0
        assert reported[day]["crosswalk_ambiguous"] == 0
