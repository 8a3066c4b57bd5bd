"""Reading the raw layer: layout, month-level leaves, and bad files named in errors."""

import datetime as dt
import io
import re

import polars as pl
import pytest

from usage_stats.pipeline.canonical import read_canonical_day
from usage_stats.storage.lake import LakeReadError, day_leaf, raw_files_for_day

DAY = dt.date(2026, 1, 1)


def slots(generated) -> dict[int, int]:
    return {s["site_id"]: s["custom_var_slot"] for s in generated.manifest["sources"]}


def read(generated, day: dt.date = DAY, sites=None):
    return read_canonical_day(generated.lake, day, slots(generated), "salt", sites)


EVENTS_KEY = f"{day_leaf('events', 1, DAY)}/part-0.parquet"


def named(generated) -> str:
    """How errors name the events file of site 1 (a path, or an s3:// URL), as a regex."""
    return re.escape(generated.lake.describe(EVENTS_KEY))


def rewrite(generated, change) -> None:
    lake = generated.lake
    frame = pl.read_parquet(io.BytesIO(lake.read_bytes(EVENTS_KEY)))
    buffer = io.BytesIO()
    change(frame).write_parquet(buffer)
    lake.write_bytes(EVENTS_KEY, buffer.getvalue())


def test_reads_every_event_of_the_day_including_month_level_leaves(generated):
    day_input = read(generated)
    assert day_input.events.height == generated.manifest["days"]["2026-01-01"]["input_events"]
    month_files = [f for f in raw_files_for_day(generated.lake, "events", DAY) if f.month_level]
    assert [f.site_id for f in month_files] == [2]  # site 2 is archived without day= leaves
    site2 = day_input.events.filter(pl.col("site_id") == 2)
    assert site2.height > 0
    assert site2.get_column("event_time").dt.date().unique().to_list() == [DAY]


def test_canonical_types_country_and_no_raw_ip(generated):
    frame = read(generated).events
    assert frame.schema["event_time"] == pl.Datetime("us", "UTC")
    assert "location_ip" not in frame.columns
    assert set(frame.get_column("visitor_country").drop_nulls().unique()) <= {
        "AR", "BR", "CL", "CO", "CR", "MX", "PE", "US", "ES",
    }  # fmt: skip
    assert frame.get_column("ip_hash").null_count() == 0


def test_site_selection_reads_only_those_sites(generated):
    frame = read(generated, sites=[1, 3]).events
    assert sorted(frame.get_column("site_id").unique().to_list()) == [1, 3]


def test_unreadable_file_is_named(generated):
    generated.lake.write_bytes(EVENTS_KEY, b"this is not parquet")
    with pytest.raises(LakeReadError, match=rf"{named(generated)}: cannot read Parquet file"):
        read(generated)


def test_missing_required_column_is_named(generated):
    rewrite(generated, lambda f: f.drop("server_time"))
    with pytest.raises(
        LakeReadError, match=rf"{named(generated)}: missing required column\(s\) server_time"
    ):
        read(generated)


def test_wrong_column_type_is_named(generated):
    rewrite(generated, lambda f: f.with_columns(pl.col("idvisit").cast(pl.String)))
    with pytest.raises(
        LakeReadError, match=rf"{named(generated)}: column 'idvisit' has type String"
    ):
        read(generated)


def test_unparseable_timestamp_is_named_with_row(generated):
    def spoil(frame: pl.DataFrame) -> pl.DataFrame:
        text = frame.get_column("server_time").dt.strftime("%Y-%m-%d %H:%M:%S")
        return frame.with_columns(text.scatter(3, "31/01/2026 25:00").alias("server_time"))

    rewrite(generated, spoil)
    with pytest.raises(
        LakeReadError,
        match=rf"{named(generated)}: column 'server_time' has an unparseable timestamp "
        r"'31/01/2026 25:00' at row 3",
    ):
        read(generated)


def test_timestamps_as_text_are_accepted(generated):
    expected = read(generated).events
    rewrite(
        generated,
        lambda f: f.with_columns(pl.col("server_time").dt.strftime("%Y-%m-%d %H:%M:%S")),
    )
    assert read(generated).events.equals(expected)


