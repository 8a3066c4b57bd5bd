from dagster import ConfigurableResource
from pydantic import Field

from usage_stats.pipeline.blocks import DEFAULT_PREFIXES, BlockPrefixes
from usage_stats.pipeline.cleaning import CleaningRules
from usage_stats.pipeline.distributed import DistributedRules

RULES = CleaningRules()  # the one home of the rules' defaults
DISTRIBUTED = RULES.distributed
PREFIXES = DEFAULT_PREFIXES


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
    # robot_distributed (usage_stats.pipeline.distributed) and the block widths it groups by
    distributed_min_addresses: int = Field(
        default=DISTRIBUTED.min_addresses,
        description="robot_distributed looks at blocks with at least this many addresses a day",
    )
    distributed_max_actions_per_visit: float = Field(
        default=DISTRIBUTED.max_actions_per_visit,
        description="signal short_visits: the block's actions per visit at most this",
    )
    distributed_min_items_per_event: float = Field(
        default=DISTRIBUTED.min_items_per_event,
        description="signal sweep: the block's distinct items per event at least this",
    )
    distributed_min_item_share: float = Field(
        default=DISTRIBUTED.min_item_share,
        description="signal coverage: the block's share of the items the site served that day",
    )
    distributed_min_active_hours: int = Field(
        default=DISTRIBUTED.min_active_hours,
        description="signal flat_day: the block is active in at least this many hours",
    )
    distributed_min_download_only_share: float = Field(
        default=DISTRIBUTED.min_download_only_share,
        description="signal downloads_without_views: share of downloads not viewed first",
    )
    distributed_min_signals: int = Field(
        default=DISTRIBUTED.min_signals,
        description="robot_distributed flags a block when at least this many signals fire",
    )
    block_ipv4_fine: int = Field(default=PREFIXES.ipv4_fine, description="IPv4 fine block")
    block_ipv4_wide: int = Field(default=PREFIXES.ipv4_wide, description="IPv4 wide block")
    block_ipv6_fine: int = Field(default=PREFIXES.ipv6_fine, description="IPv6 fine block")
    block_ipv6_wide: int = Field(default=PREFIXES.ipv6_wide, description="IPv6 wide block")

    def prefixes(self) -> BlockPrefixes:
        return BlockPrefixes(
            ipv4_fine=self.block_ipv4_fine,
            ipv4_wide=self.block_ipv4_wide,
            ipv6_fine=self.block_ipv6_fine,
            ipv6_wide=self.block_ipv6_wide,
        )

    def rules(self) -> CleaningRules:
        return CleaningRules(
            always_human_max_actions=self.always_human_max_actions,
            robot_min_actions=self.robot_min_actions,
            min_average_seconds=self.min_average_seconds,
            double_click_seconds=self.double_click_seconds,
            thumbnail_pattern=self.thumbnail_pattern,
            robots_list=self.robots_list,
            distributed=DistributedRules(
                min_addresses=self.distributed_min_addresses,
                max_actions_per_visit=self.distributed_max_actions_per_visit,
                min_items_per_event=self.distributed_min_items_per_event,
                min_item_share=self.distributed_min_item_share,
                min_active_hours=self.distributed_min_active_hours,
                min_download_only_share=self.distributed_min_download_only_share,
                min_signals=self.distributed_min_signals,
            ),
        )
