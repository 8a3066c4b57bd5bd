"""A response cache for the public, read-only JSON endpoints (widgets and the statistics API).

The item widget is requested about as often as items are viewed, mostly for the same popular
items, and its answer changes only when a run writes the store. So each worker process keeps
the answers it computed, keyed by the path, the normalised query (parameters sorted by name,
percent-encoding decoded), the format `Accept` asks for (the API's exports negotiate CSV and
XLSX), the current UTC day (date math such as `now-1y` moves with it) and
the store's **data version** (`StatsStore.data_version`): a write changes the version, and an
answer computed before it is never served again — the test `test_web_cache` checks that a
widget shows a new day as soon as the run that wrote it has finished.

- The version is asked on every cached request when it is cheap (DuckDB: two `stat` calls)
  and at most every `version_seconds` otherwise (OpenSearch: one `_stats` request, so up to
  that long after a write a worker may still serve the previous answer). A store that cannot
  tell (`None`) gets nothing from the cache.
- Entries also expire after `ttl_seconds`, which bounds what the version does not cover (the
  admin DB's source list and processing status, which `WebContext` caches for 30 s itself).
- Only 200 answers of at most `max_body` bytes are kept, least recently used first out once
  `max_bytes` is reached; each entry holds its body, its gzip form (compressed once, not per
  request) and a strong ETag, so a browser or proxy revalidating with `If-None-Match` (or
  `If-Modified-Since`) gets a 304 with no body.
- `Cache-Control: public, max-age=<browser_seconds>` lets browsers and proxies reuse an
  answer briefly: a widget on an item page viewed again within it costs no request at all.

The cache is per process (each `--workers` process has its own): nothing is shared, so there
is nothing to lock across processes, at the price of one computation per worker per key.
Within a process, concurrent misses of one key are computed once: the first computes, the
others wait for its answer (a popular item right after a run's write, or a worker's first
seconds, would otherwise be computed once per waiting request, each as costly as the first).
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import hashlib
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from usage_stats.web.common import today

CACHED_PATHS = ("/report/", "/api/v1/")
_GZIP_MIN = 1000
_ABANDONED = object()  # a computation cancelled or failed: a waiter takes over


@dataclass(frozen=True)
class Entry:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]  # the original's, without length and encoding
    body: bytes
    gzipped: bytes | None
    etag: bytes
    created: float  # wall clock, for Last-Modified

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"")


class ResponseCache:
    """The entries and the data version they are valid for; thread-safe (FastAPI runs
    synchronous endpoints in a thread pool)."""

    def __init__(
        self,
        version: Callable[[], Hashable | None],
        *,
        ttl_seconds: float = 60.0,
        version_seconds: float = 0.0,
        max_bytes: int = 64 * 2**20,
        max_body: int = 1 * 2**20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._version_source = version
        self.ttl_seconds = ttl_seconds
        self.version_seconds = version_seconds
        self.max_bytes = max_bytes
        self.max_body = max_body
        self.clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Entry]] = OrderedDict()
        self._bytes = 0
        self._version: Hashable | None = None
        self._version_at = -1e18
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0 and self.max_bytes > 0

    def version(self) -> Hashable | None:
        now = self.clock()
        with self._lock:
            if now - self._version_at < self.version_seconds:
                return self._version
        current = self._version_source()
        with self._lock:
            if current != self._version:
                self._entries.clear()  # none of them can be asked for again
                self._bytes = 0
            self._version, self._version_at = current, now
        return current

    def get(self, key: Hashable) -> Entry | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None or self.clock() - found[0] > self.ttl_seconds:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found[1]

    def put(self, key: Hashable, entry: Entry) -> None:
        if entry.size > self.max_body * 2:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1].size
            self._entries[key] = (self.clock(), entry)
            self._bytes += entry.size
            while self._bytes > self.max_bytes and self._entries:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped.size

    def __len__(self) -> int:
        return len(self._entries)


def normalised_query(query_string: bytes) -> tuple[tuple[str, str], ...]:
    """Parameters decoded and sorted by name; several values of one name keep their order
    (the endpoints read the last one, so reordering them would change the answer)."""
    pairs = urllib.parse.parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return tuple(sorted(pairs, key=lambda pair: pair[0]))


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def _representation(scope: Scope) -> str:
    """What of the request's headers the answer depends on: the API's exports choose CSV or
    XLSX by `Accept` (`exports.negotiate`), so an answer is kept per format asked."""
    accept = (_header(scope, b"accept") or b"").decode("latin-1").lower()
    if "text/csv" in accept:
        return "csv"
    if "spreadsheetml" in accept:
        return "xlsx"
    return ""


def _accepts_gzip(scope: Scope) -> bool:
    accepted = (_header(scope, b"accept-encoding") or b"").decode("latin-1").lower()
    for part in accepted.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    tags = [t.strip().removeprefix(b"W/") for t in if_none_match.split(b",")]
    return b"*" in tags or etag in tags


class CachingMiddleware:
    """Serves GET requests under `paths` from `cache` (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        cache: ResponseCache,
        browser_seconds: int = 60,
        paths: tuple[str, ...] = CACHED_PATHS,
    ) -> None:
        self.app = app
        self.cache = cache
        self.paths = paths
        self.cache_control = f"public, max-age={int(browser_seconds)}".encode()
        # key → the answer being computed for it: an `Entry`, None (not cacheable) or
        # `_ABANDONED`; only the event loop's thread touches it
        self._pending: dict[Hashable, asyncio.Future[object]] = {}
        self.computed = 0  # answers computed (not served from the cache), for tests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith(self.paths)
            or not self.cache.enabled
        ):
            await self.app(scope, receive, send)
            return
        version = self.cache.version()
        if version is None:
            await self.app(scope, receive, send)
            return
        key = (
            scope["path"],
            normalised_query(scope.get("query_string", b"")),
            _representation(scope),
            today(),
            version,
        )
        entry = self.cache.get(key)
        if entry is None:
            entry = await self._compute_once(key, scope, receive, send)
            if entry is None:
                return  # already sent as it came: not cacheable
        await self._send(scope, send, entry)

    async def _compute_once(
        self, key: Hashable, scope: Scope, receive: Receive, send: Send
    ) -> Entry | None:
        """The answer for `key`: another request's if one is computing it (shielded, so a
        waiter that goes away cancels nothing), else computed and kept here. An answer that
        is not kept (an error, a stream) is computed by each of its waiters; one abandoned
        (its request cancelled, or failing) is taken over by the next waiter."""
        while (pending := self._pending.get(key)) is not None:
            outcome = await asyncio.shield(pending)
            if isinstance(outcome, Entry):
                return outcome
            if outcome is None:
                return await self._compute_and_keep(key, scope, receive, send)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        outcome: object = _ABANDONED
        try:
            outcome = await self._compute_and_keep(key, scope, receive, send)
            return outcome  # type: ignore[return-value]
        finally:
            del self._pending[key]
            future.set_result(outcome)

    async def _compute_and_keep(
        self, key: Hashable, scope: Scope, receive: Receive, send: Send
    ) -> Entry | None:
        self.computed += 1
        entry = await self._compute(scope, receive, send)
        if entry is not None:
            self.cache.put(key, entry)
        return entry

    async def _compute(self, scope: Scope, receive: Receive, send: Send) -> Entry | None:
        """Run the endpoint, keeping its answer when cacheable; otherwise pass it on as it
        comes (a large export streams through once more than `max_body` has arrived)."""
        start: Message | None = None
        chunks: list[bytes] = []
        size = 0
        passing = False

        async def capture(message: Message) -> None:
            nonlocal start, size, passing
            if passing:
                await send(message)
                return
            if message["type"] == "http.response.start":
                start = message
                headers = dict(message.get("headers", ()))
                if message["status"] != 200 or b"set-cookie" in headers:
                    passing = True
                    await send(message)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.cache.max_body and message.get("more_body", False):
                passing = True
                await send(start)
                await send(
                    {"type": "http.response.body", "body": b"".join(chunks), "more_body": True}
                )
                chunks.clear()

        await self.app(scope, receive, capture)
        if passing or start is None:
            return None
        body = b"".join(chunks)
        headers = tuple(
            (k, v)
            for k, v in start.get("headers", ())
            if k not in (b"content-length", b"content-encoding", b"etag", b"cache-control")
        )
        digest = hashlib.blake2b(body, digest_size=16).hexdigest()
        return Entry(
            status=200,
            headers=headers,
            body=body,
            gzipped=gzip.compress(body, compresslevel=6, mtime=0)
            if len(body) >= _GZIP_MIN
            else None,
            etag=f'"{digest}"'.encode(),
            created=time.time(),
        )

    async def _send(self, scope: Scope, send: Send, entry: Entry) -> None:
        last_modified = email.utils.formatdate(entry.created, usegmt=True).encode()
        common = [
            (b"etag", entry.etag),
            (b"last-modified", last_modified),
            (b"cache-control", self.cache_control),
            (b"vary", b"Accept, Accept-Encoding"),
        ]
        if self._not_modified(scope, entry):
            await send({"type": "http.response.start", "status": 304, "headers": common})
            await send({"type": "http.response.body", "body": b""})
            return
        body, headers = entry.body, [*entry.headers, *common]
        if entry.gzipped is not None and _accepts_gzip(scope):
            body = entry.gzipped
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": entry.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _not_modified(scope: Scope, entry: Entry) -> bool:
        if_none_match = _header(scope, b"if-none-match")
        if if_none_match is not None:
            return _matches(if_none_match, entry.etag)
        since = _header(scope, b"if-modified-since")
        if since is None:
            return False
        try:
            moment = email.utils.parsedate_to_datetime(since.decode("latin-1"))
        except (TypeError, ValueError, IndexError):
            return False
        if moment is None or moment.tzinfo is None:
            return False
        # Strictly earlier: Last-Modified has whole seconds, and an answer recomputed after a
        # write within the same second must not be taken for the one the client holds. The
        # ETag is the exact validator; this one only spares proxies that lack it.
        return entry.created < moment.timestamp()
