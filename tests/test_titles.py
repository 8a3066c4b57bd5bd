"""Item titles from Matomo page titles: one per normalised item, the last one seen."""

from __future__ import annotations

import datetime as dt
import io

import polars as pl
from test_identifier_rules import HANDLE_RULE

from support import TEST_SOURCES
from usage_stats.pipeline.canonical import read_canonical_day
from usage_stats.pipeline.titles import PAGE_TITLE_SCHEMA, latest_item_titles, page_titles
from usage_stats.storage.lake import LocalLake, day_leaf

REPO, REPO2, NATIONAL, PORTAL = TEST_SOURCES
T0 = dt.datetime(2026, 1, 1, 8, 0, tzinfo=dt.UTC)


def seen(*rows: tuple[int, str, str, int]) -> pl.DataFrame:
    """(site, raw identifier, title, minutes after 08:00) rows of page titles."""
    return pl.DataFrame(
        [(s, r, t, T0 + dt.timedelta(minutes=m)) for s, r, t, m in rows],
        schema=PAGE_TITLE_SCHEMA,
        orient="row",
    )


def titles(frame: pl.DataFrame, sources=TEST_SOURCES) -> dict[str, str]:
    return dict(latest_item_titles(frame, sources).select("key", "title").iter_rows())


def test_every_spelling_is_one_item_and_the_last_title_wins():
    frame = seen(
        (1, "oai:www.kerwa.ucr.ac.cr:10669/1", "Old name", 0),
        (4, "OAI:WWW.KERWA.UCR.AC.CR:10669/1", "New name", 30),  # seen on the node, later
        (5, "oai:https://www.kerwa.ucr.ac.cr/server:10669/1", "Old name", 10),
        (2, "oai:repo2.example.org:7", "Seven", 5),
    )
    assert titles(frame) == {
        "oai:www.kerwa.ucr.ac.cr:10669/1": "New name",
        "oai:repo2.example.org:7": "Seven",
    }


def test_a_tie_is_settled_by_the_title_so_reruns_agree():
    frame = seen((1, "oai:repo2.example.org:7", "B", 0), (2, "oai:repo2.example.org:7", "A", 0))
    assert titles(frame) == {"oai:repo2.example.org:7": "B"}
    assert titles(frame.reverse()) == {"oai:repo2.example.org:7": "B"}


def test_unregistered_sites_and_unreadable_identifiers_title_nothing():
    frame = seen(
        (99, "oai:repo2.example.org:7", "From a site nobody registered", 0),
        (1, "   ", "Nothing to attach it to", 0),  # blank: no item, as in cleaning
    )
    assert titles(frame) == {}
    assert latest_item_titles(frame.clear(), TEST_SOURCES).is_empty()


def test_source_rules_apply_as_for_the_statistics():
    frame = seen((1, "oai:www.kerwa.ucr.ac.cr:10669/578", "Kerwa 578", 0))
    assert titles(frame, [HANDLE_RULE, REPO2, NATIONAL, PORTAL]) == {
        "oai:www.kerwa.ucr.ac.cr:kerwa-578": "Kerwa 578"
    }


def test_page_titles_fold_views_and_ignore_empty_titles():
    events = pl.DataFrame(
        {
            "site_id": [1, 1, 1, 1, 1],
            "raw_identifier": ["oai:a:1", "oai:a:1", "oai:a:1", "oai:a:2", None],
            "page_title": ["  Title  ", "Title", "   ", None, "Orphan"],
            "event_time": [T0, T0 + dt.timedelta(hours=1), T0, T0, T0],
        },
        schema_overrides={"site_id": pl.Int32, "event_time": pl.Datetime("us", "UTC")},
    )
    folded = page_titles(events)
    assert folded.rows() == [(1, "oai:a:1", "Title", T0 + dt.timedelta(hours=1))]


def test_lake_files_give_titles_of_views_only_and_files_without_titles_none(tmp_path):
    lake = LocalLake(tmp_path)
    day = dt.date(2026, 1, 1)
    base = {
        "idvisit": [1, 1],
        "server_time": ["2026-01-01 10:00:00", "2026-01-01 10:01:00"],
        "action_type": [1, 3],  # a view and a download of the same item
        "action_url": ["https://x/items/1", "https://x/items/1/file.pdf"],
        "custom_var_v1": ["oai:repo2.example.org:1", "oai:repo2.example.org:1"],
    }
    with_titles = pl.DataFrame({"idsite": [2, 2], **base, "action_name": ["A title", "file.pdf"]})
    without = pl.DataFrame({"idsite": [1, 1], **base})
    for site, frame in ((2, with_titles), (1, without)):
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        lake.write_bytes(f"{day_leaf('events', site, day)}/part-0.parquet", buffer.getvalue())
    result = read_canonical_day(lake, day, {1: 1, 2: 1}, "salt")
    assert result.events.height == 4
    assert "page_title" not in result.events.columns
    assert result.titles.select("site_id", "raw_identifier", "page_title").rows() == [
        (2, "oai:repo2.example.org:1", "A title")
    ]
