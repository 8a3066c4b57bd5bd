"""`KeyedCache`: what a worker keeps per key until the store's data version changes."""

from __future__ import annotations

import pytest

from usage_stats.web.keyed_cache import KeyedCache


class Store:
    """A data version and the values it holds; counts what is read."""

    def __init__(self) -> None:
        self.version: object = 1
        self.values = {"a": "A1", "b": "B1", "c": "C1"}
        self.loads: list[list[str]] = []

    def load(self, keys: list[str]) -> dict[str, str | None]:
        self.loads.append(list(keys))
        return {key: self.values.get(key) for key in keys}


def test_only_keys_not_kept_are_loaded_and_every_key_is_answered():
    store = Store()
    cache = KeyedCache(lambda: store.version)
    assert cache.get_many(["a", "b"], store.load) == {"a": "A1", "b": "B1"}
    assert cache.get_many(["b", "c", "zz"], store.load) == {"b": "B1", "c": "C1", "zz": None}
    assert store.loads == [["a", "b"], ["c", "zz"]]
    assert cache.get_many(["zz", "a"], store.load) == {"zz": None, "a": "A1"}
    assert len(store.loads) == 2  # a key without a value is kept too
    assert (cache.hits, cache.misses) == (3, 4)


def test_a_new_data_version_forgets_everything():
    store = Store()
    cache = KeyedCache(lambda: store.version)
    cache.get_many(["a", "b"], store.load)
    store.values["a"], store.version = "A2", 2
    assert cache.get_many(["a", "b"], store.load) == {"a": "A2", "b": "B1"}
    assert store.loads[-1] == ["a", "b"]
    assert len(cache) == 2


def test_a_store_that_cannot_tell_its_version_gets_nothing_kept():
    store = Store()
    store.version = None
    cache = KeyedCache(lambda: store.version)
    cache.get_many(["a"], store.load)
    cache.get_many(["a"], store.load)
    assert store.loads == [["a"], ["a"]]
    assert len(cache) == 0


def test_the_version_is_asked_at_most_every_version_seconds():
    store, now, asked = Store(), [0.0], []

    def version() -> object:
        asked.append(now[0])
        return store.version

    cache = KeyedCache(version, version_seconds=1.0, clock=lambda: now[0])
    cache.get_many(["a"], store.load)
    store.values["a"], store.version = "A2", 2
    now[0] = 0.5
    assert cache.get_many(["a"], store.load) == {"a": "A1"}  # within the second: as kept
    now[0] = 1.5
    assert cache.get_many(["a"], store.load) == {"a": "A2"}
    assert asked == [0.0, 1.5]


def test_the_least_recently_asked_go_first_beyond_max_keys():
    store = Store()
    cache = KeyedCache(lambda: store.version, max_keys=2)
    cache.get_many(["a", "b"], store.load)
    cache.get_many(["a"], store.load)  # b is now the least recently asked
    cache.get_many(["c"], store.load)
    assert len(cache) == 2
    store.loads.clear()
    cache.get_many(["a", "b", "c"], store.load)
    assert store.loads == [["b"]]


@pytest.mark.parametrize("max_keys", [0, -1])
def test_max_keys_zero_keeps_nothing(max_keys):
    store = Store()
    cache = KeyedCache(lambda: store.version, max_keys=max_keys)
    cache.get_many(["a"], store.load)
    cache.get_many(["a"], store.load)
    assert store.loads == [["a"], ["a"]]


def test_values_read_while_the_store_changed_are_not_kept():
    """A value loaded under one version, after which another was seen (a concurrent request
    saw a write), may be older than that version: it is answered, not kept."""
    store = Store()
    cache = KeyedCache(lambda: store.version)

    def load_during_a_write(keys: list[str]) -> dict[str, str | None]:
        store.version = 2
        cache.get_many([], store.load)  # another request sees the new version meanwhile
        return store.load(keys)

    assert cache.get_many(["a"], load_during_a_write) == {"a": "A1"}
    assert len(cache) == 0
