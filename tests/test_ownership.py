"""Ownership of handle and DOI spellings: an item seen on a national node or the portal as a
handle or a DOI is its repository's, exactly as when it is seen as an OAI identifier."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from support import at, events
from usage_stats.admin import db
from usage_stats.admin.registry import DbSourceRegistry, add_source
from usage_stats.admin.sources import Source, sources_frame
from usage_stats.pipeline.cleaning import clean_events
from usage_stats.pipeline.identifier_rules import apply_identifier_rules
from usage_stats.pipeline.metrics import daily_deltas
from usage_stats.pipeline.ownership import OwnerIndex, declarations, owner_ids, owner_of
from usage_stats.web.common import WebContext

KERWA = Source(
    1, "opendoar::1", "Kerwa", "R", "CR", "oai:www.kerwa.ucr.ac.cr:", 1, 4, 5,
    handle_prefixes=("10669",), doi_prefixes=("10.15517",),
)  # fmt: skip
# shares the publisher prefix 10.15517 with Kerwa and claims its own part of it
REPO2 = Source(
    2, "opendoar::2", "Repo two", "R", "AR", "oai:repo2.example.org:", 1, 4, 5,
    handle_prefixes=("1721.1",), doi_prefixes=("10.15517/ar.",),
)  # fmt: skip
NATIONAL = Source(4, "national::CR", "National node", "N", "CR", None, 1, None, 5)
PORTAL = Source(5, "regional::LA", "Portal", "L", None, None, 6)
SOURCES = [KERWA, REPO2, NATIONAL, PORTAL]


@pytest.mark.parametrize(
    ("key", "owner"),
    [
        ("oai:www.kerwa.ucr.ac.cr:10669/578", 1),
        ("oai:repo2.example.org:1/2", 2),
        ("hdl:10669/578", 1),
        ("hdl:1721.1/140856", 2),
        ("hdl:1721.1/140856.2", 2),  # a version is its item's repository's too
        ("hdl:1721.10/1", None),  # another naming authority
        ("hdl:10669.1/1", None),
        ("10.15517/rev.1", 1),
        ("10.15517/ar.9", 2),  # the longest declared prefix wins
        ("10.15517/ar", 1),  # … and is matched as the start of the DOI
        ("10.155171/x", None),
        ("10.15517.1/x", None),  # a dotted registrant is a prefix of its own
        ("10.1234/x", None),
        ("hello world", None),
        (None, None),
    ],
)
def test_owner_of_each_key(key, owner):
    declared = declarations(sources_frame(SOURCES))
    assert owner_ids(pl.Series([key], dtype=pl.String), declared).to_list() == [owner]
    found = owner_of(key, SOURCES) if key else None
    assert (found.site_id if found else None) == owner


def test_sub_prefixes_of_oai_and_handles_and_only_repositories_own():
    sources = [
        dataclasses.replace(KERWA, identifier_prefix="oai:repo.org:", handle_prefixes=("10669",)),
        dataclasses.replace(
            REPO2, identifier_prefix="oai:repo.org:ar/", handle_prefixes=("10669/ar.",)
        ),
        # a national node's declarations own nothing (the registry refuses them; a frame may
        # still carry them)
        dataclasses.replace(NATIONAL, handle_prefixes=("1721.1",)),
    ]
    keys = pl.Series(
        ["oai:repo.org:ar/1", "oai:repo.org:x/1", "hdl:10669/ar.5", "hdl:10669/5", "hdl:1721.1/3"]
    )
    assert owner_ids(keys, declarations(sources_frame(sources))).to_list() == [2, 1, 2, 1, None]


def test_the_one_key_index_agrees_with_the_column_rule():
    """`OwnerIndex` (the web services' per-request lookup, plain Python) gives every key the
    owner `owner_ids` gives it: whole authorities, longer prefixes (longest first, and the
    first listed of two equal ones), keys of no kind, lookalike authorities."""
    sources = [
        dataclasses.replace(KERWA, identifier_prefix="oai:repo.org:", handle_prefixes=("10669",)),
        dataclasses.replace(
            REPO2, identifier_prefix="oai:repo.org:ar/", handle_prefixes=("10669/ar.",)
        ),
        dataclasses.replace(
            REPO2, site_id=3, source_key="opendoar::3", identifier_prefix="oai:repo.org:ar/x",
            handle_prefixes=("10669/ar", "1721.1"), doi_prefixes=("10.15517/ar.", "10.5555"),
        ),
        dataclasses.replace(NATIONAL, handle_prefixes=("20.500.1",)),
    ]  # fmt: skip
    declared = declarations(sources_frame(sources))
    stems = [
        "oai:repo.org:", "oai:repo.org:ar/", "oai:repo.org:ar/x", "oai:repo.orgx:", "oai:other:",
        "hdl:10669/", "hdl:10669/ar.", "hdl:10669/ar", "hdl:1721.1/", "hdl:1721.10/",
        "hdl:20.500.1/", "10.15517/", "10.15517/ar.", "10.15517/a", "10.5555/", "10.55555/",
        "10.15517.1/", "hello/", "oai:", "hdl:", "", "10669/ar.",
    ]  # fmt: skip
    keys = [f"{stem}{tail}" for stem in stems for tail in ("1", "ar.1", "x/2", "", "ä")]
    expected = owner_ids(pl.Series(keys, dtype=pl.String), declared).to_list()
    index = OwnerIndex(declared)
    assert [index.owner_id(k) for k in keys] == expected
    assert {1, 2, 3} <= set(expected) and None in expected


def test_a_prefix_listed_twice_in_a_frame_goes_to_the_first_repository():
    twice = [KERWA, dataclasses.replace(REPO2, handle_prefixes=("10669",))]
    declared = declarations(sources_frame(twice))
    assert owner_ids(pl.Series(["hdl:10669/1"]), declared).to_list() == [1]


# Planted: every row a visit of its own (so every view counts), on the site named.
PLANTED = [
    # (site, spelling, action) → key, owner
    (1, "oai:www.kerwa.ucr.ac.cr:10669/578", "view"),
    (4, "https://hdl.handle.net/10669/578", "view"),
    (5, "10669/578", "view"),
    (5, "info:hdl/10669/578", "view"),
    (4, "https://doi.org/10.15517/REV.1", "view"),
    (4, "doi:10.15517/rev.1", "download"),
    (5, "doi:10.15517/rev.1", "view"),
    (5, "doi.org/10.15517/AR.9", "view"),
    (4, "hdl.handle.net/10.15517/ar.9", "view"),
    (5, "https://hdl.handle.net/1721.1/140856.2", "view"),
    (5, "hdl:9999/1", "view"),  # nobody's
    (4, "10.15517.1/x", "view"),  # nobody's: another registrant
    (2, "hdl:9999/2", "view"),  # nobody's prefix, on a repository's own site: that one's
]
EXPECTED_ITEMS = {
    # (site, key): (owner, views, downloads)
    (1, "oai:www.kerwa.ucr.ac.cr:10669/578"): (1, 1, 0),
    (4, "hdl:10669/578"): (1, 1, 0),
    (5, "hdl:10669/578"): (1, 2, 0),
    (4, "10.15517/rev.1"): (1, 1, 1),
    (5, "10.15517/rev.1"): (1, 1, 0),
    (5, "10.15517/ar.9"): (2, 1, 0),
    (4, "10.15517/ar.9"): (2, 1, 0),
    (5, "hdl:1721.1/140856.2"): (2, 1, 0),
    (5, "hdl:9999/1"): (None, 1, 0),
    (4, "10.15517.1/x"): (None, 1, 0),
    (2, "hdl:9999/2"): (2, 1, 0),
}
EXPECTED_SOURCES = {
    # (owner, site, level): (views, downloads)
    ("1", 1, "R"): (1, 0),
    ("1", 4, "N"): (2, 1),
    ("1", 5, "L"): (3, 0),
    ("2", 2, "R"): (1, 0),
    ("2", 4, "N"): (1, 0),
    ("2", 5, "L"): (2, 0),
}


def planted_events() -> pl.DataFrame:
    return events(
        *(
            {
                "site_id": site,
                "visit_id": i,
                "raw_identifier": spelling,
                "action": action,
                "action_type": 1 if action == "view" else 3,
                "url": f"https://site{site}.example.org/{i}",
                "event_time": at(i),
            }
            for i, (site, spelling, action) in enumerate(PLANTED, start=1)
        )
    )


def test_handle_and_doi_spellings_on_nodes_and_portal_are_their_repositorys():
    result = clean_events(planted_events(), sources_frame(SOURCES))
    assert result.rejected.height == 0 and result.sessions.height == len(PLANTED)
    deltas = daily_deltas(result.sessions)
    items = {
        (r["site_id"], r["key"]): (r["owner_site_id"], r["views"], r["downloads"])
        for r in deltas.filter(pl.col("scope") == "item").iter_rows(named=True)
    }
    assert items == EXPECTED_ITEMS
    sources = {
        (r["key"], r["site_id"], r["level"]): (r["views"], r["downloads"])
        for r in deltas.filter(pl.col("scope") == "source").iter_rows(named=True)
    }
    assert sources == EXPECTED_SOURCES
    # the unowned items are still counted where they were used
    sites = deltas.filter(pl.col("scope") == "site")
    assert dict(zip(sites.get_column("key"), sites.get_column("views"), strict=True)) == {
        "1": 1, "2": 1, "4": 4, "5": 6,
    }  # fmt: skip


def test_without_declared_prefixes_the_same_spellings_own_nothing_off_their_site():
    """The control: what the declarations change (before them, only OAI ids were owned)."""
    bare = [dataclasses.replace(s, handle_prefixes=(), doi_prefixes=()) for s in SOURCES]
    deltas = daily_deltas(clean_events(planted_events(), sources_frame(bare)).sessions)
    sources = {
        (r["key"], r["site_id"], r["level"]): r["views"]
        for r in deltas.filter(pl.col("scope") == "source").iter_rows(named=True)
    }
    assert sources == {("1", 1, "R"): 1, ("2", 2, "R"): 1}


def test_a_repositorys_rule_follows_its_handles_to_the_portal():
    """A regex rule of the repository that owns a handle applies to the handle's events on
    every site: here it folds the handle spelling into the item's OAI identifier."""
    ruled = dataclasses.replace(
        KERWA,
        identifier_rule="regex",
        rule_pattern=r"^hdl:10669/(\d+)$",
        rule_replacement="oai:www.kerwa.ucr.ac.cr:10669/$1",
    )
    sources = [ruled, REPO2, NATIONAL, PORTAL]
    frame = apply_identifier_rules(planted_events(), sources)
    deltas = daily_deltas(clean_events(frame, sources_frame(sources)).sessions)
    items = deltas.filter(
        (pl.col("scope") == "item") & (pl.col("key") == "oai:www.kerwa.ucr.ac.cr:10669/578")
    )
    by_site = dict(zip(items.get_column("site_id"), items.get_column("views"), strict=True))
    assert by_site == {1: 1, 4: 1, 5: 2}
    assert set(items.get_column("owner_site_id")) == {1}


def test_declarations_reach_the_pipeline_from_the_admin_db(tmp_path):
    url = f"sqlite:///{tmp_path / 'admin.db'}"
    db.upgrade(url)
    for source in SOURCES:
        add_source(url, source)
    frame = sources_frame(DbSourceRegistry(url).sources())
    assert frame.schema["handle_prefixes"] == pl.List(pl.String)
    assert frame.filter(pl.col("site_id") == 2).get_column("doi_prefixes").to_list() == [
        ["10.15517/ar."]
    ]
    result = clean_events(planted_events(), frame)
    owners = result.sessions.group_by("owner_site_id").len().sort("owner_site_id", nulls_last=True)
    assert owners.rows() == [(1, 7), (2, 4), (None, 2)]


def test_the_web_services_name_the_same_owner_as_the_pipeline(tmp_path):
    url = f"sqlite:///{tmp_path / 'admin.db'}"
    db.upgrade(url)
    for source in SOURCES:
        add_source(url, source)
    context = WebContext(store=None, admin_db_url=url)  # the owner needs no store
    for key, owner in [
        ("oai:www.kerwa.ucr.ac.cr:10669/578", 1),
        ("hdl:10669/578", 1),
        ("10.15517/ar.9", 2),
        ("10.15517/rev.1", 1),
        ("hdl:1721.10/1", None),
    ]:
        found = context.owner_of(key)
        assert (found.site_id if found else None) == owner, key
