"""`robot_distributed` on a generated month with planted crawlers: recall and false positives.

Generates `--days` days (`SyntheticConfig(crawlers=True)`: distributed crawlers in two /24
blocks and one /16, a slow crawler, a campus NAT and a reading-list spike every day, beside
the ordinary traffic), runs raw → cleaning on each day as the assets do, and compares each
event's fate with its planted label:

- recall per crawler kind: share of its events rejected as `robot_distributed`;
- false positives: share of the ordinary human events (planted kept) rejected as
  `robot_distributed`, overall and for the campus NAT and the reading list;
- the features of every block the rule looked at (`--features`), by the kind of traffic
  in it: what the default thresholds were chosen from.

    .venv/bin/python bench/distributed_bench.py --days 30 --events 20000

Results are printed and written to `bench/results/distributed-<timestamp>.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from usage_stats.admin.sources import sources_frame  # noqa: E402
from usage_stats.demo.synthetic import (  # noqa: E402
    _LABELS,
    CRAWLER_KINDS,
    SyntheticConfig,
    write_synthetic,
)
from usage_stats.pipeline.canonical import read_canonical_day  # noqa: E402
from usage_stats.pipeline.cleaning import CleaningRules, clean_events  # noqa: E402
from usage_stats.pipeline.distributed import DistributedRules  # noqa: E402
from usage_stats.storage.open import open_lake  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SALT = "bench-salt"


def run(days: int, events: int, rules: DistributedRules, features: bool) -> dict:
    config = SyntheticConfig(days=days, events_per_day=events, crawlers=True, sites=5)
    with tempfile.TemporaryDirectory() as tmp:
        lake_url = str(Path(tmp) / "lake")
        generated = write_synthetic(config, lake_url, with_manifest=False)
        truth = _truth(config)
        lake = open_lake(lake_url)
        sources = generated.sources
        slots = {s.site_id: s.custom_var_slot for s in sources}
        frame = sources_frame(sources)
        fates, audits, looked = [], [], []
        seconds = 0.0
        loose = dataclasses.replace(rules, audit_all=True)
        for d in range(days):
            day = config.start + dt.timedelta(days=d)
            raw = read_canonical_day(lake, day, slots, SALT).events
            started = time.perf_counter()
            result = clean_events(raw, frame, CleaningRules(distributed=rules))
            seconds += time.perf_counter() - started
            fates.append(
                pl.concat(
                    [
                        result.sessions.select(
                            "site_id", "visit_id", pl.lit(None, pl.String).alias("reason")
                        ),
                        result.rejected.select("site_id", "visit_id", "reason"),
                    ]
                )
            )
            audits.append(result.distributed_audit)
            if features:  # every crowded block, whatever its signals: the measurement
                looked.append(
                    _blocks_by_kind(
                        clean_events(raw, frame, CleaningRules(distributed=loose)), raw, truth
                    )
                )
    fate = pl.concat(fates).join(truth, on=["site_id", "visit_id"], how="left")
    flagged = pl.col("reason") == "robot_distributed"
    by_kind = (
        fate.with_columns(pl.col("traffic").fill_null("ordinary"))
        .group_by("traffic", "label")
        .agg(pl.len().alias("events"), flagged.sum().alias("robot_distributed"))
        .with_columns((pl.col("robot_distributed") / pl.col("events")).alias("share"))
        .sort("traffic", "label")
    )
    humans = fate.filter(pl.col("label") == "kept")
    report = {
        "days": days,
        "events_per_day": events,
        "rules": dataclasses.asdict(rules),
        "by_kind": by_kind.to_dicts(),
        "recall": {
            kind: _share(fate.filter(pl.col("traffic") == kind), flagged) for kind in CRAWLER_KINDS
        },
        "recall_all_crawlers": _share(fate.filter(pl.col("traffic").is_in(CRAWLER_KINDS)), flagged),
        "false_positive_rate_humans": _share(humans, flagged),
        "false_positives": {
            kind: int(humans.filter((pl.col("traffic") == kind) & flagged).height)
            for kind in ("campus_nat", "reading_list")
        },
        "flagged_blocks": int(pl.concat(audits).height),
        "cleaning_seconds": round(seconds, 3),
    }
    if looked:
        report["features"] = pl.concat(looked).to_dicts()
    return report


def _share(frame: pl.DataFrame, flagged: pl.Expr) -> float:
    return round(frame.select(flagged.mean()).item() or 0.0, 5) if frame.height else 0.0


def _truth(config: SyntheticConfig) -> pl.DataFrame:
    """Each planted visit's label and kind of traffic, regenerated (same seed) apart from
    the pipeline."""
    from usage_stats.demo.synthetic import build_sources, generate_day

    sources = build_sources(config.sites)
    base, parts = 1, []
    for d in range(config.days):
        frame, visits, _ = generate_day(config, sources, d, base)
        base += visits.height + 1
        parts.append(
            frame.group_by("idsite", "idvisit").agg(
                pl.col("label").first(), pl.col("traffic").first()
            )
        )
    labels = pl.Series(_LABELS)
    return pl.concat(parts).select(
        pl.col("idsite").cast(pl.Int32).alias("site_id"),
        pl.col("idvisit").cast(pl.Int64).alias("visit_id"),
        pl.lit(labels).gather(pl.col("label")).alias("label"),
        "traffic",
    )


def _blocks_by_kind(result, raw: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """The audited blocks (here every crowded one) with the planted kind of their visits."""
    audit = result.distributed_audit
    kinds = (
        raw.select("site_id", "visit_id", "block_hash", "wide_block_hash")
        .unique()
        .join(truth, on=["site_id", "visit_id"], how="left")
    )
    rows = []
    for level, column in (("fine", "block_hash"), ("wide", "wide_block_hash")):
        main = (
            kinds.group_by("site_id", column)
            .agg(pl.col("traffic").fill_null("ordinary").mode().first().alias("kind"))
            .rename({column: "block_hash"})
            .with_columns(pl.lit(level).alias("level"))
        )
        rows.append(
            audit.filter(pl.col("level") == level).join(main, on=["site_id", "level", "block_hash"])
        )
    return pl.concat(rows).drop("block_hash", "mode", "rejected_events")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events", type=int, default=20_000, help="ordinary events per day")
    parser.add_argument("--features", action="store_true", help="report every crowded block")
    for field in dataclasses.fields(DistributedRules):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default))
    args = parser.parse_args()
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(DistributedRules)
        if getattr(args, f.name) is not None
    }
    report = run(args.days, args.events, DistributedRules(**overrides), args.features)
    report["load_average"] = os.getloadavg()
    features = report.pop("features", None)
    print(pl.DataFrame(report["by_kind"]))
    if features:
        with pl.Config(tbl_rows=60, tbl_cols=20, tbl_width_chars=220):
            table = pl.DataFrame(features)
            print(
                table.group_by("level", "kind")
                .agg(
                    pl.len().alias("blocks"),
                    *[
                        pl.col(c).min().alias(f"{c}_min")
                        for c in (
                            "addresses",
                            "item_share",
                            "items_per_event",
                            "active_hours",
                            "download_only_share",
                            "signals",
                        )
                    ],
                    *[
                        pl.col(c).max().alias(f"{c}_max")
                        for c in (
                            "actions_per_visit",
                            "item_share",
                            "items_per_event",
                            "active_hours",
                            "download_only_share",
                            "signals",
                        )
                    ],
                )
                .sort("level", "kind")
            )
        report["features"] = features
    print(
        json.dumps({k: v for k, v in report.items() if k not in ("by_kind", "features")}, indent=1)
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    (RESULTS_DIR / f"distributed-{stamp}.json").write_text(
        json.dumps(report, indent=1, default=str)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
