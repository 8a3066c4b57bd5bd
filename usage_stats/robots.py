"""Robot detection by user agent, with the COUNTER robots list.

The list is ~330 regular expressions; running them over every row of a large day would
dominate the pipeline, so they run once per *distinct* user agent of the day.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from usage_stats import DATA_DIR

COUNTER_ROBOTS_FILE = DATA_DIR / "COUNTER_Robots_list.json"


def load_robot_patterns(path: Path = COUNTER_ROBOTS_FILE) -> list[str]:
    entries = json.loads(path.read_text(encoding="utf-8"))
    return [entry["pattern"] for entry in entries]


@lru_cache(maxsize=4)
def compiled_robot_pattern(path: Path = COUNTER_ROBOTS_FILE) -> re.Pattern[str]:
    """One case-insensitive alternation of the whole list (COUNTER asks for a regex search)."""
    return re.compile("|".join(f"(?:{p})" for p in load_robot_patterns(path)), re.IGNORECASE)


def robot_user_agents(
    user_agents: Iterable[str | None], path: Path = COUNTER_ROBOTS_FILE
) -> set[str]:
    pattern = compiled_robot_pattern(path)
    return {ua for ua in user_agents if ua is not None and pattern.search(ua)}
