"""A larger day from a generated one: its sites copied under new site ids, as many times as asked.

The synthetic generator builds a day in memory (a 30M-event day peaks at 16 GiB), so a
100M-event day for the memory benchmark is made from a smaller one instead: copy `c` of site
`s` becomes site `s + c × sites`, with `idsite` rewritten in its files (the pipeline checks
it against the folder) and every repository host `repoN.example.org` in identifiers and
URLs renamed `c<c>repoN.example.org`, so the copies' items are items of the copies'
repositories (`sources.csv` gets the copies too, with their own prefixes and node links).
Files are rewritten one at a time: memory stays that of one file.

    .venv/bin/python bench/scale_lake.py /tmp/rb/e30000000_s100_seed42 /tmp/rb/x4 --copies 4
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
from pathlib import Path

import polars as pl

_HOST = r"(?i)repo(\d+)\.example\.org"


def renamed(copy: int) -> pl.Expr:
    return pl.col(pl.String).str.replace_all(_HOST, f"c{copy}repo$1.example.org")


def scale(source: Path, target: Path, copies: int) -> int:
    rows = list(csv.DictReader((source / "sources.csv").open()))
    sites = max(int(r["site_id"]) for r in rows)
    files = 0
    for table in ("events", "visits"):
        for path in sorted((source / "lake" / table).rglob("*.parquet")):
            relative = path.relative_to(source / "lake" / table)
            site = int(re.match(r"idsite=(\d+)", relative.parts[0]).group(1))
            for copy in range(copies):
                new = site + copy * sites
                out = target / "lake" / table / f"idsite={new}" / Path(*relative.parts[1:])
                out.parent.mkdir(parents=True, exist_ok=True)
                if copy == 0:
                    shutil.copyfile(path, out)
                    continue
                frame = pl.read_parquet(path)
                frame = frame.with_columns(
                    pl.lit(new, dtype=frame.schema["idsite"]).alias("idsite")
                )
                if table == "events":
                    frame = frame.with_columns(renamed(copy))
                frame.write_parquet(out)
                files += 1
    with (target / "sources.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        for copy in range(copies):
            for row in rows:
                row = dict(row)
                shift = copy * sites
                row["site_id"] = str(int(row["site_id"]) + shift)
                for link in ("national_site_id", "regional_site_id"):
                    if row[link]:
                        row[link] = str(int(row[link]) + shift)
                if copy:
                    row["source_key"] = f"{row['source_key']}-c{copy}"
                    row["name"] = f"{row['name']} (copy {copy})"
                    row["identifier_prefix"] = re.sub(
                        _HOST.removeprefix("(?i)"),
                        rf"c{copy}repo\1.example.org",
                        row["identifier_prefix"],
                    )
                writer.writerow(row)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a generated day (lake/ and sources.csv)")
    parser.add_argument("target", type=Path)
    parser.add_argument("--copies", type=int, default=4)
    args = parser.parse_args()
    if args.target.exists():
        raise SystemExit(f"{args.target} exists; remove it first")
    files = scale(args.source, args.target, args.copies)
    print(f"{args.target}: {args.copies} copies of {args.source}, {files} files rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
