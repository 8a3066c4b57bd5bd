"""Sensors and schedules: new raw files, late data, and the nightly run."""

from sensors.late_data import late_data_sensor, late_harvest_sensor, snapshot_refresh_job
from sensors.raw_files import raw_files_sensor
from sensors.schedules import (
    daily_usage_schedule,
    item_metadata_schedule,
    matomo_export_schedule,
    record_stats_schedule,
    usage_subcounts_schedule,
)

__all__ = [
    "daily_usage_schedule",
    "item_metadata_schedule",
    "late_data_sensor",
    "late_harvest_sensor",
    "matomo_export_schedule",
    "record_stats_schedule",
    "usage_subcounts_schedule",
    "raw_files_sensor",
    "snapshot_refresh_job",
]
