"""Usage subcounts per day: thin shells around `usage_stats.pipeline.usage_subcounts`.

Built beside the usage pipeline from what it wrote (item deltas, usage snapshots, the kept
events of `sessions` for the referrer and the unique visitors, with the lake's visits files)
and the harvested metadata; their own job (`usage_subcounts`), so the nightly usage run never waits
on, or fails for, the breakdowns. Both are recomputed from their inputs, never from a stored
subcount day: re-materialising a day after a harvest or a late-data re-run brings it up to
date.
"""

import datetime as dt

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.days import each_day, write_day
from assets.metadata import markdown_table, schema_metadata
from assets.partitions import DAILY, WAREHOUSE_TABLE
from resources import AdminDbResource, LakeResource, StatsStoreResource, WarehouseResource
from usage_stats.metadata.store import MetadataStore
from usage_stats.pipeline.referrer_subcounts import (
    REFERRER,
    VISIT_USAGE_COLUMNS,
    cumulative_referrers,
    indexed_visits,
    referrer_subcounts,
    unique_visitors,
    visit_usage,
    with_visitors,
)
from usage_stats.pipeline.referrers import read_visit_referrers
from usage_stats.pipeline.usage_subcounts import (
    TOP_N,
    USAGE_SINGLE_FIELDS,
    USAGE_SUBCOUNT_KEYS,
    USAGE_SUBCOUNT_SCHEMA,
    VISIT_FIELDS,
    full_subcounts,
    item_fields,
    owner_countries,
    subcount_chain_mismatches,
    top_n,
    total_mismatches,
)
from usage_stats.storage.warehouse import Warehouse

DAILY_SUBCOUNTS = {**DAILY, "group_name": "usage_subcounts"}
ADD_UP = "usage_subcounts_add_up_to_totals"
CHAINS = "usage_subcount_snapshot_equals_previous_plus_delta"
_PREVIEW = (pl.col("scope") == "global") & pl.col("field").is_in(["total", "resource_type"])
_REFERRERS = (pl.col("scope") == "global") & (pl.col("field") == REFERRER)
# every single-valued field must add up to the total, the referrer too
_SINGLE = (*USAGE_SINGLE_FIELDS, *VISIT_FIELDS)


def _inputs(warehouse: WarehouseResource, admin_db: AdminDbResource):
    fields = item_fields(MetadataStore(warehouse.get_warehouse().lake).read_all_current())
    return fields, owner_countries(admin_db.get_registry().sources())


def _visit_subcounts(
    lake: LakeResource, store: Warehouse, owners: pl.DataFrame, day: dt.date
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """The day's untruncated referrer subcount, its unique visitors and what the referrer
    reading found: kept events piece by piece (as cleaning wrote them, whole sites; only the
    columns `visit_usage` reads), each joined to the day's visits (`referrer_subcounts`)."""
    visits, problems = read_visit_referrers(lake.get_lake(), day)
    coded, index = indexed_visits(visits)
    rows, cells = [], []
    # the next piece is decoded while this one is counted
    for piece in store.parts("sessions", day, read_ahead=True, columns=VISIT_USAGE_COLUMNS):
        piece_rows, piece_cells = visit_usage(piece, coded, index)
        rows.append(piece_rows)
        cells.append(piece_cells)
    found = {"visits_read": visits.height, **problems.as_dict()}
    return referrer_subcounts(rows, owners, day), unique_visitors(cells, owners, day), found


def _add_up_check(bad: dict[str, int]) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=ADD_UP,
        passed=not any(bad.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"mismatched_subcounts_per_day": MetadataValue.json(bad)},
    )


_ADD_UP_SPEC = {
    "blocking": True,
    "description": "Single-valued subcounts (referrer included; with unknown and other) add "
    "up to the total in every metric; no list-field value exceeds it.",
}


