"""What a worker learnt about each key (an item report's described record), kept until the
store's data version changes.

A SUSHI item report of a repository's month describes ~1,000 items by their harvested records:
reading those records, and deriving each item's Item_ID, authors, Data_Type and YOP from them,
was about a third of the report's CPU (issue 16). A repository's items come back in every
month a harvester asks for, and for every customer of the repository, while the records change
only when a run writes the store. So each worker keeps each key's value, reads only the keys
it has not seen, and forgets everything as soon as the store's **data version** changes (the
response cache's rule, `web/cache.py`: a harvest writes metadata, and that changes the
version). A store that cannot tell its version (`None`) gets nothing kept.

The version is asked at most every `version_seconds` (0: on every lookup, which is cheap for
DuckDB; OpenSearch's is a request, asked as often as the response cache asks it). At most
`max_keys` keys are kept, least recently asked first out, so a network of millions of items
bounds a worker's memory (~1.4 kB per item report's key: 134 MiB of a worker for 99,000 items).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

V = TypeVar("V")
_MISSING = object()


class KeyedCache(Generic[V]):
    """Thread-safe (FastAPI runs synchronous endpoints in a thread pool)."""

    def __init__(
        self,
        version: Callable[[], Hashable | None],
        *,
        max_keys: int = 100_000,
        version_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._version_source = version
        self.max_keys = max_keys
        self.version_seconds = version_seconds
        self.clock = clock
        self._values: OrderedDict[str, V] = OrderedDict()
        self._version: Hashable | None = None
        self._version_at = -1e18
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _current(self) -> Hashable | None:
        now = self.clock()
        with self._lock:
            if now - self._version_at < self.version_seconds:
                return self._version
        current = self._version_source()
        with self._lock:
            if current != self._version:
                self._values.clear()  # written before the store changed
            self._version, self._version_at = current, now
        return current

    def get_many(
        self, keys: Sequence[str], load: Callable[[list[str]], Mapping[str, V]]
    ) -> dict[str, V]:
        """The value of every key, `load`ing (in one call) those not kept; `load` answers for
        every key it is given (a key without a record too)."""
        version = self._current() if self.max_keys > 0 else None
        if version is None:
            loaded = load(list(keys))
            return {key: loaded[key] for key in keys}
        found: dict[str, V] = {}
        missing: list[str] = []
        with self._lock:
            values = self._values
            for key in keys:
                value = values.get(key, _MISSING)
                if value is _MISSING:
                    missing.append(key)
                else:
                    values.move_to_end(key)
                    found[key] = value  # type: ignore[assignment]
            self.hits += len(found)
            self.misses += len(missing)
        if missing:
            loaded = load(missing)
            with self._lock:
                # read under `version`; kept only if nothing newer was seen meanwhile (a
                # value read after a write is then dropped with the others at the next ask)
                if self._version == version:
                    for key in missing:
                        values[key] = loaded[key]
                    while len(values) > self.max_keys:
                        values.popitem(last=False)
            for key in missing:
                found[key] = loaded[key]
        return found

    def __len__(self) -> int:
        return len(self._values)
