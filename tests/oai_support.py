"""The OAI-PMH test provider (scripts/services.sh `oai`) and a misbehaving server for faults."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import requests

OAI_URL = os.environ.get("USAGE_STATS_TEST_OAI_URL", "http://127.0.0.1:8765")


def oai_available() -> str | None:
    try:
        requests.get(f"{OAI_URL}/health", timeout=3).raise_for_status()
    except Exception as exc:  # any failure means: not there
        return f"service OAI-PMH provider is not reachable at {OAI_URL} ({exc.__class__.__name__})"
    return None


class Provider:
    """One dataset of the running provider, private to a test; `put` replaces it."""

    def __init__(self) -> None:
        reason = oai_available()
        if reason:
            pytest.skip(reason + "; start it with scripts/services.sh start oai")
        self.name = f"test-{uuid.uuid4().hex[:12]}"

    def put(self, dataset: dict) -> None:
        requests.put(f"{OAI_URL}/datasets/{self.name}", json=dataset, timeout=30).raise_for_status()

    def url(self, source_key: str) -> str:
        return f"{OAI_URL}/oai/{self.name}/{quote(source_key, safe=':')}"

    def close(self) -> None:
        requests.delete(f"{OAI_URL}/datasets/{self.name}", timeout=10)


OAI_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">'
    "<responseDate>2026-02-01T10:00:00Z</responseDate><request>http://x/oai</request>"
)
IDENTIFY = (
    OAI_HEAD + "<Identify><repositoryName>Bad</repositoryName><baseURL>http://x/oai</baseURL>"
    "<protocolVersion>2.0</protocolVersion><adminEmail>a@example.org</adminEmail>"
    "<earliestDatestamp>2020-01-01T00:00:00Z</earliestDatestamp><deletedRecord>persistent"
    "</deletedRecord><granularity>YYYY-MM-DDThh:mm:ssZ</granularity></Identify></OAI-PMH>"
)
FORMATS = (
    OAI_HEAD + "<ListMetadataFormats><metadataFormat><metadataPrefix>oai_dc</metadataPrefix>"
    "<schema>s</schema><metadataNamespace>n</metadataNamespace></metadataFormat>"
    "</ListMetadataFormats></OAI-PMH>"
)


def records_page(identifiers: list[str], token: str | None) -> str:
    records = "".join(
        f"<record><header><identifier>{i}</identifier><datestamp>2026-01-01T00:00:00Z"
        f"</datestamp></header><metadata><oai_dc:dc xmlns:oai_dc="
        f'"http://www.openarchives.org/OAI/2.0/oai_dc/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:title>{i}</dc:title></oai_dc:dc></metadata></record>"
        for i in identifiers
    )
    rt = f"<resumptionToken>{token}</resumptionToken>" if token else ""
    return OAI_HEAD + f"<ListRecords>{records}{rt}</ListRecords></OAI-PMH>"


def oai_error(code: str, text: str = "") -> str:
    return OAI_HEAD + f'<error code="{code}">{text}</error></OAI-PMH>'


Reply = tuple[int, dict[str, str], str]


@contextmanager
def fake_server(answer: Callable[[dict[str, str], int], Reply]) -> Iterator[tuple[str, list]]:
    """A server on 127.0.0.1 answering `answer(args, n)` (n: the request's number from 0);
    yields its base URL and the list of requests' arguments."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            args = dict(parse_qsl(urlsplit(self.path).query))
            seen.append(args)
            status, headers, body = answer(args, len(seen) - 1)
            data = body.encode()
            self.send_response(status)
            for k, v in {"Content-Type": "text/xml", **headers}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/oai", seen
    finally:
        server.shutdown()
        server.server_close()


def good_source(args: dict[str, str], n: int) -> Reply:
    """A well-behaved two-page source (4 records)."""
    verb = args.get("verb")
    if verb == "Identify":
        return 200, {}, IDENTIFY
    if verb == "ListMetadataFormats":
        return 200, {}, FORMATS
    if args.get("resumptionToken") == "p2":
        return 200, {}, records_page(["oai:bad.example.org:3", "oai:bad.example.org:4"], None)
    return 200, {}, records_page(["oai:bad.example.org:1", "oai:bad.example.org:2"], "p2")
