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
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from usage_stats.admin.db import AdminDbError
from usage_stats.settings import Settings
from usage_stats.store import StatsStore, StatsStoreError
from usage_stats.web import api, dashboard, lareferencia, sushi
from usage_stats.web.common import ApiError, WebContext

logger = logging.getLogger("usage_stats.web")


def _error(status: int, parameter: str | None, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"status": status, "parameter": parameter, "message": message}},
        status_code=status,
    )


def create_app(
    store: StatsStore,
    admin_db_url: str,
    *,
    cors_origins: Sequence[str] = (),
    platform: str = "usage-stats",
    cache_seconds: float = 30.0,
    sushi_limiter: sushi.FailedAuthLimiter | None = None,
) -> FastAPI:
    """`sushi_limiter` counts failed SUSHI authentications per client (Exception 1020); by
    default from `USAGE_STATS_SUSHI_AUTH_FAILURES` / `USAGE_STATS_SUSHI_AUTH_WINDOW_SECONDS`."""
    app = FastAPI(
        title="usage-stats",
        version="1.0",
        description=(
            "Open usage statistics of repositories: statistics API (`/api/v1`), LA Referencia "
            "compatible widgets (`/report`), COUNTER R5.1 SUSHI (`/r51`), and the dashboard "
            "(`/dashboard`) and item widget (`/widget/item`) built on this API."
        ),
    )
    app.state.ctx = WebContext(store, admin_db_url, cache_seconds=cache_seconds, platform=platform)
    app.state.sushi_limiter = sushi_limiter or sushi.FailedAuthLimiter.from_env()
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET"],
            allow_headers=["*"],
        )

    @app.middleware("http")
    async def log_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        logger.info(
            "%s %s %s %.1fms",
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

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

    app.include_router(api.router)
    app.include_router(lareferencia.router)
    app.include_router(sushi.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC), name="static")
    return app


def store_from_settings(settings: Settings) -> StatsStore:
    if settings.stats_store == "opensearch":
        from usage_stats.opensearch_store import OpenSearchStatsStore

        return OpenSearchStatsStore(settings.opensearch_url, prefix=settings.opensearch_prefix)
    from usage_stats.duckdb_store import DuckDBStatsStore

    return DuckDBStatsStore(Path(settings.duckdb_path))


def app_from_env() -> FastAPI:
    """For `uvicorn usage_stats.web.app:app_from_env --factory`."""
    settings = Settings.from_env()
    return create_app(
        store_from_settings(settings),
        settings.admin_db_url,
        cors_origins=settings.cors_origins,
        platform=settings.sushi_platform,
    )
