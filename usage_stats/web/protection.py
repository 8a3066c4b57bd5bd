"""Per-client rate limits and the security headers every response carries.

**Rate limits** (the `limits` library, MIT): requests per client address and family of
endpoints — the widgets (`/report/`, `/widget/`), the statistics API (`/api/`) and SUSHI
(`/r51/`) — each with its own limit (`USAGE_STATS_RATE_LIMIT_WIDGETS`, `…_API`, `…_SUSHI`,
in the library's notation such as `1200/minute`; empty or `0` turns one off). A client over
its limit gets HTTP 429 with `Retry-After`: the API's usual error body, or for SUSHI the
COUNTER Exception 1020 ("Client has made too many requests"), so a harvester sees a COUNTER
answer. The counters are kept in `USAGE_STATS_RATE_LIMIT_STORAGE`: `memory://` (default) is
per worker process, so with `--workers N` a client may make up to N times the limit; a shared
store (`redis://host:6379`, issue 17) makes it one limit for the whole service. Sliding-window
counters: two numbers per client and family, whatever the traffic.

The client is the peer address; behind a reverse proxy, uvicorn's proxy headers set it
(`--forwarded-allow-ips`), as for SUSHI's failed-authentication limit.

**Security headers**: `X-Content-Type-Options: nosniff` (a JSON answer that echoes a
parameter is never sniffed into HTML or script), `Referrer-Policy: no-referrer` (item
identifiers are in our URLs; nothing here needs to know where a reader came from), and on any
response that has no Content-Security-Policy of its own (the pages set theirs) a policy that
allows nothing, so an API answer opened in a browser can run nothing and be framed by no one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse, storage, strategies
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
DEFAULT_POLICY = b"default-src 'none'; frame-ancestors 'none'"


class SecurityHeadersMiddleware:
    """Adds `SECURITY_HEADERS` to every response, and `DEFAULT_POLICY` where no
    Content-Security-Policy is set (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", ())
                    if k.lower() not in (b"x-content-type-options", b"referrer-policy")
                ]
                headers.extend(SECURITY_HEADERS)
                if not any(k.lower() == b"content-security-policy" for k, _ in headers):
                    headers.append((b"content-security-policy", DEFAULT_POLICY))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass(frozen=True)
class Rule:
    """A family of endpoints (path prefixes) and its per-client limit."""

    name: str
    prefixes: tuple[str, ...]
    limit: RateLimitItem


def parse_limit(text: str | None, variable: str) -> RateLimitItem | None:
    """`1200/minute`, `20/second`, `10000 per day` … ; empty or `0`: no limit. A wrong value
    is refused at start-up, naming the variable."""
    value = (text or "").strip()
    if value in ("", "0"):
        return None
    try:
        return parse(value)
    except ValueError:
        raise ValueError(
            f"{variable} must be a rate such as 1200/minute or 20/second, got {value!r}"
        ) from None


def rules(widgets: str | None, api: str | None, sushi: str | None) -> list[Rule]:
    out = []
    for name, prefixes, text, variable in (
        ("widgets", ("/report/", "/widget/"), widgets, "USAGE_STATS_RATE_LIMIT_WIDGETS"),
        ("api", ("/api/",), api, "USAGE_STATS_RATE_LIMIT_API"),
        ("sushi", ("/r51/",), sushi, "USAGE_STATS_RATE_LIMIT_SUSHI"),
    ):
        limit = parse_limit(text, variable)
        if limit is not None:
            out.append(Rule(name, prefixes, limit))
    return out


class RateLimiter:
    """The rules and where their counters live (`storage_uri`, see the module's docstring)."""

    def __init__(self, rules: Sequence[Rule], storage_uri: str = "memory://") -> None:
        self.rules = tuple(rules)
        self.storage = storage.storage_from_string(storage_uri)
        self.strategy = strategies.SlidingWindowCounterRateLimiter(self.storage)

    def rule_for(self, path: str) -> Rule | None:
        return next((r for r in self.rules if path.startswith(r.prefixes)), None)

    def retry_after(self, rule: Rule, client: str) -> int | None:
        """Counts one request of `client`; None if allowed, else the seconds to wait."""
        if self.strategy.hit(rule.limit, rule.name, client):
            return None
        stats = self.strategy.get_window_stats(rule.limit, rule.name, client)
        return max(1, math.ceil(stats.reset_time - time.time()))


class RateLimitMiddleware:
    """Refuses a client over its family's limit before any work is done for it."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rule = self.limiter.rule_for(scope["path"]) if scope["type"] == "http" else None
        if rule is None:
            await self.app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else "unknown"
        wait = self.limiter.retry_after(rule, client)
        if wait is None:
            await self.app(scope, receive, send)
            return
        explanation = (
            f"too many requests: this server allows {rule.limit} per client to "
            f"{rule.name}; retry after {wait} seconds"
        )
        if rule.name == "sushi":
            from usage_stats.web.sushi import exception

            body = exception(1020, explanation)
        else:
            body = {"error": {"status": 429, "parameter": None, "message": explanation}}
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"retry-after", str(wait).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
