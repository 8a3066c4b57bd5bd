"""Raw Matomo Parquet → canonical events: one typed row per action, all sites of one day.

Matomo exports differ between installations (plugins add columns, older dumps use strings for
datetimes); everything downstream relies on the canonical schema instead. Unknown columns are
ignored; a missing required column, a column of the wrong type, an unparseable timestamp or an
unreadable file stops the run with a message that names the file.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from usage_stats.pipeline.blocks import (
    DEFAULT_PREFIXES,
    BlockPrefixes,
    address_parts,
    block_expr,
    packed_address,
)
from usage_stats.pipeline.expressions import lookup_expr
from usage_stats.pipeline.titles import empty_page_titles, page_titles
from usage_stats.storage.lake import (
    Lake,
    LakeReadError,
    RawFile,
    raw_files_for_day,
    scan_parquet_file,
)

MATOMO_ACTION_TYPES = {1: "view", 2: "outlink", 3: "download"}
URL_PREFIXES = {0: "http://", 1: "http://www.", 2: "https://", 3: "https://www."}

EVENT_REQUIRED = {
    "idsite": "int",
    "idvisit": "int",
    "server_time": "datetime",
    "action_type": "int",
    "action_url": "str",
}
EVENT_OPTIONAL = {"idvisitor": "id", "action_url_prefix": "int", "action_name": "str"} | {
    f"custom_var_v{i}": "str" for i in range(1, 11)
}
VISIT_REQUIRED = {
    "idsite": "int",
    "idvisit": "int",
    "visit_first_action_time": "datetime",
    "visit_last_action_time": "datetime",
    "visit_total_actions": "int",
}
VISIT_OPTIONAL = {
    "location_country": "str",
    "location_ip": "id",
    "user_agent": "str",
    "user_id": "str",
}

ACTIONS = pl.Enum(["view", "download", "outlink"])

# Compact types: a day is millions of rows, written to the warehouse and read back by
# cleaning. The visitor id is only ever compared, so a 64-bit hash of it will do; the action,
# country and user agent (copied from the visit to each of its events) are codes, and so is
# the raw identifier (a day has a few hundred thousand spellings among millions of events:
# cleaning works on each once, and its codes index them).
CANONICAL_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "site_id": pl.Int32(),
    "visit_id": pl.Int64(),
    "visitor_id": pl.UInt64(),
    "event_time": pl.Datetime("us", "UTC"),
    "action_type": pl.Int16(),
    "action": ACTIONS,
    "url": pl.String(),
    "raw_identifier": pl.Categorical(),
    "visitor_country": pl.Categorical(),
    "user_agent": pl.Categorical(),
    "ip_hash": pl.UInt64(),
    # the visit's network blocks (`usage_stats.pipeline.blocks`: /24 and /16 for IPv4, /48 and
    # /32 for IPv6 by default), keyed-hashed like the IP: what `robot_distributed` groups on
    "block_hash": pl.UInt64(),
    "wide_block_hash": pl.UInt64(),
    # Matomo's `user_id` (a logged-in user), keyed-hashed like the IP: the COUNTER user of the
    # double-click rule where there is one, never stored in clear
    "user_hash": pl.UInt64(),
    "visit_first_action_time": pl.Datetime("us", "UTC"),
    "visit_last_action_time": pl.Datetime("us", "UTC"),
    "visit_total_actions": pl.Int32(),
}

_TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f")


def ip_hash_expr(ip: pl.Expr, salt: str) -> pl.Expr:
    """Keyed 64-bit hash that replaces a visitor IP as soon as it is read.

    The key is derived from a secret salt (seed and a salted struct field), so the hash is
    useless for looking IPs up without the salt; it only has to tell sessions apart.
    """
    digest = hashlib.sha256(salt.encode()).digest()
    seed = int.from_bytes(digest[:8], "little")
    keyed = pl.struct(ip.alias("ip"), pl.lit(digest[8:]).alias("key")).hash(seed=seed)
    return pl.when(ip.is_null()).then(None).otherwise(keyed)


@dataclass
class DayInput:
    """What the raw files of a day (or a piece of it) give.

    `events` is in the canonical schema, or, with `visits` set, its event-level columns
    (`EVENT_COLUMNS`) beside the visits they point to (`VISIT_KEYS` + `VISIT_COLUMNS`, as
    read: a visit listed twice is there twice); `join_visits` makes the canonical frame.
    """

    events: pl.DataFrame
    files: list[dict[str, object]] = field(default_factory=list)
    # page titles seen with the day's views (usage_stats.pipeline.titles), folded file by file
    titles: pl.DataFrame = field(default_factory=empty_page_titles)
    visits: pl.DataFrame | None = None


def _column_expr(dtype: pl.DataType, name: str, kind: str, where: str) -> pl.Expr | None:
    """The column as its kind, None for timestamps stored as strings (parsing them needs the
    values), or an error naming the file for a column of the wrong type."""
    col = pl.col(name)
    if dtype == pl.Null:
        return col
    if kind == "int":
        if dtype.is_integer():
            return col
    elif kind == "str":
        if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
            return col.cast(pl.String)
    elif kind == "id":
        if dtype in (pl.Binary, pl.String) or dtype.is_integer():
            return col
    elif kind == "datetime":
        if isinstance(dtype, pl.Datetime):
            return col if dtype.time_zone else col.dt.replace_time_zone("UTC")
        if dtype == pl.String:
            return None
    raise LakeReadError(f"{where}: column '{name}' has type {dtype}, expected {kind}")


def _check_column(frame: pl.DataFrame, name: str, kind: str, where: str) -> pl.Expr:
    expr = _column_expr(frame.schema[name], name, kind, where)
    return _parse_timestamps(frame, name, where) if expr is None else expr


def _parse_timestamps(frame: pl.DataFrame, name: str, where: str) -> pl.Expr:
    values = frame.get_column(name)
    parsed = None
    for fmt in _TIMESTAMP_FORMATS:
        attempt = values.str.strptime(pl.Datetime("us"), fmt, strict=False)
        if (attempt.is_null() & values.is_not_null()).sum() == 0:
            parsed = attempt
            break
    if parsed is None:
        attempt = values.str.strptime(pl.Datetime("us"), _TIMESTAMP_FORMATS[0], strict=False)
        bad = values.filter(attempt.is_null() & values.is_not_null())
        row = int((attempt.is_null() & values.is_not_null()).arg_true()[0])
        raise LakeReadError(
            f"{where}: column '{name}' has an unparseable timestamp {bad[0]!r} at row {row}"
        )
    return pl.lit(parsed).dt.replace_time_zone("UTC").alias(name)


def _typed(
    frame: pl.DataFrame, required: dict[str, str], optional: dict[str, str], where: str
) -> pl.DataFrame:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise LakeReadError(f"{where}: missing required column(s) {', '.join(missing)}")
    exprs = [_check_column(frame, c, k, where).alias(c) for c, k in required.items()]
    exprs += [
        _check_column(frame, c, k, where).alias(c)
        for c, k in optional.items()
        if c in frame.columns
    ]
    return frame.select(exprs)


def _typed_plan(
    source: pl.LazyFrame,
    schema: pl.Schema,
    required: dict[str, str],
    optional: dict[str, str],
    where: str,
) -> pl.LazyFrame:
    """`_typed` as a plan, checked against the file's schema without decoding it.

    Timestamps stored as strings are parsed by trying formats on the values, so such a file
    (an old export) is read and typed on the spot, by the same code.
    """
    missing = [c for c in required if c not in schema]
    if missing:
        raise LakeReadError(f"{where}: missing required column(s) {', '.join(missing)}")
    columns = [*required.items(), *((c, k) for c, k in optional.items() if c in schema)]
    if any(k == "datetime" and schema[c] == pl.String for c, k in columns):
        return _typed(_collect_source(source, where), required, optional, where).lazy()
    return source.select([_column_expr(schema[c], c, k, where).alias(c) for c, k in columns])


def _collect_source(source: pl.LazyFrame, where: str) -> pl.DataFrame:
    try:
        return source.collect(engine=_ENGINE)
    except Exception as exc:  # any failure to decode is the file's fault; name it
        raise LakeReadError(f"{where}: cannot read Parquet file ({exc})") from exc


def visitor_key(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Matomo's visitor id (binary, a string or an integer) as a 64-bit hash; null where there
    is none (null or empty). Only compared (the COUNTER user of the double-click rule, within
    a site): two of a site's visitors sharing a hash is as unlikely as in `cleaning._clicks`."""
    if dtype == pl.Binary:
        return pl.when(expr.bin.size() > 0).then(expr.hash(seed=11))
    if dtype == pl.String:
        return pl.when(expr != "").then(expr.hash(seed=11))
    if dtype == pl.Null:
        return pl.lit(None, dtype=pl.UInt64)
    # integers: their decimal spelling, as a string id would be hashed
    return expr.cast(pl.String).pipe(visitor_key, pl.String())


