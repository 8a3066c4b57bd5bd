"""`make demo` (the README's first command) finishes and its summary matches the planted truth."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_make_demo_prints_a_summary_that_matches_the_manifest(tmp_path):
    data_dir = tmp_path / "data"
    env = {**os.environ, "USAGE_STATS_DATA_DIR": str(data_dir)}
    result = subprocess.run(
        ["make", "-C", str(REPO), "demo", f"DAGSTER_HOME={tmp_path / 'home'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    manifest = json.loads((data_dir / "manifest.json").read_text())
    read = sum(d["input_events"] for d in manifest["days"].values())
    kept = sum(d["kept"] for d in manifest["days"].values())
    assert f"events read {read}, kept {kept}, rejected {read - kept}" in out
    assert "usage-stats summary: 3 day(s), 2026-01-01 .. 2026-01-03" in out
    assert "every figure matches" in out
    for check in (
        "kept_plus_rejected_equals_input",
        "no_duplicate_delta_keys",
        "snapshot_equals_previous_plus_delta",
        "store_rows_equal_delta_rows",
    ):
        assert f"Asset check '{check}'" in out and "failed" not in out
    # The run is recorded in the Dagster instance the Makefile pointed at.
    assert any((tmp_path / "home").iterdir())
