"""Usage subcounts on planted truth: usage by each subcount, top-N with a remainder that adds
up, unknown metadata, the snapshot chain, and the same figures from both stats stores."""

from __future__ import annotations

import datetime as dt

import metadata_support as md
import numpy as np
import polars as pl
import pytest

from stores import opensearch_store
from usage_stats.pipeline.metrics import DELTA_SCHEMA, METRICS
from usage_stats.pipeline.snapshots import next_snapshot
from usage_stats.pipeline.usage_subcounts import (
    OTHER,
    OWNER_SCHEMA,
    chain_mismatches,
    full_subcounts,
    item_fields,
    subcount_chain_mismatches,
    top_n,
    total_mismatches,
    usage_subcounts,
)
from usage_stats.storage.duckdb_store import DuckDBStatsStore

D1, D2 = dt.date(2026, 1, 10), dt.date(2026, 1, 11)
OWNERS = pl.DataFrame([(1, "CR"), (2, "CR"), (3, "AR")], schema=OWNER_SCHEMA, orient="row")
META = md.frame(
    md.record(
        "a",
        resource_type=md.ARTICLE,
        access_rights=md.OPEN,
        language="spa",
        subjects=["física", "química"],
        formats=["application/pdf"],
        publisher="UCR",
    ),
    md.record(
        "b",
        resource_type=md.THESIS,
        access_rights=md.OPEN,
        language="por",
        subjects=["física"],
        funders=["FAPESP"],
    ),
    md.record(
        "c",
        resource_type=md.ARTICLE,
        access_rights=md.RESTRICTED,
        language="spa",
        affiliations=["UBA"],
    ),
)


def usage(day: dt.date, *rows: tuple) -> pl.DataFrame:
    """Item rows (key, site, level, owner, country, views, downloads); other metrics 0."""
    full = [
        (day, "item", k, site, level, owner, country, views, downloads, *(0,) * (len(METRICS) - 2))
        for k, site, level, owner, country, views, downloads in rows
    ]
    columns = ["date", "scope", "key", "site_id", "level", "owner_site_id", "country", *METRICS]
    return pl.DataFrame(full, schema=columns, orient="row").cast(DELTA_SCHEMA)


DAY1 = usage(
    D1,
    ("a", 1, "R", 1, "BR", 10, 4),
    ("a", 9, "N", 1, "CR", 2, 0),
    ("b", 2, "R", 2, "BR", 6, 6),
    ("c", 3, "R", 3, "AR", 3, 1),
    ("z", 1, "R", 1, None, 5, 0),  # no metadata, no visitor country
    ("y", 8, "R", None, "CL", 1, 1),  # no owner: only global
)
DAY2 = usage(D2, ("b", 2, "R", 2, "BR", 1, 0), ("c", 3, "R", 3, "AR", 1, 1))


def rows(frame: pl.DataFrame, scope: str, key: str, level: str, field: str) -> dict:
    sel = frame.filter(
        (pl.col("scope") == scope)
        & (pl.col("key") == key)
        & (pl.col("level") == level)
        & (pl.col("field") == field)
    )
    return {v: (views, dl) for v, views, dl in sel.select("value", "views", "downloads").rows()}


def test_usage_by_each_subcount_exact():
    out = usage_subcounts(DAY1, META, OWNERS, D1)
    assert total_mismatches(out) == 0
    assert rows(out, "global", "global", "R", "total") == {"": (25, 12)}
    assert rows(out, "global", "global", "N", "total") == {"": (2, 0)}
    assert rows(out, "global", "global", "R", "resource_type") == {
        md.ARTICLE: (13, 5),
        md.THESIS: (6, 6),
        "": (6, 1),
    }
    assert rows(out, "global", "global", "R", "access_status") == {
        md.OPEN: (16, 10),
        md.RESTRICTED: (3, 1),
        "": (6, 1),
    }
    assert rows(out, "global", "global", "R", "language") == {
        "spa": (13, 5),
        "por": (6, 6),
        "": (6, 1),
    }
    assert rows(out, "global", "global", "R", "publisher") == {"UCR": (10, 4), "": (15, 8)}
    # list fields: a counts under both subjects; the values overlap
    assert rows(out, "global", "global", "R", "subject") == {
        "física": (16, 10),
        "química": (10, 4),
        "": (9, 2),
    }
    assert rows(out, "global", "global", "R", "funder") == {"FAPESP": (6, 6), "": (19, 6)}
    assert rows(out, "global", "global", "R", "affiliation") == {"UBA": (3, 1), "": (22, 11)}
    assert rows(out, "global", "global", "R", "file_format") == {
        "application/pdf": (10, 4),
        "": (15, 8),
    }
    assert rows(out, "global", "global", "R", "country") == {
        "BR": (16, 10),
        "AR": (3, 1),
        "CL": (1, 1),
        "": (5, 0),
    }
    assert rows(out, "global", "global", "R", "item") == {
        "a": (10, 4),
        "b": (6, 6),
        "c": (3, 1),
        "z": (5, 0),
        "y": (1, 1),
    }
    # scopes: repository 1 (a, z), national CR (repositories 1 and 2), AR; y nowhere but global
    assert rows(out, "source", "1", "R", "item") == {"a": (10, 4), "z": (5, 0)}
    assert rows(out, "source", "1", "N", "country") == {"CR": (2, 0)}
    assert rows(out, "national", "CR", "R", "total") == {"": (21, 10)}
    assert rows(out, "national", "AR", "R", "resource_type") == {md.ARTICLE: (3, 1)}
    assert set(out.filter(pl.col("scope") == "source").get_column("key")) == {"1", "2", "3"}


