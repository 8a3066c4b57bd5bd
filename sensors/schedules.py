from dagster import DefaultScheduleStatus, build_schedule_from_partitioned_job

from assets.jobs import matomo_export_job, usage_pipeline_job
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