@asset(
    deps=["item_daily_deltas", "item_metadata", "sessions"],
    **DAILY_SUBCOUNTS,
    kinds=WAREHOUSE_TABLE,
    check_specs=[AssetCheckSpec(ADD_UP, asset="usage_subcount_deltas", **_ADD_UP_SPEC)],
    description=f"A day's usage per repository, national node and the network by resource "
    f"type, access status, language, subject, publisher, funder, affiliation, file format, "
    f"visitor country, referrer (Matomo's, of the visit) and item: top {TOP_N} per field (by "
    f"any metric) and an '(other)' remainder, so shares add up; the distinct visitors of "
    f"each scope on its total rows.",
)
def usage_subcount_deltas(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    admin_db: AdminDbResource,
    lake: LakeResource,
):
    fields, owners = _inputs(warehouse, admin_db)
    store = warehouse.get_warehouse()
    bad: dict[str, int] = {}
    referrer_problems: dict[str, dict[str, int]] = {}
    last = None
    for day in each_day(context, "usage_subcount_deltas"):
        full = full_subcounts(store.read("item_daily_deltas", day), fields, owners, day)
        referrers, visitors, found = _visit_subcounts(lake, store, owners, day)
        last = with_visitors(top_n(pl.concat([full, referrers])), visitors)
        last = last.sort(list(USAGE_SUBCOUNT_KEYS), nulls_last=True)
        write_day(context, store, "usage_subcount_deltas", day, last, **found)
        bad[day.isoformat()] = total_mismatches(last, _SINGLE)
        referrer_problems[day.isoformat()] = found
    yield MaterializeResult(
        metadata={
            **schema_metadata(USAGE_SUBCOUNT_SCHEMA),
            "items_with_metadata": fields.height,
            # visits read per day, referrer type codes Matomo does not define, URLs without
            # a readable host (counted as unknown / the bare kind, never raised on)
            "referrer_reading_per_day": MetadataValue.json(referrer_problems),
            "preview": markdown_table(last.filter(_PREVIEW) if last is not None else None),
            "referrers": markdown_table(last.filter(_REFERRERS) if last is not None else None),
        }
    )
    yield _add_up_check(bad)


@asset(
    deps=["usage_subcount_deltas", "usage_snapshots"],
    **DAILY_SUBCOUNTS,
    kinds=WAREHOUSE_TABLE,
    pool="stats_store",
    check_specs=[
        AssetCheckSpec(
            CHAINS,
            asset="usage_subcount_snapshots",
            blocking=True,
            description="Before top-N, every key: subcounts of snapshot(d) = those of "
            "snapshot(d−1) + those of delta(d), with the same metadata.",
        ),
        AssetCheckSpec(ADD_UP, asset="usage_subcount_snapshots", **_ADD_UP_SPEC),
    ],
    description="Cumulative usage per scope by the same fields (top-N of the cumulative "
    "figures; referrers chained on the previous day's, see referrer_subcounts; no cumulative "
    "unique visitors: they do not add up); written with the day's subcount deltas into the "
    "stats store, the day replaced atomically.",
)
def usage_subcount_snapshots(
    context: AssetExecutionContext,
    warehouse: WarehouseResource,
    admin_db: AdminDbResource,
    stats_store: StatsStoreResource,
):
    fields, owners = _inputs(warehouse, admin_db)
    store = warehouse.get_warehouse()
    target = stats_store.get_store()
    chain: dict[str, int] = {}
    bad: dict[str, int] = {}
    snapshot = None
    for day in each_day(context, "usage_subcount_snapshots"):
        usage = store.read("usage_snapshots", day)
        full = full_subcounts(usage, fields, owners, day)
        before = store.latest_before("usage_snapshots", day)
        if before is None or before == day - dt.timedelta(days=1):
            previous = store.read("usage_snapshots", before) if before else None
            delta = store.read("item_daily_deltas", day)
            chain[day.isoformat()] = subcount_chain_mismatches(
                usage, previous, delta, fields, owners, day
            )
        else:  # a gap in the usage snapshots: their own chain check reports it
            context.log.warning(f"no usage snapshot the day before {day}: chain not checked")
        deltas = store.read("usage_subcount_deltas", day)
        snapshot = top_n(full)
        yesterday = day - dt.timedelta(days=1)
        previous_referrers = store.read_optional("usage_subcount_snapshots", yesterday)
        referrers = cumulative_referrers(previous_referrers, deltas, snapshot)
        snapshot = pl.concat([snapshot, referrers]).sort(list(USAGE_SUBCOUNT_KEYS), nulls_last=True)
        written = target.replace_subcount_day(day, deltas, snapshot)
        write_day(
            context,
            store,
            "usage_subcount_snapshots",
            day,
            snapshot,
            store_delta_rows=written.delta_rows,
            store_snapshot_rows=written.snapshot_rows,
        )
        bad[day.isoformat()] = total_mismatches(snapshot, _SINGLE)
    yield MaterializeResult(
        metadata={
            **schema_metadata(USAGE_SUBCOUNT_SCHEMA),
            "store": type(target).__name__,
            "referrers": markdown_table(
                snapshot.filter(_REFERRERS) if snapshot is not None else None
            ),
            "preview": markdown_table(snapshot.filter(_PREVIEW) if snapshot is not None else None),
        }
    )
    yield AssetCheckResult(
        check_name=CHAINS,
        passed=not any(chain.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={"mismatched_keys_per_day": MetadataValue.json(chain)},
    )
    yield _add_up_check(bad)
