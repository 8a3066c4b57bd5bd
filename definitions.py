"""The code location: assets, checks, jobs, schedules and resources, from the environment."""

from dagster import Definitions
from dagster_aws.s3 import S3Resource

from assets import ingest_assets, usage_assets
from assets.jobs import matomo_export_job, usage_pipeline_job
from resources import (
    AdminDbResource,
    CleaningSettings,
    DuckDBStatsStoreResource,
    LakeResource,
    MatomoDbResource,
    OpenSearchStatsStoreResource,
    StatsStoreResource,
    WarehouseResource,
)
from sensors import (
    daily_usage_schedule,
    late_data_sensor,
    matomo_export_schedule,
    raw_files_sensor,
    snapshot_refresh_job,
)
from usage_stats.settings import Settings


def build_stats_store(settings: Settings) -> StatsStoreResource:
    if settings.stats_store == "opensearch":
        return OpenSearchStatsStoreResource(
            url=settings.opensearch_url,
            prefix=settings.opensearch_prefix,
            batch_size=settings.opensearch_batch_size,
        )
    return DuckDBStatsStoreResource(path=settings.duckdb_path)


def build_resources(settings: Settings) -> dict:
    # Credentials are not configuration here: boto3 reads AWS_ACCESS_KEY_ID /
    # AWS_SECRET_ACCESS_KEY (or a profile, or an instance role) itself.
    s3 = S3Resource(endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region)
    return {
        "lake": LakeResource(url=settings.lake_url, s3=s3),
        "warehouse": WarehouseResource(url=settings.warehouse_url, s3=s3),
        "admin_db": AdminDbResource(url=settings.admin_db_url),
        "matomo_db": MatomoDbResource(
            url=settings.matomo_url, table_prefix=settings.matomo_table_prefix
        ),
        "stats_store": build_stats_store(settings),
        "cleaning_settings": CleaningSettings(
            always_human_max_actions=settings.always_human_max_actions,
            robot_min_actions=settings.robot_min_actions,
            min_average_seconds=settings.min_average_seconds,
            double_click_seconds=settings.double_click_seconds,
            thumbnail_pattern=settings.thumbnail_pattern,
            robots_list=settings.robots_list,
            ip_salt=settings.ip_salt,
        ),
    }


defs = Definitions(
    assets=[*ingest_assets, *usage_assets],
    jobs=[usage_pipeline_job, snapshot_refresh_job, matomo_export_job],
    schedules=[daily_usage_schedule, matomo_export_schedule],
    sensors=[raw_files_sensor, late_data_sensor],
    resources=build_resources(Settings.from_env()),
)
