"""Per-source identifier rules (regex, mapping) on hand-made frames and in the pipeline."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import polars as pl
from dagster import DagsterInstance, materialize

from assets import usage_assets
from conftest import DAYS
from definitions import build_resources
from support import TEST_SOURCES, events, manifest_items
from usage_stats.admin.registry import update_source
from usage_stats.pipeline.identifier_rules import apply_identifier_rules

REPO, REPO2, NATIONAL, PORTAL = TEST_SOURCES
HANDLE_RULE = dataclasses.replace(
    REPO,
    identifier_rule="regex",
    rule_pattern=r"^oai:www\.kerwa\.ucr\.ac\.cr:10669/(\d+)$",
    rule_replacement="oai:www.kerwa.ucr.ac.cr:kerwa-$1",
)


def rewritten(frame: pl.DataFrame, sources) -> list[str | None]:
    return apply_identifier_rules(frame, sources).get_column("raw_identifier").to_list()


def test_standard_sources_are_left_alone():
    frame = events({"raw_identifier": "OAI:WWW.KERWA.UCR.AC.CR:10669/1"})
    assert apply_identifier_rules(frame, TEST_SOURCES).equals(frame)


def test_regex_applies_to_the_owners_items_wherever_recorded():
    frame = events(
        {"raw_identifier": "oai:https://www.kerwa.ucr.ac.cr/server:10669/578"},  # own site
        {"raw_identifier": "oai:www.kerwa.ucr.ac.cr:10669/9", "site_id": 5, "visit_id": 2},
        {"raw_identifier": "oai:repo2.example.org:10669/9", "visit_id": 3},  # other owner
        {"raw_identifier": None, "visit_id": 4},
    )
    assert rewritten(frame, [HANDLE_RULE, REPO2, NATIONAL, PORTAL]) == [
        "oai:www.kerwa.ucr.ac.cr:kerwa-578",
        "oai:www.kerwa.ucr.ac.cr:kerwa-9",
        "oai:repo2.example.org:10669/9",
        None,
    ]


def test_mapping_table_after_normalisation(tmp_path):
    table = tmp_path / "map.csv"
    table.write_text(
        "from,to\noai:https://www.kerwa.ucr.ac.cr/server:10669/1,oai:www.kerwa.ucr.ac.cr:10669/2\n"
    )
    source = dataclasses.replace(REPO, identifier_rule="mapping", mapping_file=str(table))
    frame = events(
        {"raw_identifier": " OAI:www.kerwa.ucr.ac.cr:10669/1"},
        {"raw_identifier": "oai:www.kerwa.ucr.ac.cr:10669/3", "visit_id": 2},
    )
    assert rewritten(frame, [source]) == [
        "oai:www.kerwa.ucr.ac.cr:10669/2",
        "oai:www.kerwa.ucr.ac.cr:10669/3",
    ]


def test_a_rule_changed_in_the_admin_db_is_used_by_the_next_run(generated):
    resources = build_resources(generated.settings)
    url = generated.settings.admin_db_url
    update_source(
        url,
        1,
        identifier_rule="regex",
        rule_pattern=r"^oai:repo1\.example\.org:1001/(\d+)$",
        rule_replacement="oai:repo1.example.org:item-$1",
    )
    result = materialize(
        usage_assets, partition_key=DAYS[0], resources=resources,
        instance=DagsterInstance.ephemeral(),
    )  # fmt: skip
    assert result.success
    deltas = generated.warehouse().read("item_daily_deltas", dt.date(2026, 1, 1))
    got: dict[tuple, tuple] = {}
    for row in deltas.filter(pl.col("scope") == "item").iter_rows(named=True):
        key = (row["date"].isoformat(), row["site_id"], row["key"], row["country"])
        got[key] = tuple(row[m] for m in ("views", "downloads", "outlinks", "conversions"))
    expected: dict[tuple, tuple] = {}
    for (day, site, item, country), metrics in manifest_items(
        generated.manifest, [DAYS[0]]
    ).items():
        item = re.sub(
            r"^oai:repo1\.example\.org:1001/(\d+)$", r"oai:repo1.example.org:item-\1", item
        )
        expected[(day, site, item, country)] = metrics[:4]
    assert got == expected
    assert any(":item-" in key[2] for key in got)