def test_top_n_keeps_the_largest_by_any_metric_and_the_remainder_adds_up():
    out = usage_subcounts(DAY1, META, OWNERS, D1, n=1)
    assert total_mismatches(out) == 0
    # by views: a; by downloads: b — both kept; z, c and y → other (an item key is its value)
    assert rows(out, "global", "global", "R", "item") == {"a": (10, 4), "b": (6, 6), OTHER: (9, 2)}
    assert rows(out, "global", "global", "R", "country") == {
        "BR": (16, 10),
        "": (5, 0),
        OTHER: (4, 2),
    }
    # list field: other sums the cut values (química), so the rows keep the overlapping sum
    assert rows(out, "global", "global", "R", "subject") == {
        "física": (16, 10),
        "": (9, 2),
        OTHER: (10, 4),
    }
    none = usage_subcounts(DAY1, META, OWNERS, D1, n=0)
    assert rows(none, "global", "global", "R", "language") == {"": (6, 1), OTHER: (19, 11)}
    assert total_mismatches(none) == 0


def test_a_list_value_counts_once_and_a_list_of_nothing_is_unknown():
    """`item_fields` drops null elements only where a record has one (the costly part): a
    value listed twice or beside a null still counts once, a list of nulls or of nothing is
    unknown, and the other records' lists are left as they are."""
    meta = md.frame(
        md.record("a", subjects=[None, "física", "física"], funders=["FAPESP"]),
        md.record("b", subjects=[None], funders=["FAPESP", "FAPESP"]),
        md.record("c", subjects=[], funders=[]),
    )
    day = usage(
        D1,
        ("a", 1, "R", 1, "BR", 10, 4),
        ("b", 2, "R", 2, "BR", 6, 6),
        ("c", 3, "R", 3, "AR", 3, 1),
    )
    fields = item_fields(meta)
    assert dict(fields.select("item_key", "subjects").rows()) == {"a": ["física"], "b": [], "c": []}
    out = usage_subcounts(day, fields, OWNERS, D1)
    assert rows(out, "global", "global", "R", "subject") == {"física": (10, 4), "": (9, 7)}
    assert rows(out, "global", "global", "R", "funder") == {"FAPESP": (16, 10), "": (3, 1)}


def test_an_item_in_two_records_takes_the_latest_whatever_the_order():
    """`item_fields` sorts only when an item key is in two records: then the latest
    datestamp, then the last harvested, then the first source key, in any input order."""
    early, late = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    harvested = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    records = [
        md.record("a", resource_type=md.THESIS, datestamp=early, source_key="s::1"),
        md.record("a", resource_type=md.ARTICLE, datestamp=late, source_key="s::2"),
        md.record("b", language="spa", source_key="s::2"),
        md.record("b", language="por", source_key="s::1"),
        md.record("c", publisher="old", harvested_at=harvested - dt.timedelta(days=1)),
        md.record("c", publisher="new", harvested_at=harvested),
        md.record("d", resource_type=md.THESIS),
    ]
    for ordered in (records, records[::-1]):
        fields = item_fields(md.frame(*ordered)).sort("item_key")
        assert fields.get_column("item_key").to_list() == ["a", "b", "c", "d"]
        assert fields.get_column("resource_type").to_list()[0::3] == [md.ARTICLE, md.THESIS]
        assert fields.get_column("language").to_list()[1] == "por"
        assert fields.get_column("publisher").to_list()[2] == "new"
    # every key once: kept as given (a sort would put d first, by its source key)
    unique = item_fields(md.frame(records[0], records[-1]))
    assert unique.get_column("item_key").to_list() == ["a", "d"]


