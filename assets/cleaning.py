import datetime as dt
from collections import Counter

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from assets.days import each_day, report_parts
from assets.metadata import markdown_table, schema_metadata
from assets.partitions import DAILY, WAREHOUSE_TABLE
from resources import AdminDbResource, CleaningSettings, WarehouseResource
from usage_stats.admin.registry import DayStatus
from usage_stats.pipeline.cleaning import (
    REJECTED_SCHEMA,
    REJECTION_REASONS,
    SESSION_SCHEMA,
    rejected_by_reason,
)
from usage_stats.pipeline.processing import DayTally, clean_piece

RECONCILES = "kept_plus_rejected_equals_input"


@multi_asset(
    specs=[
        AssetSpec(
            "sessions",
            deps=["raw_events"],
            group_name="usage",
            kinds=WAREHOUSE_TABLE,
            description="Kept events with their COUNTER session, normalised item and owner.",
        ),
        AssetSpec(
            "rejected_events",
            deps=["raw_events"],
            group_name="usage",
            kinds=WAREHOUSE_TABLE,
            description="Every event not counted, with exactly one reason.",
        ),
    ],
    check_specs=[
        AssetCheckSpec(
            RECONCILES,
            asset="sessions",
            blocking=True,
            description="Kept + rejected rows written = raw_events rows, every day of the run.",
        )
    ],
    **DAILY,
)
def cleaning(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    admin_db: AdminDbResource,
    cleaning_settings: CleaningSettings,
):
    store = warehouse.get_warehouse()
    sources = admin_db.get_registry().sources()
    active = [s.site_id for s in sources]
    statuses: list[DayStatus] = []
    rules = cleaning_settings.rules()
    kept_rows: dict[str, int] = {}
    rejected_rows: dict[str, int] = {}
    reasons: Counter[str] = Counter({r: 0 for r in REJECTION_REASONS})
    unbalanced: dict[str, dict[str, int]] = {}
    last = None
    robots_lists: set[str] = set()
    for day in each_day(context, "cleaning"):
        tally = DayTally()
        events_in = 0
        day_reasons: Counter[str] = Counter({r: 0 for r in REJECTION_REASONS})
        with (
            store.day_parts("sessions", day) as sessions,
            store.day_parts("rejected_events", day) as rejected,
        ):
            # Piece by piece as raw_events wrote them, each whole sites: one piece in memory.
            for raw in store.parts("raw_events", day):
                result = clean_piece(raw, sources, rules)
                sessions.append(result.sessions)
                rejected.append(result.rejected)
                tally.add(raw, result)
                events_in += raw.height
                day_reasons.update(rejected_by_reason(result.rejected))
                robots_lists.add(result.robots_list_version)
                last = result
        reasons.update(day_reasons)
        report_parts(context, sessions, input_events=events_in)
        report_parts(
            context, rejected, **{f"rejected_{reason}": n for reason, n in day_reasons.items()}
        )
        statuses += tally.statuses(active, context.run_id, dt.datetime.now(dt.UTC))
        # What was stored, read back: the balance below checks the files, not the frames.
        kept = store.row_count("sessions", day)
        dropped = store.row_count("rejected_events", day)
        key = day.isoformat()
        kept_rows[key], rejected_rows[key] = kept, dropped
        if kept + dropped != events_in:
            unbalanced[key] = {"input": events_in, "kept": kept, "rejected": dropped}
        context.log.info(f"cleaning {day}: {events_in} in, {kept} kept, {dropped} rejected")
    admin_db.record_processing(statuses)
    if robots_lists:
        # on the run too, so the runs list tells which list each run used
        context.instance.add_run_tags(
            context.run_id, {"usage_stats/robots_list": ", ".join(sorted(robots_lists))}
        )
    yield MaterializeResult(
        asset_key="sessions",
        metadata={
            **schema_metadata(SESSION_SCHEMA),
            "preview": markdown_table(last.sessions if last else None),
        },
    )
    yield MaterializeResult(
        asset_key="rejected_events",
        metadata={
            **schema_metadata(REJECTED_SCHEMA),
            "rejected_by_reason_in_run": MetadataValue.json(dict(reasons)),
            # which COUNTER robots list decided `robot_user_agent` in this run
            "robots_list": ", ".join(sorted(robots_lists)),
            "preview": markdown_table(last.rejected if last else None),
        },
    )
    yield AssetCheckResult(
        asset_key="sessions",
        check_name=RECONCILES,
        passed=not unbalanced,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "kept": sum(kept_rows.values()),
            "rejected": sum(rejected_rows.values()),
            "unbalanced_days": MetadataValue.json(unbalanced),
        },
    )
