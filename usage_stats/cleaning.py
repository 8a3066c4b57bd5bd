"""Cleaning: canonical events → kept session events + rejected events with one reason each.

Rules are applied in a fixed order and the first that matches names the reason, so every
input row ends in exactly one place and kept + rejected = input holds by construction (and is
still checked on every run). Visitor IPs arrive already replaced by a keyed hash and are not
carried into either output.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from usage_stats.identifiers import normalize_identifiers, oai_prefix_expr
from usage_stats.robots import robot_user_agents

REJECTION_REASONS = (
    "invalid_row",
    "unknown_site",
    "other_action",
    "robot_user_agent",
    "robot_behaviour",
    "no_identifier",
    "thumbnail",
    "double_click",
)

UNKNOWN_COUNTRY = "ZZ"

# A short document extension followed by an image extension: `x.pdf.jpg`, `y.doc.png`.
THUMBNAIL_URL = r"(?i)\.[a-z0-9]{2,5}\.(?:jpe?g|png)(?:[?#].*)?$"

SESSION_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "site_id": pl.Int32(),
    "level": pl.String(),
    "session_id": pl.UInt64(),
    "visit_id": pl.Int64(),
    "event_time": pl.Datetime("us", "UTC"),
    "action": pl.String(),
    "item_id": pl.String(),
    "owner_site_id": pl.Int32(),
    "country": pl.String(),
}

REJECTED_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "site_id": pl.Int32(),
    "visit_id": pl.Int64(),
    "event_time": pl.Datetime("us", "UTC"),
    "action_type": pl.Int16(),
    "url": pl.String(),
    "raw_identifier": pl.String(),
    "reason": pl.String(),
}


@dataclass(frozen=True)
class CleaningRules:
    """Thresholds of the behaviour rule and the double-click window (configuration)."""

    always_human_max_actions: int = 10
    robot_min_actions: int = 100
    min_average_seconds: float = 2.0
    double_click_seconds: int = 30


@dataclass
class CleaningResult:
    sessions: pl.DataFrame
    rejected: pl.DataFrame


def robot_behaviour_expr(rules: CleaningRules) -> pl.Expr:
    """LA Referencia's rule for Matomo data, which has no user agent.

    Keep ≤ `always_human_max_actions` actions; keep up to `robot_min_actions` − 1 actions when
    they average more than `min_average_seconds` each; everything else is a robot.
    """
    actions = pl.col("visit_total_actions")
    span = (
        pl.col("visit_last_action_time") - pl.col("visit_first_action_time")
    ).dt.total_microseconds()
    average_seconds = span / 1_000_000 / actions
    human = (actions <= rules.always_human_max_actions) | (
        (actions < rules.robot_min_actions) & (average_seconds > rules.min_average_seconds)
    )
    return ~human


def session_id_expr() -> pl.Expr:
    """COUNTER session: Matomo's visit within the day; else user agent + IP hash + date + hour."""
    from_visit = pl.struct("site_id", "visit_id", "date").hash(seed=1)
    surrogate = pl.struct(
        "site_id", "user_agent", "ip_hash", "date", pl.col("event_time").dt.hour().alias("hour")
    ).hash(seed=2)
    return pl.when(pl.col("visit_id").is_not_null()).then(from_visit).otherwise(surrogate)


def _double_clicks(candidates: pl.DataFrame, window_seconds: int) -> pl.Series:
    """True for a click followed by the same user's same action on the same item within the window.

    The later click is the one kept, and since each click is compared with the next one a
    chain of quick clicks collapses to its last.
    """
    keys = ["session_id", "item_id", "action"]
    ordered = candidates.with_row_index("_row").sort([*keys, "event_time"])
    same_next = pl.all_horizontal([pl.col(k) == pl.col(k).shift(-1) for k in keys])
    gap = pl.col("event_time").shift(-1) - pl.col("event_time")
    flagged = ordered.select(
        "_row",
        (same_next & (gap <= pl.duration(seconds=window_seconds))).fill_null(False).alias("double"),
    )
    return flagged.sort("_row").get_column("double")


