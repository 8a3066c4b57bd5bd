from dagster import ConfigurableResource
from pydantic import Field

from usage_stats.lake import Lake, open_lake
from usage_stats.warehouse import Warehouse


class LakeResource(ConfigurableResource):
    """The raw layer (Matomo Parquet), addressed by URL: a local folder by default."""

    url: str = Field(description="Lake URL: a folder path or file:// URL")

    def get_lake(self) -> Lake:
        return open_lake(self.url)


class WarehouseResource(ConfigurableResource):
    """Where pipeline stages keep their per-day tables (Parquet)."""

    url: str = Field(description="Warehouse URL: a folder path or file:// URL")

    def get_warehouse(self) -> Warehouse:
        return Warehouse(open_lake(self.url))