def test_unknown_metadata_counts_under_empty_value():
    out = usage_subcounts(DAY1, META.clear(), OWNERS, D1)
    assert total_mismatches(out) == 0
    for field in ("resource_type", "subject", "funder", "language"):
        assert rows(out, "global", "global", "R", field) == {"": (25, 12)}


def test_snapshot_chain_before_top_n_and_top_n_on_cumulative_figures():
    fields = item_fields(META)
    snap1 = next_snapshot(None, DAY1, D1)
    snap2 = next_snapshot(snap1, DAY2, D2)
    full1 = full_subcounts(snap1, fields, OWNERS, D1)
    full2 = full_subcounts(snap2, fields, OWNERS, D2)
    delta2 = full_subcounts(DAY2, fields, OWNERS, D2)
    assert chain_mismatches(full2, full1, delta2) == 0
    assert chain_mismatches(full2, full1, delta2.head(0)) > 0
    cut = top_n(full2, 1)
    assert total_mismatches(cut) == 0
    assert rows(cut, "global", "global", "R", "item") == {"a": (10, 4), "b": (7, 6), OTHER: (10, 3)}


def random_day(
    rng: np.random.Generator, day: dt.date, n: int, owners: dict[str, int | None]
) -> pl.DataFrame:
    """Item rows over a few keys (with and without metadata), sites, levels and countries,
    each key with its owner of the day (`owners`), and rollup rows."""
    pick = lambda values: [values[i] for i in rng.integers(0, len(values), n)]  # noqa: E731
    keys = [*owners, *pick(list(owners))][:n]  # every key used
    frame = pl.DataFrame(
        {
            "date": [day] * n,
            "scope": pick(["item", "item", "item", "source"]),
            "key": keys,
            "site_id": pick([1, 2, 9]),
            "level": pick(["R", "N", "L"]),
            "owner_site_id": [owners[k] for k in keys],
            "country": pick(["BR", "AR", None]),
            **{m: rng.integers(0, 5, n) for m in METRICS},
        }
    )
    return frame.select(list(DELTA_SCHEMA)).cast(DELTA_SCHEMA)


def reference_chain(snapshot, previous, delta, fields) -> int:
    """The check as it was: the three tables broken down in full, then compared."""
    day = snapshot.get_column("date")[0]
    breakdown = [
        full_subcounts(frame, fields, OWNERS, day) if frame is not None else None
        for frame in (snapshot, previous, delta)
    ]
    return chain_mismatches(*breakdown)


