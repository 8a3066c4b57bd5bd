"""Robot detection by user agent, with the COUNTER robots list.

The list comes from the `counter-robots` package (Invenio's packaging of COUNTER's list:
its robot and machine patterns, MIT licence), so updating it is `pip install -U
counter-robots`; an operator can point `USAGE_STATS_ROBOTS_LIST` at a file instead (COUNTER's
JSON list, `[{"pattern": …}]`, or one pattern per line) to use a newer list before it is
packaged. Every run records which list it used (`RobotList.version`).

The patterns are matched case-insensitively, as a search anywhere in the agent. They are
combined into one Rust regular expression and run by Polars over the *distinct* agents of a
day: the automaton scans each agent once, instead of Python's backtracking engine trying
~360 alternatives at every position (about 20 s for 30,000 agents before, well under a
second now; `bench/robots_bench.py`).

A NULL and an empty (or blank) user agent mean the same: no agent was recorded. Matomo's
log tables have no user agent at all, so "no agent" cannot be evidence of a robot; such
rows are left to the behaviour rule (the list's `^.?$`, meant for empty headers, therefore
only ever sees one-character agents).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path

import polars as pl

PACKAGED_LIST = "counter-robots"
_PACKAGE_FILES = ("robot.txt", "machine.txt")


class RobotListError(ValueError):
    """The configured robots list cannot be read or compiled."""


@dataclass(frozen=True)
class RobotList:
    patterns: tuple[str, ...]
    # what the run records: "counter-robots 2025.11", or a file's name and content hash
    version: str

    @property
    def regex(self) -> str:
        return "(?i)" + "|".join(f"(?:{p})" for p in self.patterns)

    def robot_mask(self, user_agents: pl.Series) -> pl.Series:
        """True where the agent matches the list; False for a missing (null/blank) agent."""
        recorded = user_agents.str.strip_chars() != ""
        return (recorded & user_agents.str.contains(self.regex)).fill_null(False)


@lru_cache(maxsize=8)
def load_robot_list(source: str = PACKAGED_LIST) -> RobotList:
    """The list named by `source`: `counter-robots` (the installed package) or a file path."""
    if source == PACKAGED_LIST:
        package = resources.files("counter_robots") / "data"
        lines = [
            line
            for name in _PACKAGE_FILES
            for line in package.joinpath(name).read_text(encoding="utf-8").splitlines()
        ]
        version = f"{PACKAGED_LIST} {metadata.version(PACKAGED_LIST)}"
        return _checked(lines, version, source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RobotListError(f"robots list {source}: cannot be read ({exc.strerror})") from exc
    if path.suffix.lower() == ".json":
        try:
            lines = [entry["pattern"] for entry in json.loads(text)]
        except (ValueError, TypeError, KeyError) as exc:
            raise RobotListError(
                f'robots list {source}: not a COUNTER JSON list of {{"pattern": …}} ({exc})'
            ) from exc
    else:
        lines = text.splitlines()
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return _checked(lines, f"{path.name} sha256:{digest}", source)


def _checked(lines: list[str], version: str, source: str) -> RobotList:
    """Blank lines dropped, duplicates once, and every pattern compiled on its own, so that a
    bad one is named instead of failing the whole alternation at the first run."""
    patterns = tuple(dict.fromkeys(p.strip() for p in lines if p.strip()))
    if not patterns:
        raise RobotListError(f"robots list {source}: no patterns")
    probe = pl.Series([""], dtype=pl.String)
    for number, pattern in enumerate(patterns, 1):
        try:
            probe.str.contains(f"(?i){pattern}")
        except pl.exceptions.ComputeError as exc:
            raise RobotListError(
                f"robots list {source}: pattern {number} {pattern!r} is not a valid regular "
                f"expression ({str(exc).splitlines()[-1][:120]})"
            ) from exc
    return RobotList(patterns, version)


def robot_user_agents(
    user_agents: Iterable[str | None], robots: RobotList | None = None
) -> set[str]:
    """The robots among `user_agents` (scalar form for tests and tools)."""
    robots = robots or load_robot_list()
    agents = pl.Series(list(user_agents), dtype=pl.String).drop_nulls().unique()
    return set(agents.filter(robots.robot_mask(agents)).to_list())
