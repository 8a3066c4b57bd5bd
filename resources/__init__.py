"""Dagster resources: thin configurable wrappers around the domain library's stores."""

from resources.cleaning import CleaningSettings
from resources.lake import LakeResource, WarehouseResource
from resources.sources import SourceRegistryResource
from resources.stats_store import (
    DuckDBStatsStoreResource,
    OpenSearchStatsStoreResource,
    StatsStoreResource,
)

__all__ = [
    "CleaningSettings",
    "DuckDBStatsStoreResource",
    "LakeResource",
    "OpenSearchStatsStoreResource",
    "SourceRegistryResource",
    "StatsStoreResource",
    "WarehouseResource",
]
