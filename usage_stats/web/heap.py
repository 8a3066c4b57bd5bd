"""The garbage collector of a web worker, set for a server's heap.

A worker holds some hundred thousand long-lived container objects from its imports and its
app (FastAPI's and pydantic's models, Polars, DuckDB, SQLAlchemy, the route tables), and
CPython's generational collector walks all of them at every full collection; its youngest
generation is collected every 700 net container allocations, which one item report (a dict
per item, group and metric) passes dozens of times. Measured on a one-month IR of 960 items
(`bench/web_miss_cost.py`'s year): 8.5 ms of collection in ~45 ms of CPU per report with
the defaults, 3.0 ms with what exists at startup frozen, 0.1 ms with the young threshold
raised too. A request's objects are freed by reference counting when it ends, so a rarer
young collection only delays what few cycles a request leaves (exceptions with tracebacks).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def settle_heap() -> None:
    """Collect once, then freeze what is left (imports, app) out of every later collection
    and collect the youngest generation every `YOUNG_THRESHOLD` net allocations. For a
    serving process only: frozen objects are never collected."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
