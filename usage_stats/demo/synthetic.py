"""Synthetic Matomo data with planted truth.

Every generated row carries, by construction, the fate it must meet in cleaning (kept, or one
rejection reason) and the canonical identifier of its item; the manifest is computed from
those labels with plain Python, independently of the pipeline's transforms. Visits are laid
out so that no rule can fire by accident: a human's actions are ≥ 100 s apart, so only the
planted repeats (1–29 s, 31–60 s, chains 20 s apart) are near each other, and a human visit
never exceeds 10 actions unless it is a planted slow "heavy reader" (≥ 100 s per action).

Generation is vectorised (NumPy + Polars) so the benchmark can make days of 10M events.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from usage_stats.admin.sources import Source, write_sources_csv
from usage_stats.demo.oai_records import (
    PlantedRecord,
    planted_metadata_manifest,
    planted_records,
    provider_dataset,
)
from usage_stats.demo.synthetic_referrers import planted_referrer, referrer_columns
from usage_stats.pipeline.cleaning import REJECTION_REASONS
from usage_stats.pipeline.expressions import lookup_expr
from usage_stats.storage.lake import write_leaf, write_month_leaf
from usage_stats.storage.open import open_lake

UNKNOWN_SITE_ID = 999
VISITOR_COUNTRIES = ["ar", "br", "cl", "co", "cr", "mx", "pe", "us", "es", None]
REPOSITORY_COUNTRIES = ["CR", "AR", "BR", "CL", "CO", "MX", "PE"]
BROWSER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
]
ROBOT_AGENTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "python-requests/2.31.0",
    "Wget/1.21.4",
]
KEPT = "kept"
ACTION_VIEW, ACTION_OUTLINK, ACTION_DOWNLOAD, ACTION_SEARCH = 1, 2, 3, 8
_LABELS = [KEPT, *REJECTION_REASONS]
_LABEL = {name: i for i, name in enumerate(_LABELS)}
# URL kinds
_URL_ITEM, _URL_FILE, _URL_THUMB, _URL_OUT, _URL_SEARCH, _URL_FILE2, _URL_IMAGE = range(7)


@dataclass(frozen=True)
class SyntheticConfig:
    sites: int = 5
    days: int = 3
    events_per_day: int = 2_000
    start: dt.date = dt.date(2026, 1, 1)
    seed: int = 42
    month_level_sites: tuple[int, ...] = (2,)
    plant_rate: float = 0.02
    # Plant the traffic of issue 18 (`_crawler_traffic`): distributed and slow crawlers, a
    # campus NAT and a reading-list spike. Off: every other planted figure is as before.
    crawlers: bool = False
    # A day of more events is drawn in batches of at most this many (each its own random
    # stream and range of visit ids, written as one more part of each leaf), so that a day
    # larger than memory can be written (a 10M-event day takes ~5.5 GiB to draw). None:
    # whole, as before. Items per site are those of one batch.
    batch_events: int | None = None


@dataclass
class Synthetic:
    config: SyntheticConfig
    sources: list[Source]
    events_written: dict[str, int] = field(default_factory=dict)
    manifest: dict | None = None


def build_sources(n_sites: int) -> list[Source]:
    """Repositories 1..n−2, a national node n−1 and the regional portal n (when n ≥ 3)."""
    sources = []
    n_repos = n_sites - 2 if n_sites >= 3 else n_sites
    national = n_sites - 1 if n_sites >= 3 else None
    regional = n_sites if n_sites >= 3 else None
    for i in range(1, n_repos + 1):
        sources.append(
            Source(
                site_id=i,
                source_key=f"opendoar::{1000 + i}",
                name=f"Repository {i}",
                type="R",
                country=REPOSITORY_COUNTRIES[(i - 1) % len(REPOSITORY_COUNTRIES)],
                identifier_prefix=f"oai:repo{i}.example.org:",
                custom_var_slot=1,
                national_site_id=national,
                regional_site_id=regional,
            )
        )
    if national is not None and regional is not None:
        sources.append(
            Source(national, "national::CR", "National node", "N", "CR", None, 1, None, regional)
        )
        sources.append(Source(regional, "regional::LA", "Regional portal", "L", None, None, 6))
    return sources


def user_agent_sites(sources: list[Source]) -> set[int]:
    """Sites whose export carries a user agent (every third repository)."""
    return {s.site_id for s in sources if s.type == "R" and s.site_id % 3 == 0}


def items_per_site(config: SyntheticConfig) -> int:
    return max(20, config.events_per_day // (max(config.sites, 1) * 10))


@dataclass
class _Segment:
    """Columns of one block of generated events (NumPy arrays of equal length)."""

    visit: np.ndarray
    offset: np.ndarray  # seconds after the visit start
    action: np.ndarray
    owner: np.ndarray
    item: np.ndarray
    variant: np.ndarray
    url_kind: np.ndarray
    label: np.ndarray
    has_identifier: np.ndarray


def _natural_actions(
    rng: np.random.Generator,
    counts: np.ndarray,
    min_gap: int,
    max_gap: int,
    visit_base: int,
    owners: np.ndarray,
    n_items: int,
    label: str,
) -> _Segment:
    total = int(counts.sum())
    visit = np.repeat(np.arange(len(counts)) + visit_base, counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    position = np.arange(total) - starts
    gaps = rng.integers(min_gap, max_gap + 1, total)
    gaps[position == 0] = 0
    cumulative = np.cumsum(gaps)
    offset = cumulative - np.repeat(cumulative[np.cumsum(counts) - counts], counts)
    action = rng.choice([ACTION_VIEW, ACTION_DOWNLOAD, ACTION_OUTLINK], total, p=[0.6, 0.35, 0.05])
    item = np.minimum(rng.zipf(1.6, total), n_items) - 1
    variant = rng.choice(5, total, p=[0.7, 0.1, 0.1, 0.05, 0.05])
    url_kind = np.where(
        action == ACTION_VIEW, _URL_ITEM, np.where(action == ACTION_DOWNLOAD, _URL_FILE, _URL_OUT)
    )
    return _Segment(
        visit=visit,
        offset=offset,
        action=action,
        owner=np.repeat(owners, counts),
        item=item,
        variant=variant,
        url_kind=url_kind,
        label=np.full(total, _LABEL[label]),
        has_identifier=np.ones(total, dtype=bool),
    )


def _concat(segments: list[_Segment]) -> _Segment:
    return _Segment(
        *[np.concatenate([getattr(s, f) for s in segments]) for f in _Segment.__dataclass_fields__]
    )


def _take(segment: _Segment, index: np.ndarray) -> _Segment:
    return _Segment(*[getattr(segment, f)[index] for f in _Segment.__dataclass_fields__])


def _plants(
    rng: np.random.Generator, natural: _Segment, n_visits: int, visit_base: int, rate: float
) -> tuple[_Segment, dict[str, int]]:
    """Repeats and bad rows added to some human visits, each visit at most one plant."""
    kinds = [
        "dbl_in",
        "dbl_out",
        "dbl_chain",
        "thumbnail",
        "two_files",
        "image_download",
        "no_identifier",
        "other_action",
        "invalid_row",
    ]
    per_kind = max(1, int(n_visits * rate))
    chosen = rng.permutation(n_visits)[: per_kind * len(kinds)]
    first_action = np.searchsorted(natural.visit, np.arange(n_visits) + visit_base)
    label = natural.label.copy()
    extra: list[_Segment] = []
    counts: dict[str, int] = {}
    for k, kind in enumerate(kinds):
        visits = chosen[k * per_kind : (k + 1) * per_kind]
        counts[kind] = len(visits)
        if not len(visits):
            continue
        base = _take(natural, first_action[visits])
        n = len(visits)
        if kind in ("dbl_in", "dbl_out", "dbl_chain"):
            offsets = {
                "dbl_in": [rng.integers(1, 30, n)],
                "dbl_out": [rng.integers(31, 61, n)],
                "dbl_chain": [np.full(n, 20), np.full(n, 40)],
            }[kind]
            if kind != "dbl_out":
                label[first_action[visits]] = _LABEL["double_click"]
            for j, delta in enumerate(offsets):
                dup = _take(base, np.arange(n))
                dup.offset = base.offset + delta
                dup.variant = rng.choice(5, n)
                last = j == len(offsets) - 1
                dup.label = np.full(
                    n, _LABEL[KEPT] if last or kind == "dbl_out" else _LABEL["double_click"]
                )
                extra.append(dup)
            continue
        if kind == "two_files":
            # Two files of the item 10 s apart: two requests (other URLs), one unique.
            for delta, url_kind in ((50, _URL_FILE), (60, _URL_FILE2)):
                row = _take(base, np.arange(n))
                row.offset = base.offset + delta
                row.action = np.full(n, ACTION_DOWNLOAD)
                row.url_kind = np.full(n, url_kind)
                row.label = np.full(n, _LABEL[KEPT])
                extra.append(row)
            continue
        row = _take(base, np.arange(n))
        row.offset = base.offset + 50
        row.label = np.full(n, _LABEL[KEPT if kind == "image_download" else kind])
        if kind == "image_download":  # an image whose name has a dot: not a thumbnail
            row.action = np.full(n, ACTION_DOWNLOAD)
            row.url_kind = np.full(n, _URL_IMAGE)
        elif kind == "thumbnail":
            row.action = np.full(n, ACTION_DOWNLOAD)
            row.url_kind = np.full(n, _URL_THUMB)
        elif kind == "no_identifier":
            row.action = np.full(n, ACTION_VIEW)
            row.url_kind = np.full(n, _URL_ITEM)
            row.has_identifier = np.zeros(n, dtype=bool)
        elif kind == "other_action":
            row.action = np.full(n, ACTION_SEARCH)
            row.url_kind = np.full(n, _URL_SEARCH)
            row.has_identifier = np.zeros(n, dtype=bool)
        else:  # invalid_row: no action type at all
            row.action = np.full(n, -1)
        extra.append(row)
    natural.label = label
    return _concat([natural, *extra]), counts


# Issue 18's planted traffic: where each kind comes from (all inside 10.0.0.0/8, which the
# ordinary visitors then avoid) and how it behaves. `robot_distributed` events must be
# rejected by that rule; the campus and the reading list are people and must be kept.
TRAFFIC_KINDS = ("distributed_24", "distributed_16", "slow_crawler", "campus_nat", "reading_list")
CRAWLER_KINDS = ("distributed_24", "distributed_16", "slow_crawler")
_PLANTED_NET = 10 << 24


def _crawler_traffic(
    config: SyntheticConfig, repos: np.ndarray, day_index: int, visit_base: int, n_items: int
) -> tuple[pl.DataFrame, np.ndarray]:
    """The day's planted issue-18 visits as generator rows, and each visit's IPv4 address.

    Drawn from their own random stream, so the ordinary traffic is what it was without them.
    - distributed_24: 300 addresses of two /24 blocks, one or two actions each, mostly
      downloads, sweeping the repository's items, started on a regular schedule all day;
    - distributed_16: 800 addresses scattered over one /16 (a few per /24), the same way;
    - slow_crawler: 30 addresses of one /24, one request per address per hour, all day;
    - campus_nat: 200 readers behind 40 addresses of one /24, 08:00–18:00, ordinary reading;
    - reading_list: 300 readers from addresses all over the Internet reading one paper.
    """
    rng = np.random.default_rng([config.seed, day_index, 18])
    site = int(repos[0])
    rows: list[dict[str, np.ndarray]] = []
    ips: list[np.ndarray] = []
    next_visit = visit_base

    def add(
        kind: str,
        starts: np.ndarray,
        counts: np.ndarray,
        gaps: tuple[int, int],
        items: np.ndarray | None,
        actions: np.ndarray | None,
        label: str,
        visit_ips: np.ndarray,
    ) -> None:
        nonlocal next_visit
        n = len(counts)
        total = int(counts.sum())
        visit = np.repeat(np.arange(n), counts)
        first = np.cumsum(counts) - counts
        position = np.arange(total) - np.repeat(first, counts)
        step = rng.integers(gaps[0], gaps[1] + 1, total)
        step[position == 0] = 0
        cumulative = np.cumsum(step)
        offset = cumulative - np.repeat(cumulative[first], counts)
        if items is None:
            items = np.minimum(rng.zipf(1.6, total), n_items) - 1
        if actions is None:
            actions = rng.choice([ACTION_VIEW, ACTION_DOWNLOAD], total, p=[0.6, 0.4])
        rows.append(
            {
                "idvisit": visit + next_visit,
                "seconds": np.repeat(starts, counts) + offset,
                "action_type": actions,
                "item": items,
                "label": np.full(total, _LABEL[label]),
                "kind": np.full(total, TRAFFIC_KINDS.index(kind)),
            }
        )
        ips.append(visit_ips)
        next_visit += n

    def sweep(total: int) -> np.ndarray:
        return np.resize(rng.permutation(n_items), total)

    def crawler_actions(total: int) -> np.ndarray:
        return rng.choice([ACTION_VIEW, ACTION_DOWNLOAD], total, p=[0.25, 0.75])

    def schedule(n: int) -> np.ndarray:
        return np.linspace(0, 86_000, n, endpoint=False).astype(np.int64) + rng.integers(0, 20, n)

    # distributed_24: 10.1.1.0/24 and 10.1.2.0/24
    n = 300
    counts = rng.integers(1, 3, n)
    hosts = np.concatenate([rng.permutation(254)[:150] + 1, rng.permutation(254)[:150] + 1])
    blocks = np.repeat([(1 << 16) | (1 << 8) | 0, (1 << 16) | (2 << 8)], 150)
    add(
        "distributed_24",
        rng.permutation(schedule(n)),
        counts,
        (3, 15),
        sweep(int(counts.sum())),
        crawler_actions(int(counts.sum())),
        "robot_distributed",
        _PLANTED_NET + blocks + hosts,
    )
    # distributed_16: 800 addresses of 10.2.0.0/16
    n = 800
    counts = rng.integers(1, 3, n)
    hosts = rng.choice(1 << 16, n, replace=False)
    add(
        "distributed_16",
        rng.permutation(schedule(n)),
        counts,
        (3, 15),
        sweep(int(counts.sum())),
        crawler_actions(int(counts.sum())),
        "robot_distributed",
        _PLANTED_NET + (2 << 16) + hosts,
    )
    # slow_crawler: 30 addresses of 10.3.3.0/24, each once an hour (each request its own visit)
    addresses = rng.permutation(254)[:30] + 1
    minute = rng.integers(0, 3600, 30)
    starts = (np.arange(24)[None, :] * 3600 + minute[:, None]).reshape(-1)
    n = len(starts)
    add(
        "slow_crawler",
        starts,
        np.ones(n, dtype=np.int64),
        (0, 0),
        sweep(n),
        crawler_actions(n),
        "robot_distributed",
        _PLANTED_NET + (3 << 16) + (3 << 8) + np.repeat(addresses, 24),
    )
    # campus_nat: 200 readers behind 40 addresses of 10.4.4.0/24, working hours
    addresses = rng.permutation(254)[:40] + 1
    n = 200
    add(
        "campus_nat",
        rng.integers(8 * 3600, 18 * 3600, n),
        rng.integers(1, 6, n),
        (100, 400),
        None,
        None,
        KEPT,
        _PLANTED_NET + (4 << 16) + (4 << 8) + rng.choice(addresses, n),
    )
    # reading_list: 300 readers anywhere (outside 10/8), one paper: a view, then a download
    n = 300
    paper = n_items // 2
    counts = rng.integers(1, 3, n)
    total = int(counts.sum())
    first = np.cumsum(counts) - counts
    actions = np.full(total, ACTION_VIEW)
    actions[np.arange(total) != np.repeat(first, counts)] = ACTION_DOWNLOAD
    anywhere = rng.integers(11 << 24, 224 << 24, n, dtype=np.int64)
    add(
        "reading_list",
        rng.integers(9 * 3600, 21 * 3600, n),
        counts,
        (100, 400),
        np.full(total, paper),
        actions,
        KEPT,
        anywhere,
    )

    columns = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    total = len(columns["idvisit"])
    action = columns["action_type"]
    frame = pl.DataFrame(
        {
            "idvisit": columns["idvisit"].astype(np.int64),
            "idsite": np.full(total, site, dtype=np.int64),
            "seconds": columns["seconds"].astype(np.int64),
            "action_type": action,
            "owner": np.full(total, site),
            "item": columns["item"],
            "variant": np.zeros(total, dtype=np.int64),
            "url_kind": np.where(action == ACTION_VIEW, _URL_ITEM, _URL_FILE),
            "label": columns["label"],
            "has_identifier": np.ones(total, dtype=bool),
            "agent_kind": np.zeros(total, dtype=np.int64),
            "agent": rng.integers(0, 3, next_visit - visit_base)[columns["idvisit"] - visit_base],
            "traffic": pl.Series(columns["kind"]).replace_strict(
                dict(enumerate(TRAFFIC_KINDS)), return_dtype=pl.String
            ),
        }
    )
    return frame, np.concatenate(ips).astype(np.uint64)


def generate_day(
    config: SyntheticConfig, sources: list[Source], day_index: int, visit_base: int
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """One day of events (with label columns) and visits for all sites."""
    rng = np.random.default_rng([config.seed, day_index])
    repos = np.array([s.site_id for s in sources if s.type == "R"])
    all_sites = np.array([s.site_id for s in sources])
    ua_sites = np.array(sorted(user_agent_sites(sources)), dtype=np.int64)
    n_items = items_per_site(config)
    e = config.events_per_day

    n_human = max(1, int(e * 0.84 / 3.3))
    n_heavy = max(1, n_human // 300)
    n_robot = max(2, n_human // 150)
    n_bot_ua = max(1, n_human // 150) if len(ua_sites) else 0
    n_unknown = max(1, n_human // 300)

    human_sites = rng.choice(all_sites, n_human)
    human_owner = np.where(np.isin(human_sites, repos), human_sites, rng.choice(repos, n_human))
    human = _natural_actions(
        rng, rng.integers(1, 6, n_human), 100, 400, visit_base, human_owner, n_items, KEPT
    )
    human, plant_counts = _plants(rng, human, n_human, visit_base, config.plant_rate)
    visit_sites = [human_sites]
    segments = [human]
    base = visit_base + n_human

    heavy_sites = rng.choice(repos, n_heavy)
    segments.append(
        _natural_actions(
            rng, rng.integers(11, 21, n_heavy), 100, 200, base, heavy_sites, n_items, KEPT
        )
    )
    visit_sites.append(heavy_sites)
    base += n_heavy

    robot_sites = rng.choice(repos, n_robot)
    massive = n_robot // 2
    robot_counts = np.concatenate(
        [rng.integers(100, 131, massive), rng.integers(11, 41, n_robot - massive)]
    )
    massive_part = _natural_actions(
        rng, robot_counts[:massive], 2, 5, base, robot_sites[:massive], n_items, "robot_behaviour"
    )
    fast_part = _natural_actions(
        rng,
        robot_counts[massive:],
        1,
        1,
        base + massive,
        robot_sites[massive:],
        n_items,
        "robot_behaviour",
    )
    segments += [massive_part, fast_part]
    visit_sites.append(robot_sites)
    base += n_robot

    bot_ua_sites = rng.choice(ua_sites, n_bot_ua) if n_bot_ua else np.array([], dtype=np.int64)
    if n_bot_ua:
        segments.append(
            _natural_actions(
                rng,
                rng.integers(1, 6, n_bot_ua),
                100,
                400,
                base,
                bot_ua_sites,
                n_items,
                "robot_user_agent",
            )
        )
        visit_sites.append(bot_ua_sites)
        base += n_bot_ua

    unknown_owner = rng.choice(repos, n_unknown)
    segments.append(
        _natural_actions(
            rng,
            rng.integers(1, 4, n_unknown),
            100,
            400,
            base,
            unknown_owner,
            n_items,
            "unknown_site",
        )
    )
    visit_sites.append(np.full(n_unknown, UNKNOWN_SITE_ID))
    base += n_unknown

    events = _concat(segments)
    n_visits = base - visit_base
    site_of_visit = np.concatenate(visit_sites)
    agent_kind = np.zeros(n_visits, dtype=np.int64)  # 0 browser, 1 robot agent
    if n_bot_ua:
        start = n_human + n_heavy + n_robot
        agent_kind[start : start + n_bot_ua] = 1
    day = config.start + dt.timedelta(days=day_index)
    day_start = np.datetime64(day.isoformat() + "T00:00:00", "s")
    visit_start = rng.integers(0, 20 * 3600, n_visits)
    vi = events.visit - visit_base

    main = pl.DataFrame(
        {
            "idvisit": events.visit.astype(np.int64),
            "idsite": site_of_visit[vi].astype(np.int64),
            "server_time": (
                day_start + (visit_start[vi] + events.offset).astype("timedelta64[s]")
            ).astype("datetime64[us]"),
            "action_type": events.action,
            "owner": events.owner,
            "item": events.item,
            "variant": events.variant,
            "url_kind": events.url_kind,
            "label": events.label,
            "has_identifier": events.has_identifier,
            "agent_kind": agent_kind[vi],
            "agent": rng.integers(0, 3, n_visits)[vi],
        }
    )
    planted_ips = None
    if config.crawlers:
        planted, planted_ips = _crawler_traffic(config, repos, day_index, base, n_items)
        main = pl.concat(
            [
                main.with_columns(pl.lit(None, dtype=pl.String).alias("traffic")),
                planted.select(
                    *[c for c in main.columns if c != "server_time"],
                    "traffic",
                    (pl.lit(day_start) + pl.duration(seconds=pl.col("seconds")))
                    .cast(pl.Datetime("us"))
                    .alias("server_time"),
                ).select(*main.columns, "traffic"),
            ],
            how="vertical_relaxed",
        )
    frame = _sorted_events(main)
    frame = frame.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("idlink_va") + visit_base * 20,
        pl.when(pl.col("has_identifier"))
        .then(_identifier_expr())
        .otherwise(None)
        .alias("identifier"),
        pl.format("oai:{}:{}", _host_expr(upper=False), _local_expr()).alias("item_id"),
        _url_expr().alias("action_url"),
        pl.lit(2, dtype=pl.Int8).alias("action_url_prefix"),
        _title_expr().alias("action_name"),
        pl.when(pl.col("action_type") < 0)
        .then(None)
        .otherwise(pl.col("action_type"))
        .cast(pl.Int16)
        .alias("action_type"),
    )
    visitor_ids = rng.integers(0, 2**63, n_visits, dtype=np.int64)
    visits = (
        frame.group_by("idvisit", "idsite")
        .agg(
            pl.col("server_time").min().alias("visit_first_action_time"),
            pl.col("server_time").max().alias("visit_last_action_time"),
            pl.len().cast(pl.Int32).alias("visit_total_actions"),
            pl.col("agent_kind").first(),
            pl.col("agent").first(),
        )
        .sort("idvisit")
    )
    vidx = (visits.get_column("idvisit").to_numpy() - visit_base).astype(np.int64)
    country_index = rng.integers(0, len(VISITOR_COUNTRIES), n_visits)
    ips = rng.integers(0, 2**32, n_visits, dtype=np.uint64)
    if planted_ips is not None:
        # ordinary visitors stay out of 10.0.0.0/8, where the planted traffic lives
        ips = np.where(ips >> 24 == 10, ips ^ np.uint64(1 << 24), ips)
        ips = np.concatenate([ips, planted_ips])
        n_planted = len(planted_ips)
        visitor_ids = np.concatenate(
            [
                visitor_ids,
                np.random.default_rng([config.seed, day_index, 19]).integers(
                    0, 2**63, n_planted, dtype=np.int64
                ),
            ]
        )
        country_index = np.concatenate(
            [
                country_index,
                np.random.default_rng([config.seed, day_index, 20]).integers(
                    0, len(VISITOR_COUNTRIES) - 1, n_planted
                ),
            ]
        )
    visits = visits.with_columns(
        _fixed_width_binary("idvisitor", visitor_ids[vidx], "<i8"),
        pl.Series(VISITOR_COUNTRIES, dtype=pl.String)
        .gather(country_index[vidx])
        .alias("location_country"),
        _fixed_width_binary("location_ip", ips[vidx], ">u4"),
        pl.when(pl.col("agent_kind") == 1)
        .then(pl.col("agent").replace_strict(dict(enumerate(ROBOT_AGENTS)), return_dtype=pl.String))
        .otherwise(
            pl.col("agent").replace_strict(dict(enumerate(BROWSER_AGENTS)), return_dtype=pl.String)
        )
        .alias("user_agent"),
        pl.lit(None, dtype=pl.String).alias("config_browser_name"),
        (pl.col("visit_last_action_time") - pl.col("visit_first_action_time"))
        .dt.total_seconds()
        .cast(pl.Int32)
        .alias("visit_total_time"),
    ).drop("agent_kind", "agent")
    per_visit = visits.select("idvisitor", "location_country")
    if np.array_equal(vidx, np.arange(len(vidx))):
        # Visit i is row i of `visits`: a gather does what the join below does, in order.
        frame = frame.with_columns(per_visit[frame.get_column("idvisit") - visit_base])
    else:
        frame = frame.join(
            visits.select("idvisit", "idvisitor", "location_country"), on="idvisit", how="left"
        )
    return frame, visits, plant_counts


def _sorted_events(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` sorted by site, visit and time.

    Site, visit and second of the day packed into one integer sort several times faster
    than the three columns; when the packed keys are all distinct the order is the only one
    there is, so the result is the three-column sort's. Otherwise, the three-column sort.
    """
    keys = ["idsite", "idvisit", "server_time"]
    second = pl.col("server_time").dt.epoch("s")
    stats = frame.select(
        pl.col("idsite").min().alias("site_low"),
        pl.col("idvisit").min().alias("visit_low"),
        second.min().alias("second_low"),
        pl.col("idsite").max().alias("site_high"),
        pl.col("idvisit").max().alias("visit_high"),
        second.max().alias("second_high"),
        (pl.col("server_time").dt.microsecond() > 0).any().alias("fractional"),
        pl.any_horizontal(pl.col(keys).is_null().any()).alias("nulls"),
    ).row(0, named=True)
    low = [stats[f"{k}_low"] for k in ("site", "visit", "second")]
    high = [stats[f"{k}_high"] for k in ("site", "visit", "second")]
    if frame.height == 0 or stats["nulls"] or stats["fractional"]:
        return frame.sort(keys)
    widths = [(h - lo).bit_length() for lo, h in zip(low, high, strict=True)]
    if sum(widths) > 63:
        return frame.sort(keys)
    exprs = [pl.col("idsite"), pl.col("idvisit"), second]
    packed = pl.lit(0, dtype=pl.UInt64)
    shift = 0
    for expr, lo, width in reversed(list(zip(exprs, low, widths, strict=True))):
        packed = packed + (expr - lo).cast(pl.UInt64) * pl.lit(1 << shift, dtype=pl.UInt64)
        shift += width
    ordered = frame.with_columns(packed.alias("_key")).sort("_key")
    if ordered.select((pl.col("_key").diff() == 0).any()).item():
        return frame.sort(keys)
    return ordered.drop("_key")


