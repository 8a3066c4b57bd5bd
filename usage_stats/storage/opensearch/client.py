"""One OpenSearch connection that retries what can be retried and says what failed.

Every request of the store goes through `call`: overload (429), server errors and lost
connections are retried with exponential backoff, then fail with a message naming the server
and the operation, so a run's error says "OpenSearch is unreachable during indexing …" rather
than a stack of transport internals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import polars as pl
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import ConnectionTimeout, SerializationError, TransportError
from opensearchpy.serializer import JSONSerializer

from usage_stats.storage.store import StatsStoreError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
_COMPOSITE_PAGE = 10_000
# Only what `send` reads of a bulk answer: each item's status and any error, in order (the
# full answer repeats index, id, version and shards for every document: client CPU spent on
# parsing what nobody reads, on a machine the node shares).
BULK_ANSWER = "errors,items.*.status,items.*.error"


def node_urls(url: str) -> list[str]:
    """The nodes of a comma-separated URL list (`http://a:9200,http://b:9200`): a cluster's
    nodes the client spreads requests over and skips when one is down."""
    urls = [part.strip() for part in url.split(",") if part.strip()]
    if not urls:
        raise ValueError(f"no OpenSearch URL in {url!r}")
    return urls


class AnswerSerializer(JSONSerializer):
    """The node's answers parsed by orjson, a few times faster than the standard library's
    `json` (a one-month item report's ~900 records and aggregation pages: ~8 % of it);
    requests are written as the client writes them."""

    def loads(self, s: str) -> Any:
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(s, exc) from exc


@dataclass
class Connection:
    # one URL, or a comma-separated list of a cluster's nodes
    url: str
    timeout_seconds: float = 60.0
    max_retries: int = 5
    backoff_seconds: float = 0.5
    batch_size: int = 5_000
    # A bulk request also ends at this many bytes, so that documents of many countries (the
    # compatibility set's) cannot make one request weigh on the node's heap.
    batch_bytes: int = 8 * 1024 * 1024
    parallel_requests: int = 2
    _client: OpenSearch | None = field(default=None, repr=False)

    @property
    def client(self) -> OpenSearch:
        if self._client is None:
            hosts = node_urls(self.url)
            # Our `call` does the retrying with backoff; the client itself only tries the other
            # nodes when one does not answer (a lost connection, never a timeout or a status:
            # a request that timed out may still be running on its node), so a node that is
            # down costs a request no attempt. It marks that node dead and tries it again later.
            self._client = OpenSearch(
                hosts=hosts,
                timeout=self.timeout_seconds,
                max_retries=len(hosts) - 1,
                retry_on_status=(),
                retry_on_timeout=False,
                http_compress=False,
                pool_maxsize=max(4, self.parallel_requests + 1),
                serializer=AnswerSerializer(),
            )
        return self._client

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one request with exponential backoff on overload, 5xx and lost connections."""
        delay = self.backoff_seconds
        for attempt in range(1, self.max_retries + 1):
            try:
                return fn()
            except (OSConnectionError, ConnectionTimeout) as exc:
                last: Exception = exc
                reason = f"OpenSearch at {self.url} is unreachable"
            except TransportError as exc:
                status = exc.status_code if isinstance(exc.status_code, int) else 0
                if status not in RETRYABLE_STATUS:
                    raise StatsStoreError(f"OpenSearch {what} failed: {exc}") from exc
                last, reason = exc, f"OpenSearch at {self.url} answered {status}"
            if attempt < self.max_retries:
                # a failed run's log then tells a node lost from a cluster that stayed down
                log.warning("%s during %s (attempt %d), retrying: %s", reason, what, attempt, last)
                time.sleep(delay)
                delay *= 2
        raise StatsStoreError(
            f"{reason} during {what} after {self.max_retries} attempts: {last}"
        ) from last

    # --- bulk -----------------------------------------------------------------------------

    def send(self, body: str, what: str, expected: frozenset[int] = frozenset()) -> None:
        """One bulk request; documents refused with 429/5xx are sent again, with backoff, and
        refusals with an `expected` status (409 of an older version) are no failure."""
        delay = self.backoff_seconds
        for attempt in range(1, self.max_retries + 1):
            result = self.call(
                what, lambda b=body: self.client.bulk(body=b, filter_path=BULK_ANSWER)
            )
            if not result.get("errors"):
                return
            lines = body.splitlines()
            failed = [
                (i, item["index"])
                for i, item in enumerate(result["items"])
                if item["index"].get("error") and item["index"].get("status") not in expected
            ]
            if not failed:
                return
            statuses = {f.get("status") for _, f in failed}
            if not statuses <= RETRYABLE_STATUS or attempt == self.max_retries:
                raise StatsStoreError(
                    f"OpenSearch refused {len(failed)} document(s) during {what}: "
                    f"{failed[0][1].get('error')}"
                )
            body = "\n".join(line for i, _ in failed for line in lines[2 * i : 2 * i + 2]) + "\n"
            log.warning(
                "OpenSearch refused %d document(s) during %s (attempt %d), retrying: %s",
                len(failed),
                what,
                attempt,
                failed[0][1].get("error"),
            )
            time.sleep(delay)
            delay *= 2

    def batches(self, lines: pl.Series) -> Iterator[tuple[int, int]]:
        """(start, length) of consecutive batches of at most `batch_size` lines and
        `batch_bytes` bytes (a single longer line is a batch of its own)."""
        ends = (lines.str.len_bytes() + 1).cum_sum().to_numpy()
        start, total = 0, len(ends)
        while start < total:
            before = ends[start - 1] if start else 0
            end = int(np.searchsorted(ends, before + self.batch_bytes, side="right"))
            end = max(start + 1, min(end, start + self.batch_size))
            yield start, end - start
            start = end

    def bulk(
        self,
        lines: pl.Series,
        what: str,
        on_batch: Callable[[int], None] | None = None,
        expected: frozenset[int] = frozenset(),
    ) -> int:
        """Send NDJSON `lines` in batches, `parallel_requests` at a time so OpenSearch indexes
        one batch while the next is on its way; `on_batch` hears the running total."""
        written = 0
        pending: list[tuple[Future[None], int]] = []
        with ThreadPoolExecutor(max_workers=self.parallel_requests) as pool:

            def settle(done: tuple[Future[None], int]) -> None:
                nonlocal written
                done[0].result()  # re-raises the request's failure
                written += done[1]
                if on_batch is not None:
                    on_batch(written)

            try:
                for start, length in self.batches(lines):
                    chunk = lines.slice(start, length)
                    body = chunk.str.join("\n").item() + "\n"
                    pending.append((pool.submit(self.send, body, what, expected), chunk.len()))
                    if len(pending) >= self.parallel_requests:
                        settle(pending.pop(0))
                while pending:
                    settle(pending.pop(0))
            except BaseException:
                for future, _ in pending:
                    future.cancel()
                raise
        return written

    # --- reads ----------------------------------------------------------------------------

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        """A search of indices that may not exist yet (an empty store answers nothing)."""
        return self.call(
            "search",
            lambda: self.client.search(
                index=index, body=body, ignore_unavailable=True, allow_no_indices=True
            ),
        )

    def count(self, index: str, query: dict[str, Any]) -> int:
        result = self.call(
            "count",
            lambda: self.client.count(
                index=index, body={"query": query}, ignore_unavailable=True, allow_no_indices=True
            ),
        )
        return int(result["count"])

    def refresh(self, index: str) -> None:
        self.call(
            "refresh",
            lambda: self.client.indices.refresh(
                index=index, ignore_unavailable=True, allow_no_indices=True
            ),
        )

    def composite(
        self, index: str, query: dict[str, Any], sources: list[dict[str, Any]], aggs: dict
    ) -> Iterator[dict[str, Any]]:
        """Every bucket of a composite aggregation, paged with `after_key` in large pages."""
        after = None
        while True:
            composite: dict[str, Any] = {"size": _COMPOSITE_PAGE, "sources": sources}
            if after:
                composite["after"] = after
            body = {
                "size": 0,
                "query": query,
                "aggs": {"g": {"composite": composite, "aggs": aggs}},
            }
            agg = self.search(index, body).get("aggregations", {}).get("g")
            if not agg:
                return
            yield from agg["buckets"]
            after = agg.get("after_key")
            if not after or not agg["buckets"]:
                return

    def scroll(self, what: str, index: str, body: dict[str, Any]) -> Iterator[list[dict]]:
        """Pages of hits of a search over everything it matches, the scroll cleared after."""
        page = self.call(
            what,
            lambda: self.client.search(
                index=index, body=body, scroll="2m", ignore_unavailable=True, allow_no_indices=True
            ),
        )
        scroll_id = page.get("_scroll_id")
        try:
            while page["hits"]["hits"]:
                yield page["hits"]["hits"]
                page = self.call(
                    what, lambda sid=scroll_id: self.client.scroll(scroll_id=sid, scroll="2m")
                )
                scroll_id = page.get("_scroll_id", scroll_id)
        finally:
            if scroll_id:
                self.client.clear_scroll(scroll_id=scroll_id, ignore=[404])
