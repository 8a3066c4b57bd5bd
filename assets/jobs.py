from dagster import AssetSelection, define_asset_job

# The main job: raw events of a day → stats store, all sites.
usage_pipeline_job = define_asset_job(
    "usage_pipeline",
    selection=AssetSelection.groups("usage"),
    description="Raw Matomo events of a day → sessions → deltas → snapshots → stats store.",
)

# Yesterday's Matomo logs → the lake; the new-file sensor (or the nightly pipeline) takes over.
matomo_export_job = define_asset_job(
    "matomo_export_job",
    selection=AssetSelection.groups("ingest"),
    description="Matomo's log tables of a day → raw Parquet in the lake, every active source.",
)
