from dagster import ConfigurableResource
from pydantic import Field

from usage_stats.ingest.matomo import MatomoExportError, MatomoTables, matomo_engine


class MatomoDbResource(ConfigurableResource):
    """Matomo's MySQL/MariaDB database, read by the export."""

    url: str | None = Field(
        default=None, description="SQLAlchemy URL, e.g. mysql+pymysql://user:pw@host/matomo"
    )
    table_prefix: str = Field(default="matomo_", description="Matomo's table prefix")
    chunk_rows: int = Field(
        default=50_000, description="rows per streamed chunk (bounds the export's memory)"
    )

    def get_tables(self) -> MatomoTables:
        if not self.url:
            raise MatomoExportError(
                "no Matomo database configured: set USAGE_STATS_MATOMO_URL "
                "(e.g. mysql+pymysql://user:password@host:3306/matomo)"
            )
        return MatomoTables(matomo_engine(self.url), self.table_prefix)