def _local_expr() -> pl.Expr:
    return pl.format("{}/{}", pl.col("owner") + 1000, pl.col("item"))


def _host_expr(upper: bool | pl.Expr) -> pl.Expr:
    """`repo<owner>.example.org`, upper-cased where `upper`."""
    upper = pl.lit(upper) if isinstance(upper, bool) else upper
    return pl.concat_str(
        pl.when(upper).then(pl.lit("REPO")).otherwise(pl.lit("repo")),
        pl.col("owner").cast(pl.String),
        pl.when(upper).then(pl.lit(".EXAMPLE.ORG")).otherwise(pl.lit(".example.org")),
    )


def _identifier_expr() -> pl.Expr:
    """The item's OAI identifier in the spelling `variant` picks (0: canonical; 1: DSpace 7
    endpoint; 2: upper case; 3: http scheme; 4: padded with spaces).

    Built from pieces chosen per row rather than as one format per spelling: `when` chains
    compute every branch for every row, and this runs over every event of the day.
    """
    variant = pl.col("variant")

    def piece(values: dict[int, str], default: str) -> pl.Expr:
        return lookup_expr(variant, values, default, pl.String())

    return pl.concat_str(
        piece({0: "oai:", 1: "oai:https://", 2: "OAI:", 3: "oai:http://"}, " oai:"),
        _host_expr(upper=variant == 2),
        piece({1: "/server:"}, ":"),
        _local_expr(),
        piece({4: " "}, ""),
    )