def clean_events(
    events: pl.DataFrame,
    sources: pl.DataFrame,
    rules: CleaningRules = CleaningRules(),
) -> CleaningResult:
    """Apply the cleaning rules to one day of canonical events."""
    site_info = sources.select(
        pl.col("site_id").cast(pl.Int32),
        pl.col("type").alias("level"),
    )
    robots = robot_user_agents(events.get_column("user_agent").unique().to_list())
    frame = events.join(site_info, on="site_id", how="left").with_columns(
        normalize_identifiers(events.get_column("raw_identifier")).alias("item_id"),
        session_id_expr().alias("session_id"),
    )
    reason = (
        pl.when(
            pl.col("site_id").is_null()
            | pl.col("event_time").is_null()
            | pl.col("action_type").is_null()
            | (pl.col("visit_id").is_null() & pl.col("ip_hash").is_null())
        )
        .then(pl.lit("invalid_row"))
        .when(pl.col("level").is_null())
        .then(pl.lit("unknown_site"))
        .when(pl.col("action").is_null())
        .then(pl.lit("other_action"))
        .when(pl.col("user_agent").is_in(list(robots)))
        .then(pl.lit("robot_user_agent"))
        .when(robot_behaviour_expr(rules))
        .then(pl.lit("robot_behaviour"))
        .when(pl.col("item_id").is_null())
        .then(pl.lit("no_identifier"))
        .when(pl.col("url").str.contains(THUMBNAIL_URL).fill_null(False))
        .then(pl.lit("thumbnail"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    frame = frame.with_columns(reason.alias("reason"))
    candidates = frame.filter(pl.col("reason").is_null())
    doubles = _double_clicks(candidates, rules.double_click_seconds)
    candidates = candidates.with_columns(
        pl.when(doubles).then(pl.lit("double_click")).otherwise(None).alias("reason")
    )
    rejected = pl.concat(
        [
            frame.filter(pl.col("reason").is_not_null()),
            candidates.filter(pl.col("reason").is_not_null()),
        ]
    ).select(list(REJECTED_SCHEMA))
    kept = candidates.filter(pl.col("reason").is_null())
    return CleaningResult(
        sessions=_resolve_owner(kept, sources).select(list(SESSION_SCHEMA)).cast(SESSION_SCHEMA),
        rejected=rejected.cast(REJECTED_SCHEMA),
    )


def _resolve_owner(kept: pl.DataFrame, sources: pl.DataFrame) -> pl.DataFrame:
    """The repository that owns each item, from its identifier prefix.

    An item seen on its own repository's site belongs to that site even without a prefix
    match; on a national node or portal an unmatched prefix leaves the owner unknown.
    """
    prefixes = (
        sources.filter((pl.col("type") == "R") & pl.col("identifier_prefix").is_not_null())
        .select(
            pl.col("identifier_prefix").alias("_prefix"),
            pl.col("site_id").cast(pl.Int32).alias("_owner"),
        )
        .unique("_prefix", keep="first")
    )
    return (
        kept.with_columns(oai_prefix_expr(pl.col("item_id")).alias("_prefix"))
        .join(prefixes, on="_prefix", how="left")
        .with_columns(
            pl.coalesce(
                pl.col("_owner"),
                pl.when(pl.col("level") == "R").then(pl.col("site_id")),
            ).alias("owner_site_id"),
            pl.col("visitor_country").fill_null(UNKNOWN_COUNTRY).alias("country"),
        )
    )


def rejected_by_reason(rejected: pl.DataFrame) -> dict[str, int]:
    counts = {reason: 0 for reason in REJECTION_REASONS}
    for reason, n in rejected.group_by("reason").len().iter_rows():
        counts[reason] = n
    return counts