def test_identifier_slot_column_missing_is_named(generated):
    rewrite(generated, lambda f: f.drop("custom_var_v1"))
    with pytest.raises(LakeReadError, match=r"missing column 'custom_var_v1' \(site 1 keeps"):
        read(generated)


def _events(site_visit: list[tuple[int | None, int | None]]) -> pl.DataFrame:
    from usage_stats.pipeline.canonical import EVENTS_SCHEMA

    t = dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)
    rows = [
        {"date": DAY, "site_id": s, "visit_id": v, "event_time": t + dt.timedelta(minutes=n)}
        for n, (s, v) in enumerate(site_visit)
    ]
    return (
        pl.DataFrame(rows)
        .with_columns(action_type=pl.lit(1))
        .cast({"site_id": pl.Int32, "visit_id": pl.Int64, "action_type": pl.Int16})
        .select(
            pl.col(c)
            if c in ("date", "site_id", "visit_id", "event_time", "action_type")
            else pl.lit(None).cast(dtype).alias(c)
            for c, dtype in EVENTS_SCHEMA.items()
        )
    )


def _visits(rows: list[tuple[int, int, str]]) -> pl.DataFrame:
    """Visits of (site, visit id, country); the other visit columns from the visit id."""
    from usage_stats.pipeline.canonical import VISIT_COLUMNS, VISITS_SCHEMA

    t = dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC)
    frame = pl.DataFrame(
        {
            "site_id": [s for s, _, _ in rows],
            "visit_id": [v for _, v, _ in rows],
            "visitor_country": [c for _, _, c in rows],
            "ip_hash": [v * 10 for _, v, _ in rows],
            "visit_first_action_time": [t] * len(rows),
            "visit_last_action_time": [t + dt.timedelta(hours=v) for _, v, _ in rows],
            "visit_total_actions": [v for _, v, _ in rows],
        }
    )
    return (
        frame.select(
            pl.col(c) if c in frame.columns else pl.lit(None).alias(c) for c in VISITS_SCHEMA
        )
        .cast(VISITS_SCHEMA)
        .select("site_id", "visit_id", *VISIT_COLUMNS)
    )


@pytest.mark.parametrize("wide", [False, True])
def test_events_get_their_own_visits_columns_back(wide, monkeypatch):
    """`join_visits` by look-up table and by join alike: an event of a visit gets its
    columns, an event of another site's visit id or of no listed visit gets none (the
    behaviour columns from its own events), a visit listed twice gives its first row."""
    import usage_stats.pipeline.canonical as canonical

    if wide:  # a range too wide for the table: the join
        monkeypatch.setattr(canonical, "_MAX_TABLE_PER_ROW", 0)
        monkeypatch.setattr(canonical, "_MIN_TABLE", 0)
    events = _events([(1, 8), (2, 5), (1, 5), (1, 9), (1, None), (2, 7), (1, 5), (1, 7)])
    visits = _visits([(1, 5, "AR"), (2, 7, "BR"), (1, 8, "CL")])
    assert (canonical._gather_visits(events, visits) is None) == wide
    joined = canonical.join_visits(events, visits)
    assert joined.schema == pl.Schema(canonical.CANONICAL_SCHEMA)
    assert joined.get_column("visitor_country").cast(pl.String).to_list() == [
        "CL", None, "AR", None, None, "BR", "AR", None
    ]  # fmt: skip
    assert joined.get_column("ip_hash").to_list() == [80, None, 50, None, None, 70, 50, None]
    # not listed (site 2's visit 5, site 1's 9 and 7, a null id): from their own events
    assert joined.get_column("visit_total_actions").to_list() == [8, 1, 5, 1, 1, 7, 5, 1]
    # a visit listed twice (site 1's visit 5): the first of its rows
    twice = pl.concat([visits, _visits([(1, 5, "UY")])])
    again = canonical.join_visits(events, twice)
    assert again.get_column("visitor_country").cast(pl.String).to_list()[2] == "AR"
    assert again.height == events.height
    # without the look-up table the result is the same
    monkeypatch.setattr(canonical, "_gather_visits", lambda e, v: None)
    assert canonical.join_visits(events, visits).equals(joined)
