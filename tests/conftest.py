from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from stores import S3_ENDPOINT_URL, new_bucket, s3_client
from usage_stats.admin import db
from usage_stats.admin.registry import import_sources
from usage_stats.demo.synthetic import SyntheticConfig, write_synthetic
from usage_stats.settings import Settings
from usage_stats.storage.lake import Lake
from usage_stats.storage.open import open_lake
from usage_stats.storage.warehouse import Warehouse

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]


def register_sources(settings: Settings) -> None:
    """The admin DB the pipeline reads its sources from, filled from the generator's CSV."""
    db.upgrade(settings.admin_db_url)
    report = import_sources(settings.admin_db_url, Path(settings.sources_file))
    assert report.ok, report.problems


@dataclass
class GeneratedData:
    data_dir: Path
    settings: Settings
    manifest: dict
    kind: str = "local"

    def s3(self):
        return s3_client() if self.kind == "s3" else None

    @property
    def lake(self) -> Lake:
        return open_lake(self.settings.lake_url, self.s3())

    def warehouse(self) -> Warehouse:
        return Warehouse(open_lake(self.settings.warehouse_url, self.s3()))


def generate(
    data_dir: Path, config: SyntheticConfig | None = None, kind: str = "local"
) -> GeneratedData:
    """Synthetic data in a local lake, or uploaded to a fresh bucket of the real S3 server."""
    config = config or SyntheticConfig(start=dt.date(2026, 1, 1), days=3)
    env = {"USAGE_STATS_DATA_DIR": str(data_dir)}
    local = Settings.from_env(env)
    result = write_synthetic(
        config, local.lake_url, Path(local.sources_file), data_dir / "manifest.json"
    )
    register_sources(local)
    if kind == "local":
        return GeneratedData(data_dir, local, result.manifest)
    bucket = new_bucket()
    client = s3_client()
    lake_dir = Path(local.lake_url)
    for path in sorted(lake_dir.rglob("*.parquet")):
        key = f"lake/{path.relative_to(lake_dir)}"
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    shutil.rmtree(lake_dir)  # from now on the data exists only in S3
    env |= {
        "USAGE_STATS_LAKE_URL": f"s3://{bucket}/lake",
        "USAGE_STATS_WAREHOUSE_URL": f"s3://{bucket}/warehouse",
        "USAGE_STATS_S3_ENDPOINT_URL": S3_ENDPOINT_URL,
    }
    return GeneratedData(data_dir, Settings.from_env(env), result.manifest, "s3")


@pytest.fixture(params=["local", "s3"])
def generated(request, tmp_path: Path) -> GeneratedData:
    """Five sites (three repositories, a national node, the portal) × three days, planted truth,
    in a local lake and in S3: every test using it runs on both."""
    return generate(tmp_path / "data", kind=request.param)


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
