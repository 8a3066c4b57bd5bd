"""Configuration from environment variables, with embedded defaults that run on a laptop.

Every variable is documented in README.md; paths are relative to the working directory
(the repository root when run through the Makefile or `dagster dev`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import polars as pl

from usage_stats.pipeline.blocks import DEFAULT_PREFIXES, BlockPrefixes
from usage_stats.pipeline.cleaning import CleaningRules
from usage_stats.pipeline.distributed import DistributedRules
from usage_stats.pipeline.pieces import DEFAULT_PIECE_MIB

# The cleaning rules' defaults live in CleaningRules; the environment only overrides them.
RULES = CleaningRules()

T = TypeVar("T")

DEFAULT_IP_SALT = "usage-stats-development-salt"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    lake_url: str
    warehouse_url: str
    sources_file: str
    admin_db_url: str
    duckdb_path: str
    start_date: str
    # the last daily partition (inclusive); unset: partitions run up to yesterday
    end_date: str | None
    ip_salt: str
    always_human_max_actions: int
    robot_min_actions: int
    min_average_seconds: float
    double_click_seconds: int
    thumbnail_pattern: str
    robots_list: str
    schedule_hour: int
    stats_store: str
    opensearch_url: str
    opensearch_prefix: str
    opensearch_batch_size: int
    s3_endpoint_url: str | None
    s3_region: str
    sensor_interval_seconds: int
    sensor_lookback_days: int
    sensor_max_days_per_tick: int
    matomo_url: str | None
    matomo_table_prefix: str
    export_hour: int
    export_chunk_rows: int
    # how much of a day a stage holds at once (MiB of raw event files per piece)
    piece_mib: float = DEFAULT_PIECE_MIB
    cors_origins: tuple[str, ...] = ()
    # `robot_distributed` thresholds (USAGE_STATS_DISTRIBUTED_<FIELD>) and the network block
    # widths (USAGE_STATS_BLOCK_<FIELD>): usage_stats.pipeline.distributed / .blocks
    distributed: DistributedRules = RULES.distributed
    block_prefixes: BlockPrefixes = DEFAULT_PREFIXES
    # The widget endpoints (`/report/*`, `/widget/*`) are embedded in other sites' pages.
    widget_cors_origins: tuple[str, ...] = ("*",)
    sushi_platform: str = "usage-stats"
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    # `usage-stats serve`: worker processes, the response cache, browsers' max-age, and the
    # per-client rate limits (web/protection.py; "" turns one off) and where they count
    web_workers: int = 1
    # How several workers get their connections: handed to them in turn by the parent
    # ("connections", web/balancer.py), or by racing to accept ("kernel", uvicorn's)
    web_balance: str = "connections"
    web_cache_seconds: float = 60.0
    web_browser_cache_seconds: int = 60
    # items a worker keeps described for SUSHI item reports until the next write (0: none)
    sushi_items_kept: int = 100_000
    rate_limit_widgets: str = "1200/minute"
    rate_limit_api: str = "600/minute"
    rate_limit_sushi: str = "60/minute"
    rate_limit_storage: str = "memory://"
    # LA Referencia compatibility set: one document per site, item and "day" or "month"
    opensearch_compat_granularity: str = "month"
    # OpenSearch indices of ours: copies of each shard on other nodes (1 on a cluster) and
    # primary shards of a new index
    opensearch_replicas: int = 0
    # the LA Referencia compatibility indices: <prefix>-<idsite>
    opensearch_compat_prefix: str = "usage-stats"
    opensearch_shards: int = 1
    # OAI-PMH harvesting: seconds between requests to one source, request timeout, retries
    oai_delay: float = 0.5
    oai_timeout: float = 60.0
    oai_max_retries: int = 3
    # nightly hours (UTC) of the harvest (before the usage run: its cross-walk) and of the
    # record statistics and usage breakdowns of yesterday (after the usage run)
    harvest_hour: int = 2
    breakdowns_hour: int = 5
    # Production (deploy/): how runs execute their steps (in_process, multiprocess, celery, k8s;
    # "" = the embedded default: usage jobs in one process) and how many days of the
    # day-independent assets a backfill run takes (0 = the whole range in one run)
    executor: str = ""
    # minute of USAGE_STATS_SCHEDULE_HOUR at which the nightly run starts
    schedule_minute: int = 0
    backfill_days_per_run: int = 0

    @classmethod
    def current(cls) -> Settings:
        """This process's settings, read from the environment once: every module that needs
        a setting when the code location loads (partitions, schedules, sensors) shares it."""
        return _current()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("USAGE_STATS_DATA_DIR", "data"))

        def number(name: str, default: str, kind: type) -> int | float:
            raw = env.get(name, default)
            try:
                return kind(raw)
            except ValueError as exc:
                raise ValueError(
                    f"environment variable {name}={raw!r} is not a {kind.__name__}"
                ) from exc

        return cls(
            data_dir=data_dir,
            lake_url=env.get("USAGE_STATS_LAKE_URL", str(data_dir / "lake")),
            warehouse_url=env.get("USAGE_STATS_WAREHOUSE_URL", str(data_dir / "warehouse")),
            sources_file=env.get("USAGE_STATS_SOURCES_FILE", str(data_dir / "sources.csv")),
            admin_db_url=env.get(
                "USAGE_STATS_ADMIN_DB_URL", f"sqlite:///{(data_dir / 'admin.db').as_posix()}"
            ),
            duckdb_path=env.get("USAGE_STATS_DUCKDB_PATH", str(data_dir / "stats.duckdb")),
            start_date=_iso_date(env, "USAGE_STATS_START_DATE", "2025-01-01"),
            end_date=_iso_date(env, "USAGE_STATS_END_DATE", None),
            ip_salt=env.get("USAGE_STATS_IP_SALT", DEFAULT_IP_SALT),
            always_human_max_actions=int(
                number(
                    "USAGE_STATS_ALWAYS_HUMAN_MAX_ACTIONS", str(RULES.always_human_max_actions), int
                )
            ),
            robot_min_actions=int(
                number("USAGE_STATS_ROBOT_MIN_ACTIONS", str(RULES.robot_min_actions), int)
            ),
            min_average_seconds=float(
                number("USAGE_STATS_MIN_AVERAGE_SECONDS", str(RULES.min_average_seconds), float)
            ),
            double_click_seconds=int(
                number("USAGE_STATS_DOUBLE_CLICK_SECONDS", str(RULES.double_click_seconds), int)
            ),
            thumbnail_pattern=_regex(env, "USAGE_STATS_THUMBNAIL_PATTERN", RULES.thumbnail_pattern),
            robots_list=env.get("USAGE_STATS_ROBOTS_LIST", "").strip() or RULES.robots_list,
            schedule_hour=int(number("USAGE_STATS_SCHEDULE_HOUR", "3", int)),
            stats_store=_choice(env, "USAGE_STATS_STATS_STORE", "duckdb", ("duckdb", "opensearch")),
            opensearch_url=env.get("USAGE_STATS_OPENSEARCH_URL", "http://127.0.0.1:9200"),
            opensearch_prefix=env.get("USAGE_STATS_OPENSEARCH_PREFIX", "usagestats"),
            opensearch_batch_size=int(number("USAGE_STATS_OPENSEARCH_BATCH_SIZE", "5000", int)),
            s3_endpoint_url=env.get("USAGE_STATS_S3_ENDPOINT_URL") or None,
            s3_region=env.get("USAGE_STATS_S3_REGION", env.get("AWS_DEFAULT_REGION", "us-east-1")),
            sensor_interval_seconds=int(number("USAGE_STATS_SENSOR_INTERVAL_SECONDS", "60", int)),
            sensor_lookback_days=int(number("USAGE_STATS_SENSOR_LOOKBACK_DAYS", "45", int)),
            sensor_max_days_per_tick=int(number("USAGE_STATS_SENSOR_MAX_DAYS_PER_TICK", "31", int)),
            matomo_url=env.get("USAGE_STATS_MATOMO_URL") or None,
            matomo_table_prefix=env.get("USAGE_STATS_MATOMO_TABLE_PREFIX", "matomo_"),
            export_hour=int(number("USAGE_STATS_EXPORT_HOUR", "1", int)),
            harvest_hour=int(number("USAGE_STATS_HARVEST_HOUR", "2", int)),
            breakdowns_hour=int(number("USAGE_STATS_BREAKDOWNS_HOUR", "5", int)),
            export_chunk_rows=int(number("USAGE_STATS_EXPORT_CHUNK_ROWS", "50000", int)),
            piece_mib=_non_negative(
                float(number("USAGE_STATS_PIECE_MIB", str(DEFAULT_PIECE_MIB), float)),
                "USAGE_STATS_PIECE_MIB",
            ),
            schedule_minute=int(number("USAGE_STATS_SCHEDULE_MINUTE", "0", int)),
            executor=_choice(
                env, "USAGE_STATS_EXECUTOR", "", ("", "in_process", "multiprocess", "celery", "k8s")
            ),
            backfill_days_per_run=int(
                _non_negative(
                    number("USAGE_STATS_BACKFILL_DAYS_PER_RUN", "0", int),
                    "USAGE_STATS_BACKFILL_DAYS_PER_RUN",
                )
            ),
            distributed=_fields_from_env(env, "USAGE_STATS_DISTRIBUTED_", RULES.distributed),
            block_prefixes=_fields_from_env(env, "USAGE_STATS_BLOCK_", DEFAULT_PREFIXES),
            cors_origins=tuple(
                o.strip() for o in env.get("USAGE_STATS_CORS_ORIGINS", "").split(",") if o.strip()
            ),
            widget_cors_origins=tuple(
                o.strip()
                for o in env.get("USAGE_STATS_WIDGET_CORS_ORIGINS", "*").split(",")
                if o.strip()
            ),
            sushi_platform=env.get("USAGE_STATS_SUSHI_PLATFORM", "usage-stats"),
            web_host=env.get("USAGE_STATS_WEB_HOST", "127.0.0.1"),
            web_port=int(number("USAGE_STATS_WEB_PORT", "8000", int)),
            web_workers=max(1, int(number("USAGE_STATS_WEB_WORKERS", "1", int))),
            web_balance=_choice(
                env, "USAGE_STATS_WEB_BALANCE", "connections", ("connections", "kernel")
            ),
            web_cache_seconds=_non_negative(
                float(number("USAGE_STATS_WEB_CACHE_SECONDS", "60", float)),
                "USAGE_STATS_WEB_CACHE_SECONDS",
            ),
            web_browser_cache_seconds=int(
                _non_negative(
                    int(number("USAGE_STATS_WEB_BROWSER_CACHE_SECONDS", "60", int)),
                    "USAGE_STATS_WEB_BROWSER_CACHE_SECONDS",
                )
            ),
            sushi_items_kept=int(
                _non_negative(
                    int(number("USAGE_STATS_SUSHI_ITEMS_KEPT", "100000", int)),
                    "USAGE_STATS_SUSHI_ITEMS_KEPT",
                )
            ),
            rate_limit_widgets=env.get("USAGE_STATS_RATE_LIMIT_WIDGETS", "1200/minute"),
            rate_limit_api=env.get("USAGE_STATS_RATE_LIMIT_API", "600/minute"),
            rate_limit_sushi=env.get("USAGE_STATS_RATE_LIMIT_SUSHI", "60/minute"),
            rate_limit_storage=env.get("USAGE_STATS_RATE_LIMIT_STORAGE", "memory://"),
            opensearch_compat_granularity=_choice(
                env, "USAGE_STATS_COMPAT_GRANULARITY", "month", ("day", "month")
            ),
            opensearch_compat_prefix=env.get("USAGE_STATS_OPENSEARCH_COMPAT_PREFIX", "usage-stats"),
            opensearch_replicas=int(
                _non_negative(
                    number("USAGE_STATS_OPENSEARCH_REPLICAS", "0", int),
                    "USAGE_STATS_OPENSEARCH_REPLICAS",
                )
            ),
            opensearch_shards=_at_least_one(
                int(number("USAGE_STATS_OPENSEARCH_SHARDS", "1", int)),
                "USAGE_STATS_OPENSEARCH_SHARDS",
            ),
            oai_delay=_non_negative(
                float(number("USAGE_STATS_OAI_DELAY", "0.5", float)), "USAGE_STATS_OAI_DELAY"
            ),
            oai_timeout=float(number("USAGE_STATS_OAI_TIMEOUT", "60", float)),
            oai_max_retries=int(number("USAGE_STATS_OAI_MAX_RETRIES", "3", int)),
        )


@functools.lru_cache(maxsize=1)
def _current() -> Settings:
    return Settings.from_env()


def _iso_date(env: dict[str, str], name: str, default: str | None) -> str | None:
    value = (env.get(name) or "").strip() or default
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r} is not a date (YYYY-MM-DD)"
        ) from None


def _regex(env: dict[str, str], name: str, default: str) -> str:
    """A regular expression from the environment, compiled now so a typo stops at start-up."""
    value = env.get(name) or default
    try:
        pl.Series([""], dtype=pl.String).str.contains(value)
    except pl.exceptions.ComputeError as exc:
        raise ValueError(
            f"environment variable {name}={value!r} is not a valid regular expression"
        ) from exc
    return value


def _fields_from_env(env: dict[str, str], prefix: str, default: T) -> T:
    """`default` (a frozen dataclass) with the fields the environment sets as
    `<prefix><FIELD>`, each read as its default's type; a value that does not fit names its
    variable."""
    changes: dict[str, object] = {}
    for f in dataclasses.fields(default):  # type: ignore[arg-type]
        name = prefix + f.name.upper()
        raw = env.get(name, "").strip()
        if not raw:
            continue
        kind = type(getattr(default, f.name))
        try:
            if kind is bool:
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                changes[f.name] = raw.lower() in ("true", "1", "yes")
            else:
                changes[f.name] = kind(raw)
        except ValueError as exc:
            raise ValueError(
                f"environment variable {name}={raw!r} is not a {kind.__name__}"
            ) from exc
    try:
        return dataclasses.replace(default, **changes)  # type: ignore[type-var]
    except ValueError as exc:
        raise ValueError(f"environment variables {prefix}*: {exc}") from exc


def _non_negative(value: float, name: str) -> float:
    if value < 0:
        raise ValueError(f"environment variable {name}={value!r} must not be negative")
    return value


def _at_least_one(value: int, name: str) -> int:
    if value < 1:
        raise ValueError(f"environment variable {name}={value!r} must be at least 1")
    return value


def _choice(env: dict[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower()
    if value not in allowed:
        raise ValueError(
            f"environment variable {name}={value!r} must be one of {', '.join(allowed)}"
        )
    return value
