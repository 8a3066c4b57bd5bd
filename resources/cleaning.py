from dagster import ConfigurableResource
from pydantic import Field

from usage_stats.pipeline.cleaning import CleaningRules

RULES = CleaningRules()  # the one home of the rules' defaults


class CleaningSettings(ConfigurableResource):
    """Thresholds of the cleaning rules and the secret that keys the IP hash."""

    always_human_max_actions: int = Field(
        default=RULES.always_human_max_actions,
        description="visits up to this many actions are human",
    )
    robot_min_actions: int = Field(
        default=RULES.robot_min_actions,
        description="visits with at least this many actions are robots",
    )
    min_average_seconds: float = Field(
        default=RULES.min_average_seconds,
        description="visits between the two limits must average more than this per action",
    )
    double_click_seconds: int = Field(
        default=RULES.double_click_seconds, description="COUNTER double-click window"
    )
    thumbnail_pattern: str = Field(
        default=RULES.thumbnail_pattern,
        description="URLs matching this regular expression are thumbnails (image renditions)",
    )
    robots_list: str = Field(
        default=RULES.robots_list,
        description="robots list: 'counter-robots' (the installed package) or a file path",
    )
    ip_salt: str = Field(description="secret salt of the keyed IP hash")

    def rules(self) -> CleaningRules:
        return CleaningRules(
            always_human_max_actions=self.always_human_max_actions,
            robot_min_actions=self.robot_min_actions,
            min_average_seconds=self.min_average_seconds,
            double_click_seconds=self.double_click_seconds,
            thumbnail_pattern=self.thumbnail_pattern,
            robots_list=self.robots_list,
        )
