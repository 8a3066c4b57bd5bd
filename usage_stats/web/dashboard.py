"""The dashboard, item widget and embeddable repository pages, and the static files they load.

The pages' scripts read the public `/api/v1` like any other client, so the dashboard shows
nothing a client of the API could not get; the server only renders the page's text in the
reader's language (web/i18n.py: Jinja2 templates in `templates/`, gettext catalogues).
Browser libraries and map data are built into `static/vendor` by `scripts/build_assets.sh`
(npm registry, PyPI) and served from here; the Content-Security-Policy allows this origin
only, so a page that tried to reach a CDN would fail loudly in the browser instead of
quietly depending on the internet.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from usage_stats.web import i18n
from usage_stats.web.common import WebContext

STATIC = Path(__file__).with_name("static")
TEMPLATES = Path(__file__).with_name("templates")
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


_templates = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    extensions=["jinja2.ext.i18n"],
)
_FRAME_SOURCE = re.compile(
    r"^(\*|'self'|'none'|[a-z][a-z0-9+.-]*:|([a-z][a-z0-9+.-]*://)?[A-Za-z0-9*.-]+(:[0-9*]+)?)$"
)
EMBED_ENV = "USAGE_STATS_EMBED_FRAME_ANCESTORS"


def embed_frame_ancestors(value: str | None = None) -> str:
    """Who may frame the embeddable repository view (`frame-ancestors` sources): any site by
    default (`*`), as a repository's home page can be anywhere; or a space-separated list
    (`https://repo.example.org 'self'`) from `USAGE_STATS_EMBED_FRAME_ANCESTORS`. A value
    that is not a CSP source list is refused, naming the variable: it would end up in a
    header, where a `;` could add directives."""
    text = (os.environ.get(EMBED_ENV, "*") if value is None else value).strip() or "*"
    for source in text.split():
        if not _FRAME_SOURCE.match(source):
            raise ValueError(
                f"{EMBED_ENV}: {source!r} is not a frame-ancestors source "
                "(*, 'self', a scheme such as https: or a host such as https://repo.example.org)"
            )
    return " ".join(text.split())


def _headers(frame_ancestors: str, language: str) -> dict[str, str]:
    return {
        "Content-Language": language,
        "Content-Security-Policy": f"{_POLICY}; frame-ancestors {frame_ancestors}",
        "Cache-Control": "no-cache",
        # the same address answers in the reader's language
        "Vary": "Accept-Language, Cookie",
    }


def _html(name: str, choice: i18n.Choice, context: dict) -> str:
    translations = i18n.translations(choice.language)
    return _templates.get_template(name).render(
        _=translations.gettext,
        gettext=translations.gettext,
        ngettext=translations.ngettext,
        lang=choice.language,
        languages=i18n.language_names(),
        i18n={
            "lang": choice.language,
            "locale": choice.locale,
            "messages": i18n.script_messages(choice.language),
            "territories": i18n.territories(choice.language),
        },
        **context,
    )


@lru_cache(maxsize=256)
def _cached_html(name: str, choice: i18n.Choice, context: tuple) -> str:
    """A page is the same for every reader of a language and locale (its data comes from the
    API): rendered once, as the item widget is loaded with every item page viewed. Bounded:
    the locales are CLDR's, the repositories the registry's."""
    return _html(name, choice, dict(context))


def render(
    request: Request, name: str, frame_ancestors: str, status: int = 200, **context
) -> Response:
    """Template `name` in the request's language (web/i18n.py), with the page scripts'
    catalogue, locale and CLDR country names. A 200 page is kept (`_cached_html`); others,
    which may repeat what the reader typed, are rendered each time."""
    choice = i18n.choose(request)
    if status == 200:
        html = _cached_html(name, choice, tuple(sorted(context.items())))
    else:
        html = _html(name, choice, context)
    return HTMLResponse(
        html, status_code=status, headers=_headers(frame_ancestors, choice.language)
    )


def _page(request: Request, name: str, frame_ancestors: str, **context) -> Response:
    missing = missing_assets()
    if missing:
        return HTMLResponse(
            "<!doctype html><title>Dashboard not built</title><p>The dashboard's browser "
            f"libraries are not built (missing static/vendor/{missing[0]}): run "
            "<code>make assets</code> (<code>scripts/build_assets.sh</code>).</p>",
            status_code=503,
        )
    return render(request, name, frame_ancestors, **context)


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
def network_dashboard(request: Request) -> Response:
    return _page(request, "dashboard.html", "'self'")


@router.get("/dashboard/source/{source_key}")
def source_dashboard(request: Request, source_key: str) -> Response:
    return _page(request, "dashboard.html", "'self'")


@router.get("/dashboard/node/{country}")
def node_dashboard(request: Request, country: str) -> Response:
    return _page(request, "dashboard.html", "'self'")


@router.get("/widget/item")
def item_widget(request: Request) -> Response:
    """Embeddable in any repository's item page, hence any frame ancestor."""
    return _page(request, "widget.html", "*")


@router.get("/embed/repository/{source_key:path}")
def repository_embed(request: Request, source_key: str) -> Response:
    """A repository's compact view for an iframe on its home page: framed by the sites
    `USAGE_STATS_EMBED_FRAME_ANCESTORS` allows (any, by default). An unknown key is a 404
    page in the reader's language, framed like the view so the repository sees why."""
    ancestors = request.app.state.embed_frame_ancestors
    ctx: WebContext = request.app.state.ctx
    source = ctx.find_source(source_key)
    if source is None or source.type != "R":
        translations = i18n.translations(i18n.choose(request).language)
        message = translations.gettext("No repository is registered with the key “{key}”.").format(
            key=source_key
        )
        return render(request, "not_found.html", ancestors, status=404, message=message)
    return _page(request, "embed.html", ancestors, source=source)