def _title_expr() -> pl.Expr:
    """The page title Matomo records with a view. Planted: items 2 (mod 7) have none, items
    4 (mod 7) an empty one (both stay untitled), and items 1 (mod 5) are renamed at noon, so
    the title seen last is the revised one when the item was last viewed in an afternoon."""
    item = pl.col("item")
    title = pl.format("Study {} of repository {}", item, pl.col("owner"))
    renamed = (item % 5 == 1) & (pl.col("server_time").dt.hour() >= 12)
    return (
        pl.when(pl.col("action_type") != ACTION_VIEW)
        .then(None)
        .when(item % 7 == 2)
        .then(None)
        .when(item % 7 == 4)
        .then(pl.lit(""))
        .when(renamed)
        .then(pl.concat_str(title, pl.lit(" (revised)")))
        .otherwise(title)
    )


def _url_expr() -> pl.Expr:
    """The action's URL for its `url_kind` (see `_identifier_expr` for why in pieces)."""
    kind = pl.col("url_kind")
    site_host = pl.format("site{}.example.org", pl.col("idsite"))
    path = (
        pl.when(kind == _URL_ITEM)
        .then(pl.lit("/items/"))
        .when(kind.is_in([_URL_FILE, _URL_THUMB, _URL_FILE2, _URL_IMAGE]))
        .then(pl.lit("/bitstream/"))
        .otherwise(pl.lit("/search?query=item+"))
    )
    target = (
        pl.when(kind.is_in([_URL_ITEM, _URL_FILE, _URL_THUMB, _URL_FILE2, _URL_IMAGE]))
        .then(_local_expr())
        .otherwise(pl.col("item").cast(pl.String))
    )
    suffix = (
        pl.when(kind == _URL_FILE)
        .then(pl.lit("/document.pdf"))
        .when(kind == _URL_THUMB)
        .then(pl.lit("/document.pdf.jpg"))
        .when(kind == _URL_FILE2)
        .then(pl.lit("/appendix.pdf"))
        .when(kind == _URL_IMAGE)
        .then(pl.lit("/figure.2019.jpg"))
        .otherwise(pl.lit(""))
    )
    return (
        pl.when(kind == _URL_OUT)
        .then(pl.format("doi.org/10.5555/{}.{}", pl.col("owner"), pl.col("item")))
        .otherwise(pl.concat_str(site_host, path, target, suffix))
    )


