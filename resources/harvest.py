from dagster import ConfigurableResource
from pydantic import Field

from usage_stats.metadata.harvest import ClientSettings


class HarvestSettings(ConfigurableResource):
    """How the OAI-PMH harvest treats the repositories' servers (and whether to start over)."""

    delay: float = Field(default=0.5, description="Seconds between two requests to a source")
    timeout: float = Field(default=60.0, description="Seconds to wait for a connection or read")
    max_retries: int = Field(
        default=3, description="Further attempts of a failed request (503 honours Retry-After)"
    )
    full: bool = Field(
        default=False,
        description="Harvest every record again instead of the changes since the last "
        "harvest; records a source no longer lists are then marked deleted",
    )

    def client_settings(self) -> ClientSettings:
        return ClientSettings(delay=self.delay, timeout=self.timeout, max_retries=self.max_retries)
