"""The OpenSearch stats store, in parts: `client` (requests, retries, bulk, paging), `writes`
(mappings, templates, bulk lines, document ids, stale-document removal), `queries` (query
bodies and the frames of their answers) and `store` (which index holds what, and the order in
which a day is written)."""

from usage_stats.storage.opensearch.store import COMPAT_PREFIX, OpenSearchStatsStore

__all__ = ["COMPAT_PREFIX", "OpenSearchStatsStore"]
