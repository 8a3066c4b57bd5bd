import polars as pl
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.days import each_day, write_day
from assets.metadata import markdown_table, schema_metadata
from assets.partitions import DAILY_USAGE, WAREHOUSE_TABLE
from resources import AdminDbResource, CleaningSettings, LakeResource, WarehouseResource
from usage_stats.admin.sources import sources_frame
from usage_stats.pipeline.canonical import CANONICAL_SCHEMA, read_canonical_day
from usage_stats.pipeline.processing import replace_sites


class SiteSelection(Config):
    sites: list[int] | None = Field(
        default=None,
        description="Re-read only these Matomo site ids; the day's rows of other sites are kept.",
    )


@asset(
    deps=["matomo_export"],
    **DAILY_USAGE,
    kinds=WAREHOUSE_TABLE,
    description="Canonical typed events of a day, all sites; IPs already hashed. "
    "Page titles seen with the day's views are kept beside them (page_titles).",
)
def raw_events(
    context: AssetExecutionContext,
    config: SiteSelection,
    lake: LakeResource,
    warehouse: WarehouseResource,
    admin_db: AdminDbResource,
    cleaning_settings: CleaningSettings,
) -> MaterializeResult:
    store = warehouse.get_warehouse()
    registry = admin_db.get_registry().sources()
    slots = {s.site_id: s.custom_var_slot for s in registry}
    files: list[dict[str, object]] = []
    sites_seen: set[int] = set()
    last = None
    for day in each_day(context, "raw_events"):
        day_input = read_canonical_day(
            lake.get_lake(), day, slots, cleaning_settings.ip_salt, config.sites
        )
        events, titles = day_input.events, day_input.titles
        if config.sites is not None:
            events = replace_sites(store.read_optional("raw_events", day), events, config.sites)
            titles = replace_sites(store.read_optional("page_titles", day), titles, config.sites)
        store.write("page_titles", day, titles)
        write_day(
            context,
            store,
            "raw_events",
            day,
            events,
            files_read=len(day_input.files),
            sites=events.get_column("site_id").n_unique(),
        )
        files += [{"day": day.isoformat(), **f} for f in day_input.files]
        sites_seen |= set(events.get_column("site_id").drop_nulls().unique().to_list())
        context.log.info(
            f"raw_events {day}: {events.height} rows from {len(day_input.files)} files"
        )
        last = events
    return MaterializeResult(
        metadata={
            **schema_metadata(CANONICAL_SCHEMA),
            "files_read": len(files),
            "files": MetadataValue.json(files[:200]),
            "sites": MetadataValue.json(sorted(sites_seen)),
            "sites_restricted_to": MetadataValue.json(config.sites),
            "sources_used": markdown_table(
                sources_frame(registry).select(
                    "site_id", "source_key", "type", "country", "identifier_rule", "custom_var_slot"
                ),
                limit=1000,
            ),
            "preview": markdown_table(last.drop("ip_hash") if last is not None else pl.DataFrame()),
        }
    )
