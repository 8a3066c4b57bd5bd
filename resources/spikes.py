from dagster import ConfigurableResource
from pydantic import Field

from usage_stats.pipeline.spikes import SpikeRules

RULES = SpikeRules()  # the one home of the rules' defaults


class SpikeSettings(ConfigurableResource):
    """What makes a day's usage a spike (`usage_stats.pipeline.spikes`): flagged for review by
    `usage_spikes`, never dropped."""

    factor: float = Field(
        default=RULES.factor, description="a day's usage above this many times its baseline"
    )
    baseline_days: int = Field(
        default=RULES.baseline_days,
        description="the baseline: median daily usage of the stored days this far back",
    )
    min_history_days: int = Field(
        default=RULES.min_history_days,
        description="days judged only with at least this many stored days in the window",
    )
    min_count: int = Field(
        default=RULES.min_count,
        description="a spike has at least this many investigations on its day",
    )
    top_blocks: int = Field(default=RULES.top_blocks, description="how many blocks are 'few'")
    block_share: float = Field(
        default=RULES.block_share,
        description="flag when the top blocks gave at least this share of the excess",
    )
    top_countries: int = Field(
        default=RULES.top_countries, description="how many countries are 'few'"
    )
    country_share: float = Field(
        default=RULES.country_share,
        description="flag when the top countries gave at least this share of the excess "
        "(above 1: never)",
    )

    def rules(self) -> SpikeRules:
        return SpikeRules(
            factor=self.factor,
            baseline_days=self.baseline_days,
            min_history_days=self.min_history_days,
            min_count=self.min_count,
            top_blocks=self.top_blocks,
            block_share=self.block_share,
            top_countries=self.top_countries,
            country_share=self.country_share,
        )
