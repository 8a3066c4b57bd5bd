from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource
from pydantic import Field

from usage_stats.pipeline.pieces import DEFAULT_PIECE_MIB
from usage_stats.storage.lake import Lake
from usage_stats.storage.open import open_lake
from usage_stats.storage.warehouse import Warehouse


class LakeResource(ConfigurableResource):
    """The raw layer (Matomo Parquet), addressed by URL: a local folder or s3://bucket/prefix."""

    url: str = Field(description="Lake URL: a folder path, file:// URL or s3://bucket/prefix")
    s3: S3Resource = Field(description="S3 client settings, used for s3:// URLs")

    def get_lake(self) -> Lake:
        client = self.s3.get_client() if self.url.startswith("s3://") else None
        return open_lake(self.url, client)


class WarehouseResource(ConfigurableResource):
    """Where pipeline stages keep their per-day tables (Parquet), local or on S3."""

    url: str = Field(description="Warehouse URL: a folder path, file:// URL or s3://bucket/prefix")
    s3: S3Resource = Field(description="S3 client settings, used for s3:// URLs")
    piece_mib: float = Field(
        default=DEFAULT_PIECE_MIB,
        description="How much of a day a stage holds at once: sites are grouped into pieces "
        "of about this many MiB of raw event files (a site is never split), each written as "
        "one part of the day's tables. Lower it if a worker runs short of memory.",
    )

    def get_warehouse(self) -> Warehouse:
        client = self.s3.get_client() if self.url.startswith("s3://") else None
        return Warehouse(open_lake(self.url, client))
