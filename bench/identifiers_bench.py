"""Identifier normalisation on a day's distinct identifiers: seconds for N distinct spellings.

`normalize_distinct` runs once per day on the distinct raw identifiers, a few hundred thousand
on a large day. Two mixes: `typical` (mostly OAI identifiers in their usual spellings, some DOI
and handle spellings, as repositories and the portal record them) and `library` (every value
needs the per-value idutils path: resolver URLs, info: URIs, bare and repository handles,
percent-encoded values), the worst case.

    .venv/bin/python bench/identifiers_bench.py [--distinct 300000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time

import polars as pl

from usage_stats.pipeline.identifiers import normalize_distinct

OAI = (
    "oai:repo{r}.example.org:123456789/{i}",
    "oai:https://repo{r}.example.org/server:123456789/{i}",
    "OAI:REPO{r}.EXAMPLE.ORG:123456789/{i}",
    " oai:repo{r}.example.org:123456789/{i} ",
    "oai:repo{r}.example.org:8080:123456789/{i}",
)
LIBRARY = (
    "https://doi.org/10.{r}000/ABC.{i}",
    "doi.org/10.{r}000/abc.{i}",
    "info:doi/10.{r}000/abc.{i}",
    "hdl.handle.net/10.{r}000/abc.{i}",
    "https://hdl.handle.net/{r}721.1/{i}?noredirect",
    "info:hdl/{r}721.1/{i}",
    "{r}721.1/{i}",
    "https://repo{r}.example.org/handle/{r}721.1/{i}/",
    "10.{r}000%2Fabc.{i}",
    "\u200b{r}721.1/{i}",
)
CANONICAL = ("10.{r}000/abc.{i}", "hdl:{r}721.1/{i}")


def spellings(n: int, mix: str) -> pl.Series:
    if mix == "library":
        patterns = LIBRARY
    else:  # 86 % OAI, 10 % library spellings, 4 % canonical DOIs and handles
        patterns = OAI * 17 + LIBRARY + CANONICAL * 2
    values = [patterns[i % len(patterns)].format(r=i % 9 + 1, i=i) for i in range(n)]
    return pl.Series("raw_identifier", values).unique()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distinct", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for mix in ("typical", "library"):
        values = spellings(args.distinct, mix)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            keys = normalize_distinct(values)
            times.append(time.perf_counter() - start)
        results[mix] = {
            "distinct": values.len(),
            "keys": keys.n_unique(),
            "seconds_best": round(min(times), 3),
            "seconds_worst": round(max(times), 3),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
