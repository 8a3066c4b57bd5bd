from __future__ import annotations

import datetime as dt
import os
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


# --- CI must not skip service tests --------------------------------------------------------
# Tests that need a real server (OpenSearch, S3, MariaDB, PostgreSQL) skip with a reason
# starting with "service " when it cannot be reached. On a developer machine that is a visible
# skip; under CI=true it fails the run, because CI starts every service itself.

_service_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if reason.startswith("Skipped: service ") or reason.startswith("service "):
            _service_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI", "").lower() == "true" and _service_skips:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"CI=true but {len(_service_skips)} service test(s) were skipped:", red=True
            )
            for line in _service_skips[:20]:
                reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
