from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.partitions import EACH_DAY, partition_days
from resources import AdminDbResource, LakeResource, MatomoDbResource
from usage_stats.ingest.matomo import export_day


@asset(
    **EACH_DAY,
    group_name="ingest",
    kinds={"mysql", "parquet"},
    description="Matomo's log tables → the lake, for every active source, one day at a time. "
    "A day's leaves are replaced only once every site of it has been read.",
)
def matomo_export(
    context: AssetExecutionContext,
    matomo_db: MatomoDbResource,
    lake: LakeResource,
    admin_db: AdminDbResource,
) -> MaterializeResult:
    tables = matomo_db.get_tables()
    sites = [s.site_id for s in admin_db.get_registry().sources()]
    target = lake.get_lake()
    per_day: dict[str, dict[str, int]] = {}
    for day in partition_days(context):
        results = export_day(
            tables,
            target,
            sites,
            day,
            matomo_db.chunk_rows,
            progress=lambda r: context.log.info(
                f"exported site {r.site_id} of {r.day}: {r.events} events, {r.visits} visits"
            ),
        )
        per_day[day.isoformat()] = {
            "events": sum(r.events for r in results),
            "visits": sum(r.visits for r in results),
        }
    return MaterializeResult(
        metadata={
            "dagster/row_count": sum(d["events"] for d in per_day.values()),
            "per_day": MetadataValue.json(per_day),
            "sites": MetadataValue.json(sites),
            "lake": target.url,
        }
    )
