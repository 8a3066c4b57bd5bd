from dagster import AssetSelection, define_asset_job

from assets.partitions import daily_partitions

# The main job: raw events of a day → stats store, all sites.
usage_pipeline_job = define_asset_job(
    "usage_pipeline",
    selection=AssetSelection.groups("usage"),
    partitions_def=daily_partitions,
    description="Raw Matomo events of a day → sessions → deltas → snapshots → stats store.",
)
