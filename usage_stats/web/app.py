"""The ASGI application: one FastAPI app over the stats store and the admin DB.

`create_app` takes the store and admin DB explicitly (tests pass a DuckDB or OpenSearch store;
`usage-stats serve` builds them from the environment). Every refusal is a 4xx JSON body that
names the parameter; store outages are 503, so a 500 always means a bug. Request logs hold
method, path, status and duration only: no query string (it may carry a SUSHI api_key or an
identifier a reader looked up) and no client address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from usage_stats.admin.db import AdminDbError
from usage_stats.settings import Settings
from usage_stats.storage.store import StatsStore, StatsStoreError
from usage_stats.web import (
    api,
    dashboard,
    fields_api,
    heap,
    i18n,
    lareferencia,
    protection,
    records_api,
    spikes_api,
    subcounts_api,
    sushi,
    visitors_api,
)
from usage_stats.web.cache import CachingMiddleware, ResponseCache
from usage_stats.web.common import ApiError, WebContext

logger = logging.getLogger("usage_stats.web")


def _error(status: int, parameter: str | None, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"status": status, "parameter": parameter, "message": message}},
        status_code=status,
    )


WIDGET_PATHS = ("/report/", "/widget/")


class SplitCors:
    """CORS by path: the widget endpoints (`WIDGET_PATHS`), embedded in repositories' pages
    everywhere, allow `widget_origins` (any, by default, as LA Referencia's service did); the
    API, SUSHI and the rest allow `api_origins` (none by default). No credentials: nothing here
    reads cookies."""

    def __init__(
        self, app: ASGIApp, widget_origins: Sequence[str], api_origins: Sequence[str]
    ) -> None:
        self.app = app
        self.widget = self._cors(app, widget_origins)
        self.api = self._cors(app, api_origins)

    @staticmethod
    def _cors(app: ASGIApp, origins: Sequence[str]) -> ASGIApp:
        if not origins:
            return app
        return CORSMiddleware(
            app, allow_origins=list(origins), allow_methods=["GET"], allow_headers=["*"]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(WIDGET_PATHS):
            await self.widget(scope, receive, send)
        else:
            await self.api(scope, receive, send)


class RequestLog:
    """Method, path, status and duration of each request (see the module's docstring), as
    plain ASGI: Starlette's `@app.middleware("http")` runs every request in an extra task,
    a cost the widgets' many small answers do not need."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "%s %s %s %.1fms",
                    scope["method"],
                    scope["path"],
                    status,
                    (time.perf_counter() - started) * 1000,
                )


def create_app(
    store: StatsStore,
    admin_db_url: str,
    *,
    cors_origins: Sequence[str] = (),
    widget_cors_origins: Sequence[str] = ("*",),
    document_granularity: str | None = None,
    platform: str = "usage-stats",
    cache_seconds: float = 30.0,
    sushi_limiter: sushi.FailedAuthLimiter | None = None,
    sushi_key_checker: sushi.KeyChecker | None = None,
    response_cache_seconds: float = 60.0,
    browser_cache_seconds: int = 60,
    sushi_items_kept: int = 100_000,
    rate_limits: protection.RateLimiter | None = None,
    embed_frame_ancestors: str | None = None,
    settle_heap: bool = False,
) -> FastAPI:
    """`response_cache_seconds`: how long an answer of the widgets and the API is kept at
    most (web/cache.py; it is dropped sooner, at once, when the store's data changes; 0 turns
    the cache off); `browser_cache_seconds`: their `Cache-Control: max-age`.
    `sushi_items_kept`: items a worker keeps described for SUSHI item reports until the store
    changes (`WebContext.reported_items`; 0: every report reads its records). `rate_limits`:
    requests per client and family of endpoints (web/protection.py; by default none: the
    command line and `app_from_env` pass the configured ones). `sushi_key_checker` bounds the
    CPU spent on API keys (by default `USAGE_STATS_SUSHI_KEY_CHECKS_PER_SECOND`).
    `sushi_limiter` counts failed SUSHI authentications per client (Exception 1020); by
    default from `USAGE_STATS_SUSHI_AUTH_FAILURES` / `USAGE_STATS_SUSHI_AUTH_WINDOW_SECONDS`.
    `cors_origins` may call the API and SUSHI from a browser, `widget_cors_origins` the widget
    endpoints (`/report/*`, `/widget/*`; any origin by default). `document_granularity`
    ("day" or "month"): the LA Referencia documents whose per-country entries the widgets'
    country ranking counts; by default the store's compatibility set's, else "month".
    `embed_frame_ancestors`: the sites that may frame `/embed/repository/…` (by default
    `USAGE_STATS_EMBED_FRAME_ANCESTORS`, else any). `settle_heap`: set the garbage collector
    for serving when the app starts (web/heap.py; `usage-stats serve` does, in each worker)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settle_heap:
            heap.settle_heap()  # after the imports and the app are built, before a request
        yield

    app = FastAPI(
        lifespan=lifespan,
        # /docs is served by `dashboard.api_docs` with local assets; ReDoc would need a CDN
        docs_url=None,
        redoc_url=None,
        title="usage-stats",
        version="1.0",
        description=(
            "Open usage statistics of repositories: statistics API (`/api/v1`), LA Referencia "
            "compatible widgets (`/report`), COUNTER R5.1 SUSHI (`/r51`), and the dashboard "
            "(`/dashboard`) and item widget (`/widget/item`) built on this API."
        ),
    )
    granularity = document_granularity or getattr(store, "compat_granularity", None) or "month"
    if granularity not in ("day", "month"):
        raise ValueError(f"document_granularity must be day or month, not {granularity!r}")
    app.state.ctx = WebContext(
        store,
        admin_db_url,
        cache_seconds=cache_seconds,
        platform=platform,
        document_granularity=granularity,
        reported_item_keys=sushi_items_kept,
    )
    app.state.embed_frame_ancestors = dashboard.embed_frame_ancestors(embed_frame_ancestors)
    app.state.sushi_limiter = sushi_limiter or sushi.FailedAuthLimiter.from_env()
    app.state.sushi_key_checker = sushi_key_checker or sushi.KeyChecker.from_env()
    # Middleware, innermost first (each `add_middleware` wraps the ones before): the cache
    # inside CORS, so that every answer, cached or not, gets the CORS headers of its request's
    # Origin; compression outside the cache, which stores its own gzip form (the middleware
    # leaves an encoded answer alone); rate limits before any work; headers on everything.
    app.state.response_cache = ResponseCache(
        store.data_version,
        ttl_seconds=response_cache_seconds,
        version_seconds=getattr(store, "version_check_seconds", 0.0),
    )
    app.add_middleware(
        CachingMiddleware,
        cache=app.state.response_cache,
        browser_seconds=browser_cache_seconds,
    )
    if cors_origins or widget_cors_origins:
        app.add_middleware(SplitCors, widget_origins=widget_cors_origins, api_origins=cors_origins)
    app.add_middleware(GZipMiddleware, minimum_size=1000, compresslevel=6)
    app.add_middleware(i18n.TranslatedDownloads)  # export file names in the page's language

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.parameter, exc.message)

    @app.exception_handler(sushi.SushiError)
    async def sushi_error(_request: Request, exc: sushi.SushiError) -> JSONResponse:
        return sushi.sushi_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        location = [str(p) for p in first.get("loc", ()) if p not in ("query", "path")]
        parameter = location[0] if location else None
        return _error(400, parameter, f"{parameter}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, None, str(exc.detail))

    @app.exception_handler(StatsStoreError)
    async def store_down(_request: Request, exc: StatsStoreError) -> JSONResponse:
        logger.error("stats store error: %s", exc)
        return _error(503, None, "the stats store is unavailable, try again later")

    @app.exception_handler(AdminDbError)
    async def admin_down(_request: Request, exc: AdminDbError) -> JSONResponse:
        logger.error("admin DB error: %s", exc)
        return _error(503, None, "the admin DB is unavailable, try again later")

    @app.get("/health", tags=["service"], summary="Liveness and the data's freshness")
    def health(request: Request) -> JSONResponse:
        ctx: WebContext = request.app.state.ctx
        checks: dict = {}
        try:
            days = ctx.store.days()
            checks["stats_store"] = {"ok": True, "last_day": days[-1].isoformat() if days else None}
        except Exception as exc:  # any failure is reported, not raised
            checks["stats_store"] = {"ok": False, "error": exc.__class__.__name__}
        try:
            complete = ctx.complete_through(None)
            checks["admin_db"] = {
                "ok": True,
                "complete_through": complete.isoformat() if complete else None,
            }
        except Exception as exc:  # any failure is reported, not raised
            checks["admin_db"] = {"ok": False, "error": exc.__class__.__name__}
        ok = all(c["ok"] for c in checks.values())
        return JSONResponse({"status": "ok" if ok else "degraded", **checks}, 200 if ok else 503)

    if rate_limits is not None and rate_limits.rules:
        app.add_middleware(protection.RateLimitMiddleware, limiter=rate_limits)
    app.add_middleware(protection.SecurityHeadersMiddleware)
    app.add_middleware(RequestLog)  # outermost: refusals are logged too

    # The widgets first: every request walks the routes in order until one matches, and the
    # item widget is the most requested of all (issue 16)
    app.include_router(lareferencia.router)
    app.include_router(api.router)
    app.include_router(records_api.router)
    app.include_router(subcounts_api.router)
    app.include_router(fields_api.router)
    app.include_router(visitors_api.router)
    app.include_router(spikes_api.router)
    app.include_router(sushi.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC), name="static")
    return app


def store_from_settings(settings: Settings) -> StatsStore:
    if settings.stats_store == "opensearch":
        from usage_stats.storage.opensearch import OpenSearchStatsStore

        return OpenSearchStatsStore(settings.opensearch_url, prefix=settings.opensearch_prefix)
    from usage_stats.storage.duckdb_store import DuckDBStatsStore

    # the web service keeps one read-only connection (storage/duckdb_store.py, "Shared reads")
    return DuckDBStatsStore(Path(settings.duckdb_path), shared_reads=True)


def app_from_settings(settings: Settings) -> FastAPI:
    """The app as `usage-stats serve` runs it, every setting from `settings`."""
    return create_app(
        store_from_settings(settings),
        settings.admin_db_url,
        cors_origins=settings.cors_origins,
        widget_cors_origins=settings.widget_cors_origins,
        document_granularity=settings.opensearch_compat_granularity,
        platform=settings.sushi_platform,
        response_cache_seconds=settings.web_cache_seconds,
        browser_cache_seconds=settings.web_browser_cache_seconds,
        sushi_items_kept=settings.sushi_items_kept,
        rate_limits=protection.RateLimiter(
            protection.rules(
                settings.rate_limit_widgets, settings.rate_limit_api, settings.rate_limit_sushi
            ),
            settings.rate_limit_storage,
        ),
        settle_heap=True,
    )


def app_from_env() -> FastAPI:
    """For `uvicorn usage_stats.web.app:app_from_env --factory`, and each worker process of
    `usage-stats serve --workers N` (uvicorn imports the app by name in every worker)."""
    return app_from_settings(Settings.from_env())
