"""A day in pieces: groups of whole sites, processed one after another.

Every rule that decides a figure works within one site: a session is a visit of a site, the
COUNTER user of the double-click rule is a user of a site, an item row is per site. A day
split into groups of whole sites therefore gives, piece by piece, exactly the rows the whole
day gives, while only one piece is in memory at a time: memory follows the piece size (and
the largest site's day, which is never split), not the network's day.

Pieces are weighed by the bytes of their sites' raw event files (known from the listing, no
file is opened) and taken in site order, so concatenating them gives the rows in the order
the whole day has them.
"""

from __future__ import annotations

from collections.abc import Iterable

from usage_stats.storage.lake import RawFile

# 16 MiB of raw files is about 1.5M events: at 10M events a day it halves the peak against 64
# MiB (960 against 1,860 MiB) and is no slower, as more parts overlap their background writes
# with the next piece (bench/README.md, run_bench.py --piece-mib).
DEFAULT_PIECE_MIB = 16


def site_weights(files: Iterable[RawFile]) -> dict[int, int]:
    """Bytes of raw event files per site, in site order."""
    weights: dict[int, int] = {}
    for raw in sorted(files, key=lambda f: f.site_id):
        weights[raw.site_id] = weights.get(raw.site_id, 0) + raw.size
    return weights


def plan_pieces(weights: dict[int, int], max_bytes: int) -> list[tuple[int, ...]]:
    """Consecutive sites (in site order) grouped so each group weighs at most `max_bytes`;
    a site heavier than that is a piece of its own. No site: no piece."""
    if max_bytes < 0:
        raise ValueError(f"the piece size must not be negative, not {max_bytes}")
    pieces: list[tuple[int, ...]] = []
    current: list[int] = []
    weight = 0
    for site in sorted(weights):
        if current and weight + weights[site] > max_bytes:
            pieces.append(tuple(current))
            current, weight = [], 0
        current.append(site)
        weight += weights[site]
    if current:
        pieces.append(tuple(current))
    return pieces
