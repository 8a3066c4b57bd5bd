"""The production run queue: Dagster's QueuedRunCoordinator with our limits read from settings.

Dagster's own `tag_concurrency_limits` take a literal number; this coordinator (named in
deploy/dagster.yaml) adds `matomo_runs_per_database`, an IntSource (`{env: …}`), and turns
it into the tag limit on the Matomo database a matomo_export run reads
(`usage_stats/matomo_db`, set by assets/jobs.py), one limit per database. Everything else is
QueuedRunCoordinator's: `max_concurrent_runs` (total runs), further tag limits, dequeueing.
Runs the daemon, not the code location: it imports nothing of the project's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import Field, IntSource
from dagster._core.run_coordinator import QueuedRunCoordinator

MATOMO_DB_TAG = "usage_stats/matomo_db"


def matomo_limit(limit: int) -> dict:
    return {"key": MATOMO_DB_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": limit}


class UsageStatsRunCoordinator(QueuedRunCoordinator):
    @classmethod
    def config_type(cls):
        return {
            **super().config_type(),
            "matomo_runs_per_database": Field(
                IntSource,
                is_required=False,
                description="Matomo export runs at once per Matomo database (host:port/name).",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value: Mapping[str, Any]):
        config = dict(config_value)
        per_database = config.pop("matomo_runs_per_database", None)
        if per_database is not None:
            if per_database < 1:
                raise ValueError(f"matomo_runs_per_database must be at least 1: {per_database}")
            limits = [
                limit
                for limit in config.get("tag_concurrency_limits") or []
                if limit.get("key") != MATOMO_DB_TAG
            ]
            config["tag_concurrency_limits"] = [*limits, matomo_limit(per_database)]
        return super().from_config_value(inst_data, config)
