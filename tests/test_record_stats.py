"""Record statistics on planted truth: added, removed, totals, both date bases, subcounts,
late harvests, and the same figures from both stats stores."""

from __future__ import annotations

import datetime as dt

import metadata_support as md
import polars as pl
import pytest

from stores import opensearch_store
from usage_stats.admin.sources import Source
from usage_stats.metadata.store import MetadataStore, apply_harvest
from usage_stats.pipeline.records import (
    RECORD_KEYS,
    RECORD_SCHEMA,
    advance_snapshot,
    log_mark,
    record_deltas,
    record_events,
    record_snapshot,
    record_snapshot_mismatches,
    refresh_snapshot,
    source_levels,
    subcount_mismatches,
)
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.lake import LocalLake

D1, D2, D3, D4 = (dt.date(2026, 1, d) for d in (10, 11, 12, 13))
SOURCES = [
    Source(1, "repo::one", "One", "R", "cr", None, 1, national_site_id=9),
    Source(2, "repo::two", "Two", "R", "cr", None, 1, national_site_id=9),
    Source(3, "repo::three", "Three", "R", "ar", None, 1),
]
LEVELS = source_levels(SOURCES)


def stamp(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


def rec(source: int, n: int, day: dt.date, **fields: object) -> dict:
    key = f"oai:repo{source}:{n}"
    return md.record(
        key,
        source_key=SOURCES[source - 1].source_key,
        site_id=source,
        datestamp=stamp(day),
        **fields,
    )


class Harvests:
    """Harvests applied as `item_metadata` applies them, into a local warehouse."""

    def __init__(self, tmp_path) -> None:
        self.store = MetadataStore(LocalLake(tmp_path / "warehouse"))
        self.count = 0

    def harvest(self, source: int, *records: dict) -> None:
        self.count += 1
        at = dt.datetime(2026, 2, 1, tzinfo=dt.UTC) + dt.timedelta(hours=self.count)
        key = SOURCES[source - 1].source_key
        rows = [r | {"harvested_at": at} for r in records]
        applied = apply_harvest(self.store.read_current(key), md.frame(*rows), at)
        self.store.write(key, applied, at.isoformat().replace("+00:00", "Z"))

    def state(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        return self.store.read_all_current(), self.store.read_changes()


def planted(tmp_path) -> Harvests:
    """Repository 1: two articles on D1 (one open, 2 files of 3 MB; one with two subjects and
    a file of unknown size), a thesis on D2 (a 5 MB file); the first article deleted on D3.
    Repository 2: a book on D2 published on D1, saying nothing of its files. Repository 3
    (another country): an article on D3, published on D2, with no language, 3 files of
    1,000 bytes in all."""
    h = Harvests(tmp_path)
    h.harvest(
        1,
        rec(
            1,
            1,
            D1,
            resource_type=md.ARTICLE,
            access_rights=md.OPEN,
            language="spa",
            publication_date=D1,
            subjects=["física"],
            file_count=2,
            file_bytes=3_000_000,
        ),
        rec(
            1,
            2,
            D1,
            resource_type=md.ARTICLE,
            access_rights=md.RESTRICTED,
            language="spa",
            subjects=["física", "química"],
            formats=["application/pdf"],
            file_count=1,  # a file whose size the record does not state
        ),
        rec(
            1,
            3,
            D2,
            resource_type=md.THESIS,
            access_rights=md.OPEN,
            language="por",
            publication_date=D2,
            file_count=1,
            file_bytes=5_000_000,
        ),
    )
    h.harvest(2, rec(2, 1, D2, resource_type=md.BOOK, language="spa", publication_date=D1))
    h.harvest(
        3,
        rec(3, 1, D3, resource_type=md.ARTICLE, publication_date=D2, file_count=3, file_bytes=1000),
    )
    h.harvest(1, rec(1, 1, D3, deleted=True))
    return h


def figures(
    frame: pl.DataFrame,
    scope: str,
    key: str,
    basis: str = "datestamp",
    field: str = "total",
    level: str = "R",
) -> dict[str, tuple[int, int, int]]:
    rows = frame.filter(
        (pl.col("scope") == scope)
        & (pl.col("key") == key)
        & (pl.col("basis") == basis)
        & (pl.col("field") == field)
        & (pl.col("level") == level)
    )
    return {r["value"]: (r["added"], r["removed"], r["total"]) for r in rows.iter_rows(named=True)}


def test_records_added_and_removed_by_day_and_type(tmp_path):
    current, changes = planted(tmp_path).state()
    deltas = {d: record_deltas(current, changes, LEVELS, d) for d in (D1, D2, D3, D4)}
    assert figures(deltas[D1], "source", "1") == {"": (2, 0, 2)}
    assert figures(deltas[D1], "source", "1", field="resource_type") == {md.ARTICLE: (2, 0, 2)}
    assert figures(deltas[D2], "global", "global", field="resource_type") == {
        md.THESIS: (1, 0, 1),
        md.BOOK: (1, 0, 1),
    }
    assert figures(deltas[D2], "national", "CR") == {"": (2, 0, 2)}
    # D3: repository 3's article arrives, repository 1's first article is deleted.
    assert figures(deltas[D3], "global", "global") == {"": (1, 1, 0)}
    assert figures(deltas[D3], "national", "CR", field="access_status") == {md.OPEN: (0, 1, -1)}
    assert figures(deltas[D3], "national", "AR", field="language") == {"": (1, 0, 1)}
    assert deltas[D4].is_empty()
    for d in (D1, D2, D3):
        assert deltas[d].schema == RECORD_SCHEMA
        assert subcount_mismatches(deltas[d]) == 0


def test_snapshots_total_by_type_and_chain(tmp_path):
    current, changes = planted(tmp_path).state()
    snaps = {d: record_snapshot(current, changes, LEVELS, d) for d in (D1, D2, D3, D4)}
    assert figures(snaps[D2], "global", "global") == {"": (4, 0, 4)}
    assert figures(snaps[D3], "global", "global") == {"": (5, 1, 4)}
    assert figures(snaps[D3], "global", "global", field="resource_type") == {
        md.ARTICLE: (3, 1, 2),
        md.THESIS: (1, 0, 1),
        md.BOOK: (1, 0, 1),
    }
    # A list field: a record counts once per subject, never more than the total.
    assert figures(snaps[D3], "source", "1", field="subject") == {
        "física": (2, 1, 1),
        "química": (1, 0, 1),
        "": (1, 0, 1),
    }
    assert figures(snaps[D4], "national", "CR") == {"": (4, 1, 3)}
    previous = None
    for d in (D1, D2, D3, D4):
        delta = record_deltas(current, changes, LEVELS, d)
        assert record_snapshot_mismatches(snaps[d], previous, delta) == 0
        assert subcount_mismatches(snaps[d]) == 0
        previous = snaps[d]
    assert (
        record_snapshot_mismatches(
            snaps[D3], snaps[D1], record_deltas(current, changes, LEVELS, D3)
        )
        > 0
    )
    # A subcount off by one, in a single-valued field and in a list field: found.
    d3 = snaps[D3]
    where = (
        (pl.col("scope") == "source") & (pl.col("key") == "1") & (pl.col("basis") == "datestamp")
    )
    typed = where & (pl.col("field") == "resource_type") & (pl.col("value") == md.ARTICLE)
    off = d3.with_columns(
        pl.when(typed).then(pl.col("added") + 1).otherwise("added").alias("added")
    )
    assert subcount_mismatches(off) == 1
    listed = where & (pl.col("field") == "subject") & (pl.col("value") == "química")
    off = d3.with_columns(
        pl.when(listed).then(pl.col("added") + 5).otherwise("added").alias("added")
    )
    assert subcount_mismatches(off) == 1


def volume(
    frame: pl.DataFrame,
    scope: str,
    key: str,
    basis: str = "datestamp",
    field: str = "total",
    level: str = "R",
) -> dict[str, tuple[int, int, int, int]]:
    """(files, data_volume, files_unknown, volume_unknown) per value."""
    rows = frame.filter(
        (pl.col("scope") == scope)
        & (pl.col("key") == key)
        & (pl.col("basis") == basis)
        & (pl.col("field") == field)
        & (pl.col("level") == level)
    )
    counts = ("files", "data_volume", "files_unknown", "volume_unknown")
    return {r["value"]: tuple(r[c] for c in counts) for r in rows.iter_rows(named=True)}


def test_files_and_volume_by_day_and_type(tmp_path):
    current, changes = planted(tmp_path).state()
    deltas = {d: record_deltas(current, changes, LEVELS, d) for d in (D1, D2, D3)}
    # D1: 2 + 1 files; 3 MB known, the second article's size unknown.
    assert volume(deltas[D1], "source", "1") == {"": (3, 3_000_000, 0, 1)}
    assert volume(deltas[D1], "source", "1", field="access_status") == {
        md.OPEN: (2, 3_000_000, 0, 0),
        md.RESTRICTED: (1, 0, 0, 1),
    }
    # D2: the thesis (1 file, 5 MB) and the book that says nothing.
    assert volume(deltas[D2], "global", "global", field="resource_type") == {
        md.THESIS: (1, 5_000_000, 0, 0),
        md.BOOK: (0, 0, 1, 1),
    }
    # D3: repository 3's article brings 3 files, the deleted article takes 2 files, 3 MB.
    assert volume(deltas[D3], "global", "global") == {"": (1, -2_999_000, 0, 0)}
    assert volume(deltas[D3], "national", "CR") == {"": (-2, -3_000_000, 0, 0)}
    assert volume(deltas[D3], "national", "AR", field="resource_type") == {
        md.ARTICLE: (3, 1000, 0, 0)
    }
    snap = record_snapshot(current, changes, LEVELS, D3)
    # Held on D3: 1 + 1 + 0 + 3 files, 5,001,000 bytes; the book and the unsized article
    # are not in the volume, and say so.
    assert volume(snap, "global", "global") == {"": (5, 5_001_000, 1, 2)}
    assert volume(snap, "global", "global", field="file_format") == {
        "application/pdf": (1, 0, 0, 1),
        "": (4, 5_001_000, 1, 1),
    }
    assert volume(snap, "global", "global", basis="publication") == {"": (4, 5_001_000, 1, 1)}
    assert subcount_mismatches(snap) == 0
    # A volume chains like the counts: a snapshot one byte off fails the check.
    previous = record_snapshot(current, changes, LEVELS, D2)
    assert record_snapshot_mismatches(snap, previous, deltas[D3]) == 0
    off = snap.with_columns(
        pl.when((pl.col("scope") == "global") & (pl.col("field") == "total"))
        .then(pl.col("data_volume") + 1)
        .otherwise(pl.col("data_volume"))
        .alias("data_volume")
    )
    assert record_snapshot_mismatches(off, previous, deltas[D3]) == 2  # both bases


def test_advance_snapshot_equals_the_snapshot_from_the_log(tmp_path):
    current, changes = planted(tmp_path).state()
    events = record_events(current, changes)
    previous = record_snapshot(current, changes, LEVELS, D1 - dt.timedelta(days=1), events)
    assert previous.is_empty()
    for d in (D1, D2, D3, D4):
        delta = record_deltas(current, changes, LEVELS, d, events)
        advanced = advance_snapshot(previous, delta, d)
        rebuilt = record_snapshot(current, changes, LEVELS, d)
        keys = list(RECORD_KEYS)
        assert advanced.sort(keys, nulls_last=True).equals(rebuilt.sort(keys, nulls_last=True)), d
        previous = advanced


def test_a_carried_forward_snapshot_equals_the_recount_or_falls_back(tmp_path):
    """A stored snapshot and its log mark, carried forward after later harvests: exactly the
    full recount over several days when the new changes are new records (late ones too) or
    later deletions; None (a recount) after an update, a return, an earlier-dated deletion,
    a log that grew before the mark, other levels or a mark of another snapshot."""
    h = planted(tmp_path)
    keys = list(RECORD_KEYS)

    def stored(day: dt.date) -> tuple[pl.DataFrame, pl.DataFrame]:
        current, changes = h.state()
        snap = record_snapshot(current, changes, LEVELS, day)
        return snap, log_mark(changes, snap, LEVELS)

    def carried(snap, mark, day, levels=LEVELS):
        current, changes = h.state()
        return refresh_snapshot(snap, mark, current, changes, levels, day)

    def same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
        return a.sort(keys, nulls_last=True).equals(b.sort(keys, nulls_last=True))

    def recount(day: dt.date) -> pl.DataFrame:
        return record_snapshot(*h.state(), LEVELS, day)

    snap, mark = stored(D2)
    assert same(carried(snap, mark, D2), recount(D2))  # nothing new
    current, changes = h.state()
    d3 = record_deltas(current, changes, LEVELS, D3)
    # refreshed and advanced by the next day's delta in one pass: that day's snapshot
    advanced = refresh_snapshot(snap, mark, current, changes, LEVELS, D2, d3, D3)
    assert same(advanced, recount(D3))
    # New records: one of D3 published on D1, a late one of D1 (another source, no
    # publication date) and one of D1 published long ago; a D2 record deleted on D4.
    h.harvest(2, rec(2, 5, D3, resource_type=md.THESIS, publication_date=D1, subjects=["x"]))
    h.harvest(
        3,
        rec(3, 5, D1, resource_type=md.BOOK, file_count=2, file_bytes=7),
        rec(3, 6, D1, resource_type=md.ARTICLE, publication_date=dt.date(1999, 5, 1)),
    )
    h.harvest(1, rec(1, 3, D4, deleted=True))
    previous = carried(snap, mark, D2)
    assert previous is not None
    assert same(previous, recount(D2))
    assert not same(previous, snap)
    current, changes = h.state()
    events = record_events(current, changes)
    d3 = record_deltas(current, changes, LEVELS, D3, events)
    advanced = refresh_snapshot(snap, mark, current, changes, LEVELS, D2, d3, D3)
    assert same(advanced, recount(D3))  # the new records and the later deletion, then D3's
    with pytest.raises(ValueError, match="next_day"):
        refresh_snapshot(snap, mark, current, changes, LEVELS, D2, d3)
    for d in (D3, D4):
        previous = advance_snapshot(previous, record_deltas(current, changes, LEVELS, d, events), d)
        assert same(previous, recount(d)), d
    # The mark of another snapshot, other levels, a log grown before the mark: a recount.
    assert carried(snap.head(3), mark, D2) is None
    assert carried(snap, mark, D2, source_levels(SOURCES[:2])) is None
    assert carried(snap, mark.with_columns(pl.col("log_rows") - 1), D2) is None

    snap, mark = stored(D2)
    h.harvest(2, rec(2, 1, D2, resource_type=md.THESIS, language="spa", publication_date=D1))
    assert carried(snap, mark, D2) is None  # updated: its fields move on every past day

    snap, mark = stored(D2)
    snap1, mark1 = stored(D1)
    h.harvest(1, rec(1, 2, D2, deleted=True))
    assert carried(snap, mark, D2) is None  # a deletion dated on the carried day
    assert carried(snap, mark, D1) is None  # a snapshot of another day
    assert same(carried(snap1, mark1, D1), recount(D1))  # after D1: carried

    snap, mark = stored(D3)
    h.harvest(1, rec(1, 1, D4, resource_type=md.ARTICLE))
    assert carried(snap, mark, D3) is None  # back after its deletion


def test_the_events_of_some_days_equal_the_whole_logs_on_those_days(tmp_path):
    """`record_events(..., days)` reads only the log rows of those days and the histories of
    the records deleted on them: the same events as the whole log's, on every set of days,
    with deletions of live and of already deleted records, returns and late harvests."""
    h = planted(tmp_path)
    h.harvest(2, rec(2, 5, D3, resource_type=md.THESIS, publication_date=D1))
    h.harvest(3, rec(3, 5, D1, resource_type=md.BOOK))
    h.harvest(1, rec(1, 3, D4, deleted=True))
    h.harvest(1, rec(1, 3, D4, deleted=True))  # deleted again: counts once
    h.harvest(1, rec(1, 2, D2, deleted=True))
    h.harvest(1, rec(1, 2, D4, resource_type=md.ARTICLE))  # back after its deletion
    current, changes = h.state()
    every = record_events(current, changes)
    order = ["source_key", "oai_identifier", "basis", "date", "added", "removed"]
    assert every.get_column("removed").sum() >= 2
    for days in ([D1], [D2, D4], [D3], [D1, D2, D3, D4], [dt.date(2000, 1, 1)]):
        some = record_events(current, changes, days)
        want = every.filter(pl.col("date").is_in(days))
        assert some.sort(order).equals(want.select(some.columns).sort(order)), days
        assert some.height == want.height


def test_publication_date_basis(tmp_path):
    current, changes = planted(tmp_path).state()
    d1 = record_deltas(current, changes, LEVELS, D1)
    # Published on D1: the book (repository 2); the deleted article left this basis.
    assert figures(d1, "global", "global", basis="publication") == {"": (1, 0, 1)}
    d2 = record_deltas(current, changes, LEVELS, D2)
    assert figures(d2, "global", "global", basis="publication", field="resource_type") == {
        md.THESIS: (1, 0, 1),
        md.ARTICLE: (1, 0, 1),
    }
    snap = record_snapshot(current, changes, LEVELS, D4)
    assert figures(snap, "global", "global", basis="publication") == {"": (3, 0, 3)}


def test_a_late_harvest_changes_earlier_days_and_later_snapshots(tmp_path):
    h = planted(tmp_path)
    before = record_snapshot(*h.state(), LEVELS, D4)
    # Repository 2 reveals two older records (datestamps D1 and D2) in a later harvest.
    h.harvest(2, rec(2, 2, D1, resource_type=md.THESIS), rec(2, 3, D2, resource_type=md.BOOK))
    current, changes = h.state()
    assert figures(record_deltas(current, changes, LEVELS, D1), "source", "2") == {"": (1, 0, 1)}
    assert figures(record_deltas(current, changes, LEVELS, D2), "source", "2") == {"": (2, 0, 2)}
    after = record_snapshot(current, changes, LEVELS, D4)
    assert figures(before, "global", "global") == {"": (5, 1, 4)}
    assert figures(after, "global", "global") == {"": (7, 1, 6)}
    # The snapshot stored before the late harvest no longer chains to the new deltas.
    d2 = record_deltas(current, changes, LEVELS, D2)
    old_d1 = record_snapshot(*planted(tmp_path / "old").state(), LEVELS, D1)
    assert record_snapshot_mismatches(record_snapshot(current, changes, LEVELS, D2), old_d1, d2)


def test_a_record_seen_only_deleted_is_never_counted(tmp_path):
    h = Harvests(tmp_path)
    h.harvest(1, rec(1, 9, D1, deleted=True))
    current, changes = h.state()
    assert record_snapshot(current, changes, LEVELS, D2).is_empty()


@pytest.fixture(params=["duckdb", "opensearch"])
def stats_store(request, tmp_path):
    if request.param == "duckdb":
        yield DuckDBStatsStore(tmp_path / "stats.duckdb")
        return
    store = opensearch_store(batch_size=50)
    yield store
    store.delete_all()


def test_the_same_figures_from_both_stores(stats_store, tmp_path):
    current, changes = planted(tmp_path).state()
    for d in (D1, D2, D3, D4):
        delta = record_deltas(current, changes, LEVELS, d)
        snap = record_snapshot(current, changes, LEVELS, d)
        written = stats_store.replace_record_day(d, delta, snap)
        assert (written.delta_rows, written.snapshot_rows) == (delta.height, snap.height)
        assert stats_store.record_row_count("record_deltas", d) == delta.height
        assert stats_store.record_row_count("record_snapshots", d) == snap.height
    by_type = stats_store.record_totals(
        "global", "global", D1, D4, field="resource_type", by=("value",)
    )
    # (added, removed, total, files, data_volume, files_unknown, volume_unknown)
    assert by_type.rows() == [
        (md.BOOK, 1, 0, 1, 0, 0, 1, 1),
        (md.THESIS, 1, 0, 1, 1, 5_000_000, 0, 0),
        (md.ARTICLE, 3, 1, 2, 4, 1000, 0, 1),
    ]
    by_day = stats_store.record_totals("national", "CR", D1, D4, level="R", by=("date",))
    assert by_day.rows() == [
        (D1, 2, 0, 2, 3, 3_000_000, 0, 1),
        (D2, 2, 0, 2, 1, 5_000_000, 1, 1),
        (D3, 0, 1, -1, -2, -3_000_000, 0, 0),
    ]
    assert stats_store.record_totals("source", "3", D1, D4).rows() == [(1, 0, 1, 3, 1000, 0, 0)]
    snapshot = stats_store.record_snapshot("source", "1", D3, field="subject")
    assert snapshot.rows() == [
        ("R", "", 1, 0, 1, 1, 5_000_000, 0, 0),
        ("R", "física", 2, 1, 1, 1, 0, 0, 1),
        ("R", "química", 1, 0, 1, 1, 0, 0, 1),
    ]
    published = stats_store.record_snapshot("global", "global", D2, basis="publication")
    assert published.rows() == [("R", "", 3, 0, 3, 4, 5_001_000, 1, 1)]
    assert stats_store.record_totals("source", "404", D1, D4, by=("value",)).is_empty()


def test_assets_write_the_warehouse_and_the_store_and_a_late_harvest_is_rematerialised(tmp_path):
    """The record_stats job over D1..D3: checks pass, the store answers the planted figures;
    after a late harvest, re-materialising from the first changed day fixes every later day."""
    from dagster import materialize
    from dagster_aws.s3 import S3Resource

    from assets.records import record_deltas as deltas_asset
    from assets.records import record_snapshots as snapshots_asset
    from resources import AdminDbResource, DuckDBStatsStoreResource, WarehouseResource
    from usage_stats.admin import db
    from usage_stats.admin.registry import add_source

    url = f"sqlite:///{tmp_path / 'admin.db'}"
    db.upgrade(url)
    for s in SOURCES:
        add_source(url, s)
    h = planted(tmp_path)
    resources = {
        "warehouse": WarehouseResource(url=str(tmp_path / "warehouse"), s3=S3Resource()),
        "admin_db": AdminDbResource(url=url),
        "stats_store": DuckDBStatsStoreResource(path=str(tmp_path / "stats.duckdb")),
    }

    def run(*days: dt.date) -> list[str]:
        """Each day's run; how each found the snapshot of the day before."""
        found = []
        for day in days:
            result = materialize(
                [deltas_asset, snapshots_asset], resources=resources, partition_key=day.isoformat()
            )
            assert result.success
            assert all(e.passed for e in result.get_asset_check_evaluations())
            found += [
                m.metadata["previous_snapshot"].value
                for e in result.get_asset_materialization_events()
                if "previous_snapshot" in (m := e.event_specific_data.materialization).metadata
            ]
        return found

    # D1: nothing stored before it; D2 and D3 carry the day before's forward.
    assert run(D1, D2, D3) == ["recounted", "carried forward", "carried forward"]
    store = DuckDBStatsStore(tmp_path / "stats.duckdb")
    old_d3 = [("R", "", 5, 1, 4, 5, 5_001_000, 1, 2)]
    assert store.record_snapshot("global", "global", D3).rows() == old_d3
    h.harvest(2, rec(2, 2, D1, resource_type=md.THESIS))
    # Only D1 re-materialised: the stored D2 delta no longer chains to the new D1 snapshot…
    run(D1)
    d1 = [("R", "", 3, 0, 3, 3, 3_000_000, 1, 2)]
    assert store.record_snapshot("global", "global", D1).rows() == d1
    assert store.record_snapshot("global", "global", D3).rows() == old_d3
    # …and re-materialising the later days brings their snapshots up to date (the new
    # record, dated D1, is in the stored D1 snapshot they carry forward).
    assert run(D2, D3) == ["carried forward", "carried forward"]
    new_d3 = [("R", "", 6, 1, 5, 5, 5_001_000, 2, 3)]
    assert store.record_snapshot("global", "global", D3).rows() == new_d3
    assert store.record_totals(
        "source", "2", D1, D3, field="resource_type", by=("value",)
    ).rows() == [(md.BOOK, 1, 0, 1, 0, 0, 1, 1), (md.THESIS, 1, 0, 1, 0, 0, 1, 1)]
    # A late harvest, then record_snapshots alone: the stored D2 delta is stale, the chain
    # check fails (and names the day).
    h.harvest(2, rec(2, 4, D2, resource_type=md.BOOK, file_count=1, file_bytes=10))
    stale = materialize(
        [snapshots_asset], resources=resources, partition_key=D2.isoformat(), raise_on_error=False
    )
    chain = next(
        e
        for e in stale.get_asset_check_evaluations()
        if e.check_name == "record_snapshot_equals_previous_plus_delta"
    )
    assert not chain.passed
    assert chain.metadata["mismatched_keys_per_day"].value[D2.isoformat()] > 0
    # A record retyped: its type moves on every past day, so the stored D1 snapshot cannot be
    # carried forward; the run recounts, and the figures follow the new type.
    h.harvest(1, rec(1, 2, D1, resource_type=md.THESIS, access_rights=md.RESTRICTED))
    assert run(D2) == ["recounted"]
    by_type = store.record_snapshot("global", "global", D2, field="resource_type")
    articles = by_type.filter(pl.col("value") == md.ARTICLE).select("added", "total").rows()
    assert articles == [(1, 1)]  # 1:1 alone: 1:2 is a thesis on every day now
