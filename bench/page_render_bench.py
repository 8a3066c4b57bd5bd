"""The cost of serving a page in a language (web/dashboard.py `render`): negotiating
`Accept-Language` and rendering the Jinja2 template with its catalogue and CLDR country names,
per request, with no network or store involved. One command:

    .venv/bin/python bench/page_render_bench.py [--requests 5000]

Prints milliseconds per page for the item widget, the dashboard and the repository view in
each language, first with the rendered-page cache cleared before every request (the cost of
a miss) and then warm (what a reader of a cached language and locale costs)."""

from __future__ import annotations

import argparse
import time

from starlette.requests import Request

from usage_stats.admin.sources import Source
from usage_stats.web import dashboard, i18n

SOURCE = Source(1, "opendoar::1001", "Repository 1", "R", "CR", None, 1)
PAGES = {
    "widget.html": {},
    "dashboard.html": {},
    "embed.html": {"source": SOURCE},
}
HEADERS = {"en": b"en-US,en;q=0.9", "es": b"es-AR,es;q=0.9,en;q=0.5", "pt": b"pt-BR,pt;q=0.9"}


def request(header: bytes) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/widget/item",
        "query_string": b"",
        "headers": [(b"accept-language", header)],
    }
    return Request(scope)


def measure(name: str, context: dict, header: bytes, count: int, cold: bool) -> float:
    started = time.perf_counter()
    for _ in range(count):
        if cold:
            dashboard._cached_html.cache_clear()
            i18n.negotiate.cache_clear()
        dashboard.render(request(header), name, "*", **context)
    return (time.perf_counter() - started) / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    print(f"{'page':16} {'lang':4} {'cold ms':>8} {'warm ms':>8}")
    for name, context in PAGES.items():
        for language, header in HEADERS.items():
            cold = measure(name, context, header, max(1, args.requests // 10), cold=True)
            warm = measure(name, context, header, args.requests, cold=False)
            print(f"{name:16} {language:4} {cold:8.3f} {warm:8.3f}")


if __name__ == "__main__":
    main()
