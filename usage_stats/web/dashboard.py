"""The dashboard and item widget pages, and the static files they load.

The pages are static: their scripts read the public `/api/v1` like any other client, so the
dashboard shows nothing a client of the API could not get. Browser libraries and map data are
built into `static/vendor` by `scripts/build_assets.sh` (npm registry, PyPI) and served from
here; the Content-Security-Policy allows this origin only, so a page that tried to reach a CDN
would fail loudly in the browser instead of quietly depending on the internet.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

STATIC = Path(__file__).with_name("static")
VENDOR = STATIC / "vendor"
VENDOR_FILES = (
    "chart.umd.min.js",
    "d3-array.min.js",
    "d3-geo.min.js",
    "topojson-client.min.js",
    "countries-110m.json",
    "countries.json",
)
_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)

router = APIRouter(include_in_schema=False)


def missing_assets() -> list[str]:
    return [name for name in VENDOR_FILES if not (VENDOR / name).is_file()]


def _page(name: str, frame_ancestors: str) -> Response:
    missing = missing_assets()
    if missing:
        return HTMLResponse(
            "<!doctype html><title>Dashboard not built</title><p>The dashboard's browser "
            f"libraries are not built (missing static/vendor/{missing[0]}): run "
            "<code>make assets</code> (<code>scripts/build_assets.sh</code>).</p>",
            status_code=503,
        )
    return FileResponse(
        STATIC / name,
        media_type="text/html",
        headers={
            "Content-Security-Policy": f"{_POLICY}; frame-ancestors {frame_ancestors}",
            "Cache-Control": "no-cache",
        },
    )


DOCS_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
# Swagger UI sets style attributes from its script: its page allows inline styles, nothing else
# inline, and no other origin.
_DOCS_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)
_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>usage-stats API</title>
<link rel="icon" href="/static/favicon.svg">
<link rel="stylesheet" href="/static/vendor/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/static/vendor/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script></body></html>
"""


@router.get("/docs")
def api_docs() -> Response:
    """The interactive API documentation, with Swagger UI served from this application
    (`scripts/build_assets.sh` puts it in static/vendor): FastAPI's own page loads it from a
    CDN, which a reader's browser would then be asked to trust and contact."""
    missing = [name for name in DOCS_FILES if not (VENDOR / name).is_file()]
    if missing:
        return HTMLResponse(
            "<!doctype html><title>API documentation not built</title><p>Swagger UI is not "
            f"built (missing static/vendor/{missing[0]}): run <code>make assets</code>; the "
            'API\'s description is at <a href="/openapi.json">/openapi.json</a>.</p>',
            status_code=503,
            headers={"Content-Security-Policy": _DOCS_POLICY},
        )
    return HTMLResponse(
        _DOCS_PAGE,
        headers={"Content-Security-Policy": _DOCS_POLICY, "Cache-Control": "no-cache"},
    )


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@router.get("/dashboard")
def network_dashboard() -> Response:
    return _page("dashboard.html", "'self'")


@router.get("/dashboard/source/{source_key}")
def source_dashboard(source_key: str) -> Response:
    return _page("dashboard.html", "'self'")


@router.get("/dashboard/node/{country}")
def node_dashboard(country: str) -> Response:
    return _page("dashboard.html", "'self'")


@router.get("/widget/item")
def item_widget() -> Response:
    """Embeddable in any repository's item page, hence any frame ancestor."""
    return _page("widget.html", "*")