@dataclass
class _PlannedFile:
    """One raw file, checked as far as its schema allows, with how to convert it.

    `typed` reads the file's typed columns; `convert` turns them into the canonical ones;
    `sites_checked` says whether its rows' `idsite` has been compared with its folder yet.
    """

    raw: RawFile
    where: str
    typed: pl.LazyFrame
    convert: Callable[[pl.LazyFrame], pl.LazyFrame]
    sites_checked: bool = True


def _check_sites(site_ids: pl.Series, planned: _PlannedFile) -> None:
    raw = planned.raw
    wrong_site = (site_ids != raw.site_id).sum()
    if wrong_site:
        raise LakeReadError(
            f"{planned.where}: {wrong_site} row(s) have an idsite other than {raw.site_id} "
            "of their folder"
        )


def _plan_events(lake: Lake, raw: RawFile, day: dt.date, slots: dict[int, int]) -> _PlannedFile:
    """An events file's rows of `day`, checked as far as possible without decoding them.

    Month-level leaves (which need filtering) and files missing their identifier column
    (whose error comes after the site check) are read on the spot and fully checked.
    """
    where = lake.describe(raw.key)
    source, schema = scan_parquet_file(lake, raw.key, [*EVENT_REQUIRED, *EVENT_OPTIONAL])
    typed = _typed_plan(source, schema, EVENT_REQUIRED, EVENT_OPTIONAL, where)
    slot = slots.get(raw.site_id, 1)
    identifier_col = f"custom_var_v{slot}"
    # Typing keeps the columns and the type of `idvisitor`, so the file's schema says it all.
    exprs = _event_exprs(
        day,
        identifier_col,
        "action_url_prefix" in schema,
        schema.get("idvisitor"),
        "action_name" in schema,
    )
    convert = functools.partial(_select, exprs=exprs)
    planned = _PlannedFile(raw, where, typed, convert, sites_checked=False)
    if not raw.month_level and identifier_col in schema:
        return planned
    frame = _collect_source(typed, where)
    _check_sites(frame.get_column("idsite"), planned)
    if identifier_col not in frame.columns:
        raise LakeReadError(
            f"{where}: missing column '{identifier_col}' (site {raw.site_id} keeps its identifier "
            f"in custom variable slot {slot})"
        )
    if raw.month_level:
        first_of_month = day.day == 1
        frame = frame.filter(
            (pl.col("server_time").dt.date() == day)
            | (pl.col("server_time").is_null() & pl.lit(first_of_month))
        )
    planned.typed = frame.lazy()
    planned.sites_checked = True
    return planned


