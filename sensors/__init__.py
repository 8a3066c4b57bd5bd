"""Sensors and schedules."""

from sensors.schedules import daily_usage_schedule

__all__ = ["daily_usage_schedule"]
