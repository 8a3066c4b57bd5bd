"""The DuckDB store opens its file read-only for usage readers and writable for the record
and subcount readers; one process cannot hold both at once, so concurrent web requests of
both kinds wait for each other instead of failing (`DuckDBStatsStore._connect`)."""

from __future__ import annotations

import threading
import time

import pytest

from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.store import StatsStoreError


def test_a_read_only_reader_waits_for_a_writable_connection_to_close(tmp_path):
    store = DuckDBStatsStore(tmp_path / "stats.duckdb")
    assert store.record_days() == []  # creates the file and its tables
    answers: list = []
    with store._connect():  # writable, as a record or subcount reader holds it
        reader = threading.Thread(target=lambda: answers.append(store.days()))
        reader.start()
        time.sleep(0.3)
        assert reader.is_alive() and answers == []  # waiting, not failed
    reader.join(timeout=10)
    assert answers == [[]]


def test_it_gives_up_at_the_lock_timeout(tmp_path):
    store = DuckDBStatsStore(tmp_path / "stats.duckdb", lock_timeout_seconds=0.2)
    store.record_days()
    with store._connect(), pytest.raises(StatsStoreError, match="different configuration"):
        store.days()
