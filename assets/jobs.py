from dagster import AssetSelection, define_asset_job

from assets.execution import one_process_config
from usage_stats.run_queue import MATOMO_DB_TAG
from usage_stats.settings import Settings

_settings = Settings.current()


def matomo_database(url: str | None) -> str:
    """`host:port/database` of a Matomo URL (no user, no password): a run tag's value."""
    if not url:
        return "none"
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 3306}/{parsed.database or ''}"


# The main job: raw events of a day → stats store, all sites.
# Its stages form a chain, so a process per step (Dagster's default) would buy no parallelism
# and cost each step a fresh interpreter and code location (about 3 s of CPU on 2 cores, more
# than processing a million events): the run executes in one process. Memory stays bounded
# by the piece size (usage_stats.pipeline.pieces), not by the number of steps. The launchpad
# can still choose `multiprocess` for a run. A deployment that sets USAGE_STATS_EXECUTOR
# (assets/execution.py: e.g. Celery workers) runs every job with that executor instead.
IN_ONE_PROCESS = one_process_config(_settings)

usage_pipeline_job = define_asset_job(
    "usage_pipeline",
    selection=AssetSelection.groups("usage"),
    config=IN_ONE_PROCESS,
    description="Raw Matomo events of a day → sessions → deltas → snapshots → stats store.",
)

# Yesterday's Matomo logs → the lake; the new-file sensor (or the nightly pipeline) takes over.
# Its runs carry the Matomo database they read (host, port and name; never credentials): the
# production run queue (deploy/dagster.yaml) runs at most USAGE_STATS_MATOMO_RUNS_PER_DATABASE
# of them per database at once, however long the export backfill.
matomo_export_job = define_asset_job(
    "matomo_export_job",
    selection=AssetSelection.assets("matomo_export"),
    tags={MATOMO_DB_TAG: matomo_database(_settings.matomo_url)},
    description="Matomo's log tables of a day → raw Parquet in the lake, every active source.",
)

# Every source's OAI-PMH records (not partitioned: each run harvests what changed since the last).
item_metadata_job = define_asset_job(
    "item_metadata_job",
    selection=AssetSelection.assets("item_metadata", "item_metadata_index"),
    description="OAI-PMH harvest of every active source with an OAI base URL: the changes "
    "since its last completed harvest; then the current records into the stats store.",
)

# Record statistics of a day (or, as a single-run backfill, of every day from the first one a
# late harvest changed): recomputed from the harvested change log, into the stats store.
record_stats_job = define_asset_job(
    "record_stats",
    selection=AssetSelection.groups("records"),
    config=IN_ONE_PROCESS,
    description="Harvested records → record deltas and snapshots → stats store, per day.",
)

# Usage subcounts of a day (or a single-run backfill): the usage run's item deltas and
# snapshots broken down by item metadata, into the stats store. A job of its own, run after
# the usage pipeline (18-19 CPU s for a 10M-event day, two thirds of the run's own:
# `run_bench.py --subcounts`, bench/README.md): a failure of the breakdowns never holds the
# usage figures back.
usage_subcounts_job = define_asset_job(
    "usage_subcounts",
    selection=AssetSelection.groups("usage_subcounts"),
    config=IN_ONE_PROCESS,
    description="Item deltas and usage snapshots × item metadata → usage subcounts → stats "
    "store, per day.",
)
