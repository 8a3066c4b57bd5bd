from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from usage_stats.duckdb_store import DuckDBStatsStore
from usage_stats.opensearch_store import OpenSearchStatsStore
from usage_stats.store import StatsStore


class StatsStoreResource(ConfigurableResource):
    """The interface assets see; DuckDB embedded, OpenSearch in production."""

    def get_store(self) -> StatsStore:
        raise NotImplementedError("use DuckDBStatsStoreResource or OpenSearchStatsStoreResource")


class DuckDBStatsStoreResource(StatsStoreResource):
    path: str = Field(description="DuckDB database file")

    def get_store(self) -> StatsStore:
        return DuckDBStatsStore(Path(self.path))


class OpenSearchStatsStoreResource(StatsStoreResource):
    url: str = Field(description="OpenSearch URL, e.g. http://127.0.0.1:9200")
    prefix: str = Field(default="usagestats", description="prefix of index and alias names")
    compat_prefix: str = Field(
        default="usage-stats", description="LA Referencia compatibility indices: <prefix>-<idsite>"
    )
    batch_size: int = Field(default=5000, description="documents per bulk request")
    max_retries: int = Field(default=5, description="attempts per request before failing")

    def get_store(self) -> StatsStore:
        return OpenSearchStatsStore(
            self.url,
            prefix=self.prefix,
            compat_prefix=self.compat_prefix,
            batch_size=self.batch_size,
            max_retries=self.max_retries,
        )
