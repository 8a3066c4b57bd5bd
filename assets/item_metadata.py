from dagster import (
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.metadata import markdown_table, schema_metadata
from resources import AdminDbResource, HarvestSettings, WarehouseResource
from usage_stats.metadata.schema import ITEM_METADATA_SCHEMA
from usage_stats.metadata.store import MetadataStore
from usage_stats.metadata.sync import SourceOutcome, harvest_sources

PREVIEW = ["source_key", "oai_identifier", "deleted", "title", "resource_type", "language", "doi"]


def _per_source(outcomes: list[SourceOutcome]) -> dict[str, dict]:
    return {
        o.source_key: {
            "status": o.status,
            "records": o.seen,
            "added": o.added,
            "updated": o.updated,
            "deleted": o.deleted,
            "problems": o.with_problems,
            "total": o.total,
            "from": o.since,
            "formats": list(o.formats),
            **({"error": o.note} if o.status == "failed" else {}),
            **({"note": o.note} if o.status == "skipped" else {}),
        }
        for o in outcomes
    }


@asset(
    group_name="ingest",
    kinds={"oai-pmh", "parquet"},
    description="Each active source's records from its OAI-PMH endpoint (oai_dc and the "
    "richest format it offers), harvested incrementally from the last harvest's response "
    "date: the current state per item and a change log in the warehouse. A source that "
    "fails fails the run, after every other source is stored.",
)
def item_metadata(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    admin_db: AdminDbResource,
    harvest_settings: HarvestSettings,
) -> MaterializeResult:
    store = MetadataStore(warehouse.get_warehouse().lake)
    sources = admin_db.get_registry().sources()
    outcomes = harvest_sources(
        sources,
        store,
        admin_db.url,
        harvest_settings.client_settings(),
        full=harvest_settings.full,
        progress=context.log.debug,
    )
    for o in outcomes:
        if o.status == "ok":
            context.log.info(
                f"{o.source_key}: {o.seen} record(s) since {o.since or 'the beginning'}: "
                f"{o.added} added, {o.updated} updated, {o.deleted} deleted, "
                f"{o.with_problems} with problems; {o.total} stored"
            )
        elif o.status == "skipped":
            context.log.info(f"{o.source_key}: skipped ({o.note})")
        else:
            context.log.error(o.note or o.source_key)
    failed = [o for o in outcomes if o.status == "failed"]
    skipped = [o.source_key for o in outcomes if o.status == "skipped"]
    harvested = [o for o in outcomes if o.status == "ok"]
    metadata = {
        **schema_metadata(ITEM_METADATA_SCHEMA),
        "dagster/row_count": sum(o.total for o in harvested),
        "records": sum(o.seen for o in harvested),
        "added": sum(o.added for o in harvested),
        "updated": sum(o.updated for o in harvested),
        "deleted": sum(o.deleted for o in harvested),
        "problems": sum(o.with_problems for o in harvested),
        "failed_sources": len(failed),
        "per_source": MetadataValue.json(_per_source(outcomes)),
        "skipped": MetadataValue.md(
            "Not harvested (no OAI base URL): " + ", ".join(skipped) if skipped else "_none_"
        ),
        "preview": markdown_table(
            store.read_current(harvested[0].source_key).select(PREVIEW) if harvested else None
        ),
    }
    if failed:
        raise Failure(
            description=f"{len(failed)} of {len(outcomes) - len(skipped)} source(s) failed "
            "(the others are stored): " + "; ".join(o.note or o.source_key for o in failed),
            metadata=metadata,
        )
    return MaterializeResult(metadata=metadata)