def _fixed_width_binary(name: str, values: np.ndarray, layout: str) -> pl.Series:
    """Each integer as its bytes in `layout` (NumPy byte order and width), as Binary.

    Same bytes as `int.to_bytes` per value, without a Python object per visit.
    """
    data = np.ascontiguousarray(values.astype(layout))
    width = data.dtype.itemsize
    array = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(data), [None, pa.py_buffer(data.tobytes())]
    )
    return pl.Series(name, pl.from_arrow(array.cast(pa.binary())), dtype=pl.Binary)


def _event_columns(frame: pl.DataFrame, source: Source | None) -> pl.DataFrame:
    slot = source.custom_var_slot if source else 1
    cols = [
        "idlink_va",
        "idsite",
        "idvisitor",
        "idvisit",
        "server_time",
        "action_type",
        "action_url",
        "action_url_prefix",
        "action_name",
    ]
    out = frame.select(cols).with_columns(
        pl.col("idsite").cast(pl.UInt32),
        pl.col("idvisit").cast(pl.UInt64),
        pl.col("idlink_va").cast(pl.UInt64),
        pl.lit(None, dtype=pl.Int64).alias("idaction_url"),
        pl.lit(None, dtype=pl.Int64).alias("time_spent"),
    )
    values = frame.get_column("identifier")
    keys = pl.when(values.is_not_null()).then(pl.lit("oaipmhID")).otherwise(None)
    if slot != 1:
        out = out.with_columns(
            pl.lit(None, dtype=pl.String).alias("custom_var_k1"),
            pl.lit(None, dtype=pl.String).alias("custom_var_v1"),
        )
    out = out.with_columns(
        pl.select(keys).to_series().alias(f"custom_var_k{slot}"),
        values.alias(f"custom_var_v{slot}"),
    )
    return out


