"""usage_stats: the domain library (pure Polars transforms, no Dagster)."""

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
