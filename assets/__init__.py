"""Dagster assets: one module per pipeline stage, each a thin shell around usage_stats."""

from dagster import AssetSpec, map_asset_specs, with_source_code_references

import assets.beta  # noqa: F401  (first: silences the beta warnings of what follows)
from assets.cleaning import cleaning
from assets.deltas import item_daily_deltas
from assets.item_metadata import item_metadata
from assets.item_metadata_index import item_metadata_index
from assets.matomo_export import matomo_export
from assets.metadata import table_schema
from assets.raw_events import raw_events
from assets.records import record_deltas, record_snapshots
from assets.snapshots import usage_snapshots
from assets.spikes import usage_spikes
from assets.stats_index import stats_index
from assets.titles import item_titles
from assets.usage_subcounts import usage_subcount_deltas, usage_subcount_snapshots
from usage_stats.metadata.schema import ITEM_METADATA_SCHEMA
from usage_stats.pipeline.canonical import CANONICAL_SCHEMA
from usage_stats.pipeline.cleaning import REJECTED_SCHEMA, SESSION_SCHEMA
from usage_stats.pipeline.distributed import AUDIT_SCHEMA
from usage_stats.pipeline.metrics import DELTA_SCHEMA
from usage_stats.pipeline.records import RECORD_SCHEMA
from usage_stats.pipeline.snapshots import SNAPSHOT_SCHEMA
from usage_stats.pipeline.spikes import SPIKE_SCHEMA
from usage_stats.pipeline.titles import ITEM_TITLE_SCHEMA
from usage_stats.pipeline.usage_subcounts import USAGE_SUBCOUNT_SCHEMA

usage_assets = [
    raw_events,
    cleaning,
    item_titles,
    item_daily_deltas,
    usage_snapshots,
    stats_index,
    usage_spikes,
]
ingest_assets = [matomo_export, item_metadata, item_metadata_index]
record_assets = [record_deltas, record_snapshots]
subcount_assets = [usage_subcount_deltas, usage_subcount_snapshots]

OWNERS = ["team:usage-stats"]
# Each warehouse table's columns, shown (with their meaning) before anything is materialised.
SCHEMAS = {
    "raw_events": CANONICAL_SCHEMA,
    "sessions": SESSION_SCHEMA,
    "rejected_events": REJECTED_SCHEMA,
    "distributed_robot_audit": AUDIT_SCHEMA,
    "item_titles": ITEM_TITLE_SCHEMA,
    "item_daily_deltas": DELTA_SCHEMA,
    "usage_snapshots": SNAPSHOT_SCHEMA,
    "item_metadata": ITEM_METADATA_SCHEMA,
    "record_deltas": RECORD_SCHEMA,
    "record_snapshots": RECORD_SCHEMA,
    "usage_subcount_deltas": USAGE_SUBCOUNT_SCHEMA,
    "usage_subcount_snapshots": USAGE_SUBCOUNT_SCHEMA,
    "usage_spikes": SPIKE_SCHEMA,
}


def described_assets(store_kind: str) -> list:
    """Every asset with its owners, column schema, a link to its code, and the stats store
    kind this deployment writes (`duckdb` or `opensearch`), not both."""

    def describe(spec: AssetSpec) -> AssetSpec:
        name = spec.key.to_user_string()
        spec = spec.merge_attributes(owners=OWNERS)
        if name in SCHEMAS:
            spec = spec.merge_attributes(
                metadata={"dagster/column_schema": table_schema(SCHEMAS[name])}
            )
        if name in ("stats_index", "item_metadata_index"):
            spec = spec.replace_attributes(kinds={store_kind})
        if name == "usage_spikes":  # a warehouse table and the store's flags
            spec = spec.replace_attributes(kinds={"polars", "parquet", store_kind})
        return spec

    return with_source_code_references(
        map_asset_specs(describe, [*ingest_assets, *usage_assets, *record_assets, *subcount_assets])
    )


__all__ = ["described_assets", "ingest_assets", "record_assets", "subcount_assets", "usage_assets"]
