import datetime as dt
from collections import Counter

import polars as pl
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
from assets.partitions import EACH_DAY, WAREHOUSE_TABLE
from resources import AdminDbResource, CleaningSettings, WarehouseResource
from usage_stats.admin.registry import DayStatus
from usage_stats.metadata.store import MetadataStore
from usage_stats.pipeline.cleaning import (
    REJECTED_SCHEMA,
    REJECTION_REASONS,
    SESSION_SCHEMA,
)
from usage_stats.pipeline.crosswalk import ambiguous_claims, crosswalk_summary
from usage_stats.pipeline.distributed import AUDIT_SCHEMA
from usage_stats.pipeline.processing import DayTally, clean_piece, source_crosswalk
from usage_stats.pipeline.raw_parts import raw_parts
from usage_stats.storage.warehouse import Warehouse

RECONCILES = "kept_plus_rejected_equals_input"
DISTRIBUTED_AUDIT = "distributed_robot_audit"


def current_item_metadata(store: Warehouse) -> pl.DataFrame | None:
    """The harvested records' current state (`ITEM_METADATA_SCHEMA`, every source), as the
    `item_metadata` asset stores it in the warehouse; None when nothing has been harvested,
    and then the day is cleaned without a cross-walk, exactly as before any harvest."""
    metadata = MetadataStore(store.lake)
    if not metadata.sources():
        return None
    return metadata.read_all_current()


@multi_asset(
    specs=[
        AssetSpec(
            "sessions",
            deps=["raw_events", "item_metadata"],
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
        AssetSpec(
            DISTRIBUTED_AUDIT,
            deps=["raw_events"],
            group_name="usage",
            kinds=WAREHOUSE_TABLE,
            description="One row per (site, network block, day) robot_distributed flagged, "
            "with the figures that triggered it (block as a salted hash).",
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
    **EACH_DAY,
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
    audits: list[pl.DataFrame] = []
    # One cross-walk for the run, from the records as harvested now: the current records
    # say which item an identifier names, whichever day the use happened on.
    metadata = current_item_metadata(store)
    crosswalk = source_crosswalk(metadata, sources)
    crosswalk_metadata = _crosswalk_metadata(metadata, crosswalk, sources)
    for day in each_day(context, "cleaning"):
        tally = DayTally()
        events_in = 0
        day_reasons: Counter[str] = Counter({r: 0 for r in REJECTION_REASONS})
        resolved: Counter[str] = Counter()
        day_audit: list[pl.DataFrame] = []
        with (
            store.day_parts("sessions", day) as sessions,
            store.day_parts("rejected_events", day) as rejected,
        ):
            # Piece by piece as raw_events wrote them, each whole sites: one piece in memory,
            # and the next one being read meanwhile.
            for raw in raw_parts(store, day, read_ahead=True):
                result = clean_piece(raw, sources, rules, crosswalk)
                resolved.update(result.crosswalk)
                sessions.append(result.sessions)
                rejected.append(result.rejected)
                tally.add(raw, result)
                events_in += raw.height
                day_reasons.update(result.rejected_by_reason())
                robots_lists.add(result.robots_list_version)
                day_audit.append(result.distributed_audit)
                last = result
        reasons.update(day_reasons)
        # Written every day, empty or not: a re-run after a threshold change replaces it.
        audit = pl.concat(day_audit) if day_audit else pl.DataFrame(schema=AUDIT_SCHEMA)
        store.write(DISTRIBUTED_AUDIT, day, audit)
        audits.append(audit)
        # with a cross-walk: kept events counted on a record's item through one of its
        # identifiers, and kept events left under an alias several records claim
        report_parts(context, sessions, input_events=events_in, **resolved)
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
            **crosswalk_metadata,
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
    run_audit = pl.concat(audits) if audits else pl.DataFrame(schema=AUDIT_SCHEMA)
    yield MaterializeResult(
        asset_key=DISTRIBUTED_AUDIT,
        metadata={
            **schema_metadata(AUDIT_SCHEMA),
            "flagged_blocks": run_audit.height,
            "flagged_blocks_by_mode": MetadataValue.json(
                dict(run_audit.group_by("mode").len().sort("mode").iter_rows())
            ),
            "rejected_robot_distributed": int(run_audit.get_column("rejected_events").sum()),
            # the figures that triggered each flag (the largest blocks first)
            "flagged": markdown_table(
                run_audit.sort("events", descending=True).with_columns(
                    pl.col("block_hash").cast(pl.String)
                ),
                limit=50,
            ),
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


def _crosswalk_metadata(
    metadata: pl.DataFrame | None, crosswalk: pl.DataFrame | None, sources: list
) -> dict:
    """What the run's cross-walk resolves, and which aliases it leaves ambiguous (with the
    records claiming them: an operator can tell two repositories holding one DOI)."""
    if metadata is None or crosswalk is None:
        return {"crosswalk": MetadataValue.md("_no harvested records: no cross-walk_")}
    summary = crosswalk_summary(crosswalk)
    found = {**summary, "crosswalk_records": metadata.height}
    if summary["crosswalk_ambiguous_aliases"]:
        repositories = [s.site_id for s in sources if s.type == "R"]
        found["crosswalk_ambiguous"] = markdown_table(
            ambiguous_claims(metadata, repositories), limit=20
        )
    return found
