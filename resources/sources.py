from dagster import ConfigurableResource
from pydantic import Field

from usage_stats.admin.registry import DayStatus, DbSourceRegistry, record_processing
from usage_stats.admin.sources import SourceRegistry


class AdminDbResource(ConfigurableResource):
    """The admin DB: the source registry the pipeline reads, and where it records what it did.

    Sources are read at the start of every run, so an operator's change is used by the next
    run without restarting anything.
    """

    url: str = Field(description="SQLAlchemy URL of the admin DB (SQLite file or PostgreSQL)")

    def get_registry(self) -> SourceRegistry:
        return DbSourceRegistry(self.url)

    def record_processing(self, statuses: list[DayStatus]) -> None:
        record_processing(self.url, statuses)