@pytest.mark.parametrize("seed", range(5))
def test_subcount_chain_check_equals_the_reference(seed: int):
    """The chain check from the signed item rows gives the keys the three full breakdowns
    give: on a sound random history (none until an item changes owner: then its earlier
    use moves to its new owner's scopes, cell by cell as each is used again), and with the
    chain broken every way (a day's delta lost, a key's total changed, a snapshot whose rows
    are not in the previous one's order, a key lost)."""
    rng = np.random.default_rng(seed)
    fields = item_fields(META)
    previous = None
    found = sound = 0
    # "y" has no owner (it counts globally only): a snapshot keeps an item's last known one
    owners: dict[str, int | None] = {"a": 1, "b": 1, "c": 2, "z": 3, "y": None}
    for offset in range(5):
        day = D1 + dt.timedelta(days=offset)
        moved = offset >= 3  # from the fourth day, an item changes owner each day
        if moved:
            key = str(rng.choice(["a", "b", "c", "z"]))
            owners[key] = int(rng.choice([o for o in (2, 3, 4) if o != owners[key]]))
        delta = random_day(rng, day, int(rng.integers(5, 40)), owners)
        snapshot = next_snapshot(previous, delta, day)
        if not moved:
            assert reference_chain(snapshot, previous, delta, fields) == 0
        broken = [
            (snapshot, previous, delta),
            (snapshot, previous, delta.head(delta.height // 2)),
            (
                snapshot.with_columns(pl.col("views") + (pl.int_range(pl.len()) == 3)),
                previous,
                delta,
            ),
            (  # an earlier row's owner changed, its totals not
                snapshot.with_columns(
                    pl.when(pl.int_range(pl.len()) == 1)
                    .then(4)
                    .otherwise(pl.col("owner_site_id"))
                    .alias("owner_site_id")
                ),
                previous,
                delta,
            ),
            (snapshot.reverse(), previous, delta),
            (snapshot.tail(-1), previous, delta),
        ]
        for case in broken:
            expected = reference_chain(*case, fields)
            assert subcount_chain_mismatches(*case, fields, OWNERS, day) == expected
            found += expected
        sound += reference_chain(snapshot, previous, delta, fields)
        previous = snapshot
    assert found > sound > 0


@pytest.fixture(params=["duckdb", "opensearch"])
def store(request, tmp_path):
    if request.param == "duckdb":
        yield DuckDBStatsStore(tmp_path / "stats.duckdb")
        return
    store = opensearch_store(batch_size=500)
    yield store
    store.delete_all()


def test_same_figures_on_both_stores(store):
    fields = item_fields(META)
    snap1 = next_snapshot(None, DAY1, D1)
    snap2 = next_snapshot(snap1, DAY2, D2)
    for day, delta, snap in ((D1, DAY1, snap1), (D2, DAY2, snap2)):
        store.replace_subcount_day(
            day,
            usage_subcounts(delta, fields, OWNERS, day),
            usage_subcounts(snap, fields, OWNERS, day),
        )
    assert store.subcount_days() == [D1, D2]
    cols = ["value", "views", "downloads"]
    got = store.subcounts("global", "global", D1, D2, field="resource_type", level="R")
    assert got.select(cols).rows() == [(md.ARTICLE, 14, 6), (md.THESIS, 7, 6), ("", 6, 1)]
    top = store.subcounts("national", "CR", D1, D2, field="item", metric="downloads", limit=1)
    assert top.select(cols).rows() == [("b", 7, 6), (OTHER, 17, 4)]
    assert store.subcounts("global", "global", D1, D2).select(cols).rows() == [("", 29, 13)]
    snap = store.subcount_snapshot("source", "3", D2, field="country")
    assert snap.select(cols).rows() == [("AR", 4, 2)]


def _reference_top_n(full: pl.DataFrame, n: int) -> pl.DataFrame:
    """`top_n` as first written (sort by group and value, rank each metric in windows): the
    specification the faster one must equal exactly."""
    from usage_stats.pipeline.usage_subcounts import (
        UNKNOWN,
        USAGE_SUBCOUNT_KEYS,
        USAGE_SUBCOUNT_SCHEMA,
    )

    group = ["date", "scope", "key", "level", "field"]
    frame = full.lazy()
    ranked = (
        frame.filter(pl.col("field") != "total")
        .sort([*group, "value"], nulls_last=True)
        .with_columns(
            pl.min_horizontal(
                pl.when(~pl.col("value").is_in([UNKNOWN, OTHER]) & (pl.col(m) > 0))
                .then(pl.col(m))
                .rank("ordinal", descending=True)
                .over(group)
                for m in METRICS
            ).alias("_rank")
        )
    )
    keep = (pl.col("_rank") <= n) | (pl.col("value") == UNKNOWN)
    rest = (
        ranked.filter(~keep | (pl.col("value") == OTHER))
        .group_by(group)
        .agg(pl.col(m).sum() for m in METRICS)
        .with_columns(pl.lit(OTHER).alias("value"), pl.lit(None, dtype=pl.Int64).alias("visitors"))
    )
    columns = list(USAGE_SUBCOUNT_SCHEMA)
    parts = (frame.filter(pl.col("field") == "total"), ranked.filter(keep), rest)
    return (
        pl.concat([f.select(columns) for f in parts])
        .cast(USAGE_SUBCOUNT_SCHEMA)
        .sort(list(USAGE_SUBCOUNT_KEYS), nulls_last=True)
        .collect()
    )


@pytest.mark.parametrize("n", [0, 1, 3, 20])
def test_top_n_equals_the_reference_exactly(n):
    """Random planted subcounts with many ties, zeros, unknown values and a carried OTHER:
    the integer-keyed `top_n` keeps exactly the rows the window-ranked reference keeps."""
    import numpy as np

    from usage_stats.pipeline.usage_subcounts import USAGE_SUBCOUNT_SCHEMA

    rng = np.random.default_rng(n)
    size = 20_000
    values = np.array([f"v{i:03d}" for i in range(300)] + ["", OTHER, "zeta", "Zeta", "é"])
    frame = pl.DataFrame(
        {
            "date": [D1] * size,
            "scope": np.array(["source", "national", "global"])[rng.integers(0, 3, size)],
            "key": np.array(["1", "2", "CR"])[rng.integers(0, 3, size)],
            "level": np.array(["R", "N", "L"])[rng.integers(0, 3, size)],
            "field": np.array(["item", "subject", "total", "referrer"])[rng.integers(0, 4, size)],
            "value": values[rng.integers(0, len(values), size)],
            **{m: rng.integers(0, 4, size) for m in METRICS},  # small: ties everywhere
            "visitors": [None] * size,
        }
    ).cast(USAGE_SUBCOUNT_SCHEMA)
    frame = frame.unique(["date", "scope", "key", "level", "field", "value"], keep="first")
    got = top_n(frame, n)
    assert got.equals(_reference_top_n(frame, n))
    assert 0 < got.height < frame.height
