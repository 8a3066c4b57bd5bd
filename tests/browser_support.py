"""The web application on a real socket (uvicorn in a thread, 127.0.0.1) and headless Chromium
driven by Playwright, for the dashboard's browser tests and benchmark.

Chromium is Debian's package (`scripts/browser.sh` installs it; `USAGE_STATS_CHROMIUM` points
elsewhere); Playwright only drives it, it never downloads a browser of its own."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import uvicorn

CHROMIUM = os.environ.get("USAGE_STATS_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium phones home at start (update checks, field
# trials), which this machine's closed network refuses and which the tests must not see.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-default-browser-check",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(app) -> Iterator[str]:
    """`app` on http://127.0.0.1:<free port> until the block ends."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", workers=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the web application did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium browser (Playwright `Browser`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class PageWatch:
    """Everything a page did that a test must see: console errors, uncaught exceptions,
    failed requests and any request to a host other than 127.0.0.1."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.failed: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("request", self._request)
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))

    def _console(self, message) -> None:
        if message.type in ("error", "warning") and "favicon.ico" not in message.text:
            self.errors.append(f"console {message.type}: {message.text}")

    def _request(self, request) -> None:
        self.requests.append(request.url)
        host = urlparse(request.url).hostname
        if request.url.startswith(("data:", "blob:")):
            return
        if host != "127.0.0.1":
            self.outside.append(request.url)
