"""Sensors and schedules: new raw files, late data, and the nightly run."""

from sensors.late_data import late_data_sensor, snapshot_refresh_job
from sensors.raw_files import raw_files_sensor
from sensors.schedules import daily_usage_schedule, matomo_export_schedule

__all__ = [
    "daily_usage_schedule",
    "late_data_sensor",
    "matomo_export_schedule",
    "raw_files_sensor",
    "snapshot_refresh_job",
]
