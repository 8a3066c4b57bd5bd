"""Referrers and unique visitors on planted truth: Matomo's referrer classification, the
referrer subcount that adds up to the total, distinct visitors per scope, the chained
referrer snapshot, and a planted day through the usage-subcount assets into a store."""

from __future__ import annotations

import datetime as dt
import random

import metadata_support as md
import polars as pl
import pytest

import usage_stats.pipeline.referrer_subcounts as usage_by_visit
from usage_stats.pipeline import referrers
from usage_stats.pipeline.cleaning import SESSION_SCHEMA
from usage_stats.pipeline.metrics import METRICS, daily_deltas
from usage_stats.pipeline.referrer_subcounts import (
    VISIT_USAGE_COLUMNS,
    _summed,
    cumulative_referrers,
    indexed_visits,
    referrer_item_rows,
    referrer_subcounts,
    unique_visitors,
    visit_usage,
    visitor_cells,
)
from usage_stats.pipeline.referrers import (
    classify_visits,
    read_visit_referrers,
    referrer_host,
)
from usage_stats.pipeline.usage_subcounts import (
    OTHER,
    OWNER_SCHEMA,
    USAGE_SINGLE_FIELDS,
    USAGE_SUBCOUNT_SCHEMA,
    VISIT_FIELDS,
    full_subcounts,
    item_fields,
    top_n,
    total_mismatches,
)
from usage_stats.storage.lake import LakeReadError, write_leaf
from usage_stats.storage.open import open_lake

DAY = dt.date(2026, 3, 2)
OWNERS = pl.DataFrame([(1, "CR"), (2, "AR")], schema=OWNER_SCHEMA, orient="row")


def test_host_of_a_referrer_url():
    urls = [
        "https://www.SciELO.org/article?q=secret",
        "http://user:pw@repo.example.ar:8080/x",
        "https://scholar.google.com./scholar?q=x",
        "ftp://[2001:DB8::1]/file",
        "HTTPS://WWW.Example.COM",
        "www.no-scheme.org/path",
        "https:///no-host",
        "https://bad host.org/",
        "",
        None,
    ]
    hosts = pl.select(referrer_host(pl.Series(urls, dtype=pl.String))).to_series().to_list()
    assert hosts == [
        "scielo.org",
        "repo.example.ar",
        "scholar.google.com",
        "[2001:db8::1]",
        "example.com",
        None,
        None,
        None,
        None,
        None,
    ]


def visits_frame(rows: list[tuple]) -> pl.DataFrame:
    """Raw Matomo visits: (site, visit, visitor, referer_type, referer_name, referer_url)."""
    return pl.DataFrame(
        rows,
        schema={
            "idsite": pl.UInt32(),
            "idvisit": pl.UInt64(),
            "idvisitor": pl.Binary(),
            "referer_type": pl.UInt8(),
            "referer_name": pl.String(),
            "referer_url": pl.String(),
        },
        orient="row",
    )


def test_each_matomo_referrer_type_is_classified():
    raw = visits_frame(
        [
            (1, 1, b"v", 1, None, None),
            (1, 2, b"v", 2, "Google", "https://www.google.com/search?q=tesis"),
            (1, 3, b"v", 2, None, "https://duckduckgo.com/?q=x"),
            (1, 4, b"v", 3, "www.scielo.org", "https://www.scielo.org/a?b=c"),
            (1, 5, b"v", 6, "  Boletín   Mayo ", "https://x.org/?mtm_campaign=b"),
            (1, 6, b"v", 7, "Facebook", "https://m.facebook.com/"),
            (1, 7, b"v", None, None, None),
            (1, 8, b"v", 0, None, "https://ignored.org"),
            (1, 9, b"v", 4, "odd", "https://odd.org"),
            (1, 10, b"v", 3, None, "not a url"),
            (1, 11, b"v", 2, None, None),
            (1, 12, b"v", 3, "portal.org", "mailto:x"),
            (1, 13, b"v", 3, None, ""),
            (1, 2, b"w", 1, None, None),  # visit 2 listed again: the first row wins
        ]
    )
    visits, problems = classify_visits(raw)
    assert visits.get_column("referrer").to_list() == [
        "direct",
        "search:google",
        "search:duckduckgo.com",
        "website:scielo.org",
        "campaign:boletín mayo",
        "social:facebook",
        "",
        "",
        "",
        "website",
        "search",
        "website:portal.org",
        "website",
    ]
    assert problems.as_dict() == {"unknown_type": 1, "unreadable_url": 2}
    assert visits.schema["visitor_id"] == pl.UInt64


