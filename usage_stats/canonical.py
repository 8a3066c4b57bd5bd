"""Raw Matomo Parquet → canonical events: one typed row per action, all sites of one day.

Matomo exports differ between installations (plugins add columns, older dumps use strings for
datetimes); everything downstream relies on the canonical schema instead. Unknown columns are
ignored; a missing required column, a column of the wrong type, an unparseable timestamp or an
unreadable file stops the run with a message that names the file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

import polars as pl

from usage_stats.lake import Lake, LakeReadError, RawFile, raw_files_for_day, read_parquet_file

MATOMO_ACTION_TYPES = {1: "view", 2: "outlink", 3: "download"}
URL_PREFIXES = {0: "http://", 1: "http://www.", 2: "https://", 3: "https://www."}

EVENT_REQUIRED = {
    "idsite": "int",
    "idvisit": "int",
    "server_time": "datetime",
    "action_type": "int",
    "action_url": "str",
}
EVENT_OPTIONAL = {"idvisitor": "id", "action_url_prefix": "int"} | {
    f"custom_var_v{i}": "str" for i in range(1, 11)
}
VISIT_REQUIRED = {
    "idsite": "int",
    "idvisit": "int",
    "visit_first_action_time": "datetime",
    "visit_last_action_time": "datetime",
    "visit_total_actions": "int",
}
VISIT_OPTIONAL = {"location_country": "str", "location_ip": "id", "user_agent": "str"}

CANONICAL_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "site_id": pl.Int32(),
    "visit_id": pl.Int64(),
    "visitor_id": pl.String(),
    "event_time": pl.Datetime("us", "UTC"),
    "action_type": pl.Int16(),
    "action": pl.String(),
    "url": pl.String(),
    "raw_identifier": pl.String(),
    "visitor_country": pl.String(),
    "user_agent": pl.String(),
    "ip_hash": pl.UInt64(),
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
    events: pl.DataFrame
    files: list[dict[str, object]] = field(default_factory=list)


def _check_column(frame: pl.DataFrame, name: str, kind: str, where: str) -> pl.Expr:
    dtype = frame.schema[name]
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
            return _parse_timestamps(frame, name, where)
    raise LakeReadError(f"{where}: column '{name}' has type {dtype}, expected {kind}")


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


def _id_as_hex(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Binary:
        return expr.bin.encode("hex")
    return expr.cast(pl.String)


def _read_events(lake: Lake, raw: RawFile, day: dt.date, slots: dict[int, int]) -> pl.DataFrame:
    where = lake.describe(raw.key)
    frame = _typed(read_parquet_file(lake, raw.key), EVENT_REQUIRED, EVENT_OPTIONAL, where)
    wrong_site = frame.filter(pl.col("idsite") != raw.site_id).height
    if wrong_site:
        raise LakeReadError(
            f"{where}: {wrong_site} row(s) have an idsite other than {raw.site_id} of their folder"
        )
    slot = slots.get(raw.site_id, 1)
    identifier_col = f"custom_var_v{slot}"
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
    prefix = (
        pl.col("action_url_prefix").replace_strict(URL_PREFIXES, default="", return_dtype=pl.String)
        if "action_url_prefix" in frame.columns
        else pl.lit("")
    )
    visitor = (
        _id_as_hex(pl.col("idvisitor"), frame.schema["idvisitor"])
        if "idvisitor" in frame.columns
        else pl.lit(None, dtype=pl.String)
    )
    return frame.select(
        pl.lit(day, dtype=pl.Date).alias("date"),
        pl.col("idsite").cast(pl.Int32).alias("site_id"),
        pl.col("idvisit").cast(pl.Int64).alias("visit_id"),
        visitor.alias("visitor_id"),
        pl.col("server_time").cast(pl.Datetime("us", "UTC")).alias("event_time"),
        pl.col("action_type").cast(pl.Int16),
        pl.concat_str([prefix, pl.col("action_url")]).alias("url"),
        pl.col(identifier_col).cast(pl.String).alias("raw_identifier"),
    )


def _read_visits(lake: Lake, raw: RawFile, ip_salt: str) -> pl.DataFrame:
    where = lake.describe(raw.key)
    frame = _typed(read_parquet_file(lake, raw.key), VISIT_REQUIRED, VISIT_OPTIONAL, where)
    if "location_ip" in frame.columns:
        ip_hash = ip_hash_expr(pl.col("location_ip"), ip_salt)
    else:
        ip_hash = pl.lit(None, dtype=pl.UInt64)
    country = (
        pl.col("location_country").str.strip_chars().str.to_uppercase()
        if "location_country" in frame.columns
        else pl.lit(None, dtype=pl.String)
    )
    agent = pl.col("user_agent") if "user_agent" in frame.columns else pl.lit(None, dtype=pl.String)
    return frame.select(
        pl.col("idsite").cast(pl.Int32).alias("site_id"),
        pl.col("idvisit").cast(pl.Int64).alias("visit_id"),
        country.alias("visitor_country"),
        agent.cast(pl.String).alias("user_agent"),
        ip_hash.cast(pl.UInt64).alias("ip_hash"),
        pl.col("visit_first_action_time").cast(pl.Datetime("us", "UTC")),
        pl.col("visit_last_action_time").cast(pl.Datetime("us", "UTC")),
        pl.col("visit_total_actions").cast(pl.Int32),
    )


def empty_canonical() -> pl.DataFrame:
    return pl.DataFrame(schema=CANONICAL_SCHEMA)


def read_canonical_day(
    lake: Lake,
    day: dt.date,
    slots: dict[int, int],
    ip_salt: str,
    sites: list[int] | None = None,
) -> DayInput:
    """All raw rows of `day` (optionally only some sites) in the canonical schema.

    Rows belong to the partition of the leaf they were exported to, so a visit crossing
    midnight that the export kept together is counted once, on its leaf's day; month-level
    leaves are split by the date of `server_time`.
    """
    event_files = raw_files_for_day(lake, "events", day, sites)
    visit_files = raw_files_for_day(lake, "visits", day, sites)
    files: list[dict[str, object]] = []
    event_frames = []
    for raw in event_files:
        frame = _read_events(lake, raw, day, slots)
        files.append({"file": raw.key, "table": "events", "rows": frame.height})
        event_frames.append(frame)
    visit_frames = []
    for raw in visit_files:
        frame = _read_visits(lake, raw, ip_salt)
        files.append({"file": raw.key, "table": "visits", "rows": frame.height})
        visit_frames.append(frame)
    if not event_frames:
        return DayInput(empty_canonical(), files)
    events = pl.concat(event_frames, how="vertical")
    if visit_frames:
        visits = pl.concat(visit_frames, how="vertical").unique(
            ["site_id", "visit_id"], keep="first", maintain_order=True
        )
    else:
        visits = pl.DataFrame(
            schema={k: v for k, v in CANONICAL_SCHEMA.items() if k in _VISIT_COLUMNS}
        )
    joined = events.join(visits, on=["site_id", "visit_id"], how="left")
    # A visit missing from the visits table still gets the behaviour rule, from its own events.
    per_visit = [pl.col("site_id"), pl.col("visit_id")]
    joined = joined.with_columns(
        pl.col("visit_first_action_time").fill_null(pl.col("event_time").min().over(per_visit)),
        pl.col("visit_last_action_time").fill_null(pl.col("event_time").max().over(per_visit)),
        pl.col("visit_total_actions").fill_null(pl.len().over(per_visit).cast(pl.Int32)),
        pl.col("action_type")
        .replace_strict(MATOMO_ACTION_TYPES, default=None, return_dtype=pl.String)
        .alias("action"),
    )
    return DayInput(joined.select(list(CANONICAL_SCHEMA)).cast(CANONICAL_SCHEMA), files)


_VISIT_COLUMNS = {
    "site_id",
    "visit_id",
    "visitor_country",
    "user_agent",
    "ip_hash",
    "visit_first_action_time",
    "visit_last_action_time",
    "visit_total_actions",
}
