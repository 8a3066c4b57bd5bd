"""New or changed raw files → a run of the usage pipeline for each affected day."""

import datetime as dt

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.jobs import usage_pipeline_job
from resources import LakeResource
from usage_stats.pipeline.raw_changes import dates_in_file, plan_day_requests, recent_prefixes
from usage_stats.settings import Settings

_settings = Settings.current()


def evaluate_raw_files(
    context: SensorEvaluationContext, lake: LakeResource, today: dt.date | None = None
) -> SensorResult | SkipReason:
    """One tick: list recent prefixes, compare with the cursor (last modification time seen)."""
    today = today or dt.datetime.now(dt.UTC).date()
    store = lake.get_lake()
    cursor = float(context.cursor) if context.cursor else 0.0
    files = []
    for prefix in recent_prefixes(store, today, _settings.sensor_lookback_days):
        files.extend(store.stat_files(prefix))
    plan = plan_day_requests(
        files,
        cursor,
        today,
        _settings.sensor_max_days_per_tick,
        month_days=lambda key: dates_in_file(store, key),
    )
    if not plan.requests:
        return SkipReason(f"no new or changed raw files among {len(files)} recent files")
    context.log.info(
        f"{len(plan.requests)} day(s) to process; {plan.pending_files} changed file(s) left "
        "for the next tick"
    )
    return SensorResult(
        run_requests=[
            RunRequest(
                partition_key=r.day.isoformat(),
                run_key=f"raw-files:{r.day.isoformat()}:{r.fingerprint:.6f}",
                tags={"usage_stats/trigger": "new raw files"},
            )
            for r in plan.requests
        ],
        cursor=repr(plan.cursor),
    )


@sensor(
    job=usage_pipeline_job,
    minimum_interval_seconds=_settings.sensor_interval_seconds,
    default_status=DefaultSensorStatus.STOPPED,
    description="Watches the raw layer's recent month prefixes for new or changed Parquet files "
    "and requests a usage_pipeline run for each affected day. Turn it on when files reach the "
    "lake from elsewhere (another exporter, an upload, a re-export) at times the nightly "
    "schedule does not know; a deployment whose files come only from matomo_export before "
    "daily_usage_schedule's hour does not need it.",
)
def raw_files_sensor(context: SensorEvaluationContext, lake: LakeResource):
    return evaluate_raw_files(context, lake)