def _select(typed: pl.LazyFrame, exprs: list[pl.Expr]) -> pl.LazyFrame:
    return typed.select(exprs)


@functools.lru_cache(maxsize=64)
def _event_exprs(
    day: dt.date,
    identifier_col: str,
    has_prefix: bool,
    visitor_dtype: pl.DataType | None,
    has_title: bool,
) -> list[pl.Expr]:
    """The canonical event columns; cached, since a day's files mostly share one layout and
    building expressions costs more than converting a small file."""
    prefix = (
        lookup_expr(pl.col("action_url_prefix"), URL_PREFIXES, "", pl.String())
        if has_prefix
        else pl.lit("")
    )
    visitor = (
        visitor_key(pl.col("idvisitor"), visitor_dtype)
        if visitor_dtype is not None
        else pl.lit(None, dtype=pl.UInt64)
    )
    return [
        pl.lit(day, dtype=pl.Date).alias("date"),
        pl.col("idsite").cast(pl.Int32).alias("site_id"),
        pl.col("idvisit").cast(pl.Int64).alias("visit_id"),
        visitor.alias("visitor_id"),
        pl.col("server_time").cast(pl.Datetime("us", "UTC")).alias("event_time"),
        pl.col("action_type").cast(pl.Int16),
        _ACTION,
        pl.concat_str([prefix, pl.col("action_url")]).alias("url"),
        # a code already (`CANONICAL_SCHEMA`), cast while the files are decoded in parallel
        pl.col(identifier_col).cast(pl.String).cast(pl.Categorical).alias("raw_identifier"),
        # Only views carry the page's title (Matomo also names downloads after the file).
        (
            pl.when(pl.col("action_type") == 1).then(pl.col("action_name").cast(pl.String))
            if has_title
            else pl.lit(None, dtype=pl.String)
        ).alias("page_title"),
    ]


