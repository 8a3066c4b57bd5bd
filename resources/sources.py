from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from usage_stats.sources import CsvSourceRegistry, SourceRegistry


class SourceRegistryResource(ConfigurableResource):
    """The source registry: a CSV file until the admin DB takes over (then the import format)."""

    path: str = Field(description="CSV file with one row per Matomo site")

    def get_registry(self) -> SourceRegistry:
        return CsvSourceRegistry(Path(self.path))
