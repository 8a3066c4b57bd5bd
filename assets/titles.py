import polars as pl
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.days import each_day, write_day
from assets.metadata import markdown_table, schema_metadata
from assets.partitions import EACH_DAY_USAGE, WAREHOUSE_TABLE
from resources import AdminDbResource, WarehouseResource
from usage_stats.pipeline.titles import ITEM_TITLE_SCHEMA, latest_item_titles


@asset(
    deps=["raw_events"],
    **EACH_DAY_USAGE,
    kinds=WAREHOUSE_TABLE,
    description="Each item's title as the day's page views last showed it (Matomo page "
    "titles), under the normalised key the statistics use; the stats store keeps the latest.",
)
def item_titles(
    context: AssetExecutionContext, warehouse: WarehouseResource, admin_db: AdminDbResource
) -> MaterializeResult:
    store = warehouse.get_warehouse()
    sources = admin_db.get_registry().sources()
    rows: dict[str, int] = {}
    last = None
    for day in each_day(context, "item_titles"):
        # A day read before page titles were kept has none: its items stay untitled.
        page = store.read_optional("page_titles", day)
        titles = (
            latest_item_titles(page, sources)
            if page is not None
            else pl.DataFrame(schema=ITEM_TITLE_SCHEMA)
        )
        write_day(context, store, "item_titles", day, titles)
        rows[day.isoformat()] = titles.height
        context.log.info(f"item_titles {day}: {titles.height} titled items")
        last = titles
    return MaterializeResult(
        metadata={
            **schema_metadata(ITEM_TITLE_SCHEMA),
            "preview": markdown_table(last),
            "days_without_titles": MetadataValue.json([d for d, n in rows.items() if n == 0]),
        }
    )
