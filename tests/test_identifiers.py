"""Identifier normalisation: every spelling of an OAI id, handle or DOI reaches one key.

The table is the specification: each row a raw spelling and the key it must reach, with the
spellings that must *not* merge (versions, other registrants, things that are no identifier).
"""

import random

import polars as pl
import pytest

from bench.identifiers_bench import spellings
from support import at, events, registry
from usage_stats.pipeline.cleaning import clean_events
from usage_stats.pipeline.identifiers import (
    _fast_keys,
    _library_key,
    _scalar_fast_key,
    normalize_distinct,
    normalize_identifier,
    normalize_identifier_expr,
    normalize_identifiers,
)
from usage_stats.pipeline.metrics import daily_deltas

OAI = "oai:www.kerwa.ucr.ac.cr:10669/578"
HANDLE = "hdl:1721.1/123"
DOI = "10.1234/abc.def"
ZW = "\u200b"  # zero-width space

CASES: list[tuple[str | None, str | None]] = [
    # --- OAI identifiers -------------------------------------------------------------------
    ("oai:www.kerwa.ucr.ac.cr:10669/578", OAI),
    ("oai:https://www.kerwa.ucr.ac.cr/server:10669/578", OAI),  # DSpace 7 endpoint
    ("oai:http://www.kerwa.ucr.ac.cr:10669/578", OAI),
    ("OAI:WWW.KERWA.UCR.AC.CR:10669/578", OAI),
    ("  oai:www.kerwa.ucr.ac.cr:10669/578 ", OAI),
    ("oai:www.kerwa.ucr.ac.cr:10669/578/", OAI),  # trailing slash
    ("oai:www.kerwa.ucr.ac.cr:10669/578//", OAI),
    ("oai:www.kerwa.ucr.ac.cr/server:10669/578", OAI),  # endpoint path without scheme
    ("oai:www.kerwa.ucr.ac.cr:8080:10669/578", OAI),  # host with a port
    ("oai:https://www.kerwa.ucr.ac.cr:8443/server:10669/578", OAI),
    ("oai:HTTPS://WWW.KERWA.UCR.AC.CR:8443/server:10669/578", OAI),
    ("oai%3Awww.kerwa.ucr.ac.cr%3A10669%2F578", OAI),  # URL-encoded
    ("oai:www.kerwa.ucr.ac.cr:10669%2F578", OAI),
    ("oai%253Awww.kerwa.ucr.ac.cr%253A10669%252F578", OAI),  # encoded twice
    (f"{ZW}oai:www.kerwa.ucr.ac.cr:10669/578{ZW}", OAI),  # zero-width space
    (f"oai:www.kerwa.ucr.ac.cr:10669{ZW}/578", OAI),  # … inside
    ("\ufeffoai:www.kerwa.ucr.ac.cr:10669/578", OAI),  # byte-order mark
    ("oai:www.kerwa.ucr.ac.cr:10669/578\u200d\u2060", OAI),  # joiner, word joiner
    ("\u200eoai:www.kerwa.ucr.ac.cr:10669/578\u200f", OAI),  # direction marks
    ("oai:www.kerwa.ucr.ac.cr:10669/\u00ad578", OAI),  # soft hyphen
    ("\u00a0oai:www.kerwa.ucr.ac.cr:10669/578\u2003", OAI),  # no-break and em spaces
    ("\toai:www.kerwa.ucr.ac.cr:10669/578\r\n", OAI),
    ("oai%3Awww.kerwa.ucr.ac.cr%3A10669%2F578%E2%80%8B", OAI),  # encoded zero-width space
    # the local id keeps its case; a colon inside it is not a port
    ("oai:www.kerwa.ucr.ac.cr:10669/AbC", "oai:www.kerwa.ucr.ac.cr:10669/AbC"),
    ("oai:repo.org:123/4:5", "oai:repo.org:123/4:5"),
    ("oai:repo.org:2019:15", "oai:repo.org:2019:15"),  # digits and a colon, no handle: kept
    ("oai:arXiv.org:hep-th/9901001", "oai:arxiv.org:hep-th/9901001"),
    ("oai:dataverse.org:doi:10.5072/FK2/ABC", "oai:dataverse.org:doi:10.5072/FK2/ABC"),
    # --- handles ---------------------------------------------------------------------------
    ("1721.1/123", HANDLE),  # bare
    ("hdl:1721.1/123", HANDLE),
    ("HDL:1721.1/123", HANDLE),
    ("hdl: 1721.1/123", HANDLE),
    ("hdl.handle.net/1721.1/123", HANDLE),  # resolver without a scheme
    ("http://hdl.handle.net/1721.1/123", HANDLE),
    ("https://hdl.handle.net/1721.1/123", HANDLE),
    ("HTTPS://HDL.HANDLE.NET/1721.1/123", HANDLE),
    ("https://hdl.handle.net/1721.1/123/", HANDLE),
    ("https://hdl.handle.net/1721.1/123?noredirect", HANDLE),  # resolver options
    ("https://hdl.handle.net/1721.1/123#top", HANDLE),
    ("info:hdl/1721.1/123", HANDLE),
    ("INFO:HDL/1721.1/123", HANDLE),
    ("https://dspace.mit.edu/handle/1721.1/123", HANDLE),  # repository handle URL
    ("http://dspace.mit.edu/xmlui/handle/1721.1/123/", HANDLE),
    ("dspace.mit.edu/jspui/handle/1721.1/123", HANDLE),
    ("https://dspace.mit.edu:8443/handle/1721.1/123?show=full", HANDLE),
    ("https://dspace.mit.edu/bitstream/handle/1721.1/123/thesis.pdf?sequence=1", HANDLE),
    ("1721.1%2F123", HANDLE),
    ("hdl.handle.net/1721.1%2F123", HANDLE),
    ("https%3A%2F%2Fhdl.handle.net%2F1721.1%2F123", HANDLE),
    (f"1721.1/123{ZW}", HANDLE),
    (f"{ZW}https://hdl.handle.net/1721.1/123 ", HANDLE),
    ("1721.1/123/", HANDLE),
    ("20.500.12345/678", "hdl:20.500.12345/678"),
    ("https://hdl.handle.net/20.500.12345/678", "hdl:20.500.12345/678"),
    ("123456789/42", "hdl:123456789/42"),  # DSpace's default prefix
    ("hdl:1721.1/AbC", "hdl:1721.1/AbC"),  # handles keep their case
    ("hdl:10/123", "hdl:10/123"),  # prefix 10 alone is not the DOI namespace 10.x
    ("hdl:kerwa/1", "hdl:kerwa/1"),  # explicitly a handle, whatever its prefix
    # versions are handles of their own: distinct from the unversioned item
    ("1721.1/140856.2", "hdl:1721.1/140856.2"),
    ("https://hdl.handle.net/1721.1/140856.2", "hdl:1721.1/140856.2"),
    ("1721.1/140856", "hdl:1721.1/140856"),
    # --- DOIs ------------------------------------------------------------------------------
    ("10.1234/abc.def", DOI),
    ("10.1234/ABC.def", DOI),
    ("doi:10.1234/abc.def", DOI),
    ("DOI: 10.1234/ABC.DEF", DOI),
    ("https://doi.org/10.1234/abc.def", DOI),
    ("http://dx.doi.org/10.1234/abc.def", DOI),
    ("doi.org/10.1234/abc.def", DOI),  # resolver without a scheme
    ("dx.doi.org/10.1234/abc.def", DOI),
    ("www.doi.org/10.1234/abc.def", DOI),
    ("https://www.doi.org/10.1234/ABC.DEF", DOI),
    ("info:doi/10.1234/abc.def", DOI),
    ("info:doi/10.1234%2Fabc.def", DOI),
    ("urn:doi:10.1234/abc.def", DOI),
    ("https://doi.org/10.1234/abc.def?via=widget", DOI),
    ("https://doi.org/10.1234/abc.def/", DOI),
    ("10.1234/abc.def/", DOI),
    ("10.1234%2Fabc.def", DOI),
    ("10.1234%2fabc.def", DOI),
    ("https://doi.org/10.1234%2FABC.def", DOI),
    (f"{ZW}10.1234/abc.def{ZW}", DOI),
    ("\u00a0doi:10.1234/abc.def\u00a0", DOI),
    # DOIs are handles under 10.: reached through the handle system, they are DOIs
    ("hdl:10.1234/abc.def", DOI),
    ("hdl.handle.net/10.1234/abc.def", DOI),
    ("https://hdl.handle.net/10.1234/ABC.def", DOI),
    ("info:hdl/10.1234/abc.def", DOI),
    ("https://repo.org/handle/10.1234/abc.def", DOI),
    # dotted registrants are DOI prefixes of their own
    ("10.1000.10/X", "10.1000.10/x"),
    ("doi:10.1000.10/x", "10.1000.10/x"),
    ("https://doi.org/10.1000.10/X", "10.1000.10/x"),
    ("hdl.handle.net/10.1000.10/x", "10.1000.10/x"),
    # `?` is part of a bare DOI; in a URL it starts the query unless encoded
    ("10.1234/a?b", "10.1234/a?b"),
    ("https://doi.org/10.1234/a%3Fb", "10.1234/a?b"),
    ("10.1234/a b", "10.1234/a b"),
    # --- not the same item -----------------------------------------------------------------
    ("10.12345/abc.def", "10.12345/abc.def"),  # another registrant
    ("10.1234.5/abc.def", "10.1234.5/abc.def"),  # a dotted registrant is another prefix
    ("1721.10/123", "hdl:1721.10/123"),
    # --- no identifier: kept as recorded, without invisible characters and edge spaces -----
    ("hello world", "hello world"),
    (" https://example.org/page?x=1 ", "https://example.org/page?x=1"),
    ("https://repo.org/items/3f2a9c", "https://repo.org/items/3f2a9c"),
    ("abc/def", "abc/def"),  # a handle needs a numeric prefix unless marked as one
    ("12345", "12345"),
    ("10.1234", "10.1234"),  # a DOI prefix without a suffix
    ("10.1234/", "10.1234/"),
    ("doi:10.abc/x", "doi:10.abc/x"),
    ("oai:", "oai:"),
    ("oai:repo.org", "oai:repo.org"),
    ("hdl:", "hdl:"),
    ("https://hdl.handle.net/", "https://hdl.handle.net/"),
    ("100%", "100%"),
    (f"hello{ZW} world", "hello world"),
    ("/", "/"),
    # --- nothing at all --------------------------------------------------------------------
    ("", None),
    ("   ", None),
    (ZW, None),
    ("\u00a0\u200b\ufeff", None),
    ("%E2%80%8B", "%E2%80%8B"),  # an encoded invisible character alone: not an identifier
    (None, None),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_every_spelling_reaches_its_key(raw, expected):
    assert normalize_identifier(raw) == expected


def test_no_two_rows_of_the_table_disagree():
    keys: dict[str | None, str | None] = {}
    for raw, expected in CASES:
        assert keys.setdefault(raw, expected) == expected, raw


def test_versions_registrants_and_lookalikes_stay_apart():
    apart = [
        ("1721.1/140856", "1721.1/140856.2"),
        ("10.1234/abc.def", "10.12345/abc.def"),
        ("10.1000/x", "10.1000.10/x"),
        ("1721.1/123", "1721.10/123"),
        ("hdl:1721.1/abc", "hdl:1721.1/ABC"),
        ("oai:repo.org:1/a", "oai:repo.org:1/A"),
    ]
    for one, other in apart:
        assert normalize_identifier(one) != normalize_identifier(other)


def test_vectorised_scalar_and_expression_forms_agree_in_any_order():
    raws = [raw for raw, _ in CASES] * 2
    random.Random(7).shuffle(raws)
    column = pl.Series("raw_identifier", raws, dtype=pl.String)
    expected = [normalize_identifier(raw) for raw in raws]
    assert normalize_identifiers(column).to_list() == expected
    assert normalize_distinct(column).to_list() == expected
    via_expr = column.to_frame().select(normalize_identifier_expr(pl.col("raw_identifier")))
    assert via_expr.to_series().to_list() == expected
    lazy = (
        column.to_frame()
        .lazy()
        .with_columns(normalize_identifier_expr(pl.col("raw_identifier")).alias("key"))
    )
    assert lazy.collect().get_column("key").to_list() == expected


def test_the_vectorised_pass_and_the_library_agree_on_the_spellings_both_read():
    """Canonical DOIs and handles are keyed by the vectorised pass without idutils; idutils
    reads them too and must give the same key, or a key would depend on the path taken."""
    texts = [key for _, key in CASES if key and not key.startswith("oai:")]
    texts += ["hdl:20.500.1/x.Y", "10.5555/ABC", "10.1000.10/Ä"]
    fast = _fast_keys(pl.Series(texts, dtype=pl.String)).to_list()
    both = [(text, key) for text, key in zip(texts, fast, strict=True) if key is not None]
    assert len(both) > 20
    for text, key in both:
        assert _library_key(text) == key, text


def test_the_scalar_fast_path_gives_the_column_path_s_key():
    """One identifier of an API request is keyed in plain Python when it is already canonical
    (issue 16); whatever it keys must be what the column path gives, and it must key the
    canonical spellings (else the request pays the column path's ~10 ms)."""
    raws = [raw for raw, _ in CASES if raw is not None]
    raws += [key for _, key in CASES if key]
    raws += spellings(3_000, "mixed").to_list() + spellings(500, "library").to_list()
    raws += [
        "oai:Repo.org:1",  # upper-case host: the column path lowers it
        "OAI:repo.org:1",
        "oai:repo.org:",  # nothing after the host
        "oai:repo.org:12:3/4",  # a port: the column path drops it
        "oai:https://repo.org:1",
        "oai:repo.org/server:1",
        "10.1234/ABC?x=1#y",
        "hdl:10.1234/X",  # a DOI as a handle
        "hdl:1721.1./x",
        "hdl:1721..1/x",
        "hdl:1721.1/ä",
        "10.1234/é",
        "oai:repo.org:1 ",
        "oai:repo.org:1%2F2",
        "oai:repo.org:a/",
    ]
    column = normalize_distinct(pl.Series(raws, dtype=pl.String)).to_list()
    fast = [_scalar_fast_key(raw) for raw in raws]
    for raw, full, quick in zip(raws, column, fast, strict=True):
        assert quick is None or quick == full, raw
        assert normalize_identifier(raw) == full, raw
    for key in ("oai:repo.org:1/a", "oai:www.kerwa.ucr.ac.cr:10669/578", "hdl:1721.1/A", DOI):
        assert _scalar_fast_key(key) == key
    assert _scalar_fast_key("10.1234/ABC") == "10.1234/abc"
    assert sum(q is not None for q in fast) > 500


def test_normalisation_is_idempotent():
    for raw, expected in CASES:
        assert normalize_identifier(expected) == expected, raw


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


def test_every_spelling_of_the_table_is_one_item_in_the_statistics():
    """Each spelling is a view in a visit of its own: an item's views are its spellings."""
    rows = [
        {"visit_id": i, "raw_identifier": raw, "event_time": at(i)}
        for i, (raw, _) in enumerate(CASES, start=1)
    ]
    result = clean_events(events(*rows), registry())
    views = daily_deltas(result.sessions).filter(pl.col("scope") == "item")
    counted = dict(zip(views.get_column("key"), views.get_column("views"), strict=True))
    expected: dict[str, int] = {}
    for _, key in CASES:
        if key is not None:
            expected[key] = expected.get(key, 0) + 1
    assert counted == expected
    assert counted[OAI] == 23 and counted[HANDLE] == 24 and counted[DOI] == 26
    # the blank spellings are rejected, each with its reason
    blank = sum(key is None for _, key in CASES)
    assert result.rejected.get_column("reason").to_list() == ["no_identifier"] * blank
    assert result.sessions.height + result.rejected.height == len(CASES)


def test_distinct_spellings_of_both_paths_stay_distinct_keys():
    """The generated mixes of bench/identifiers_bench.py (mostly OAI, and the worst case where
    every value needs idutils): every spelling a key, distinct spellings distinct keys. Their
    speed is measured there, not here."""
    for mix in ("typical", "library"):
        values = spellings(20_000, mix)
        keys = normalize_distinct(values)
        assert keys.null_count() == 0 and keys.n_unique() == values.len()
