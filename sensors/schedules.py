from dagster import DefaultScheduleStatus, ScheduleDefinition, build_schedule_from_partitioned_job

from assets.jobs import (
    item_metadata_job,
    matomo_export_job,
    record_stats_job,
    usage_pipeline_job,
    usage_subcounts_job,
)
from usage_stats.settings import Settings

# Each night, process yesterday (the last complete UTC day) once its export has landed.
daily_usage_schedule = build_schedule_from_partitioned_job(
    usage_pipeline_job,
    name="daily_usage_schedule",
    hour_of_day=Settings.current().schedule_hour,
    minute_of_hour=Settings.current().schedule_minute,
    default_status=DefaultScheduleStatus.STOPPED,
    description="Each night at USAGE_STATS_SCHEDULE_HOUR:USAGE_STATS_SCHEDULE_MINUTE (UTC), "
    "processes yesterday, all sites. "
    "Turn it on in production once yesterday's files are in the lake before that hour (the "
    "Matomo export schedule runs earlier); leave it off on a laptop.",
)

# Each night, export yesterday from Matomo; history is a backfill of the same job.
matomo_export_schedule = build_schedule_from_partitioned_job(
    matomo_export_job,
    name="matomo_export_schedule",
    hour_of_day=Settings.current().export_hour,
    default_status=DefaultScheduleStatus.STOPPED,
    description="Each night at USAGE_STATS_EXPORT_HOUR (UTC), exports yesterday from Matomo's "
    "database into the lake. Turn it on where this deployment reads Matomo directly "
    "(USAGE_STATS_MATOMO_URL set); history is a backfill of matomo_export_job.",
)

# Each night, the repositories' changes since their last harvest, before the usage run (whose
# cleaning resolves DOIs and handles through the harvested records' cross-walk).
item_metadata_schedule = ScheduleDefinition(
    name="item_metadata_schedule",
    job=item_metadata_job,
    cron_schedule=f"0 {Settings.current().harvest_hour} * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Each night at USAGE_STATS_HARVEST_HOUR (UTC), harvests every active source "
    "with an OAI base URL (the changes since its last completed harvest). Turn it on with the "
    "nightly usage schedule; a harvest revealing older records is taken in by the "
    "late_harvest_sensor.",
)

# Each night after the usage run: yesterday's record statistics and usage breakdowns.
record_stats_schedule = build_schedule_from_partitioned_job(
    record_stats_job,
    name="record_stats_schedule",
    hour_of_day=Settings.current().breakdowns_hour,
    default_status=DefaultScheduleStatus.STOPPED,
    description="Each night at USAGE_STATS_BREAKDOWNS_HOUR (UTC), yesterday's record "
    "statistics from the harvested records. Set the hour after the harvest's.",
)

usage_subcounts_schedule = build_schedule_from_partitioned_job(
    usage_subcounts_job,
    name="usage_subcounts_schedule",
    hour_of_day=Settings.current().breakdowns_hour,
    default_status=DefaultScheduleStatus.STOPPED,
    description="Each night at USAGE_STATS_BREAKDOWNS_HOUR (UTC), yesterday's usage by "
    "resource type, access, language…; it reads what the usage run wrote, so set the hour "
    "after that run ends (USAGE_STATS_SCHEDULE_HOUR plus its duration).",
)