def _visit_columns(visits: pl.DataFrame, with_agent: bool) -> pl.DataFrame:
    cols = [
        "idvisit",
        "idsite",
        "idvisitor",
        "visit_first_action_time",
        "visit_last_action_time",
        "visit_total_actions",
        "visit_total_time",
        "location_country",
        "location_ip",
        "config_browser_name",
    ]
    if with_agent:
        cols.append("user_agent")
    return visits.select(cols).with_columns(
        pl.col("idsite").cast(pl.UInt32),
        pl.col("idvisit").cast(pl.UInt64),
        *referrer_columns(),  # from the visit id: no draw from the random stream
    )


def day_batches(config: SyntheticConfig) -> list[SyntheticConfig]:
    """The draws of one day: the config itself when it is drawn whole (so a day's events
    are what they always were), else batches of at most `batch_events` events, each with
    its own seed."""
    size = config.batch_events
    if size is None or config.events_per_day <= size:
        return [config]
    if size < 1:
        raise ValueError(f"batch_events must be at least 1, got {size}")
    count = -(-config.events_per_day // size)
    share, extra = divmod(config.events_per_day, count)
    return [
        replace(config, events_per_day=share + (b < extra), seed=config.seed + 7919 * b)
        for b in range(count)
    ]


def write_synthetic(
    config: SyntheticConfig,
    lake_url: str,
    sources_path: Path | None = None,
    manifest_path: Path | None = None,
    with_manifest: bool = True,
    oai_dir: Path | None = None,
) -> Synthetic:
    """Write the lake, the source registry file and (optionally) the manifest; with
    `oai_dir`, also the repositories' OAI-PMH records (`write_demo_records`), which the
    registry then names as each repository's OAI base URL."""
    lake = open_lake(lake_url)
    sources = build_sources(config.sites)
    records: list[PlantedRecord] = []
    if oai_dir is not None:
        sources, records = write_demo_records(config, sources, oai_dir)
    by_site = {s.site_id: s for s in sources}
    ua_sites = user_agent_sites(sources)
    result = Synthetic(config, sources)
    truth_frames = []
    month_frames: dict[tuple[int, int, int], list[tuple[pl.DataFrame, pl.DataFrame]]] = defaultdict(
        list
    )
    visit_base = 1
    all_plants: dict[str, dict[str, int]] = {}
    for d in range(config.days):
        day = config.start + dt.timedelta(days=d)
        plants_of_day: dict[str, int] = defaultdict(int)
        for part, batch in enumerate(day_batches(config)):
            frame, visits, plants = generate_day(batch, sources, d, visit_base)
            visit_base += visits.height + 1
            for name, count in plants.items():
                plants_of_day[name] += count
            written = result.events_written.get(day.isoformat(), 0)
            result.events_written[day.isoformat()] = written + frame.height
            visits_by_site = visits.partition_by("idsite", as_dict=True, maintain_order=True)
            for (site_id,), site_events in frame.partition_by("idsite", as_dict=True).items():
                source = by_site.get(site_id)
                events_out = _event_columns(site_events, source)
                site_visits = visits_by_site.get((site_id,), visits.clear())
                visits_out = _visit_columns(site_visits, site_id in ua_sites)
                if site_id in config.month_level_sites:
                    month_frames[(site_id, day.year, day.month)].append((events_out, visits_out))
                else:
                    write_leaf(lake, "events", site_id, day, events_out, part)
                    write_leaf(lake, "visits", site_id, day, visits_out, part)
            if with_manifest:
                truth_frames.append(frame.with_columns(pl.lit(day).alias("date")))
            del frame, visits
        all_plants[day.isoformat()] = dict(plants_of_day)
    for (site_id, year, month), parts in month_frames.items():
        day = dt.date(year, month, 1)
        write_month_leaf(lake, "events", site_id, day, pl.concat([p[0] for p in parts]))
        write_month_leaf(lake, "visits", site_id, day, pl.concat([p[1] for p in parts]))
    if sources_path is not None:
        write_sources_csv(sources_path, sources)
    if with_manifest:
        truth = pl.concat(truth_frames)
        result.manifest = build_manifest(config, sources, truth, all_plants)
        # The records an OAI-PMH harvest of the repositories must read (drawn apart from the
        # events' random stream, so the usage figures are what they were without them).
        result.manifest["metadata"] = planted_metadata_manifest(
            sources, items_per_site(config), config.seed
        )
        if records:
            result.manifest["records"] = records_truth(records, config)
            result.manifest["breakdowns"] = usage_breakdowns_truth(
                records, result.manifest["items"]
            )
        if manifest_path is not None:
            manifest_path.parent.mkdir(parents=True, exist_ok=True)
            manifest_path.write_text(json.dumps(result.manifest, indent=1, default=str))
    return result


def demo_record_window(config: SyntheticConfig) -> tuple[dt.datetime, int]:
    """Where the demo's record datestamps fall: from the day before the first usage day (the
    repositories' history, in the first snapshot) through the last, so every day of the
    demo adds records."""
    start = dt.datetime.combine(config.start, dt.time(), tzinfo=dt.UTC) - dt.timedelta(days=1)
    return start, config.days + 1


def write_demo_records(
    config: SyntheticConfig, sources: list[Source], oai_dir: Path
) -> tuple[list[Source], list[PlantedRecord]]:
    """The planted records of every repository (`oai_records.planted_records`, datestamped
    over the demo's window) as one dataset file per repository under `oai_dir`, harvested
    with no server (`file://` base URLs, `oai_server.DatasetFileAdapter`); returns the
    sources with their OAI base URLs, and the records."""
    from usage_stats.demo.oai_server import write_source_dataset

    base, span = demo_record_window(config)
    records = planted_records(
        sources, items_per_site(config), config.seed, base=base, span_days=span
    )
    dataset = provider_dataset(sources, records, page_size=50, earliest=base)
    out = []
    for source in sources:
        if source.type == "R":
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.source_key)
            url = write_source_dataset(oai_dir / f"{name}.json", dataset, source.source_key)
            source = replace(source, oai_base_url=url)
        out.append(source)
    return out, records


