"""Cleaning: canonical events → kept session events + rejected events with one reason each.

Rules are applied in a fixed order and the first that matches names the reason, so every
input row ends in exactly one place and kept + rejected = input holds by construction (and is
still checked on every run). Visitor IPs arrive already replaced by a keyed hash and are not
carried into either output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from usage_stats.pipeline.canonical import ACTIONS, CANONICAL_SCHEMA, visitor_key
from usage_stats.pipeline.crosswalk import AMBIGUOUS, REKEYED, resolve_keys
from usage_stats.pipeline.distributed import (
    DistributedRules,
    distributed_blocks,
    empty_audit,
    source_modes,
)
from usage_stats.pipeline.expressions import lookup_expr
from usage_stats.pipeline.identifiers import distinct_index, normalize_distinct
from usage_stats.pipeline.ownership import declarations, owner_ids
from usage_stats.pipeline.robots import PACKAGED_LIST, load_robot_list

REJECTION_REASONS = (
    "invalid_row",
    "unknown_site",
    "other_action",
    "robot_user_agent",
    "robot_behaviour",
    "robot_distributed",
    "no_identifier",
    "thumbnail",
    "double_click",
)

UNKNOWN_COUNTRY = "ZZ"

# The file extensions whose image renditions repositories serve as thumbnails.
RENDITION_SOURCES = (
    "pdf", "doc", "docx", "odt", "rtf", "txt", "tex", "ppt", "pptx", "odp", "xls", "xlsx",
    "ods", "csv", "epub", "ps", "djvu", "htm", "html", "xml",
    "jpg", "jpeg", "png", "gif", "tif", "tiff", "bmp", "webp",
)  # fmt: skip
# An image rendition of a document: DSpace's `x.pdf.jpg`, `x.docx.png` (and `photo.jpg.jpg`
# for images). Only a known file extension before the image extension makes a thumbnail, so
# `photo.2019.jpg`, `figure.v2.png` or `map.large.jpeg` are downloads. Configuration:
# `CleaningRules.thumbnail_pattern` (`USAGE_STATS_THUMBNAIL_PATTERN`).
THUMBNAIL_URL = r"(?i)\.(?:" + "|".join(RENDITION_SOURCES) + r")\.(?:jpe?g|png)(?:[?#].*)?$"

# Level, item and country are categorical: a day has few of each next to its rows, and the
# deltas group on their codes (usage_stats.pipeline.metrics) without hashing a string per row.
SESSION_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "site_id": pl.Int32(),
    "level": pl.Categorical(),
    "session_id": pl.UInt64(),
    "visit_id": pl.Int64(),
    "event_time": pl.Datetime("us", "UTC"),
    "action": ACTIONS,
    "item_id": pl.Categorical(),
    "owner_site_id": pl.Int32(),
    "country": pl.Categorical(),
    # the salted hash of the visit's fine network block (`canonical.CANONICAL_SCHEMA`): lets
    # later steps tell how concentrated a day's use is without any address
    "block_hash": pl.UInt64(),
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
    """Thresholds of the behaviour rule, the double-click window, the thumbnail pattern and
    the robots list (configuration)."""

    always_human_max_actions: int = 10
    robot_min_actions: int = 100
    min_average_seconds: float = 2.0
    double_click_seconds: int = 30
    thumbnail_pattern: str = THUMBNAIL_URL
    # `counter-robots` (the installed package) or a file (see usage_stats.pipeline.robots)
    robots_list: str = PACKAGED_LIST
    # thresholds of `robot_distributed` (`usage_stats.pipeline.distributed`)
    distributed: DistributedRules = DistributedRules()


@dataclass
class CleaningResult:
    sessions: pl.DataFrame
    rejected: pl.DataFrame
    # which robots list decided (`RobotList.version`), for the run's metadata
    robots_list_version: str = ""
    # kept events the identifier cross-walk counted on another item (`crosswalk_rekeyed`)
    # or left under an alias several records claim (`crosswalk_ambiguous`)
    crosswalk: dict[str, int] = field(default_factory=dict)
    # per site and fate, the rows: `site_id`, `reason` (null = kept), `len`; counted on the
    # one-byte fate codes while cleaning, so tallies need not group the outputs again
    fates: pl.DataFrame | None = None
    # one row per (site, block, day) `robot_distributed` flagged (`distributed.AUDIT_SCHEMA`)
    distributed_audit: pl.DataFrame = field(default_factory=empty_audit)

    def rejected_by_reason(self) -> dict[str, int]:
        """The rejected rows per reason (every reason, 0 where none)."""
        if self.fates is None:
            return rejected_by_reason(self.rejected)
        counts = dict.fromkeys(REJECTION_REASONS, 0)
        for reason, n in (
            self.fates.filter(pl.col("reason").is_not_null())
            .group_by("reason")
            .agg(pl.col("len").sum())
            .iter_rows()
        ):
            counts[reason] = n
        return counts


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
    # The agent as a string: a categorical would hash its code, which depends on the process.
    agent = pl.col("user_agent").cast(pl.String)
    surrogate = pl.struct(
        "site_id", agent, "ip_hash", "date", pl.col("event_time").dt.hour().alias("hour")
    ).hash(seed=2)
    return pl.when(pl.col("visit_id").is_not_null()).then(_visit_session()).otherwise(surrogate)


def _visit_session() -> pl.Expr:
    """The session of a row with a visit id (what `session_id_expr` gives such rows)."""
    return pl.struct("site_id", "visit_id", "date").hash(seed=1)


def counter_user_expr(frame: pl.DataFrame) -> pl.Expr:
    """The COUNTER user of each row, for double-click filtering (Code of Practice §7.2).

    The most reliable identity the row has: the logged-in user (Matomo's `user_id`, hashed on
    read), else the user cookie (Matomo's visitor id), else IP address + user agent, else
    (no IP either) the visit. Within a site: each site is its own platform. Branches that no
    row of `frame` needs are left out, since each hashes every row.
    """
    site = pl.col("site_id")
    height = frame.height
    cookie = pl.col("visitor_id")
    has = {
        "user": frame.get_column("user_hash").null_count() < height,
        "cookie": frame.get_column("visitor_id").null_count() < height,
        "ip": frame.get_column("ip_hash").null_count() < height,
    }
    branches: list[tuple[pl.Expr, pl.Expr]] = []
    if has["user"]:
        user = pl.col("user_hash")
        branches.append((user.is_not_null(), pl.struct(site, user).hash(seed=3)))
    if has["cookie"]:
        known = cookie.is_not_null()
        if frame.schema["visitor_id"] == pl.String:
            known = known & (cookie != "")
        branches.append((known, pl.struct(site, cookie).hash(seed=4)))
    if has["ip"]:
        ip, agent = pl.col("ip_hash"), pl.col("user_agent").fill_null("")
        branches.append((ip.is_not_null(), pl.struct(site, ip, agent).hash(seed=5)))
    fallback = pl.struct(site, pl.col("visit_id"), pl.col("date")).hash(seed=6)
    if not branches:
        return fallback
    chain = pl.when(branches[0][0]).then(branches[0][1])
    for test, value in branches[1:]:
        chain = chain.when(test).then(value)
    return chain.otherwise(fallback)


def _clicks(frame: pl.DataFrame, is_candidate: pl.Expr, item_rank: pl.Expr) -> pl.DataFrame:
    """What the double-click rule compares for each candidate row: `_who`, one 64-bit hash
    of COUNTER user and URL, and `_t`, the time in microseconds.

    One hash instead of user and URL side by side makes the sort two integer columns. Two
    (user, URL) pairs sharing a hash would also have to click within 30 s of each other to
    be miscounted: with ~10⁷ pairs a day, the chance of any shared hash is ~3·10⁻⁶, of a
    miscount orders of magnitude less. A row without a URL falls back to its item and action.
    In one chunk: a query leaves one per morsel, and sorting a chunked frame takes twice as
    long as copying these narrow columns together.
    """
    target: list[pl.Expr] = [pl.col("url")]
    if frame.get_column("url").null_count():
        no_url = pl.col("url").is_null()
        target += [pl.when(no_url).then(item_rank), pl.when(no_url).then(pl.col("action"))]
    who = pl.struct(counter_user_expr(frame).alias("_user"), *target).hash(seed=7)
    clicks = (
        frame.lazy()
        .filter(is_candidate)
        .select(who.alias("_who"), pl.col("event_time").dt.epoch("us").alias("_t"))
        .collect()
    )
    return clicks.rechunk()


def _double_clicks(clicks: pl.DataFrame, window_seconds: int) -> pl.Series:
    """True for a click followed by the same user's click on the same URL within the window.

    The later click is the one kept (COUNTER: remove the first, retain the second), and
    since each click is compared with the next one a chain of quick clicks collapses to its
    last. Only the permutation is computed, and the flags are scattered back instead of
    sorted back.
    """
    order = clicks.select(pl.arg_sort_by(["_who", "_t"])).to_series()
    who, t = pl.col("_who"), pl.col("_t")
    again = (who == who.shift(-1)) & (t.shift(-1) - t <= window_seconds * 1_000_000)
    flagged = clicks[order].select(again.fill_null(False)).to_series()
    doubles = pl.repeat(False, clicks.height, dtype=pl.Boolean, eager=True)
    return doubles.scatter(order.filter(flagged), True).alias("double")


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
    levels = known.get_column("level").cast(pl.Categorical)
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


def _identifiers(
    raw: pl.Series, sources: pl.DataFrame, crosswalk: pl.DataFrame | None = None
) -> tuple[pl.Series, pl.DataFrame]:
    """Normalised `item_id`, its rank in string order and the owner its prefix names (OAI,
    handle or DOI: `usage_stats.pipeline.ownership`), resolved through the identifier
    cross-walk of harvested records where one is given (`usage_stats.pipeline.crosswalk`),
    per distinct raw identifier, and each row's position in that table.

    All of them depend on the raw identifier alone, so they are computed once per distinct
    spelling (a large day has a few hundred thousand among millions of events); rows carry
    a 4-byte position and read the columns through it only where they are needed.
    """
    distinct = raw.unique()
    item_id = normalize_distinct(distinct.cast(pl.String)).alias("item_id")
    owner = owner_ids(item_id, _owner_prefixes(sources)).alias("_owner")
    item_id, owner, status = resolve_keys(item_id, owner, crosswalk)
    table = pl.DataFrame([item_id, owner, status.alias("_crosswalk")]).with_columns(
        pl.col("item_id").rank("dense").cast(pl.UInt32).alias("_item_rank"),
        pl.col("item_id").is_null().alias("_no_item"),
    )
    index = _code_index(raw, distinct) if raw.dtype == pl.Categorical else None
    if index is None:
        index = distinct_index(raw, distinct)
    return index, table.with_columns(pl.col("item_id").cast(pl.Categorical).alias("_item_code"))


def _code_index(raw: pl.Series, distinct: pl.Series) -> pl.Series | None:
    """`distinct_index` for a categorical: each row's position read from a table indexed by
    its code, no hashing; None when the codes are spread too wide for such a table."""
    codes = distinct.to_physical()
    known = codes.drop_nulls()
    if known.is_empty():
        return None
    low, high = known.min(), known.max()
    if high - low > max(4 * raw.len(), 1 << 20):
        return None
    positions = pl.int_range(distinct.len(), dtype=pl.UInt32, eager=True)
    table = pl.Series([None] * (high - low + 1), dtype=pl.UInt32)
    table = table.scatter(known - low, positions.filter(codes.is_not_null()))
    # a null identifier: the position of null among the distinct values
    null_at = codes.is_null().arg_true()
    rows = (
        raw.to_physical()
        .to_frame("code")
        .select(pl.lit(table).gather(pl.col("code").cast(pl.Int64) - low))
    )
    index = rows.to_series()
    if null_at.len():
        index = index.fill_null(null_at.cast(pl.UInt32)[0])
    return index


def _owner_prefixes(sources: pl.DataFrame) -> pl.DataFrame:
    """The OAI, handle and DOI prefixes repositories declare, with their owner; the first
    repository listed wins a shared prefix (the admin DB refuses to store one)."""
    return declarations(sources, types=("R",))


def _thumbnails(url: pl.Series, pattern: str = THUMBNAIL_URL) -> pl.Series:
    """`url` matches `pattern` (null counts as no match).

    The regular expression costs about a microsecond per URL. A match of the default
    pattern ends in `g`/`G` (jpg, jpeg, png; no other character case-folds to g) unless a
    query or fragment follows the extension, so only URLs that end so or contain `?`/`#` are
    searched; another pattern is searched in every URL.
    """
    if pattern != THUMBNAIL_URL:
        return url.str.contains(pattern).fill_null(False)
    maybe = (url.str.ends_with("g") | url.str.ends_with("G") | url.str.contains("[?#]")).fill_null(
        False
    )
    found = url.filter(maybe).str.contains(pattern).fill_null(False)
    result = pl.repeat(False, url.len(), dtype=pl.Boolean, eager=True)
    return result.scatter(maybe.arg_true(), found)


_COMPACT = ("visitor_id", "action", "raw_identifier", "visitor_country", "user_agent")


def _compact(events: pl.DataFrame) -> pl.DataFrame:
    """`events` in the canonical schema's compact types (`CANONICAL_SCHEMA`), whatever
    types the columns arrive in (frames built by hand have strings): no-op on a read day."""
    casts = {}
    for name in _COMPACT:
        dtype = events.schema[name]
        if dtype == CANONICAL_SCHEMA[name]:
            continue
        if name == "visitor_id":
            casts[name] = visitor_key(pl.col(name), dtype)
        else:
            casts[name] = pl.col(name).cast(CANONICAL_SCHEMA[name])
    return events.with_columns(**casts) if casts else events


def clean_events(
    events: pl.DataFrame,
    sources: pl.DataFrame,
    rules: CleaningRules = CleaningRules(),
    crosswalk: pl.DataFrame | None = None,
) -> CleaningResult:
    """Apply the cleaning rules to one day of canonical events; with a `crosswalk`
    (`usage_stats.pipeline.crosswalk.crosswalk_table`), use recorded under an identifier of a
    harvested record counts on that record's item and repository.

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
    robots = load_robot_list(rules.robots_list)
    frame = _compact(events)
    # The list's expressions run once per distinct agent; rows are matched on their codes.
    agents = frame.get_column("user_agent").unique()
    robot_codes = agents.filter(robots.robot_mask(agents.cast(pl.String))).to_physical()
    level = _site_level(site_info)
    index, identifiers = _identifiers(frame.get_column("raw_identifier"), sources, crosswalk)

    def identifier(name: str) -> pl.Expr:
        return pl.lit(identifiers.get_column(name)).gather(pl.col("_identifier"))

    frame = frame.hstack(
        [
            index.alias("_identifier"),
            _thumbnails(frame.get_column("url"), rules.thumbnail_pattern).alias("_thumbnail"),
        ]
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
        .when(pl.col("user_agent").to_physical().is_in(robot_codes.implode()))
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
    if "block_hash" not in frame.columns:  # a frame built by hand, with no blocks
        frame = frame.with_columns(
            pl.lit(None, pl.UInt64).alias("block_hash"),
            pl.lit(None, pl.UInt64).alias("wide_block_hash"),
        )
    # After the per-visit rules, on what they kept: the network blocks that look like one
    # crawler (`usage_stats.pipeline.distributed`).
    candidates = (
        frame.lazy()
        .with_row_index("_row")
        .filter(is_candidate)
        .select(
            "_row",
            "date",
            "site_id",
            "block_hash",
            "wide_block_hash",
            "ip_hash",
            "visit_id",
            "event_time",
            "action",
            identifier("_item_rank").alias("_item"),
        )
    )
    distributed, audit = distributed_blocks(candidates, source_modes(sources), rules.distributed)
    if distributed is not None:
        flagged = frame.get_column("_rule").scatter(distributed, code["robot_distributed"])
        frame = frame.with_columns(flagged)
    clicks = _clicks(frame, is_candidate, identifier("_item_rank"))
    doubles = _double_clicks(clicks, rules.double_click_seconds)
    del clicks
    # The fate of every row: null = kept, else the code of its reason.
    rules_fate = frame.get_column("_rule")
    fate = rules_fate.scatter(rules_fate.is_null().arg_true().filter(doubles), code["double_click"])
    frame = frame.with_columns(fate.alias("_fate"))
    reason = lookup_expr(pl.col("_fate"), dict(enumerate(REJECTION_REASONS)), None, pl.String())
    fates = (
        frame.lazy()
        .group_by("site_id", "_fate")
        .len()
        .select("site_id", reason.alias("reason"), "len")
        .collect()
    )
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
            identifier("_item_code").alias("item_id"),
            owner.alias("owner_site_id"),
            pl.col("visitor_country").fill_null(UNKNOWN_COUNTRY).alias("country"),
        )
        .select(list(SESSION_SCHEMA))
    )
    return CleaningResult(
        sessions=sessions.cast(SESSION_SCHEMA).collect(),
        rejected=rejected.cast(REJECTED_SCHEMA).collect(),
        robots_list_version=robots.version,
        crosswalk=_crosswalk_counts(frame, identifiers) if crosswalk is not None else {},
        fates=fates,
        distributed_audit=audit,
    )


def _crosswalk_counts(frame: pl.DataFrame, identifiers: pl.DataFrame) -> dict[str, int]:
    """Kept events the cross-walk moved to a record's item, and kept events under an alias
    several records claim (not resolved): the day's report of what the cross-walk did.
    Only rows whose identifier the cross-walk touched are looked at."""
    status = identifiers.get_column("_crosswalk")
    counts = {"crosswalk_rekeyed": 0, "crosswalk_ambiguous": 0}
    touched = status.is_in([REKEYED, AMBIGUOUS])
    if not touched.any():
        return counts
    code = pl.lit(status).gather(pl.col("_identifier"))
    found = (
        frame.lazy()
        .filter(pl.col("_fate").is_null())
        .select(
            (code == REKEYED).sum().alias("crosswalk_rekeyed"),
            (code == AMBIGUOUS).sum().alias("crosswalk_ambiguous"),
        )
        .collect()
    )
    return {name: int(found.item(0, name)) for name in counts}


def rejected_by_reason(rejected: pl.DataFrame) -> dict[str, int]:
    counts = {reason: 0 for reason in REJECTION_REASONS}
    for reason, n in rejected.group_by("reason").len().iter_rows():
        counts[reason] = n
    return counts
