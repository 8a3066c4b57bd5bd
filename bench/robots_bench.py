"""The robot decision on a day's distinct user agents: seconds for N distinct agents.

Times `RobotList.robot_mask` (the combined pattern run by Polars over the distinct agents,
as `clean_events` calls it) against the same patterns in Python's `re`, one search per agent
(how the decision was made before), on the same agents, and checks that both decide the same.

    .venv/bin/python bench/robots_bench.py --agents 30000

The agents are generated, deterministic for a seed: browser agents of many platforms and
versions (most of a real day), a tenth crawlers, tools and libraries that the list names.
Results are printed and written to `bench/results/robots-<timestamp>.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import time
from pathlib import Path

import polars as pl

from usage_stats.pipeline.robots import load_robot_list

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PLATFORMS = (
    "Windows NT 10.0; Win64; x64",
    "Windows NT 6.1; WOW64",
    "Macintosh; Intel Mac OS X 10_15_7",
    "X11; Linux x86_64",
    "X11; Ubuntu; Linux x86_64; rv:{v}.0",
    "Linux; Android {a}; SM-A{m}B",
    "iPhone; CPU iPhone OS {a}_2 like Mac OS X",
    "iPad; CPU OS {a}_1 like Mac OS X",
)
MACHINES = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "python-requests/2.{v}.0",
    "curl/7.{v}.1",
    "Wget/1.{v}",
    "Java/1{a}.0.{m}",
    "Apache-HttpClient/4.5.{v} (Java/17.0.{m})",
    "Zotero/6.0.{v}",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html) {v}",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php) {v}",
)


def generate_agents(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    agents: set[str] = set()
    while len(agents) < n:
        v, a, m = rng.randint(60, 131), rng.randint(9, 17), rng.randint(100, 999)
        if rng.random() < 0.1:
            agents.add(rng.choice(MACHINES).format(v=v, a=a, m=m))
            continue
        platform = rng.choice(PLATFORMS).format(v=v, a=a, m=m)
        engine = rng.choice(
            [
                f"AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.{rng.randint(0, 6999)}."
                f"{rng.randint(0, 250)} Safari/537.36",
                f"Gecko/20100101 Firefox/{v}.0",
                f"AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{a}.{rng.randint(0, 6)} "
                f"Mobile/15E148 Safari/604.{rng.randint(1, 9)}",
                f"AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36 "
                f"Edg/{v}.0.{rng.randint(1000, 2999)}.{rng.randint(0, 99)}",
            ]
        )
        agents.add(f"Mozilla/5.0 ({platform}) {engine}")
    return sorted(agents)


def best_of(repeat: int, run) -> tuple[float, object]:  # noqa: ANN001
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    agents = generate_agents(args.agents, args.seed)
    series = pl.Series(agents, dtype=pl.String)
    start = time.perf_counter()
    robots = load_robot_list()
    robots.robot_mask(series.head(1))
    load = time.perf_counter() - start
    vectorised, mask = best_of(args.repeat, lambda: robots.robot_mask(series))
    python = re.compile("|".join(f"(?:{p})" for p in robots.patterns), re.IGNORECASE)
    one_by_one, found = best_of(1, lambda: [python.search(a) is not None for a in agents])
    assert mask.to_list() == found, "the two engines decided differently"
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
        "robots_list": robots.version,
        "patterns": len(robots.patterns),
        "agents": len(agents),
        "robots": int(mask.sum()),
        "load_and_compile_seconds": round(load, 4),
        "vectorised_seconds": round(vectorised, 4),
        "python_re_seconds": round(one_by_one, 3),
    }
    print(
        f"{result['agents']:,} distinct agents, {result['robots']:,} robots "
        f"({robots.version}, {len(robots.patterns)} patterns), "
        f"load {result['load_average'][0]:.2f}\n"
        f"  vectorised (Polars, one combined pattern): {vectorised:.3f} s "
        f"(+ {load:.3f} s to load and compile once)\n"
        f"  Python re, agent by agent (before):       {one_by_one:.2f} s"
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"robots-{stamp}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
