from dagster import AssetSelection, define_asset_job

# The main job: raw events of a day → stats store, all sites.
# Its stages form a chain, so a process per step (Dagster's default) would buy no parallelism
# and cost each step a fresh interpreter and code location (about 3 s of CPU on 2 cores, more
# than processing a million events): the run executes in one process. Memory stays bounded
# by the piece size (usage_stats.pipeline.pieces), not by the number of steps. The launchpad
# can still choose `multiprocess` for a run.
IN_ONE_PROCESS = {"execution": {"config": {"in_process": {}}}}

usage_pipeline_job = define_asset_job(
    "usage_pipeline",
    selection=AssetSelection.groups("usage"),
    config=IN_ONE_PROCESS,
    description="Raw Matomo events of a day → sessions → deltas → snapshots → stats store.",
)

# Yesterday's Matomo logs → the lake; the new-file sensor (or the nightly pipeline) takes over.
matomo_export_job = define_asset_job(
    "matomo_export_job",
    selection=AssetSelection.assets("matomo_export"),
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
# the usage pipeline (about 8 CPU s for a 10M-event day, bench/README.md): a failure of the
# breakdowns never holds the usage figures back.
usage_subcounts_job = define_asset_job(
    "usage_subcounts",
    selection=AssetSelection.groups("usage_subcounts"),
    config=IN_ONE_PROCESS,
    description="Item deltas and usage snapshots × item metadata → usage subcounts → stats "
    "store, per day.",
)
