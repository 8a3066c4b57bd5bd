"""The DuckDB stats store: atomic day replacement and the query interface."""

import datetime as dt
import subprocess
import sys
import time

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from support import DAY, at, events, registry
from usage_stats.pipeline.cleaning import clean_events
from usage_stats.pipeline.metrics import daily_deltas
from usage_stats.pipeline.snapshots import next_snapshot
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.store import RowFilter, StatsStoreError

DAY2 = DAY + dt.timedelta(days=1)


def day_frames(day: dt.date, n_visits: int):
    rows = [{"visit_id": v, "event_time": at(v)} for v in range(n_visits)]
    deltas = daily_deltas(clean_events(events(*rows), registry()).sessions).with_columns(
        pl.lit(day).alias("date")
    )
    return deltas, next_snapshot(None, deltas, day)


@pytest.fixture
def store(tmp_path) -> DuckDBStatsStore:
    return DuckDBStatsStore(tmp_path / "stats.duckdb")


def test_replace_day_writes_and_replaces_only_that_day(store):
    d1, s1 = day_frames(DAY, 2)
    d2, s2 = day_frames(DAY2, 3)
    assert store.replace_day(DAY, d1, s1).delta_rows == d1.height
    store.replace_day(DAY2, d2, s2)
    store.replace_day(DAY, d1, s1)  # again: no duplicates
    assert store.row_count("usage_deltas", DAY) == d1.height
    assert store.row_count("usage_deltas", DAY2) == d2.height
    assert store.days() == [DAY, DAY2]
    item = "oai:www.kerwa.ucr.ac.cr:10669/578"
    assert store.totals("item", item, DAY, DAY2).get_column("views").to_list() == [5]
    assert store.totals("item", item, DAY2, DAY2).get_column("views").to_list() == [3]
    by_day = store.totals("item", item, DAY, DAY2, by=("date",))
    assert by_day.select("date", "views").rows() == [(DAY, 2), (DAY2, 3)]
    assert store.snapshot("item", item, DAY2).get_column("views").to_list() == [3]
    assert store.top("item", DAY, DAY2, "views", 1).rows() == [(item, 5)]


def test_rows_of_another_day_are_refused_and_nothing_changes(store):
    d1, s1 = day_frames(DAY, 2)
    store.replace_day(DAY, d1, s1)
    wrong = d1.with_columns(pl.lit(DAY2).alias("date"))
    with pytest.raises(StatsStoreError, match="hold .* row\\(s\\) of other days"):
        store.replace_day(DAY, wrong, s1)
    assert store.row_count("usage_deltas", DAY) == d1.height