def _plan_visits(
    lake: Lake, raw: RawFile, ip_salt: str, prefixes: BlockPrefixes = DEFAULT_PREFIXES
) -> _PlannedFile:
    where = lake.describe(raw.key)
    source, schema = scan_parquet_file(lake, raw.key, [*VISIT_REQUIRED, *VISIT_OPTIONAL])
    typed = _typed_plan(source, schema, VISIT_REQUIRED, VISIT_OPTIONAL, where)
    exprs = _visit_exprs(
        ip_salt,
        schema.get("location_ip"),
        prefixes,
        "location_country" in schema,
        "user_agent" in schema,
        "user_id" in schema,
    )
    return _PlannedFile(raw, where, typed, functools.partial(_select, exprs=exprs))


@functools.lru_cache(maxsize=64)
def _visit_exprs(
    ip_salt: str,
    ip_dtype: pl.DataType | None,
    prefixes: BlockPrefixes,
    has_country: bool,
    has_agent: bool,
    has_user: bool,
) -> list[pl.Expr]:
    no_hash = pl.lit(None, dtype=pl.UInt64)
    ip_hash = ip_hash_expr(pl.col("location_ip"), ip_salt) if ip_dtype is not None else no_hash
    # The address as Matomo's bytes, for its blocks (`_with_blocks`, once per piece: the
    # block expressions cost more to plan per file than to run on the piece's visits).
    address = (
        packed_address(pl.col("location_ip"), ip_dtype)
        if ip_dtype is not None
        else pl.lit(None, dtype=pl.Binary)
    )
    user = pl.col("user_id").cast(pl.String).str.strip_chars()
    user_hash = (
        ip_hash_expr(pl.when(user != "").then(user), ip_salt)
        if has_user
        else pl.lit(None, dtype=pl.UInt64)
    )
    country = (
        pl.col("location_country").str.strip_chars().str.to_uppercase()
        if has_country
        else pl.lit(None, dtype=pl.String)
    )
    agent = pl.col("user_agent") if has_agent else pl.lit(None, dtype=pl.String)
    return [
        pl.col("idsite").cast(pl.Int32).alias("site_id"),
        pl.col("idvisit").cast(pl.Int64).alias("visit_id"),
        # as codes once per visit, not per event
        country.cast(pl.Categorical).alias("visitor_country"),
        agent.cast(pl.String).cast(pl.Categorical).alias("user_agent"),
        ip_hash.cast(pl.UInt64).alias("ip_hash"),
        address.alias("_address"),
        user_hash.cast(pl.UInt64).alias("user_hash"),
        pl.col("visit_first_action_time").cast(pl.Datetime("us", "UTC")),
        pl.col("visit_last_action_time").cast(pl.Datetime("us", "UTC")),
        pl.col("visit_total_actions").cast(pl.Int32),
    ]


