import polars as pl
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.days import each_day, report_parts
from assets.metadata import markdown_table, schema_metadata
from assets.partitions import EACH_DAY_USAGE, WAREHOUSE_TABLE
from resources import AdminDbResource, CleaningSettings, LakeResource, WarehouseResource
from usage_stats.admin.sources import sources_frame
from usage_stats.pipeline.canonical import CANONICAL_SCHEMA
from usage_stats.pipeline.processing import canonical_pieces, replace_sites
from usage_stats.pipeline.raw_parts import kept_sites, raw_day_parts, raw_parts


class SiteSelection(Config):
    sites: list[int] | None = Field(
        default=None,
        description="Re-read only these Matomo site ids; the day's rows of other sites are kept.",
    )


@asset(
    deps=["matomo_export"],
    **EACH_DAY_USAGE,
    kinds=WAREHOUSE_TABLE,
    description="Canonical typed events of a day, all sites; IPs and their network blocks "
    "already hashed. "
    "The visit-level columns are kept once per visit beside them (raw_visits), and the page "
    "titles seen with the day's views too (page_titles).",
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
    piece_bytes = int(warehouse.piece_mib * 2**20)
    for day in each_day(context, "raw_events"):
        # A re-run for some sites keeps the others' stored rows (read before any write).
        kept = (
            kept_sites(raw_parts(store, day), config.sites)
            if config.sites is not None and store.exists("raw_events", day)
            else []
        )
        titles = []
        day_files: list[dict[str, object]] = []
        day_sites: set[int] = set()
        piece_notes: list[str] = []
        with raw_day_parts(store, day) as raw:
            parts = raw.events
            for part in kept:
                raw.append_canonical(part)
                day_sites |= set(part.get_column("site_id").unique().to_list())
            pieces = canonical_pieces(
                lake.get_lake(),
                day,
                slots,
                cleaning_settings.ip_salt,
                piece_bytes,
                config.sites,
                cleaning_settings.prefixes(),
            )
            for n, piece in enumerate(pieces, 1):
                raw.append(piece.events, piece.visits)
                titles.append(piece.titles)
                day_files += piece.files
                piece_sites = set(piece.events.get_column("site_id").unique().to_list())
                day_sites |= piece_sites
                # Said once the day is written: each line logged is a commit of the run's
                # event log, which waits for the parts written so far to reach the disk.
                piece_notes.append(
                    f"piece {n}, {piece.events.height} events of {len(piece_sites)} site(s) "
                    f"from {len(piece.files)} files"
                )
                last = piece.events.head(10)
        day_titles = pl.concat(titles)
        if config.sites is not None:
            stored_titles = store.read_optional("page_titles", day)
            day_titles = replace_sites(stored_titles, day_titles, config.sites)
        store.write("page_titles", day, day_titles)
        visits = raw.visits.rows
        report_parts(context, parts, files_read=len(day_files), sites=len(day_sites), visits=visits)
        files += [{"day": day.isoformat(), **f} for f in day_files]
        sites_seen |= {s for s in day_sites if s is not None}
        context.log.info(
            f"raw_events {day}: {parts.rows} rows ({visits} visits) from {len(day_files)} files, "
            f"{parts.count} part(s): " + "; ".join(piece_notes)
        )
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
            "preview": markdown_table(last if last is not None else pl.DataFrame()),
        }
    )
