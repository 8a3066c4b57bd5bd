from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest

from usage_stats.settings import Settings
from usage_stats.synthetic import SyntheticConfig, write_synthetic

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]


@dataclass
class GeneratedData:
    data_dir: Path
    settings: Settings
    manifest: dict


def generate(data_dir: Path, config: SyntheticConfig | None = None) -> GeneratedData:
    config = config or SyntheticConfig(start=dt.date(2026, 1, 1), days=3)
    settings = Settings.from_env({"USAGE_STATS_DATA_DIR": str(data_dir)})
    result = write_synthetic(
        config, settings.lake_url, Path(settings.sources_file), data_dir / "manifest.json"
    )
    return GeneratedData(data_dir, settings, result.manifest)


@pytest.fixture
def generated(tmp_path: Path) -> GeneratedData:
    """Five sites (three repositories, a national node, the portal) × three days, planted truth."""
    return generate(tmp_path / "data")