def test_referrers_sharing_a_hash_are_still_told_apart(monkeypatch):
    """Visits take their referrer by a hash of (type, name, URL) only when no two distinct
    referrers of the day share it; a hash that tells nothing apart gives the same answer."""
    raw = visits_frame(
        [
            (1, 1, b"v", 1, None, None),
            (1, 2, b"v", 2, "Google", "https://www.google.com/search?q=tesis"),
            (1, 3, b"v", 3, None, "https://www.scielo.org/a"),
            (1, 4, b"v", 2, "Google", "https://www.google.com/search?q=tesis"),
            (1, 5, b"v", None, None, None),
        ]
    )
    hashed = classify_visits(raw)
    monkeypatch.setattr(referrers, "_referrer_hash", lambda: pl.lit(1, dtype=pl.UInt64))
    colliding = classify_visits(raw)
    expected = ["direct", "search:google", "website:scielo.org", "search:google", ""]
    assert hashed[0].get_column("referrer").to_list() == expected
    assert colliding[0].equals(hashed[0])
    assert colliding[1].as_dict() == hashed[1].as_dict()


def test_a_visit_id_of_two_sites_is_two_visits_and_order_is_kept():
    """Visit ids all distinct (Matomo's one counter): every row kept in order, without the
    pass that looks for duplicates; one id on two sites: two visits, not one listed twice."""
    rows = [
        (2, 9, b"a", 1, None, None),
        (1, 4, b"b", 2, "Google", "https://www.google.com/"),
        (1, 7, b"c", 1, None, None),
    ]
    visits, _ = classify_visits(visits_frame(rows))
    assert visits.select("site_id", "visit_id", "referrer").rows() == [
        (2, 9, "direct"),
        (1, 4, "search:google"),
        (1, 7, "direct"),
    ]
    visits, _ = classify_visits(visits_frame([*rows, (1, 9, b"d", 2, "Bing", None)]))
    assert visits.select("site_id", "visit_id", "referrer").rows() == [
        (2, 9, "direct"),
        (1, 4, "search:google"),
        (1, 7, "direct"),
        (1, 9, "search:bing"),
    ]


def test_missing_referrer_columns_are_unknown_not_an_error():
    raw = pl.DataFrame({"idsite": [1, 1], "idvisit": [1, 2]})
    visits, problems = classify_visits(raw)
    assert visits.get_column("referrer").to_list() == ["", ""]
    assert visits.get_column("visitor_id").to_list() == [None, None]
    assert problems.as_dict() == {"unknown_type": 0, "unreadable_url": 0}


# The planted day. Visits: (site, visit, visitor, type, name, url); site 9 is a national node.
VISITS = [
    (1, 100, b"v1", 2, "Google", "https://www.google.com/search?q=x"),
    (1, 101, b"v1", 3, None, "https://www.scielo.org/article"),
    (1, 102, b"v2", 1, None, None),
    (1, 103, b"v5", 9, None, None),  # a type Matomo does not define: unknown, counted
    # visit 104 of site 1 is missing from the visits files: unknown, its own visitor
    (2, 200, b"v3", 6, "Boletín", "https://x.org/?mtm_campaign=boletin"),
    (2, 201, b"v2", 1, None, None),  # visitor v2 again, on another site
    (9, 900, b"v4", 7, "Facebook", "https://facebook.com/x"),
]
# Kept events: (site, level, visit, action, item, owner); the session is the visit.
EVENTS = [
    (1, "R", 100, "view", "a", 1),
    (1, "R", 100, "download", "a", 1),
    (1, "R", 101, "view", "a", 1),
    (1, "R", 102, "view", "b", 1),
    (1, "R", 102, "view", "a", 1),
    (1, "R", 103, "view", "a", 1),
    (1, "R", 104, "download", "b", 1),
    (2, "R", 200, "view", "c", 2),
    (2, "R", 201, "view", "c", 2),
    (2, "R", 201, "view", "c", 2),
    (9, "N", 900, "view", "a", 1),
    (9, "N", 900, "view", "x", None),  # an item nobody owns: global only
]


