"""`make demo` (the README's first command) finishes and its summary matches the planted truth."""

import json
import os
import subprocess
import sys
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
    for check in (
        "subcounts_add_up_to_totals",
        "record_snapshot_equals_previous_plus_delta",
        "usage_subcounts_add_up_to_totals",
        "usage_subcount_snapshot_equals_previous_plus_delta",
    ):
        assert f"Asset check '{check}'" in out
    assert_records_and_breakdowns(out, manifest)
    # A figure the store does not hold fails the summary, naming it.
    manifest["records"]["added"]["2026-01-02"]["total"] += 1
    manifest["breakdowns"]["language"]["spa"]["views"] += 1
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(manifest))
    summary = subprocess.run(
        [sys.executable, "-m", "usage_stats.cli", "summary", "--manifest", str(tampered)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert summary.returncode == 1, summary.stdout + summary.stderr
    assert "MISMATCH in records added per day, usage by language" in summary.stdout


def assert_records_and_breakdowns(out: str, manifest: dict) -> None:
    """The summary's records and breakdown lines, each with the manifest's exact figures."""
    records = manifest["records"]
    assert records["served_deleted"] > 0 and records["before_first_day"] > 0
    assert (
        f"records (harvested, repositories, by OAI datestamp): {records['total']['2026-01-03']} "
        "on 2026-01-03"
    ) in out
    for day, added in records["added"].items():
        assert added["total"] > 0
        assert f"  {day}  added {added['total']:>5}  total {records['total'][day]:>6}\n" in out
    ranked = sorted(
        ((n, uri) for uri, n in records["by_resource_type"].items()), key=lambda t: (-t[0], t[1])
    )
    section = out.split("records by resource type on 2026-01-03 (top 5)\n")[1].splitlines()
    for line, (n, uri) in zip(section[:5], ranked[:5], strict=True):
        assert line.startswith(f"  {n:>6}  ") and line.endswith(f"({uri.rsplit('/', 1)[-1]})")
    for field in ("resource_type", "access_status", "language"):
        truth = manifest["breakdowns"][field]
        top = sorted(((v, c) for v, c in truth.items() if v), key=lambda t: (-t[1]["views"], t[0]))
        assert len(top) >= 3
        title = f"usage by {field.replace('_', ' ')} (top 5 by views)\n"
        lines = out.split(title)[1].splitlines()[: min(5, len(top))]
        for line, (value, counts) in zip(lines, top, strict=False):
            figures = f"  {counts['views']:>6} views {counts['downloads']:>6} downloads  "
            assert line.startswith(figures), (line, figures)
            assert line.endswith(value if field == "language" else f"({value.rsplit('/', 1)[-1]})")
        # then the use of items with no known value, and the rest: the lines add up to the total
        unknown = truth.get("", {"views": 0, "downloads": 0})
        section = out.split(title)[1].split("\n\n")[0].split("usage by")[0]
        assert f"  {unknown['views']:>6} views {unknown['downloads']:>6} downloads  (unknown)" in (
            section
        )
        views = [int(line.split()[0]) for line in section.strip().splitlines()]
        assert sum(views) == sum(c["views"] for c in truth.values())
