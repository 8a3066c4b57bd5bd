import polars as pl
import pytest

from support import at, events, registry
from usage_stats.cleaning import clean_events
from usage_stats.identifiers import normalize_identifier, normalize_identifiers
from usage_stats.metrics import daily_deltas


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("oai:https://www.kerwa.ucr.ac.cr/server:10669/578", "oai:www.kerwa.ucr.ac.cr:10669/578"),
        ("oai:www.kerwa.ucr.ac.cr:10669/578", "oai:www.kerwa.ucr.ac.cr:10669/578"),
        ("OAI:WWW.KERWA.UCR.AC.CR:10669/578", "oai:www.kerwa.ucr.ac.cr:10669/578"),
        ("oai:http://www.kerwa.ucr.ac.cr:10669/578", "oai:www.kerwa.ucr.ac.cr:10669/578"),
        ("  oai:www.kerwa.ucr.ac.cr:10669/578 ", "oai:www.kerwa.ucr.ac.cr:10669/578"),
        ("https://doi.org/10.1234/ABC.def", "10.1234/abc.def"),
        ("http://dx.doi.org/10.1234/ABC", "10.1234/abc"),
        ("doi:10.1234/AbC", "10.1234/abc"),
        ("10.1234/AbC", "10.1234/abc"),
        ("http://hdl.handle.net/10669/578", "hdl:10669/578"),
        ("hdl:10669/578", "hdl:10669/578"),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_normalize_identifier(raw, expected):
    assert normalize_identifier(raw) == expected


def test_vectorised_form_matches_scalar_and_keeps_order():
    raw = pl.Series(
        "raw_identifier",
        [
            "oai:https://h.org/server:1",
            None,
            "OAI:H.ORG:1",
            "doi:10.5555/X",
            "oai:https://h.org/server:1",
        ],
    )
    assert normalize_identifiers(raw).to_list() == [
        "oai:h.org:1",
        None,
        "oai:h.org:1",
        "10.5555/x",
        "oai:h.org:1",
    ]


def test_variants_merge_and_counts_add_up():
    """Three spellings in three visits are one item with three views."""
    frame = events(
        {"visit_id": 1, "raw_identifier": "oai:https://www.kerwa.ucr.ac.cr/server:10669/578"},
        {"visit_id": 2, "raw_identifier": "oai:www.kerwa.ucr.ac.cr:10669/578"},
        {
            "visit_id": 3,
            "raw_identifier": " OAI:www.kerwa.ucr.ac.cr:10669/578",
            "event_time": at(5),
        },
    )
    deltas = daily_deltas(clean_events(frame, registry()).sessions)
    items = deltas.filter(pl.col("scope") == "item")
    assert items.get_column("key").to_list() == ["oai:www.kerwa.ucr.ac.cr:10669/578"]
    assert items.get_column("views").to_list() == [3]
    assert items.get_column("owner_site_id").to_list() == [1]
