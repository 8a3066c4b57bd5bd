"""The code location: assets, checks, jobs, schedules and resources, from the environment."""

import dataclasses
import os
from collections.abc import Mapping

from dagster import Definitions, EnvVar
from dagster_aws.s3 import S3Resource

from assets import described_assets
from assets.execution import executor_for
from assets.jobs import (
    item_metadata_job,
    matomo_export_job,
    record_stats_job,
    usage_pipeline_job,
    usage_subcounts_job,
)
from assets.store_compaction import store_compaction_job, store_compaction_schedule
from resources import (
    AdminDbResource,
    CleaningSettings,
    DuckDBStatsStoreResource,
    HarvestSettings,
    LakeResource,
    MatomoDbResource,
    OpenSearchStatsStoreResource,
    SpikeSettings,
    StatsStoreResource,
    WarehouseResource,
)
from sensors import (
    daily_usage_schedule,
    item_metadata_schedule,
    late_data_sensor,
    late_harvest_sensor,
    matomo_export_schedule,
    raw_files_sensor,
    record_stats_schedule,
    snapshot_refresh_job,
    usage_subcounts_schedule,
)
from usage_stats.settings import Settings


def from_deployment(name: str, value: str | None, env: Mapping[str, str] | None = None):
    """`EnvVar(name)` where the deployment sets the variable (to this value), else the value.

    Secrets and deployment settings then reach the resource as a reference that Dagster
    resolves when a run starts: the UI, the launchpad and the code location's snapshot show
    the variable's name, never its value, and run config can still override it. Embedded
    defaults (a laptop's `data/` paths) and values a test passes in stay literal.
    """
    env = os.environ if env is None else env
    if value is None or env.get(name) != value:
        return value
    return EnvVar(name)


def build_stats_store(settings: Settings) -> StatsStoreResource:
    if settings.stats_store == "opensearch":
        return OpenSearchStatsStoreResource(
            url=from_deployment("USAGE_STATS_OPENSEARCH_URL", settings.opensearch_url),
            prefix=settings.opensearch_prefix,
            batch_size=settings.opensearch_batch_size,
            admin_db_url=from_deployment("USAGE_STATS_ADMIN_DB_URL", settings.admin_db_url),
            compat_granularity=settings.opensearch_compat_granularity,
            compat_prefix=settings.opensearch_compat_prefix,
            replicas=settings.opensearch_replicas,
            shards=settings.opensearch_shards,
        )
    return DuckDBStatsStoreResource(
        path=from_deployment("USAGE_STATS_DUCKDB_PATH", settings.duckdb_path)
    )


def build_resources(settings: Settings) -> dict:
    # Credentials are not configuration here: boto3 reads AWS_ACCESS_KEY_ID /
    # AWS_SECRET_ACCESS_KEY (or a profile, or an instance role) itself.
    s3 = S3Resource(
        endpoint_url=from_deployment("USAGE_STATS_S3_ENDPOINT_URL", settings.s3_endpoint_url),
        region_name=settings.s3_region,
    )
    return {
        "lake": LakeResource(url=from_deployment("USAGE_STATS_LAKE_URL", settings.lake_url), s3=s3),
        "warehouse": WarehouseResource(
            url=from_deployment("USAGE_STATS_WAREHOUSE_URL", settings.warehouse_url),
            s3=s3,
            piece_mib=settings.piece_mib,
        ),
        "admin_db": AdminDbResource(
            url=from_deployment("USAGE_STATS_ADMIN_DB_URL", settings.admin_db_url)
        ),
        "matomo_db": MatomoDbResource(
            url=from_deployment("USAGE_STATS_MATOMO_URL", settings.matomo_url),
            table_prefix=settings.matomo_table_prefix,
            chunk_rows=settings.export_chunk_rows,
        ),
        "stats_store": build_stats_store(settings),
        "harvest_settings": HarvestSettings(
            delay=settings.oai_delay,
            timeout=settings.oai_timeout,
            max_retries=settings.oai_max_retries,
        ),
        "cleaning_settings": CleaningSettings(
            always_human_max_actions=settings.always_human_max_actions,
            robot_min_actions=settings.robot_min_actions,
            min_average_seconds=settings.min_average_seconds,
            double_click_seconds=settings.double_click_seconds,
            thumbnail_pattern=settings.thumbnail_pattern,
            robots_list=settings.robots_list,
            **{
                f"distributed_{name}": value
                for name, value in dataclasses.asdict(settings.distributed).items()
                if name != "audit_all"
            },
            **{
                f"block_{name}": value
                for name, value in dataclasses.asdict(settings.block_prefixes).items()
            },
            ip_salt=from_deployment("USAGE_STATS_IP_SALT", settings.ip_salt),
        ),
        "spike_settings": SpikeSettings(),
    }


_settings = Settings.current()

defs = Definitions(
    assets=described_assets(_settings.stats_store),
    jobs=[
        usage_pipeline_job,
        snapshot_refresh_job,
        matomo_export_job,
        item_metadata_job,
        record_stats_job,
        usage_subcounts_job,
        store_compaction_job,
    ],
    schedules=[
        daily_usage_schedule,
        matomo_export_schedule,
        item_metadata_schedule,
        record_stats_schedule,
        usage_subcounts_schedule,
        store_compaction_schedule,
    ],
    sensors=[raw_files_sensor, late_data_sensor, late_harvest_sensor],
    resources=build_resources(_settings),
    # None (the embedded default): Dagster's; else USAGE_STATS_EXECUTOR's (assets/execution.py)
    executor=executor_for(_settings),
)
