from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from usage_stats.admin.registry import DbSourceRegistry
from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.storage.opensearch import OpenSearchStatsStore
from usage_stats.storage.store import StatsStore


class StatsStoreResource(ConfigurableResource):
    """The interface assets see; DuckDB embedded, OpenSearch in production."""

    def get_store(self) -> StatsStore:
        raise NotImplementedError("use DuckDBStatsStoreResource or OpenSearchStatsStoreResource")


class DuckDBStatsStoreResource(StatsStoreResource):
    path: str = Field(description="DuckDB database file")

    def get_store(self) -> StatsStore:
        return DuckDBStatsStore(Path(self.path))


class OpenSearchStatsStoreResource(StatsStoreResource):
    url: str = Field(
        description="OpenSearch URL, e.g. http://127.0.0.1:9200, or a cluster's nodes separated "
        "by commas (requests go to any node, and skip one that is down)"
    )
    prefix: str = Field(default="usagestats", description="prefix of index and alias names")
    compat_prefix: str = Field(
        default="usage-stats", description="LA Referencia compatibility indices: <prefix>-<idsite>"
    )
    compat_granularity: str = Field(
        default="month",
        description="LA Referencia compatibility documents per site, item and day or month",
    )
    admin_db_url: str | None = Field(
        default=None,
        description="admin DB whose sources give the compatibility documents their items' "
        "countries and owners (read at every write); unset: no compatibility set",
    )
    batch_size: int = Field(default=5000, description="documents per bulk request")
    max_retries: int = Field(default=5, description="attempts per request before failing")
    replicas: int = Field(
        default=0,
        ge=0,
        description="copies of each shard on other nodes: 0 on a single node, 1 on a cluster "
        "(a lost node loses no data, reads go on); existing indices take it at the next write",
    )
    shards: int = Field(default=1, ge=1, description="primary shards of each new index")

    def get_store(self) -> StatsStore:
        registry = DbSourceRegistry(self.admin_db_url) if self.admin_db_url else None
        return OpenSearchStatsStore(
            self.url,
            prefix=self.prefix,
            compat_prefix=self.compat_prefix,
            compat_granularity=self.compat_granularity,
            sources=registry.sources if registry is not None else None,
            batch_size=self.batch_size,
            max_retries=self.max_retries,
            replicas=self.replicas,
            shards=self.shards,
        )
