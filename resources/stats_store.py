from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from usage_stats.duckdb_store import DuckDBStatsStore
from usage_stats.store import StatsStore


class StatsStoreResource(ConfigurableResource):
    """The interface assets see; DuckDB here, OpenSearch as the production implementation."""

    def get_store(self) -> StatsStore:
        raise NotImplementedError


class DuckDBStatsStoreResource(StatsStoreResource):
    path: str = Field(description="DuckDB database file")

    def get_store(self) -> StatsStore:
        return DuckDBStatsStore(Path(self.path))
