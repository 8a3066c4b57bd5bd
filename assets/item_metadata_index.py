from dagster import AssetExecutionContext, MaterializeResult, asset

from resources import AdminDbResource, StatsStoreResource, WarehouseResource
from usage_stats.metadata.store import MetadataStore
from usage_stats.pipeline.crosswalk import crosswalk_summary, empty_crosswalk
from usage_stats.pipeline.processing import source_crosswalk


@asset(
    deps=["item_metadata"],
    group_name="ingest",
    kinds={"duckdb", "opensearch"},  # the configured one: assets.described_assets
    pool="stats_store",
    description="The harvested records' current state (titles, creators, dates, types, access "
    "rights, identifiers) in the stats store, one row per item, for the web services: SUSHI "
    "item reports and the titles of reports and widgets; and the identifier cross-walk "
    "(each DOI, handle or URL of a record → the record's item key, ambiguous ones left out), "
    "so the API and widgets asked for a DOI answer the item the cleaning counted it on. A "
    "record older than the stored one never replaces it, so re-running is harmless.",
)
def item_metadata_index(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    stats_store: StatsStoreResource,
    admin_db: AdminDbResource,
) -> MaterializeResult:
    # The whole current state every time: the store keeps the latest datestamp per item, so
    # this is idempotent, and a store rebuilt from scratch gets every record back.
    current = MetadataStore(warehouse.get_warehouse().lake).read_all_current()
    store = stats_store.get_store()
    recorded = store.record_item_metadata(current)
    # The same cross-walk the cleaning applies (same records, same repositories), so an
    # identifier the web is asked for resolves to the key its use was counted under. It
    # replaces the stored one whole: an alias that became ambiguous stops resolving.
    crosswalk = source_crosswalk(current, admin_db.get_registry().sources())
    if crosswalk is None:  # nothing harvested: no alias resolves
        crosswalk = empty_crosswalk()
    aliases = store.record_aliases(crosswalk)
    context.log.info(
        f"item_metadata_index: {recorded} item(s) and {aliases} alias(es) recorded into the "
        "stats store"
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": recorded,
            "deleted": int(current.get_column("deleted").sum() or 0) if current.height else 0,
            "aliases_stored": aliases,
            **crosswalk_summary(crosswalk),
        }
    )