def sessions_frame() -> pl.DataFrame:
    start = dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC)
    rows = [
        (DAY, site, level, visit, visit, start + dt.timedelta(seconds=i), action, item, owner, "CR")
        for i, (site, level, visit, action, item, owner) in enumerate(EVENTS)
    ]
    columns = ["date", "site_id", "level", "session_id", "visit_id", "event_time", "action"]
    columns += ["item_id", "owner_site_id", "country"]
    frame = pl.DataFrame(rows, schema=columns, orient="row")
    return frame.with_columns(pl.lit(None).alias("block_hash")).cast(SESSION_SCHEMA)


def metric_rows(frame: pl.DataFrame, scope: str, key: str, level: str) -> dict[str, tuple]:
    """value → (views, downloads, total_item_investigations) of the referrer rows."""
    picked = frame.filter(
        (pl.col("scope") == scope)
        & (pl.col("key") == key)
        & (pl.col("level") == level)
        & (pl.col("field") == "referrer")
    )
    return {
        r["value"]: (r["views"], r["downloads"], r["total_item_investigations"])
        for r in picked.iter_rows(named=True)
    }


def test_referrer_subcount_and_unique_visitors_of_a_planted_day():
    visits, problems = classify_visits(visits_frame(VISITS))
    assert problems.as_dict() == {"unknown_type": 1, "unreadable_url": 0}
    sessions = sessions_frame()
    full = referrer_subcounts(referrer_item_rows(sessions, visits), OWNERS, DAY)
    source_1 = {
        "search:google": (1, 1, 2),
        "website:scielo.org": (1, 0, 1),
        "direct": (2, 0, 2),
        "": (1, 1, 2),  # visit 103 (undefined type) and visit 104 (no visit row)
    }
    assert metric_rows(full, "source", "1", "R") == source_1
    assert metric_rows(full, "national", "CR", "R") == source_1
    assert metric_rows(full, "source", "1", "N") == {"social:facebook": (1, 0, 1)}
    assert metric_rows(full, "source", "2", "R") == {
        "campaign:boletín": (1, 0, 1),
        "direct": (1, 0, 2),
    }
    assert metric_rows(full, "global", "global", "R") == {
        "search:google": (1, 1, 2),
        "website:scielo.org": (1, 0, 1),
        "direct": (3, 0, 4),
        "campaign:boletín": (1, 0, 1),
        "": (1, 1, 2),
    }
    assert metric_rows(full, "global", "global", "N") == {"social:facebook": (2, 0, 2)}
    visitors = unique_visitors(visitor_cells(sessions, visits), OWNERS, DAY)
    # one join for both (what the asset runs) gives the same rows
    rows, cells = visit_usage(sessions, visits)
    reference = _summed(referrer_item_rows(sessions, visits))
    assert rows.sort(rows.columns).equals(reference.select(rows.columns).sort(rows.columns))
    assert cells.sort(cells.columns).equals(visitor_cells(sessions, visits).sort(cells.columns))
    assert visitors.select("scope", "key", "level", "visitors").rows() == [
        ("global", "global", "N", 1),
        ("global", "global", "R", 5),  # v1, v2 (two sites, one visitor), v3, v5, visit 104
        ("national", "AR", "R", 2),
        ("national", "CR", "N", 1),
        ("national", "CR", "R", 4),
        ("source", "1", "N", 1),
        ("source", "1", "R", 4),
        ("source", "2", "R", 2),
    ]
    # the asset's pieces (whole sites each) give the same counts, and a visitor of one owner
    # and level in two pieces is one visitor of its repository too
    pieces = [
        visit_usage(sessions.filter(pl.col("site_id").is_in(sites)), visits)[1]
        for sites in ([1], [2, 9])
    ]
    assert unique_visitors(pieces, OWNERS, DAY).equals(visitors)
    assert unique_visitors([cells, cells.reverse()], OWNERS, DAY).equals(visitors)


