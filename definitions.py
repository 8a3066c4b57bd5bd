"""The code location: assets, checks, jobs, schedules and resources, from the environment."""

from dagster import Definitions

from assets import usage_assets
from assets.jobs import usage_pipeline_job
from resources import (
    CleaningSettings,
    DuckDBStatsStoreResource,
    LakeResource,
    SourceRegistryResource,
    WarehouseResource,
)
from sensors import daily_usage_schedule
from usage_stats.settings import Settings


def build_resources(settings: Settings) -> dict:
    return {
        "lake": LakeResource(url=settings.lake_url),
        "warehouse": WarehouseResource(url=settings.warehouse_url),
        "sources": SourceRegistryResource(path=settings.sources_file),
        "stats_store": DuckDBStatsStoreResource(path=settings.duckdb_path),
        "cleaning_settings": CleaningSettings(
            always_human_max_actions=settings.always_human_max_actions,
            robot_min_actions=settings.robot_min_actions,
            min_average_seconds=settings.min_average_seconds,
            double_click_seconds=settings.double_click_seconds,
            ip_salt=settings.ip_salt,
        ),
    }


defs = Definitions(
    assets=usage_assets,
    jobs=[usage_pipeline_job],
    schedules=[daily_usage_schedule],
    resources=build_resources(Settings.from_env()),
)