def _read_files(
    raws: list[RawFile],
    plan: Callable[[RawFile], _PlannedFile],
    finish: Callable[[list[pl.DataFrame]], list[pl.DataFrame]] | None = None,
) -> list[pl.DataFrame]:
    """Every file converted to canonical columns, decoded in parallel, batch by batch.

    Errors come out as if the files were read one after another: planning stops at the
    first file that fails its schema checks, and that error is raised only once the files
    before it passed their checks on the values. When a batch fails to decode or convert,
    its files are redone one by one, so the error names its file, in order.
    """
    planned: list[_PlannedFile] = []
    pending = None
    for raw in raws:
        try:
            planned.append(plan(raw))
        except LakeReadError as exc:
            pending = exc
            break
    frames = []
    for start in range(0, len(planned), _FILES_PER_BATCH):
        batch = planned[start : start + _FILES_PER_BATCH]
        try:
            converted = pl.collect_all([p.convert(p.typed) for p in batch], engine=_ENGINE)
        except Exception:
            converted = [_read_file(p) for p in batch]
        for p, frame in zip(batch, converted, strict=True):
            if not p.sites_checked:
                _check_sites(frame.get_column("site_id"), p)
        frames += finish(converted) if finish else converted
    if pending is not None:
        raise pending
    return frames


def _read_file(planned: _PlannedFile) -> pl.DataFrame:
    """One file, step by step in the order of the checks (see `_read_files`)."""
    typed = _collect_source(planned.typed, planned.where)
    if not planned.sites_checked:
        _check_sites(typed.get_column("idsite"), planned)
        planned.sites_checked = True
    return planned.convert(typed.lazy()).collect(engine=_ENGINE)


def read_canonical_day(
    lake: Lake,
    day: dt.date,
    slots: dict[int, int],
    ip_salt: str,
    sites: list[int] | None = None,
    prefixes: BlockPrefixes = DEFAULT_PREFIXES,
) -> DayInput:
    """All raw rows of `day` (optionally only some sites) in the canonical schema.

    Rows belong to the partition of the leaf they were exported to, so a visit crossing
    midnight that the export kept together is counted once, on its leaf's day; month-level
    leaves are split by the date of `server_time`.
    """
    piece = read_events_and_visits(lake, day, slots, ip_salt, sites, prefixes)
    return DayInput(join_visits(piece.events, piece.visits), piece.files, piece.titles)


def read_events_and_visits(
    lake: Lake,
    day: dt.date,
    slots: dict[int, int],
    ip_salt: str,
    sites: list[int] | None = None,
    prefixes: BlockPrefixes = DEFAULT_PREFIXES,
) -> DayInput:
    """`read_canonical_day` without the join: the events' own columns and the visits beside.

    The warehouse keeps them so (raw_events and raw_visits): the visit-level columns, about
    half of a day's bytes, are then written and read once per visit instead of once per
    event (a visit has about four events), and cleaning joins them back piece by piece.
    """
    event_files = raw_files_for_day(lake, "events", day, sites)
    visit_files = raw_files_for_day(lake, "visits", day, sites)
    titles: list[pl.DataFrame] = []

    def fold_titles(batch: list[pl.DataFrame]) -> list[pl.DataFrame]:
        """The batch's titles, folded while it is in memory; the events go on without."""
        titles.append(page_titles(pl.concat(batch, how="vertical", rechunk=False)))
        return [frame.select(EVENT_COLUMNS).cast(EVENTS_SCHEMA) for frame in batch]

    event_frames = _read_files(
        event_files, lambda raw: _plan_events(lake, raw, day, slots), fold_titles
    )
    day_titles = (
        pl.concat(titles)
        .group_by("site_id", "raw_identifier", maintain_order=True)
        .agg(pl.col("page_title").sort_by("seen", "page_title").last(), pl.col("seen").max())
        if titles
        else empty_page_titles()
    )
    visit_frames = _read_files(visit_files, lambda raw: _plan_visits(lake, raw, ip_salt, prefixes))
    files: list[dict[str, object]] = [
        {"file": raw.key, "table": "events", "rows": frame.height}
        for raw, frame in zip(event_files, event_frames, strict=True)
    ] + [
        {"file": raw.key, "table": "visits", "rows": frame.height}
        for raw, frame in zip(visit_files, visit_frames, strict=True)
    ]
    if not event_frames:
        return DayInput(empty_events(), files, day_titles, empty_visits())
    # No rechunk: a contiguous copy of the whole piece would only raise the peak memory.
    events = pl.concat(event_frames, how="vertical", rechunk=False)
    visits = (
        _with_blocks(pl.concat(visit_frames, how="vertical", rechunk=False), ip_salt, prefixes)
        if visit_frames
        else empty_visits()
    )
    return DayInput(events, files, day_titles, visits.select(VISIT_KEYS + VISIT_COLUMNS))