def random_day(seed: int, events: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Kept events and classified visits of a random day: 5 sites (levels R, R, N, L, R),
    40 items (some owned by nobody), the three actions, a tenth of the events without a visit id
    (surrogate sessions of a few users), a tenth of the visits missing from the visits
    files, visitors shared across visits and sites, some without a visitor id."""
    rng = random.Random(seed)
    levels = {1: "R", 2: "R", 3: "N", 4: "L", 5: "R"}
    rows = []
    for i in range(events):
        site = rng.randint(1, 5)
        visit = rng.randint(1, events // 4) if rng.random() > 0.1 else None
        item = rng.randint(0, 39)
        owner = None if item >= 36 else item % 5 + 1
        action = rng.choice(["view", "view", "download", "outlink"])
        at = dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC) + dt.timedelta(seconds=i)
        user = f"u{rng.randint(1, 5)}"
        rows.append((DAY, site, levels[site], user, visit, at, action, f"i{item}", owner, "BR"))
    columns = ["date", "site_id", "level", "user", "visit_id", "event_time", "action"]
    columns += ["item_id", "owner_site_id", "country"]
    # sessions as cleaning makes them: the visit's, else a surrogate of site and user
    session = (
        pl.when(pl.col("visit_id").is_not_null())
        .then(pl.struct("site_id", "visit_id", "date").hash(seed=1))
        .otherwise(pl.struct("site_id", "user").hash(seed=2))
    )
    sessions = (
        pl.DataFrame(rows, schema=columns, orient="row")
        .with_columns(session.alias("session_id"), pl.lit(None).alias("block_hash"))
        .select(list(SESSION_SCHEMA))
        .cast(SESSION_SCHEMA)
    )
    kinds = [1, 2, 3, 6, 7, None]
    names = {2: "Google", 3: "www.scielo.org", 6: "boletin", 7: "Facebook"}
    visits = visits_frame(
        [
            (
                site,
                visit,
                None if rng.random() < 0.1 else f"v{rng.randint(1, events // 8)}".encode(),
                kind,
                names.get(kind),
                f"https://www.host{rng.randint(1, 4)}.org/x" if kind == 3 else None,
            )
            for site in range(1, 6)
            for visit in range(1, events // 4 + 1)
            if rng.random() > 0.1
            for kind in [rng.choice(kinds)]
        ]
    )
    return sessions, classify_visits(visits)[0]


def one_counter(frame: pl.DataFrame) -> pl.DataFrame:
    """Visit ids numbered as Matomo does, by one counter for all sites (distinct across
    sites), where `random_day` numbers each site's visits from 1."""
    return frame.with_columns(pl.col("visit_id") * 8 + pl.col("site_id"))


@pytest.mark.parametrize("counter", ["per site", "one"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_visit_usage_equals_the_reference_on_random_days(seed: int, counter: str, monkeypatch):
    """`visit_usage` against the reference it replaced (every event joined,
    `metrics.item_deltas` keyed by referrer), row for row after the roll-up, and the
    visitor counts; also with site ids too wide to pack and with string item ids. Visit ids
    of one counter are looked up by id (`canonical.visit_rows`); ids repeated across sites
    take the join of the pairs (`_joined_visit_usage`): each path is checked to be taken."""
    sessions, visits = random_day(seed, 3_000)
    if counter == "one":
        sessions, visits = one_counter(sessions), one_counter(visits)

    joins = []
    join = usage_by_visit._joined_visit_usage
    monkeypatch.setattr(
        usage_by_visit, "_joined_visit_usage", lambda *args: joins.append(1) or join(*args)
    )
    owners = pl.DataFrame(
        [(s, "BR" if s < 4 else "AR") for s in range(1, 6)], schema=OWNER_SCHEMA, orient="row"
    )

    def result(rows: pl.DataFrame, cells: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        referrers = referrer_subcounts(rows, owners, DAY)
        visitors = unique_visitors(cells, owners, DAY)
        return referrers.sort(referrers.columns), visitors

    expected = result(referrer_item_rows(sessions, visits), visitor_cells(sessions, visits))
    assert expected[0].height > 50 and expected[0].get_column("views").sum() > 500
    wide = sessions.with_columns(
        pl.when(pl.col("site_id") == 5).then(2**30).otherwise(pl.col("site_id")).alias("site_id")
    )
    wide_visits = visits.with_columns(
        pl.when(pl.col("site_id") == 5).then(2**30).otherwise(pl.col("site_id")).alias("site_id")
    )
    wide_owners = owners.with_columns(
        pl.when(pl.col("owner_site_id") == 5).then(2**30).otherwise(pl.col("owner_site_id"))
    )
    for frame, visit_rows, scope_owners in (
        (sessions, visits, owners),
        (sessions.with_columns(pl.col("item_id").cast(pl.String)), visits, owners),
        (wide, wide_visits, wide_owners),
    ):
        got = result(*visit_usage(frame, visit_rows))
        # the asset decodes only VISIT_USAGE_COLUMNS of the stored sessions
        assert set(VISIT_USAGE_COLUMNS) < set(frame.columns)
        narrow = result(*visit_usage(frame.select(VISIT_USAGE_COLUMNS), visit_rows))
        assert narrow[0].equals(got[0]) and narrow[1].equals(got[1])
        if scope_owners is owners:
            assert got[0].equals(expected[0])
            assert got[1].equals(expected[1])
        else:  # the same figures under the other site id
            want = result(referrer_item_rows(frame, visit_rows), visitor_cells(frame, visit_rows))
            got = result(*visit_usage(frame, visit_rows))
            assert got[0].equals(want[0]) and got[1].equals(want[1])
    # piece by piece, as the asset joins them: each piece of whole sites against all the
    # day's visits (only its own sites' are joined), the pieces' rows and cells summed
    pieces = [sessions.filter(pl.col("site_id").is_in(s)) for s in ([1, 2], [3, 4, 5])]
    assert all(piece.height for piece in pieces)
    parts = [visit_usage(piece, visits) for piece in pieces]
    coded, index = indexed_visits(visits)
    assert (index is None) == (counter == "per site")
    # and as the asset does it: the day's visits indexed once for all its pieces
    once = [visit_usage(piece.select(VISIT_USAGE_COLUMNS), coded, index) for piece in pieces]
    for (rows, cells), (rows_once, cells_once) in zip(parts, once, strict=True):
        assert rows.sort(rows.columns).equals(rows_once.sort(rows.columns))
        assert cells.sort(cells.columns).equals(cells_once.sort(cells.columns))
    referrers = referrer_subcounts([rows for rows, _ in parts], owners, DAY)
    visitors = unique_visitors([cells for _, cells in parts], owners, DAY)
    assert referrers.sort(referrers.columns).equals(expected[0])
    assert visitors.equals(expected[1])
    # a wrong pair is seen: a download turned into a view changes the rows
    changed = sessions.with_columns(
        pl.when(
            pl.int_range(pl.len()) == sessions.get_column("action").eq("download").arg_true()[0]
        )
        .then(pl.lit("view"))
        .otherwise(pl.col("action").cast(pl.String))
        .alias("action")
    ).cast(SESSION_SCHEMA)
    assert not result(*visit_usage(changed, visits))[0].equals(expected[0])
    assert bool(joins) == (counter == "per site")


def test_referrer_rows_add_up_to_the_usage_total_in_every_metric():
    """The referrer subcount against the totals built from the item deltas, as the asset
    does: every metric of every scope, before and after top-N."""
    visits, _ = classify_visits(visits_frame(VISITS))
    sessions = sessions_frame()
    fields = item_fields(md.frame(md.record("a"), md.record("b")))
    totals = full_subcounts(daily_deltas(sessions), fields, OWNERS, DAY)
    referrers = referrer_subcounts(referrer_item_rows(sessions, visits), OWNERS, DAY)
    single = (*USAGE_SINGLE_FIELDS, *VISIT_FIELDS)
    both = pl.concat([totals, referrers])
    assert total_mismatches(both, single) == 0
    assert total_mismatches(top_n(both, 1), single) == 0
    # a referrer row lost is seen
    assert total_mismatches(both.filter(pl.col("value") != "direct"), single) > 0
    cut = metric_rows(top_n(both, 1), "global", "global", "R")
    # top 1 by any metric: direct by views, search:google by downloads
    assert cut == {
        "direct": (3, 0, 4),
        "search:google": (1, 1, 2),
        "": (1, 1, 2),
        OTHER: (2, 0, 2),
    }


def subcount(rows: list[tuple], day: dt.date = DAY) -> pl.DataFrame:
    """Subcount rows (scope, key, level, field, value, views); other metrics 0."""
    full = [
        (day, s, k, lv, f, v, views, *(0,) * (len(METRICS) - 1), None)
        for s, k, lv, f, v, views in rows
    ]
    return pl.DataFrame(full, schema=USAGE_SUBCOUNT_SCHEMA, orient="row")


def test_cumulative_referrers_chain_and_put_the_unexplained_under_unknown():
    g = ("global", "global", "R")
    previous = subcount(
        [(*g, "total", "", 10), (*g, "referrer", "direct", 6), (*g, "referrer", "search:google", 4)]
    )
    delta = subcount(
        [(*g, "total", "", 3), (*g, "referrer", "direct", 1), (*g, "referrer", "website:a.org", 2)]
    )
    totals = subcount([(*g, "total", "", 13)])
    chained = cumulative_referrers(previous, delta, totals, n=2)
    assert dict(chained.select("value", "views").rows()) == {
        "direct": 7,
        "search:google": 4,
        OTHER: 2,
    }
    assert chained.get_column("date").unique().to_list() == [DAY]
    # the first day of referrers: the cumulative use before them is unknown
    first = cumulative_referrers(None, delta, subcount([(*g, "total", "", 50)]), n=20)
    assert dict(first.select("value", "views").rows()) == {
        "": 47,
        "direct": 1,
        "website:a.org": 2,
    }
    # an OTHER carried from yesterday stays in OTHER, never ranked as a value
    carried = subcount([(*g, "total", "", 9), (*g, "referrer", OTHER, 9)])
    again = cumulative_referrers(carried, delta, subcount([(*g, "total", "", 12)]), n=5)
    assert again.select("value", "views").rows() == [
        (OTHER, 9),
        ("direct", 1),
        ("website:a.org", 2),
    ]


def test_visits_files_read_only_what_is_needed_and_bad_files_are_named(tmp_path):
    lake = open_lake(str(tmp_path / "lake"))
    wide = visits_frame(VISITS[:4]).with_columns(pl.lit("Firefox").alias("config_browser_name"))
    write_leaf(lake, "visits", 1, DAY, wide)
    write_leaf(lake, "visits", 2, DAY, visits_frame(VISITS[4:6]).drop("referer_url"))
    visits, problems = read_visit_referrers(lake, DAY)
    assert visits.sort("site_id", "visit_id").select("visit_id", "referrer").rows() == [
        (100, "search:google"),
        (101, "website:scielo.org"),
        (102, "direct"),
        (103, ""),
        (200, "campaign:boletín"),
        (201, "direct"),
    ]
    assert problems.unknown_type == 1
    write_leaf(lake, "visits", 3, DAY, pl.DataFrame({"idsite": [3]}))
    with pytest.raises(LakeReadError, match=r"site=3.*missing required column\(s\) idvisit"):
        read_visit_referrers(lake, DAY)


def test_planted_day_through_the_assets_into_the_store(tmp_path):
    """The usage_subcounts job over the planted day: the add-up checks pass with the
    referrer, the store answers the referrer subcount and the unique visitors exactly, and
    the snapshot's referrers add up to its total with no cumulative visitors."""
    from dagster import materialize
    from dagster_aws.s3 import S3Resource

    from assets.usage_subcounts import usage_subcount_deltas, usage_subcount_snapshots
    from resources import (
        AdminDbResource,
        DuckDBStatsStoreResource,
        LakeResource,
        WarehouseResource,
    )
    from usage_stats.admin import db
    from usage_stats.admin.registry import add_source
    from usage_stats.admin.sources import Source
    from usage_stats.pipeline.snapshots import next_snapshot
    from usage_stats.storage.duckdb_store import DuckDBStatsStore
    from usage_stats.storage.warehouse import Warehouse

    url = f"sqlite:///{tmp_path / 'admin.db'}"
    db.upgrade(url)
    for source in (
        Source(1, "repo::1", "Repo 1", "R", "cr", None, 1),
        Source(2, "repo::2", "Repo 2", "R", "ar", None, 1),
        Source(9, "node::cr", "Nodo CR", "N", "cr", None, 1),
    ):
        add_source(url, source)
    lake = open_lake(str(tmp_path / "lake"))
    for site in (1, 2, 9):
        write_leaf(lake, "visits", site, DAY, visits_frame([v for v in VISITS if v[0] == site]))
    warehouse = Warehouse(open_lake(str(tmp_path / "warehouse")))
    sessions = sessions_frame()
    deltas = daily_deltas(sessions)
    warehouse.write("sessions", DAY, sessions)
    warehouse.write("item_daily_deltas", DAY, deltas)
    warehouse.write("usage_snapshots", DAY, next_snapshot(None, deltas, DAY))
    resources = {
        "warehouse": WarehouseResource(url=str(tmp_path / "warehouse"), s3=S3Resource()),
        "lake": LakeResource(url=str(tmp_path / "lake"), s3=S3Resource()),
        "admin_db": AdminDbResource(url=url),
        "stats_store": DuckDBStatsStoreResource(path=str(tmp_path / "stats.duckdb")),
    }
    result = materialize(
        [usage_subcount_deltas, usage_subcount_snapshots],
        resources=resources,
        partition_key=DAY.isoformat(),
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 3 and all(c.passed for c in checks)
    reading = result.asset_materializations_for_node("usage_subcount_deltas")[0].metadata
    assert reading["referrer_reading_per_day"].value == {
        DAY.isoformat(): {"visits_read": 7, "unknown_type": 1, "unreadable_url": 0}
    }
    store = DuckDBStatsStore(tmp_path / "stats.duckdb")
    cols = ["value", "views", "downloads"]
    got = store.subcounts("global", "global", DAY, DAY, field="referrer", level="R")
    assert got.select(cols).rows() == [
        ("direct", 3, 0),
        ("campaign:boletín", 1, 0),
        ("search:google", 1, 1),
        ("website:scielo.org", 1, 0),
        ("", 1, 1),
    ]
    visitors = store.subcount_visitors("global", "global", DAY, DAY)
    assert visitors.rows() == [(DAY, "N", 1), (DAY, "R", 5)]
    assert store.subcount_visitors("national", "CR", DAY, DAY, level="R").rows() == [(DAY, "R", 4)]
    snapshot = store.subcount_snapshot("source", "1", DAY, field="referrer", level="R")
    assert snapshot.select(cols).rows() == [
        ("direct", 2, 0),
        ("search:google", 1, 1),
        ("website:scielo.org", 1, 0),
        ("", 1, 1),
    ]
