"""Dagster assets: one module per pipeline stage, each a thin shell around usage_stats."""

from assets.cleaning import cleaning
from assets.deltas import item_daily_deltas
from assets.matomo_export import matomo_export
from assets.raw_events import raw_events
from assets.snapshots import usage_snapshots
from assets.stats_index import stats_index
from assets.titles import item_titles

usage_assets = [raw_events, cleaning, item_titles, item_daily_deltas, usage_snapshots, stats_index]
ingest_assets = [matomo_export]

__all__ = ["ingest_assets", "usage_assets"]
