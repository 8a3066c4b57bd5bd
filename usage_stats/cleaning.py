"""Cleaning: canonical events → kept session events + rejected events with one reason each.

Rules are applied in a fixed order and the first that matches names the reason, so every
input row ends in exactly one place and kept + rejected = input holds by construction (and is
still checked on every run). Visitor IPs arrive already replaced by a keyed hash and are not
carried into either output.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from usage_stats.canonical import lookup_expr
from usage_stats.identifiers import distinct_index, normalize_identifier_expr, oai_prefix_expr
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
    surrogate = pl.struct(
        "site_id", "user_agent", "ip_hash", "date", pl.col("event_time").dt.hour().alias("hour")
    ).hash(seed=2)
    return pl.when(pl.col("visit_id").is_not_null()).then(_visit_session()).otherwise(surrogate)


def _visit_session() -> pl.Expr:
    """The session of a row with a visit id (what `session_id_expr` gives such rows)."""
    return pl.struct("site_id", "visit_id", "date").hash(seed=1)


def _double_clicks(
    candidates: pl.DataFrame, window_seconds: int, time_bits: int | None
) -> pl.Series:
    """True for a click followed by the same user's same action on the same item within the window.

    The later click is the one kept, and since each click is compared with the next one a
    chain of quick clicks collapses to its last.

    `candidates` (see `_click_keys`) holds `session_id` and either `_click` (item rank,
    action rank and time packed in `time_bits` + the bits above) or the three as columns.
    Sorting on ranks compares like sorting on the strings, so the sort (including how it
    orders exact ties) is the one on the strings, at a fraction of the cost. Only the
    permutation is computed, and the flags are scattered back instead of sorted back.
    """
    window = pl.duration(seconds=window_seconds)
    if time_bits is not None:
        order = candidates.select(pl.arg_sort_by(["session_id", "_click"])).to_series()
        what = pl.col("_click") // pl.lit(1 << time_bits, dtype=pl.UInt64)
        same = [pl.col("session_id"), what]
        within = pl.col("_click").shift(-1) - pl.col("_click") <= window.dt.total_microseconds()
    else:
        keys = ["session_id", "_item_rank", "_action_rank"]
        order = candidates.select(pl.arg_sort_by([*keys, "event_time"])).to_series()
        same = [pl.col(k) for k in keys]
        within = pl.col("event_time").shift(-1) - pl.col("event_time") <= window
    same_next = pl.all_horizontal([e == e.shift(-1) for e in same])
    flagged = candidates[order].select((same_next & within).fill_null(False)).to_series()
    doubles = pl.repeat(False, candidates.height, dtype=pl.Boolean, eager=True)
    return doubles.scatter(order.filter(flagged), True).alias("double")


def _click_keys(
    frame: pl.DataFrame,
    is_candidate: pl.Expr,
    item_rank: pl.Expr,
    item_ranks: int,
    action_rank: pl.Expr,
    action_ranks: int,
) -> tuple[pl.DataFrame, int | None]:
    """What the double-click rule compares, for each candidate row, as narrow as possible.

    Item ranks are at most `item_ranks`, action ranks below `action_ranks`.

    Where item rank, action rank and microseconds since the first candidate fit side by
    side in 64 bits, `_click` packs them (so it sorts like the three) next to `session_id`,
    and the number of time bits is returned; otherwise the columns themselves and None.
    In one chunk: a query leaves one per morsel, and sorting a chunked frame takes twice as
    long as copying these narrow columns together.
    """
    candidates = frame.lazy().filter(is_candidate)
    micros = pl.col("event_time").dt.epoch("us")
    first, last = candidates.select(micros.min(), micros.max().alias("last")).collect().row(0)
    if first is not None:
        action_bits = max(action_ranks - 1, 0).bit_length()
        time_bits = (last - first).bit_length()
        if item_ranks.bit_length() + action_bits + time_bits <= 64:
            what = item_rank.cast(pl.UInt64) * (1 << action_bits) + action_rank
            click = what * pl.lit(1 << time_bits, dtype=pl.UInt64) + (micros - first).cast(
                pl.UInt64
            )
            keys = candidates.select("session_id", click.alias("_click")).collect()
            return keys.rechunk(), time_bits
    keys = candidates.select(
        "session_id",
        item_rank.alias("_item_rank"),
        action_rank.alias("_action_rank"),
        "event_time",
    ).collect()
    return keys.rechunk(), None


def _site_level(site_info: pl.DataFrame) -> pl.Expr:
    """Each row's site level (R/N/L; null for a site the registry does not know).

    Site ids are small integers, so the level is read from a table indexed by site id where
    it is needed, instead of a join that copies the wide frame of the day.
    """
    known = site_info.filter(pl.col("site_id").is_not_null())
    site_ids = known.get_column("site_id")
    duplicated = site_ids.filter(site_ids.is_duplicated()).unique().sort().to_list()
    if duplicated:
        raise ValueError(f"the source registry lists site id(s) {duplicated} more than once")
    levels = known.get_column("level")
    low = min(site_ids.min() or 0, 0)
    size = (site_ids.max() or 0) - low + 1
    if size > _MAX_SITE_TABLE:
        return pl.col("site_id").replace_strict(site_ids, levels, default=None)
    table = pl.Series("level", [None] * (size + 1), dtype=levels.dtype)
    table = table.scatter(site_ids - low, levels)
    site = pl.col("site_id").cast(pl.Int64) - low
    # Unknown (out of range or null) site ids read the table's last, empty slot.
    index = pl.when((site >= 0) & (site < size)).then(site).otherwise(size)
    return pl.lit(table).gather(index)


_MAX_SITE_TABLE = 1 << 20


def _identifiers(raw: pl.Series, sources: pl.DataFrame) -> tuple[pl.Series, pl.DataFrame]:
    """Normalised `item_id`, its rank in string order and the owner its prefix names, per
    distinct raw identifier, and each row's position in that table.

    All three depend on the raw identifier alone, so they are computed once per distinct
    spelling (a large day has a few hundred thousand among millions of events); rows carry
    a 4-byte position and read the columns through it only where they are needed.
    """
    distinct = raw.unique()
    table = (
        distinct.to_frame("raw")
        .select(normalize_identifier_expr(pl.col("raw")).alias("item_id"))
        .with_columns(
            pl.col("item_id").rank("dense").cast(pl.UInt32).alias("_item_rank"),
            oai_prefix_expr(pl.col("item_id")).alias("_prefix"),
        )
        .join(_owner_prefixes(sources), on="_prefix", how="left", maintain_order="left")
        .drop("_prefix")
        .with_columns(pl.col("item_id").is_null().alias("_no_item"))
    )
    return distinct_index(raw, distinct), table


def _owner_prefixes(sources: pl.DataFrame) -> pl.DataFrame:
    """Identifier prefix → owning repository; the first repository listed wins a shared prefix."""
    return (
        sources.filter((pl.col("type") == "R") & pl.col("identifier_prefix").is_not_null())
        .select(
            pl.col("identifier_prefix").alias("_prefix"),
            pl.col("site_id").cast(pl.Int32).alias("_owner"),
        )
        .unique("_prefix", keep="first", maintain_order=True)
    )


def _thumbnails(url: pl.Series) -> pl.Series:
    """`url` matches THUMBNAIL_URL (null counts as no match).

    The regular expression costs about a microsecond per URL. A match ends in `g`/`G`
    (jpg, jpeg, png; no other character case-folds to g) unless a query or fragment follows
    the extension, so only URLs that end so or contain `?`/`#` are searched.
    """
    maybe = (url.str.ends_with("g") | url.str.ends_with("G") | url.str.contains("[?#]")).fill_null(
        False
    )
    found = url.filter(maybe).str.contains(THUMBNAIL_URL).fill_null(False)
    result = pl.repeat(False, url.len(), dtype=pl.Boolean, eager=True)
    return result.scatter(maybe.arg_true(), found)


def clean_events(
    events: pl.DataFrame,
    sources: pl.DataFrame,
    rules: CleaningRules = CleaningRules(),
) -> CleaningResult:
    """Apply the cleaning rules to one day of canonical events.

    Built for days of millions of events, where copies of the wide frame of the day decide
    both time and peak memory. Each row's fate is a one-byte code until the rows are
    written out; per-identifier work runs once per distinct identifier and rows carry only
    a position in that table; the double-click sort sees two integer columns; and each
    output is one lazy filter over the input, whose columns arrive in one chunk per raw file
    while computed ones are contiguous (an eager frame that mixes the two would be copied
    whole to realign them).
    """
    site_info = sources.select(
        pl.col("site_id").cast(pl.Int32),
        pl.col("type").alias("level"),
    )
    robots = robot_user_agents(events.get_column("user_agent").unique().to_list())
    level = _site_level(site_info)
    frame = events
    index, identifiers = _identifiers(frame.get_column("raw_identifier"), sources)

    def identifier(name: str) -> pl.Expr:
        return pl.lit(identifiers.get_column(name)).gather(pl.col("_identifier"))

    frame = frame.hstack(
        [index.alias("_identifier"), _thumbnails(frame.get_column("url")).alias("_thumbnail")]
    )
    code = {reason: i for i, reason in enumerate(REJECTION_REASONS)}
    rule = (
        pl.when(
            pl.col("site_id").is_null()
            | pl.col("event_time").is_null()
            | pl.col("action_type").is_null()
            | (pl.col("visit_id").is_null() & pl.col("ip_hash").is_null())
        )
        .then(code["invalid_row"])
        .when(level.is_null())
        .then(code["unknown_site"])
        .when(pl.col("action").is_null())
        .then(code["other_action"])
        .when(pl.col("user_agent").is_in(list(robots)))
        .then(code["robot_user_agent"])
        .when(robot_behaviour_expr(rules))
        .then(code["robot_behaviour"])
        .when(identifier("_no_item"))
        .then(code["no_identifier"])
        .when(pl.col("_thumbnail"))
        .then(code["thumbnail"])
        .otherwise(None)
        .cast(pl.UInt8)
    )
    # Without rows lacking a visit id, the surrogate session (a hash over the user agent
    # strings) would be computed for every row only to be discarded.
    session = _visit_session() if frame.get_column("visit_id").null_count() == 0 else None
    session = session_id_expr() if session is None else session
    frame = frame.hstack(
        frame.lazy().select(rule.alias("_rule"), session.alias("session_id")).collect()
    )
    is_candidate = pl.col("_rule").is_null()
    actions = frame.get_column("action").unique().drop_nulls().sort()
    action_rank = lookup_expr(
        pl.col("action"), {a: i for i, a in enumerate(actions)}, None, pl.UInt32()
    )
    candidates, time_bits = _click_keys(
        frame,
        is_candidate,
        identifier("_item_rank"),
        identifiers.height,
        action_rank,
        actions.len(),
    )
    doubles = _double_clicks(candidates, rules.double_click_seconds, time_bits)
    del candidates
    # The fate of every row: null = kept, else the code of its reason.
    rules_fate = frame.get_column("_rule")
    fate = rules_fate.scatter(rules_fate.is_null().arg_true().filter(doubles), code["double_click"])
    frame = frame.with_columns(fate.alias("_fate"))
    reason = lookup_expr(pl.col("_fate"), dict(enumerate(REJECTION_REASONS)), None, pl.String())
    rejected_columns = [c for c in REJECTED_SCHEMA if c != "reason"]
    rejected = pl.concat(
        [
            frame.lazy().filter(pl.col("_rule").is_not_null()),
            frame.lazy().filter(is_candidate & pl.col("_fate").is_not_null()),
        ]
    ).select(*rejected_columns, reason.alias("reason"))
    owner = pl.coalesce(identifier("_owner"), pl.when(level == "R").then(pl.col("site_id")))
    sessions = (
        frame.lazy()
        .filter(pl.col("_fate").is_null())
        .with_columns(
            level.alias("level"),
            identifier("item_id").alias("item_id"),
            owner.alias("owner_site_id"),
            pl.col("visitor_country").fill_null(UNKNOWN_COUNTRY).alias("country"),
        )
        .select(list(SESSION_SCHEMA))
    )
    return CleaningResult(
        sessions=sessions.cast(SESSION_SCHEMA).collect(),
        rejected=rejected.cast(REJECTED_SCHEMA).collect(),
    )


def rejected_by_reason(rejected: pl.DataFrame) -> dict[str, int]:
    counts = {reason: 0 for reason in REJECTION_REASONS}
    for reason, n in rejected.group_by("reason").len().iter_rows():
        counts[reason] = n
    return counts