# The breakdowns of usage the demo's summary prints, as (subcount field, record field).
BREAKDOWN_FIELDS = {
    "resource_type": "resource_type",
    "access_status": "access_rights",
    "language": "language",
}


def records_truth(records: list[PlantedRecord], config: SyntheticConfig) -> dict:
    """What the record statistics of the demo's days must say, counted with plain Python:
    live records (one served deleted is never counted) added per day of their datestamp, by
    resource type (COAR URI, "" when unreadable), and the total as of each usage day."""
    days = [config.start + dt.timedelta(days=d) for d in range(config.days)]
    live = [r for r in records if not r.deleted]
    added: dict[str, dict[str, int]] = {}
    for day in days:
        on_day = [r for r in live if r.datestamp.date() == day]
        by_type: dict[str, int] = defaultdict(int)
        for r in on_day:
            by_type[r.expected["resource_type"] or ""] += 1
        added[day.isoformat()] = {
            "total": len(on_day),
            "resource_type": dict(sorted(by_type.items())),
        }
    totals = {d.isoformat(): sum(r.datestamp.date() <= d for r in live) for d in days}
    by_type_total: dict[str, int] = defaultdict(int)
    for r in live:
        if r.datestamp.date() <= days[-1]:
            by_type_total[r.expected["resource_type"] or ""] += 1
    return {
        "basis": "datestamp",
        "served": len(records),
        "served_deleted": len(records) - len(live),
        "before_first_day": sum(r.datestamp.date() < days[0] for r in live),
        "added": added,
        "total": totals,
        "by_resource_type": dict(sorted(by_type_total.items())),
    }