def test_failed_write_rolls_back(store, monkeypatch):
    d1, s1 = day_frames(DAY, 2)
    store.replace_day(DAY, d1, s1)
    # Fail while inserting the snapshot, after the day's deltas were already replaced.
    real_to_arrow = pl.DataFrame.to_arrow
    calls = []

    def failing_to_arrow(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_to_arrow(self, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "to_arrow", failing_to_arrow)
    with pytest.raises(OSError, match="disk full"):
        store.replace_day(DAY, d1.head(1), s1.head(1))
    monkeypatch.undo()
    assert store.row_count("usage_deltas", DAY) == d1.height
    assert store.row_count("usage_snapshots", DAY) == s1.height


def test_query_parameters_are_never_sql(store):
    d1, s1 = day_frames(DAY, 1)
    store.replace_day(DAY, d1, s1)
    evil = "x' OR '1'='1"
    assert store.totals("item", evil, DAY, DAY).get_column("views").to_list() == [0]
    with pytest.raises(ValueError):
        store.totals("item", "x", DAY, DAY, by=("views; DROP TABLE usage_deltas",))
    with pytest.raises(ValueError):
        store.top("item", DAY, DAY, "views desc; --", 3)


def test_a_file_locked_by_another_process_is_waited_for(store):
    d1, s1 = day_frames(DAY, 1)
    store.replace_day(DAY, d1, s1)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(1.5); c.close()",
            str(store.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        store.replace_day(DAY, d1, s1)
        assert time.monotonic() - started > 0.5  # it really had to wait for the other writer
    finally:
        holder.wait(timeout=30)
    assert store.row_count("usage_deltas", DAY) == d1.height


def test_lock_held_too_long_fails_with_a_clear_message(tmp_path):
    path = tmp_path / "stats.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(5); c.close()",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StatsStoreError, match=f"DuckDB stats store {path}: .*lock"):
            DuckDBStatsStore(path, lock_timeout_seconds=0.5).days()
    finally:
        holder.kill()
        holder.wait()


def test_store_compaction_job_compacts_closed_months_and_reports(tmp_path):
    """The Dagster op job runs `compact` on the configured store and reports what it did; the
    answers are the same before and after, and a second run moves nothing."""
    from pathlib import Path

    from assets.store_compaction import store_compaction_job
    from resources import StatsStoreResource

    class SmallRuns(StatsStoreResource):
        path: str

        def get_store(self) -> DuckDBStatsStore:
            return DuckDBStatsStore(Path(self.path), run_rows=2)

    path = tmp_path / "stats.duckdb"
    store = DuckDBStatsStore(path, run_rows=2)
    days = [dt.date(2026, 1, 29), dt.date(2026, 1, 30), dt.date(2026, 1, 31), dt.date(2026, 2, 1)]
    for n, day in enumerate(days, start=2):
        deltas, snapshot = day_frames(day, n)
        store.replace_day(day, deltas, snapshot)
        store.optimize()

    def answers():
        return (
            store.totals("global", "global", days[0], days[-1], by=("date", "level")).rows(),
            store.top("item", days[0], days[-1], "views", 10).rows(),
            store.sums("item", days[0], days[-1], by=("key", "date", "country")).rows(),
            store.snapshot("global", "global", days[-1]).rows(),
        )

    before = answers()
    resources = {"stats_store": SmallRuns(path=str(path))}
    result = store_compaction_job.execute_in_process(resources=resources)
    assert result.success
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = {k: v.value for k, v in output.event_specific_data.metadata.items()}
    assert metadata["period"] == "month" and metadata["before"] == "2026-02-01"
    assert metadata["rows_moved"] > 0 and metadata["periods_rewritten"] > 0
    assert metadata["runs_after"] < metadata["runs_before"]
    assert answers() == before
    again = store_compaction_job.execute_in_process(
        resources=resources, run_config={"ops": {"compact_stats_store": {"config": {}}}}
    )
    (output,) = [e for e in again.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert output.event_specific_data.metadata["rows_moved"].value == 0
    assert answers() == before


# --- key codes: an item's rows found by statistics whatever its identifier's spelling -------


def test_key_codes_are_the_same_in_python_and_in_duckdb():
    """Queries compute a key's code in Python, writes in Polars, the first write of a store
    from before key codes in SQL: they must agree on every key (OAI or not, empty namespace,
    several colons, non-ASCII, shorter than 4 bytes)."""
    import random

    import duckdb

    from usage_stats.storage.duckdb_store import _KEY_CODE, key_code, with_key_codes

    rng = random.Random(7)
    keys = ["", "a", "abc", "oai:", "oai::", "oai::x", "oai:a:b:c", "OAI:x:y", "10.1234/ABC"]
    keys += ["oai:ñandú.ar:ü/€", "oai:repositorio.unal.edu.co:123456789/1234", "hdl:10/20"]
    keys += [
        "".join(rng.choice("oai:./ñ01ab") for _ in range(rng.randint(0, 30))) for _ in range(500)
    ]
    con = duckdb.connect()
    con.execute("CREATE TABLE k (key VARCHAR)")
    con.executemany("INSERT INTO k VALUES (?)", [[k] for k in keys])
    in_sql = dict(con.execute(f"SELECT key, {_KEY_CODE} FROM k").fetchall())
    written = with_key_codes(pl.DataFrame({"key": keys}))
    assert {k: key_code(k) for k in keys} == in_sql == dict(written.iter_rows())
    # one repository's items share the high half: they stay together in the file
    same = {key_code(f"oai:repositorio.unal.edu.co:123456789/{n}") >> 32 for n in range(50)}
    assert len(same) == 1


def long_prefix_day(day: dt.date, items: int) -> pl.DataFrame:
    """Item rows whose keys share 30 characters and more (as real OAI identifiers do: far
    beyond the 8 bytes of a string that DuckDB keeps in a row group's statistics), 5
    repositories, a row per item and one of three countries."""
    from usage_stats.pipeline.metrics import DELTA_SCHEMA, METRICS

    n = pl.int_range(items, eager=True)
    return (
        pl.DataFrame(
            {
                "date": [day] * items,
                "scope": ["item"] * items,
                "key": (
                    "oai:repositorio.institucional."
                    + (n % 5).cast(pl.String)
                    + ".edu.co:123456789/"
                    + n.cast(pl.String)
                ),
                "site_id": (n % 5 + 1).cast(pl.Int32),
                "level": ["R"] * items,
                "owner_site_id": (n % 5 + 1).cast(pl.Int32),
                "country": pl.Series(["AR", "BR", "CO"])[n % 3],
            }
        )
        .with_columns(
            *[pl.lit(0, pl.Int64).alias(m) for m in METRICS if m != "views"],
            views=(n % 7 + 1).cast(pl.Int64),
        )
        .select(list(DELTA_SCHEMA))
        .cast(DELTA_SCHEMA)
    )


def test_an_item_is_found_in_one_row_group_whatever_its_identifier_s_prefix(store):
    """Rows are stored in key-code order, so a lookup's `key_code` skips every row group
    but the item's own by the row groups' min/max, where `key` (compared on its first
    8 bytes, `oai:repo` for every item here) could skip none. The answers are exact."""
    import duckdb

    from usage_stats.storage.duckdb_store import ROW_GROUP_ROWS, key_code

    items = 4 * ROW_GROUP_ROWS
    deltas = long_prefix_day(DAY, items)
    store.replace_day(DAY, deltas, deltas)
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        stats = con.execute(
            "SELECT row_group_id, column_name, stats FROM pragma_storage_info('usage_deltas') "
            "WHERE column_name IN ('key', 'key_code') AND segment_type <> 'VALIDITY'"
        ).fetchall()
    finally:
        con.close()
    groups = {
        column: [s for _, c, s in stats if c == column and "min" in s]
        for column in ("key", "key_code")
    }
    assert len(groups["key_code"]) >= 4
    for n in range(0, items, items // 40):
        key = f"oai:repositorio.institucional.{n % 5}.edu.co:123456789/{n}"
        code = key_code(key)
        holding = [s for s in groups["key_code"] if int(s["min"]) <= code <= int(s["max"])]
        assert len(holding) == 1, key
        # the string statistics (a prefix of each bound) cannot tell the keys apart
        assert all(s["min"] <= key[: len(s["max"])] <= s["max"] for s in groups["key"])
        sums = store.sums("item", DAY, DAY, keys=(key,), by=("country",))
        assert sums.get_column("views").to_list() == [n % 7 + 1]
        assert sums.get_column("country").to_list() == [["AR", "BR", "CO"][n % 3]]


def test_a_store_from_before_key_codes_is_read_as_it_is_then_coded_at_its_first_write(
    tmp_path,
):
    """A store written before key codes (runs, no `key_code`): reads answer the same
    without them, and its next write adds them to every row and sorts it by them."""
    import duckdb

    older = DuckDBStatsStore(tmp_path / "older.duckdb")
    fresh = DuckDBStatsStore(tmp_path / "fresh.duckdb")
    d1, s1 = day_frames(DAY, 3)
    d2, s2 = day_frames(DAY2, 4)
    for store in (older, fresh):
        store.replace_day(DAY, d1, s1)
    con = duckdb.connect(str(older.path))
    for table in ("usage_deltas", "usage_snapshots"):
        con.execute(f"ALTER TABLE {table} DROP COLUMN key_code")
    con.close()
    reader = DuckDBStatsStore(older.path)  # a process that never saw the codes
    keys = tuple(d1.filter(pl.col("scope") == "item").get_column("key").unique().sort())

    def answers(store: DuckDBStatsStore) -> list:
        where = (RowFilter(keys=keys),)
        return [
            store.sums("item", DAY, DAY2, keys=keys, by=("key", "date", "country")),
            store.snapshot_sums_where("item", DAY, DAY2, where, by=("date", "key")),
            store.top("item", DAY, DAY2, "views", 5),
            *[store.snapshot("item", key, DAY2) for key in keys],
        ]

    def same(mine: list, theirs: list) -> bool:
        return all(a.equals(b) for a, b in zip(mine, theirs, strict=True))

    assert same(answers(reader), answers(fresh))
    for store in (reader, fresh):
        store.replace_day(DAY2, d2, s2)
        store.optimize()
    assert same(answers(reader), answers(fresh))
    con = duckdb.connect(str(older.path), read_only=True)
    try:
        for table in ("usage_deltas", "usage_snapshots"):
            uncoded = con.execute(
                f"SELECT count(*) FROM {table} WHERE key_code IS NULL"
            ).fetchone()[0]
            assert uncoded == 0
    finally:
        con.close()


def lookup_days() -> list[pl.DataFrame]:
    """Three days of item rows for a handful of items: several sites, levels, countries
    (some unknown) and owners (some none), metrics with zeros."""
    from usage_stats.pipeline.metrics import DELTA_SCHEMA, METRICS

    frames = []
    for offset in range(3):
        day = DAY + dt.timedelta(days=offset)
        rows = [
            {
                "date": day,
                "scope": "item",
                "key": f"oai:repo{item % 2}.example.org:{item}",
                "site_id": site,
                "level": level,
                "owner_site_id": None if item == 3 else item % 2 + 1,
                "country": country,
                **{m: (item + site + offset + i) % 4 for i, m in enumerate(METRICS)},
            }
            for item in range(5)
            for site, level in ((1, "R"), (7, "N"), (9, "L"))
            for country in ("AR", None, "BR")
            if (item + site + offset) % 3
        ]
        frames.append(pl.DataFrame(rows).select(list(DELTA_SCHEMA)).cast(DELTA_SCHEMA))
    return frames


@pytest.mark.parametrize(
    "by",
    [
        (),
        ("date", "level"),
        ("country",),
        ("site_id", "owner_site_id", "key"),
        ("date",),
        ("month", "level", "country"),
    ],
)
def test_an_item_lookup_sums_its_rows_as_the_grouped_query_does(store, monkeypatch, by):
    """An item's rows are summed in Python (an item widget's miss: issue 16), a large or
    wide read by the query: both answer the same frame, nulls last, counts of rows."""
    from usage_stats.storage import duckdb_store

    for frame in lookup_days():
        day = frame.get_column("date")[0]
        store.replace_day(day, frame, frame)
    end = DAY + dt.timedelta(days=2)
    wheres = [
        (RowFilter(keys=("oai:repo1.example.org:3",)),),
        (RowFilter(keys=("oai:repo0.example.org:0", "oai:repo0.example.org:2")),),
        (RowFilter(keys=("oai:repo1.example.org:1",)), RowFilter(keys=("no-such-key",))),
        (RowFilter(keys=("no-such-key",)),),
    ]
    summed = []
    original = duckdb_store._summed_rows

    def counted(rows, columns, metrics):
        summed.append(len(rows))
        return original(rows, columns, metrics)

    monkeypatch.setattr(duckdb_store, "_summed_rows", counted)
    for where in wheres:
        for start in (DAY, DAY + dt.timedelta(days=1)):
            looked_up = store.sums_where("item", start, end, where, by=by)
            with monkeypatch.context() as patch:
                patch.setattr(duckdb_store, "LOOKUP_KEYS", 0)  # not a lookup: the query
                grouped = store.sums_where("item", start, end, where, by=by)
            with monkeypatch.context() as patch:
                patch.setattr(duckdb_store, "LOOKUP_ROWS", 2)  # too many rows: the query
                overflowing = store.sums_where("item", start, end, where, by=by)
            assert looked_up.schema == grouped.schema, where
            assert looked_up.to_dicts() == grouped.to_dicts(), (where, start)
            assert overflowing.to_dicts() == grouped.to_dicts(), (where, start)
    assert len(summed) >= 2 * len(wheres)  # every lookup (and overflowing empty ones)
    assert max(summed) > 2  # lookups with rows to sum, not only empty ones
    assert store.sums_where("item", DAY, end, wheres[0], by=by).height > 0


def test_aliases_are_asked_by_their_code_and_an_older_store_gets_the_codes(tmp_path):
    """Aliases sharing 40 bytes (URLs, handles, DOIs do) are sorted by their code, so one
    lookup reads one or two row groups, not all; a store whose aliases predate the codes is
    read as it is by its own connections and coded by the web's shared reader (or a write)."""
    import duckdb

    from usage_stats.storage.duckdb_store import ROW_GROUP_ROWS, key_code

    n = pl.int_range(3 * ROW_GROUP_ROWS, eager=True).cast(pl.String)
    crosswalk = pl.DataFrame(
        {
            "alias": "https://repositorio.example.edu.co/handle/123456789/" + n,
            "item_key": "oai:repositorio.example.edu.co:123456789/" + n,
            "ambiguous": False,
        }
    )
    store = DuckDBStatsStore(tmp_path / "stats.duckdb")
    assert store.record_aliases(crosswalk) == crosswalk.height
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        ranges = [
            (int(s["min"]), int(s["max"]))
            for (s,) in con.execute(
                "SELECT stats FROM pragma_storage_info('item_aliases') "
                "WHERE column_name = 'alias_code' AND segment_type <> 'VALIDITY'"
            ).fetchall()
            if "min" in s
        ]
    finally:
        con.close()
    assert len(ranges) >= 3
    for i in range(0, crosswalk.height, 9_973):
        alias = f"https://repositorio.example.edu.co/handle/123456789/{i}"
        assert sum(low <= key_code(alias) <= high for low, high in ranges) <= 2, alias
        item = f"oai:repositorio.example.edu.co:123456789/{i}"
        assert store.resolve_aliases((alias,)) == {alias: item}
    pair = ("https://repositorio.example.edu.co/handle/123456789/7", "10.1/none")
    resolved = {pair[0]: "oai:repositorio.example.edu.co:123456789/7"}
    assert store.resolve_aliases(pair) == resolved

    con = duckdb.connect(str(store.path))  # as a store before alias codes had them
    con.execute("CREATE OR REPLACE TABLE item_aliases AS SELECT alias, item_key FROM item_aliases")
    con.close()
    con = duckdb.connect(str(store.path), read_only=True)
    assert con.execute("SELECT count(*) FROM item_aliases").fetchall() == [(crosswalk.height,)]
    con.close()
    older = DuckDBStatsStore(tmp_path / "stats.duckdb")
    assert older.resolve_aliases(pair) == resolved
    shared = DuckDBStatsStore(tmp_path / "stats.duckdb", shared_reads=True)
    assert shared.resolve_aliases(pair) == resolved
    shared._shared.close()  # type: ignore[union-attr]
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        codes = con.execute("SELECT alias, alias_code FROM item_aliases").fetchall()
    finally:
        con.close()
    assert len(codes) == crosswalk.height
    assert [code for _, code in codes] == sorted(key_code(alias) for alias, _ in codes)


def test_the_shared_reader_asks_only_for_stored_alias_codes_and_sees_a_new_cross_walk(
    tmp_path,
):
    """The web's reader keeps the stored aliases' codes per connection and looks up only a
    key whose code is among them (issue 16: DuckDB's lookup of a key that is no alias cost
    ~0.6 ms of an item widget's miss). A key sharing a stored alias's code (same last four
    bytes, no namespace) is still asked and resolves to nothing; a cross-walk replaced by a
    run is seen at the reader's next connection, dropped aliases included."""
    from usage_stats.storage.duckdb_store import key_code

    def crosswalk(pairs: dict[str, str]) -> pl.DataFrame:
        return pl.DataFrame(
            {"alias": list(pairs), "item_key": list(pairs.values()), "ambiguous": False},
            schema={"alias": pl.String, "item_key": pl.String, "ambiguous": pl.Boolean},
        )

    writer = DuckDBStatsStore(tmp_path / "stats.duckdb")
    writer.record_aliases(crosswalk({"10.1/abcd": "oai:r.org:1", "hdl:1/2": "oai:r.org:2"}))
    reader = DuckDBStatsStore(tmp_path / "stats.duckdb", shared_reads=True)
    asked: list[tuple] = []
    arrays: list = []  # the arrays themselves: kept alive, compared by identity
    original = reader._shared.alias_codes  # type: ignore[union-attr]

    def spied(cursor):
        codes = original(cursor)
        asked.append(tuple(int(c) for c in codes) if codes is not None else None)
        arrays.append(codes)
        return codes

    reader._shared.alias_codes = spied  # type: ignore[union-attr,method-assign]
    assert key_code("10.2/abcd") == key_code("10.1/abcd")
    assert reader.resolve_aliases(("10.1/abcd",)) == {"10.1/abcd": "oai:r.org:1"}
    assert reader.resolve_aliases(("10.2/abcd", "oai:r.org:1")) == {}
    assert reader.resolve_aliases(("hdl:1/2", "nothing")) == {"hdl:1/2": "oai:r.org:2"}
    assert asked[-1] == tuple(sorted({key_code("10.1/abcd"), key_code("hdl:1/2")}))
    reader._shared.close()  # type: ignore[union-attr]  # idle: closed; nothing written
    assert reader.resolve_aliases(("hdl:1/2",)) == {"hdl:1/2": "oai:r.org:2"}
    assert all(a is arrays[0] for a in arrays)  # the first connection's codes, kept
    opened = reader._shared.opened  # type: ignore[union-attr]

    writer.record_aliases(crosswalk({"hdl:1/3": "oai:r.org:3"}))  # waits for the reader
    assert reader.resolve_aliases(("hdl:1/3", "hdl:1/2")) == {"hdl:1/3": "oai:r.org:3"}
    assert reader.resolve_aliases(("10.1/abcd",)) == {}
    assert reader._shared.opened == opened + 1  # type: ignore[union-attr]
    assert asked[-1] == (key_code("hdl:1/3"),)
    assert arrays[-1] is not arrays[0]  # read again after the write
    writer.record_aliases(crosswalk({}))
    assert reader.resolve_aliases(("hdl:1/3",)) == {}
    assert asked[-1] == ()
    reader._shared.close()  # type: ignore[union-attr]


def test_an_empty_day_and_an_empty_cross_walk_are_written(store):
    """A day rewritten without rows (a site's events all rejected) and a cross-walk with no
    alias: the key codes of no key (Polars refused the untyped empty mapping: both failed)."""
    from usage_stats.pipeline.metrics import DELTA_SCHEMA

    deltas, snapshot = day_frames(DAY, 3)
    store.replace_day(DAY, deltas, snapshot)
    empty = pl.DataFrame(schema=DELTA_SCHEMA)
    assert store.replace_day(DAY, empty, empty).delta_rows == 0
    assert store.row_count("usage_deltas", DAY) == 0
    no_alias = pl.DataFrame(schema={"alias": pl.String, "item_key": pl.String, "ambiguous": bool})
    assert store.record_aliases(no_alias) == 0
    assert store.resolve_aliases(("10.1/x",)) == {}


def test_sums_without_rows_keep_every_other_column_as_it_was():
    """`sums` leaves out `rows` without an eager `drop` (a lazy query per web request)."""
    from usage_stats.storage.store import empty_sums, without_rows

    frame = pl.DataFrame(
        {"date": [DAY, None], "level": ["R", None], "views": [3, 0], "rows": [2, 1]},
        schema={"date": pl.Date, "level": pl.String, "views": pl.Int64, "rows": pl.Int64},
    )
    assert without_rows(frame).equals(frame.drop("rows"))
    assert without_rows(frame).schema == frame.drop("rows").schema
    empty = empty_sums(("date", "level"))
    assert without_rows(empty).schema == empty.drop("rows").schema
    assert without_rows(empty).height == 0
    assert "rows" in frame.columns  # the frame given is left whole


def test_records_are_asked_by_their_codes_exactly_and_an_older_store_gets_the_codes(tmp_path):
    """Records are written in key-code order and read within each namespace's code range:
    keys sharing a code (one namespace, the same last 4 bytes) give only the asked record;
    keys of more namespaces than the ranges cover are still all found; a store whose records
    predate the codes is read by key, and coded in code order by its next write."""
    import duckdb
    import metadata_support as md

    from usage_stats.storage.duckdb_store import _MAX_CODE_RANGES, key_code

    namespaces = [f"repo{n}.example.org" for n in range(_MAX_CODE_RANGES + 3)]
    keys = [f"oai:{ns}:{i}1234" for ns in namespaces for i in range(4)] + [
        "10.1234/abc",  # a DOI key: no namespace
        "https://example.org/handle/1",
    ]
    assert key_code(keys[0]) == key_code(keys[1])  # same namespace and last 4 bytes
    records = [md.record(k, title=f"title of {k}") for k in keys]
    store = DuckDBStatsStore(tmp_path / "stats.duckdb")
    store.record_item_metadata(md.frame(*reversed(records)))
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        written = con.execute("SELECT item_key, key_code FROM item_metadata").fetchall()
    finally:
        con.close()
    assert [code for _, code in written] == sorted(key_code(k) for k in keys)
    assert all(code == key_code(k) for k, code in written)
    shared = DuckDBStatsStore(tmp_path / "stats.duckdb", shared_reads=True)
    for reader in (store, shared):
        assert_frame_equal(reader.item_metadata((keys[1],)), md.stored(records[1]))
        one_per_namespace = tuple(keys[::4])  # one more namespace than the ranges
        assert len(one_per_namespace) > _MAX_CODE_RANGES
        wanted = (*one_per_namespace, keys[-1], keys[-2], "oai:repo1.example.org:91234")
        expected = md.stored(*(r for r in records if r["item_key"] in wanted))
        assert_frame_equal(reader.item_metadata(wanted), expected)
        assert_frame_equal(reader.item_metadata(tuple(keys[4:8])), md.stored(*records[4:8]))
    shared._shared.close()  # type: ignore[union-attr]

    con = duckdb.connect(str(store.path))  # as a store before record codes had them
    con.execute(
        "CREATE OR REPLACE TABLE item_metadata AS SELECT * EXCLUDE (key_code) FROM item_metadata"
    )
    con.close()
    older = DuckDBStatsStore(tmp_path / "stats.duckdb")
    assert_frame_equal(older.item_metadata((keys[1], keys[-1])), md.stored(records[1], records[-1]))
    older.record_item_metadata(md.frame(md.record("oai:new.example.org:1")))
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        codes = [code for (code,) in con.execute("SELECT key_code FROM item_metadata").fetchall()]
    finally:
        con.close()
    assert codes == sorted(key_code(k) for k in [*keys, "oai:new.example.org:1"])
    assert_frame_equal(older.item_metadata((keys[0],)), md.stored(records[0]))
