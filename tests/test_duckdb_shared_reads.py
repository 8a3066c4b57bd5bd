"""The DuckDB store's shared read connection (`shared_reads=True`, the web service's): one
connection serves many queries, yet a run in another process can write while it is open,
and the reader sees the run's data afterwards."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import polars as pl

from usage_stats.pipeline.metrics import DELTA_SCHEMA, METRICS
from usage_stats.storage.duckdb_store import DuckDBStatsStore

REPO = Path(__file__).resolve().parents[1]
DAY1, DAY2 = dt.date(2026, 1, 5), dt.date(2026, 1, 6)


def day_rows(day: dt.date, views: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    row = {"date": day, "scope": "global", "key": "global", "site_id": None, "level": "R",
           "owner_site_id": None, "country": "BR", **dict.fromkeys(METRICS, 0)}  # fmt: skip
    row["views"] = views
    deltas = pl.DataFrame([row], schema=DELTA_SCHEMA)
    return deltas, deltas


def total(store: DuckDBStatsStore) -> int:
    return int(
        store.totals("global", "global", dt.date(2026, 1, 1), dt.date(2026, 1, 31))["views"][0]
    )


WRITER = textwrap.dedent(
    """
    import datetime as dt, sys
    sys.path.insert(0, {tests!r})
    from test_duckdb_shared_reads import day_rows
    from usage_stats.storage.duckdb_store import DuckDBStatsStore
    store = DuckDBStatsStore(__import__("pathlib").Path({path!r}), lock_timeout_seconds=15)
    store.replace_day(dt.date(2026, 1, 6), *day_rows(dt.date(2026, 1, 6), 5))
    """
)


def test_a_run_in_another_process_writes_while_the_reader_is_open(tmp_path):
    path = tmp_path / "stats.duckdb"
    DuckDBStatsStore(path).replace_day(DAY1, *day_rows(DAY1, 3))
    reader = DuckDBStatsStore(path, shared_reads=True)
    assert total(reader) == 3
    assert total(reader) == 3 and reader.days() == [DAY1]
    assert reader._shared.opened == 1  # one connection for every query so far
    before = reader.data_version()

    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", WRITER.format(tests=str(REPO / "tests"), path=str(path))],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert time.monotonic() - started < 12  # the reader let go at once, not after the timeout
    assert reader.data_version() != before
    assert total(reader) == 8  # reopened on the run's data
    assert reader._shared.opened == 2
    assert not reader.writers_waiting()  # the writer's announcement is gone


def test_concurrent_queries_share_the_connection(tmp_path):
    path = tmp_path / "stats.duckdb"
    writer = DuckDBStatsStore(path)
    writer.replace_day(DAY1, *day_rows(DAY1, 3))
    writer.replace_day(DAY2, *day_rows(DAY2, 4))
    reader = DuckDBStatsStore(path, shared_reads=True)
    results: list[int] = []

    def work() -> None:
        for _ in range(20):
            results.append(total(reader))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [7] * 160
    assert reader._shared.opened == 1


def test_a_dead_writers_announcement_is_ignored(tmp_path):
    path = tmp_path / "stats.duckdb"
    DuckDBStatsStore(path).replace_day(DAY1, *day_rows(DAY1, 3))
    reader = DuckDBStatsStore(path, shared_reads=True)
    reader.writers_path.mkdir(exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    (reader.writers_path / f"{dead}.x").touch()
    assert not reader.writers_waiting()
    assert not list(reader.writers_path.iterdir())
    (reader.writers_path / f"{__import__('os').getpid()}.y").touch()  # a live one
    assert reader.writers_waiting()
    assert total(reader) == 3  # read with a connection of its own meanwhile
    assert reader._shared.opened == 0


def test_the_web_s_reads_leave_the_data_version_as_it_is(tmp_path):
    """Every read of a serving process goes through the shared read-only connection: a read
    that opened a writable connection of its own bumped the data version when it closed, and
    so emptied the response cache of every worker (the subcounts' visitors did, on each
    request of the dashboard's visitors panel)."""
    path = tmp_path / "stats.duckdb"
    DuckDBStatsStore(path).replace_day(DAY1, *day_rows(DAY1, 3))
    reader = DuckDBStatsStore(path, shared_reads=True)
    assert total(reader) == 3  # the first read prepares the file, once
    before = reader.data_version()
    first, last = dt.date(2026, 1, 1), dt.date(2026, 1, 31)
    reads = {
        "totals": lambda: total(reader),
        "days": reader.days,
        "record_days": reader.record_days,
        "subcount_days": reader.subcount_days,
        "subcounts": lambda: reader.subcounts("global", "global", first, last, field="language"),
        "subcount_visitors": lambda: reader.subcount_visitors("global", "global", first, last),
        "spikes": lambda: reader.spikes(first, last),
        "titles": lambda: reader.titles(("oai:x.example.org:1",)),
        "item_metadata": lambda: reader.item_metadata(("oai:x.example.org:1",)),
    }
    for name, read in reads.items():
        read()
        assert reader.data_version() == before, f"{name} changed the data version"