def usage_breakdowns_truth(records: list[PlantedRecord], items: list[dict]) -> dict:
    """The whole window's usage (every site, every level) by each field of the item's
    record, from the manifest's item rows and the planted records (a record served deleted
    carries no fields: its use counts under "")."""
    fields = {r.expected["item_key"]: ({} if r.deleted else r.expected) for r in records}
    out: dict[str, dict[str, dict[str, int]]] = {}
    for name, column in BREAKDOWN_FIELDS.items():
        sums: dict[str, dict[str, int]] = {}
        for row in items:
            value = fields.get(row["item_id"], {}).get(column) or ""
            entry = sums.setdefault(value, {"views": 0, "downloads": 0})
            entry["views"] += row["views"]
            entry["downloads"] += row["downloads"]
        out[name] = dict(sorted(sums.items()))
    return out


def build_manifest(
    config: SyntheticConfig,
    sources: list[Source],
    truth: pl.DataFrame,
    plants: dict[str, dict[str, int]],
) -> dict:
    """Expected outcome from the planted labels, counted with plain Python (no pipeline code)."""
    days: dict[str, dict] = {}
    items: dict[tuple, dict] = {}
    variants: dict[str, set[str]] = defaultdict(set)
    titles: dict[str, tuple] = {}
    for row in truth.iter_rows(named=True):
        day = row["date"].isoformat()
        title = (row["action_name"] or "").strip()
        if (
            title
            and row["action_type"] == ACTION_VIEW
            and row["identifier"] is not None
            and _LABELS[row["label"]] != "unknown_site"
        ):
            seen = (row["server_time"], title)
            titles[row["item_id"]] = max(titles.get(row["item_id"], seen), seen)
        info = days.setdefault(
            day,
            {
                "input_events": 0,
                "kept": 0,
                "rejected": {r: 0 for r in _LABELS[1:]},
                "robot_visits": {"robot_behaviour": set(), "robot_user_agent": set()},
                "kept_by_country": defaultdict(int),
                "kept_by_referrer": defaultdict(int),
            },
        )
        info["input_events"] += 1
        label = _LABELS[row["label"]]
        if label in info["robot_visits"]:
            info["robot_visits"][label].add(row["idvisit"])
        if label != KEPT:
            info["rejected"][label] += 1
            continue
        info["kept"] += 1
        country = (row["location_country"] or "zz").upper()
        info["kept_by_country"][country] += 1
        info["kept_by_referrer"][planted_referrer(row["idvisit"])] += 1
        variants[row["item_id"]].add(row["identifier"])
        key = (day, row["idsite"], row["item_id"], country)
        entry = items.setdefault(
            key,
            {
                "view": set(),
                "download": set(),
                "outlink": set(),
                "investigations": 0,
                "requests": 0,
            },
        )
        action = {ACTION_VIEW: "view", ACTION_DOWNLOAD: "download", ACTION_OUTLINK: "outlink"}[
            row["action_type"]
        ]
        entry[action].add(row["idvisit"])
        if action in ("view", "download"):
            entry["investigations"] += 1
        if action == "download":
            entry["requests"] += 1
    item_rows = []
    for (day, site, item, country), e in sorted(items.items()):
        item_rows.append(
            {
                "date": day,
                "site_id": site,
                "item_id": item,
                "country": country,
                "views": len(e["view"]),
                "downloads": len(e["download"]),
                "outlinks": len(e["outlink"]),
                "conversions": len(e["view"] & (e["download"] | e["outlink"])),
                "total_item_investigations": e["investigations"],
                "unique_item_investigations": len(e["view"] | e["download"]),
                "total_item_requests": e["requests"],
                "unique_item_requests": len(e["download"]),
            }
        )
    if "traffic" in truth.columns:
        # issue 18's planted traffic: per day and kind, its visits (one contiguous range of
        # visit ids, all on one site) and events; kind null = the ordinary traffic
        planted = (
            truth.filter(pl.col("traffic").is_not_null())
            .group_by("date", "traffic", "idsite")
            .agg(
                pl.len().alias("events"),
                pl.col("idvisit").n_unique().alias("visits"),
                pl.col("idvisit").min().alias("first_visit"),
                pl.col("idvisit").max().alias("last_visit"),
            )
            .sort("date", "traffic")
        )
        for row in planted.iter_rows(named=True):
            info = days[row.pop("date").isoformat()]
            info.setdefault("traffic", {})[row.pop("traffic")] = row
    for info in days.values():
        info["robot_visits"] = {k: len(v) for k, v in info["robot_visits"].items()}
        info["kept_by_country"] = dict(sorted(info["kept_by_country"].items()))
        # kept events per planted referrer (`synthetic_referrers`): each from its visit
        info["kept_by_referrer"] = dict(sorted(info["kept_by_referrer"].items()))
    return {
        "config": {
            k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in asdict(config).items()
        },
        "sources": [asdict(s) for s in sources],
        "unknown_site_id": UNKNOWN_SITE_ID,
        "robot_user_agents": ROBOT_AGENTS,
        "plants": plants,
        "days": days,
        "identifier_variants": {k: sorted(v) for k, v in sorted(variants.items()) if len(v) > 1},
        "items": item_rows,
        # each item's title: the page title of its last view on a registered site
        "titles": {item: seen[1] for item, seen in sorted(titles.items())},
    }


def load_manifest(path: Path) -> dict:
    return json.loads(path.read_text())