def _with_blocks(visits: pl.DataFrame, ip_salt: str, prefixes: BlockPrefixes) -> pl.DataFrame:
    """The visits with their network blocks (`usage_stats.pipeline.blocks`) hashed with the
    key of the address, and without the address: the clear block, like the address, never
    leaves this module. Once per piece: the block expressions cost more to plan per file
    than to run on a piece's visits."""
    parts = address_parts(pl.col("_address"), pl.Binary())
    fine, wide = (
        ip_hash_expr(block_expr(parts, v4, v6), ip_salt).cast(pl.UInt64)
        for v4, v6 in (
            (prefixes.ipv4_fine, prefixes.ipv6_fine),
            (prefixes.ipv4_wide, prefixes.ipv6_wide),
        )
    )
    return visits.with_columns(fine.alias("block_hash"), wide.alias("wide_block_hash")).drop(
        "_address"
    )


def join_visits(events: pl.DataFrame, visits: pl.DataFrame | None) -> pl.DataFrame:
    """Each event with its visit's columns: the canonical frame (`CANONICAL_SCHEMA`).

    `visits` None: `events` is canonical already (a day stored before raw_visits existed).
    A visit listed twice makes the join yield an extra row, seen in the row count: then the
    first of its rows wins (deduplicating up front would cost a hash pass over every visit
    to handle what a clean export never has). Events of visits missing from the visits table
    get the behaviour rule's columns from their own events (`_fill_missing_visits`).
    """
    if visits is None:
        return events
    joined = _gather_visits(events, visits)
    if joined is None:
        joined = _join(events, visits)
        if joined.height != events.height:
            joined = _join(events, visits.unique(VISIT_KEYS, keep="first", maintain_order=True))
    return _fill_missing_visits(joined)


