from dagster import AssetExecutionContext, MaterializeResult, asset

from resources import StatsStoreResource, WarehouseResource
from usage_stats.metadata.store import MetadataStore


@asset(
    deps=["item_metadata"],
    group_name="ingest",
    kinds={"duckdb", "opensearch"},  # the configured one: assets.described_assets
    pool="stats_store",
    description="The harvested records' current state (titles, creators, dates, types, access "
    "rights, identifiers) in the stats store, one row per item, for the web services: SUSHI "
    "item reports and the titles of reports and widgets. A record older than the stored one "
    "never replaces it, so re-running is harmless.",
)
def item_metadata_index(
    context: AssetExecutionContext, warehouse: WarehouseResource, stats_store: StatsStoreResource
) -> MaterializeResult:
    # The whole current state every time: the store keeps the latest datestamp per item, so
    # this is idempotent, and a store rebuilt from scratch gets every record back.
    current = MetadataStore(warehouse.get_warehouse().lake).read_all_current()
    recorded = stats_store.get_store().record_item_metadata(current)
    context.log.info(f"item_metadata_index: {recorded} item(s) recorded into the stats store")
    return MaterializeResult(
        metadata={
            "dagster/row_count": recorded,
            "deleted": int(current.get_column("deleted").sum() or 0) if current.height else 0,
        }
    )
