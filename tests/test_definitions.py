"""The code location loads: job, assets, blocking checks, schedule; and Dagster's CLI agrees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DailyPartitionsDefinition

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from definitions import defs  # noqa: E402
from usage_stats.settings import Settings  # noqa: E402

DAGSTER = Path(sys.executable).parent / "dagster"

ASSET_KEYS = {
    AssetKey(name)
    for name in (
        "raw_events",
        "sessions",
        "rejected_events",
        "distributed_robot_audit",
        "item_titles",
        "item_daily_deltas",
        "usage_snapshots",
        "stats_index",
        "matomo_export",
        "item_metadata",
        "item_metadata_index",
        "record_deltas",
        "record_snapshots",
        "usage_subcount_deltas",
        "usage_subcount_snapshots",
        "usage_spikes",
    )
}
# Harvested when the repositories change, not per usage day.
UNPARTITIONED = {AssetKey("item_metadata"), AssetKey("item_metadata_index")}
CHECK_KEYS = {
    AssetCheckKey(AssetKey("sessions"), "kept_plus_rejected_equals_input"),
    AssetCheckKey(AssetKey("item_daily_deltas"), "no_duplicate_delta_keys"),
    AssetCheckKey(AssetKey("usage_snapshots"), "snapshot_equals_previous_plus_delta"),
    AssetCheckKey(AssetKey("stats_index"), "store_rows_equal_delta_rows"),
    AssetCheckKey(AssetKey("record_deltas"), "subcounts_add_up_to_totals"),
    AssetCheckKey(AssetKey("record_snapshots"), "record_snapshot_equals_previous_plus_delta"),
    AssetCheckKey(AssetKey("record_snapshots"), "subcounts_add_up_to_totals"),
    AssetCheckKey(AssetKey("usage_subcount_deltas"), "usage_subcounts_add_up_to_totals"),
    AssetCheckKey(
        AssetKey("usage_subcount_snapshots"), "usage_subcount_snapshot_equals_previous_plus_delta"
    ),
    AssetCheckKey(AssetKey("usage_subcount_snapshots"), "usage_subcounts_add_up_to_totals"),
}
# Checks that warn for review and hold nothing back (usage spikes: flagged, never dropped).
WARNING_CHECK_KEYS = {AssetCheckKey(AssetKey("usage_spikes"), "no_usage_spikes")}


def test_assets_and_checks_are_defined():
    graph = defs.resolve_asset_graph()
    assert set(graph.get_all_asset_keys()) == ASSET_KEYS
    assert set(graph.asset_check_keys) == CHECK_KEYS | WARNING_CHECK_KEYS
    for key in CHECK_KEYS:
        assert graph.get_check_spec(key).blocking, f"{key} should be blocking"
    for key in WARNING_CHECK_KEYS:
        assert not graph.get_check_spec(key).blocking, f"{key} should not block"
    start = Settings.from_env().start_date
    for key in ASSET_KEYS - UNPARTITIONED:
        node = graph.get(key)
        partitions = node.partitions_def
        assert isinstance(partitions, DailyPartitionsDefinition), key
        assert partitions.timezone == "UTC"
        assert partitions.start.date().isoformat() == start
        assert node.backfill_policy is not None
        assert node.backfill_policy.max_partitions_per_run is None, f"{key}: not single-run"


def test_usage_pipeline_job_resolves():
    # `get_job_def` still works but warns that asset jobs must be resolved since Dagster 1.11.
    job = defs.resolve_job_def("usage_pipeline")
    assert job.name == "usage_pipeline"
    assert isinstance(job.partitions_def, DailyPartitionsDefinition)
    assert set(job.asset_layer.executable_asset_keys) == ASSET_KEYS - {
        AssetKey("matomo_export"),
        AssetKey("item_metadata"),
        AssetKey("item_metadata_index"),
        *RECORD_KEYS,
        *SUBCOUNT_KEYS,
    }
    assert set(job.asset_layer.asset_graph.asset_check_keys) == {
        k for k in CHECK_KEYS | WARNING_CHECK_KEYS if k.asset_key not in RECORD_KEYS | SUBCOUNT_KEYS
    }


RECORD_KEYS = {AssetKey("record_deltas"), AssetKey("record_snapshots")}
SUBCOUNT_KEYS = {AssetKey("usage_subcount_deltas"), AssetKey("usage_subcount_snapshots")}


def test_usage_subcounts_job_resolves():
    """Its own job, beside the usage pipeline (which stays as it was)."""
    job = defs.resolve_job_def("usage_subcounts")
    assert isinstance(job.partitions_def, DailyPartitionsDefinition)
    assert set(job.asset_layer.executable_asset_keys) == SUBCOUNT_KEYS
    assert set(job.asset_layer.asset_graph.asset_check_keys) == {
        k for k in CHECK_KEYS if k.asset_key in SUBCOUNT_KEYS
    }
    assert graph_node_of("usage_subcount_deltas").parent_keys == {
        AssetKey("item_daily_deltas"),
        AssetKey("item_metadata"),
        AssetKey("sessions"),  # the kept events: referrers and unique visitors
    }
    assert graph_node_of("usage_subcount_snapshots").parent_keys == {
        AssetKey("usage_subcount_deltas"),
        AssetKey("usage_snapshots"),
    }


def test_record_stats_job_resolves():
    job = defs.resolve_job_def("record_stats")
    assert isinstance(job.partitions_def, DailyPartitionsDefinition)
    assert set(job.asset_layer.executable_asset_keys) == RECORD_KEYS
    assert set(job.asset_layer.asset_graph.asset_check_keys) == {
        k for k in CHECK_KEYS if k.asset_key in RECORD_KEYS
    }
    assert graph_node_of("record_snapshots").parent_keys == {AssetKey("record_deltas")}
    assert graph_node_of("record_deltas").parent_keys == {AssetKey("item_metadata")}


def graph_node_of(name: str):
    return defs.resolve_asset_graph().get(AssetKey(name))


def test_sensors_and_export_job_are_defined():
    assert {s.name for s in defs.sensors} == {
        "raw_files_sensor",
        "late_data_sensor",
        "late_harvest_sensor",
    }
    assert {s.name for s in defs.schedules} == {
        "daily_usage_schedule",
        "matomo_export_schedule",
        "item_metadata_schedule",
        "record_stats_schedule",
        "usage_subcounts_schedule",
        "store_compaction_schedule",
    }
    export = defs.resolve_job_def("matomo_export_job")
    assert set(export.asset_layer.executable_asset_keys) == {AssetKey("matomo_export")}
    harvest = defs.resolve_job_def("item_metadata_job")
    assert set(harvest.asset_layer.executable_asset_keys) == {
        AssetKey("item_metadata"),
        AssetKey("item_metadata_index"),
    }
    assert graph_node_of("item_metadata").partitions_def is None
    schedule = defs.resolve_schedule_def("matomo_export_schedule")
    assert schedule.cron_schedule == f"0 {Settings.from_env().export_hour} * * *"
    # raw_events reads what the export writes (and files that arrive from elsewhere).
    graph = defs.resolve_asset_graph()
    assert AssetKey("matomo_export") in graph.get(AssetKey("raw_events")).parent_keys


def test_daily_schedule_targets_the_job():
    schedule = defs.resolve_schedule_def("daily_usage_schedule")
    assert schedule.job_name == "usage_pipeline"
    assert schedule.execution_timezone == "UTC"
    hour = Settings.from_env().schedule_hour
    assert schedule.cron_schedule == f"0 {hour} * * *"


def test_dagster_definitions_validate(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "instance" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env["DAGSTER_HOME"] = str(home)
    try:
        result = subprocess.run(
            [str(DAGSTER), "definitions", "validate", "-w", "workspace.yaml"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`dagster definitions validate` timed out: {exc.stdout} {exc.stderr}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


SECRETS = {
    "USAGE_STATS_IP_SALT": "salt-7f3a9c-never-shown",
    "USAGE_STATS_ADMIN_DB_URL": "postgresql+psycopg://admin:adm1n-pa55word@db.internal/usage",
    "USAGE_STATS_MATOMO_URL": "mysql+pymysql://matomo:m4tomo-pa55word@matomo.internal/matomo",
    "USAGE_STATS_OPENSEARCH_URL": "https://stats:0pensearch-pa55@search.internal:9200",
    "USAGE_STATS_STATS_STORE": "opensearch",
}
SNAPSHOT = """
import json, sys
sys.path.insert(0, {root!r})
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from definitions import defs
repository = defs.get_repository_def()
snap = RepositorySnap.from_def(repository)
print(serialize_value(snap))
"""


def test_secrets_reach_resources_as_env_vars_never_as_values(tmp_path: Path):
    """With secrets in the environment, the code location's snapshot (what the UI and its
    GraphQL API show) names the variables and holds none of their values."""
    env = {**os.environ, **SECRETS, "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", SNAPSHOT.format(root=str(REPO_ROOT))],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    for name, value in SECRETS.items():
        if name != "USAGE_STATS_STATS_STORE":
            assert value not in out, f"{name}'s value is in the snapshot"
            assert "pa55" not in out and "never-shown" not in out
    from dagster._core.remote_representation.external_data import (
        RepositorySnap,
        ResourceConfigEnvVarSnap,
    )
    from dagster._serdes import deserialize_value

    snap = deserialize_value(out.strip(), RepositorySnap)
    env_vars = {
        (resource.name, field): value.name
        for resource in snap.resources
        for field, value in resource.configured_values.items()
        if isinstance(value, ResourceConfigEnvVarSnap)
    }
    assert env_vars[("cleaning_settings", "ip_salt")] == "USAGE_STATS_IP_SALT"
    assert env_vars[("admin_db", "url")] == "USAGE_STATS_ADMIN_DB_URL"
    assert env_vars[("matomo_db", "url")] == "USAGE_STATS_MATOMO_URL"
    assert env_vars[("stats_store", "url")] == "USAGE_STATS_OPENSEARCH_URL"
    assert set(SECRETS) - {"USAGE_STATS_STATS_STORE"} <= set(snap.utilized_env_vars)


GRAPH_SNAPSHOT = REPO_ROOT / "tests" / "snapshots" / "asset_graph.json"


def asset_graph_description() -> dict:
    """What a change to the asset graph changes: keys, deps, groups, partitions, backfill
    policy, checks, kinds and owners (descriptions and code references left out)."""
    from dagster import Definitions

    from assets import described_assets
    from definitions import build_resources

    embedded = build_resources(Settings.from_env({}))  # the defaults, whatever the environment
    graph = Definitions(assets=described_assets("duckdb"), resources=embedded).resolve_asset_graph()
    nodes = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        nodes[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "group": node.group_name,
            "partitions": type(partitions).__name__ if partitions else None,
            "single_run_backfill": node.backfill_policy is not None
            and node.backfill_policy.max_partitions_per_run is None,
            "checks": sorted((c.name, graph.get_check_spec(c).blocking) for c in node.check_keys),
            "kinds": sorted(node.kinds),
            "owners": list(node.owners),
            "pools": sorted(node.pools or []),
        }
    return json.loads(json.dumps(nodes))


def test_asset_graph_matches_its_snapshot():
    """An unintended change to the graph fails here; an intended one is recorded by running
    the test once with UPDATE_SNAPSHOTS=1 and committing tests/snapshots/asset_graph.json."""
    current = asset_graph_description()
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        GRAPH_SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(GRAPH_SNAPSHOT.read_text())


def test_store_compaction_job_and_its_schedule():
    """An op job apart from the asset graph, in the pool of the store's writers, scheduled
    monthly and stopped until an operator turns it on."""
    from dagster import DefaultScheduleStatus

    job = defs.resolve_job_def("store_compaction")
    (node,) = job.nodes
    assert node.definition.pool == "stats_store"
    assert set(node.definition.required_resource_keys) == {"stats_store"}
    schedule = defs.resolve_schedule_def("store_compaction_schedule")
    assert schedule.job_name == "store_compaction"
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    assert schedule.execution_timezone == "UTC"
    assert schedule.cron_schedule == "30 4 2 * *"