def split_visits(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A canonical frame as `join_visits` takes it: the event columns, and one row per visit
    (its first; every event of a visit carries the same visit columns)."""
    visits = events.select(VISIT_KEYS + VISIT_COLUMNS).unique(
        VISIT_KEYS, keep="first", maintain_order=True
    )
    return events.select(EVENT_COLUMNS), visits.filter(pl.col("visit_id").is_not_null())


def _gather_visits(events: pl.DataFrame, visits: pl.DataFrame) -> pl.DataFrame | None:
    """The join of `join_visits` as a look-up (`visit_rows`); None where that cannot be
    done: the caller joins instead."""
    row = visit_rows(events, visits)
    if row is None:
        return None
    columns = visits.select(VISIT_COLUMNS).select(pl.all().gather(row))
    return events.hstack(columns.get_columns()).select(list(CANONICAL_SCHEMA))


def visit_rows(events: pl.DataFrame, visits: pl.DataFrame) -> pl.Series | None:
    """Each event's row in `visits` (`VisitIndex.rows`), or None where visit ids do not
    allow a look-up table (`VisitIndex.of`)."""
    index = VisitIndex.of(visits, events.height)
    return None if index is None else index.rows(events)


@dataclass(frozen=True)
class VisitIndex:
    """Visits by visit id, for events to find their visit's row in a table instead of a hash
    join (a third of the join's time on a 10M-event day's pieces). Both frames need
    `site_id` and `visit_id`.

    Matomo numbers visits with one counter for all its sites, so a day's visits have
    distinct ids over a range a few times their number. Built once, it serves every piece
    of the day's events.
    """

    low: int
    table: pl.Series  # the visits' row number at (visit id − low); null: no such visit
    sites: pl.Series  # each visits row's site

    @classmethod
    def of(cls, visits: pl.DataFrame, events: int = 0) -> VisitIndex | None:
        """None when visit ids do not allow a table: a visit id twice (even of two sites), a
        null one, or a range too wide for the visits and the `events` to be looked up."""
        ids = visits.get_column("visit_id")
        if visits.is_empty() or ids.null_count():
            return None
        low, high = ids.min(), ids.max()
        size = high - low + 1
        if size > max(_MAX_TABLE_PER_ROW * (events + visits.height), _MIN_TABLE):
            return None
        table = pl.repeat(None, size, dtype=pl.UInt32, eager=True).scatter(
            ids - low, pl.int_range(visits.height, dtype=pl.UInt32, eager=True)
        )
        if size - table.null_count() != visits.height:
            return None  # a visit id listed twice
        return cls(low, table, visits.get_column("site_id"))

    def rows(self, events: pl.DataFrame) -> pl.Series:
        """Each event's visits row; null where no visit of its site has its id (an id of
        another site's visit finds none, as in the join)."""
        high = self.low + self.table.len() - 1
        visit_id = pl.col("visit_id")
        in_range = (visit_id >= self.low) & (visit_id <= high)
        row = events.select(
            pl.lit(self.table).gather(pl.when(in_range).then(visit_id - self.low)).alias("_row")
        ).to_series()
        site = self.sites.gather(row)
        return pl.select(pl.when(site == events.get_column("site_id")).then(row)).to_series()


# A piece's visit-id table may be this many entries per row of the piece (4 bytes each).
_MAX_TABLE_PER_ROW = 8
_MIN_TABLE = 1 << 20


def _join(events: pl.DataFrame, visits: pl.DataFrame) -> pl.DataFrame:
    return (
        events.lazy()
        .join(visits.lazy(), on=VISIT_KEYS, how="left", maintain_order="left")
        .select(list(CANONICAL_SCHEMA))
        .collect(engine=_ENGINE)
    )


_FILES_PER_BATCH = 16
# Measured on a 10M-event day: the streaming engine, good at group-bys, is slower here and
# leaves a larger heap behind.
_ENGINE = "in-memory"


_ACTION = lookup_expr(pl.col("action_type"), MATOMO_ACTION_TYPES, None, ACTIONS).alias("action")


def _fill_missing_visits(events: pl.DataFrame) -> pl.DataFrame:
    """A visit missing from the visits table still gets the behaviour rule, from its own events.

    The windows span the whole day (a visit can have events in a day leaf and a month leaf)
    and cost three group passes over it, so they only run when something is missing.
    """
    visit_columns = ["visit_first_action_time", "visit_last_action_time", "visit_total_actions"]
    if not events.select(pl.any_horizontal(pl.col(visit_columns).is_null().any())).item():
        return events
    per_visit = [pl.col("site_id"), pl.col("visit_id")]
    return events.with_columns(
        pl.col("visit_first_action_time").fill_null(pl.col("event_time").min().over(per_visit)),
        pl.col("visit_last_action_time").fill_null(pl.col("event_time").max().over(per_visit)),
        pl.col("visit_total_actions").fill_null(pl.len().over(per_visit).cast(pl.Int32)),
    )


# The visit-level columns: what `_visit_exprs` makes of a visits file, in canonical order,
# and the key that joins them to events. A column added there (and to `CANONICAL_SCHEMA`) is
# carried from raw_visits to cleaning with the others.
VISIT_KEYS = ["site_id", "visit_id"]
_VISIT_OUTPUT = {
    e.meta.output_name() for e in _visit_exprs("", pl.Binary(), DEFAULT_PREFIXES, True, True, True)
} | {"block_hash", "wide_block_hash"}  # made from the address by `_with_blocks`
VISIT_COLUMNS = [c for c in CANONICAL_SCHEMA if c in _VISIT_OUTPUT and c not in VISIT_KEYS]
EVENT_COLUMNS = [c for c in CANONICAL_SCHEMA if c not in VISIT_COLUMNS]
EVENTS_SCHEMA = {c: CANONICAL_SCHEMA[c] for c in EVENT_COLUMNS}
VISITS_SCHEMA = {c: CANONICAL_SCHEMA[c] for c in VISIT_KEYS + VISIT_COLUMNS}


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENTS_SCHEMA)


def empty_visits() -> pl.DataFrame:
    return pl.DataFrame(schema=VISITS_SCHEMA)
