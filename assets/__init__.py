"""Dagster assets: one module per pipeline stage, each a thin shell around usage_stats."""

from assets.cleaning import cleaning
from assets.deltas import item_daily_deltas
from assets.raw_events import raw_events
from assets.snapshots import usage_snapshots
from assets.stats_index import stats_index

usage_assets = [raw_events, cleaning, item_daily_deltas, usage_snapshots, stats_index]

__all__ = ["usage_assets"]
