"""Dagster resources: thin configurable wrappers around the domain library's stores."""

from resources.cleaning import CleaningSettings
from resources.harvest import HarvestSettings
from resources.lake import LakeResource, WarehouseResource
from resources.matomo import MatomoDbResource
from resources.sources import AdminDbResource
from resources.spikes import SpikeSettings
from resources.stats_store import (
    DuckDBStatsStoreResource,
    OpenSearchStatsStoreResource,
    StatsStoreResource,
)

__all__ = [
    "CleaningSettings",
    "DuckDBStatsStoreResource",
    "HarvestSettings",
    "LakeResource",
    "OpenSearchStatsStoreResource",
    "SpikeSettings",
    "AdminDbResource",
    "MatomoDbResource",
    "StatsStoreResource",
    "WarehouseResource",
]
