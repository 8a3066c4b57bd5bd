"""A real OAI-PMH data provider for tests, the demo and the benchmark: `oai-repo` over HTTP.

The protocol (verbs, arguments, errors, resumption tokens, date filters) is `oai-repo`'s, a
data-provider library from PyPI, so the harvester is tested against an implementation that is
not ours; this module only feeds it records (`RecordsInterface`) and serves it on 127.0.0.1.

What it serves are *datasets*: `{"sources": {source_key: {formats, page_size, granularity,
sets, records}}}` (`usage_stats.demo.oai_records.provider_dataset` makes them), each source at
`/oai/<dataset>/<source_key>`. A test puts its own dataset (`PUT /datasets/<name>`, JSON) and
replaces it to simulate a repository's edits between two harvests; a replaced dataset
invalidates the resumption tokens handed out for the old one, as a real repository's would.
At start-up the server holds `demo`: the records of `usage-stats generate`'s default
repositories, so `make demo`'s sources can be pointed at it.

Two things oai-repo 0.5 does not do are done here: it writes no `status="deleted"` header (it
has the field but never emits it) and drops a record without metadata, so a deleted record is
given a placeholder that `_mark_deleted` turns into a proper deleted header.

    python -m usage_stats.demo.oai_server --port 8765 [--records dataset.json] [--page-size 10]

With no server at all, the same provider answers in process: a source whose OAI base URL is
`file:///<path>/<name>.json` (a dataset file of one source, as `usage-stats generate`
writes for the demo) is harvested through `DatasetFileAdapter`, a `requests` transport that
hands each request to `Provider.respond` and returns its response, `responseDate` and
resumption tokens included, exactly as the HTTP server would.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import requests
from lxml import etree
from oai_repo import DataInterface, OAIRepository
from oai_repo.interfacedata import Identify, MetadataFormat, RecordHeader, Set

FORMATS = {
    "oai_dc": (
        "http://www.openarchives.org/OAI/2.0/oai_dc.xsd",
        "http://www.openarchives.org/OAI/2.0/oai_dc/",
    ),
    "oai_openaire": (
        "https://www.openaire.eu/schema/repo-lit/4.0/openaire.xsd",
        "http://namespace.openaire.eu/schema/oaire/",
    ),
    "dim": (
        "http://www.dspace.org/schema/dim.xsd",
        "http://www.dspace.org/xmlns/dspace/dim",
    ),
    "xoai": (
        "http://www.lyncode.com/schemas/xoai.xsd",
        "http://www.lyncode.com/xoai",
    ),
}
_DELETED = "deleted-record-placeholder"
_PARSER = etree.XMLParser(remove_blank_text=True)


def _parse_stamp(text: str) -> dt.datetime:
    if len(text) == 10:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


class RecordsInterface(DataInterface):
    """One source of a dataset, as oai-repo's DataInterface: records sorted by datestamp."""

    def __init__(self, source: dict, base_url: str, version: int) -> None:
        self.limit = int(source.get("page_size", 10))
        self.base_url = base_url
        self.version = version
        self.formats = list(source["formats"])
        self.granularity = source.get("granularity", "YYYY-MM-DDThh:mm:ssZ")
        self.sets = dict(source.get("sets", {}))
        records = sorted(source["records"], key=lambda r: (r["datestamp"], r["identifier"]))
        self.records = {r["identifier"]: r for r in records}
        self.order = [r["identifier"] for r in records]
        self.stamps = [_parse_stamp(r["datestamp"]) for r in records]
        earliest = source.get("earliest_datestamp") or (
            records[0]["datestamp"] if records else "2000-01-01T00:00:00Z"
        )
        self._identify = Identify(
            repository_name=source.get("name", "Test repository"),
            base_url=base_url,
            admin_email=["oai-admin@example.org"],
            earliest_datestamp=earliest,
            deleted_record="persistent",
            granularity=self.granularity,
            compression=[],
            description=[],
        )

    def get_identify(self) -> Identify:
        return self._identify

    def is_valid_identifier(self, identifier: str) -> bool:
        return identifier in self.records

    def get_metadata_formats(self, identifier: str | None = None) -> list[MetadataFormat]:
        prefixes = self.formats
        if identifier is not None:
            record = self.records[identifier]
            prefixes = self.formats if record.get("deleted") else list(record["metadata"])
        return [MetadataFormat(p, *FORMATS[p]) for p in prefixes if p in FORMATS]

    def get_record_header(self, identifier: str) -> RecordHeader:
        record = self.records[identifier]
        return RecordHeader(
            identifier=identifier,
            datestamp=record["datestamp"],
            setspecs=list(record.get("sets", [])),
        )

    def get_record_metadata(self, identifier: str, metadataprefix: str) -> etree._Element | None:
        record = self.records[identifier]
        if record.get("deleted"):
            return etree.Element(_DELETED)
        text = record["metadata"].get(metadataprefix)
        return None if text is None else etree.fromstring(text.encode(), _PARSER)

    def get_record_abouts(self, identifier: str) -> list:
        return []

    def list_set_specs(self, identifier: str | None = None, cursor: int = 0) -> tuple:
        if identifier is not None:
            return list(self.records[identifier].get("sets", [])), None, None
        return sorted(self.sets), None, None

    def get_set(self, setspec: str) -> Set | None:
        if setspec not in self.sets:
            return None
        return Set(spec=setspec, name=self.sets[setspec], description=[])

    def list_identifiers(
        self,
        metadataprefix: str,
        filter_from: dt.datetime | None = None,
        filter_until: dt.datetime | None = None,
        filter_set: str | None = None,
        cursor: int = 0,
    ) -> tuple:
        start = bisect.bisect_left(self.stamps, filter_from) if filter_from else 0
        end = bisect.bisect_right(self.stamps, filter_until) if filter_until else len(self.order)
        if filter_until is not None and self.granularity == "YYYY-MM-DD":
            end = bisect.bisect_right(self.stamps, filter_until + dt.timedelta(days=1, seconds=-1))
        matching = []
        for identifier in self.order[start:end]:
            record = self.records[identifier]
            if filter_set and not any(
                s == filter_set or s.startswith(filter_set + ":") for s in record.get("sets", [])
            ):
                continue
            if not record.get("deleted") and metadataprefix not in record["metadata"]:
                continue
            matching.append(identifier)
        # The dataset's version as the result's state: a replaced dataset invalidates tokens.
        return matching[cursor : cursor + self.limit], len(matching), self.version


def _mark_deleted(root: etree._Element) -> None:
    """Deleted records as OAI-PMH wants them: `status="deleted"` on the header, no metadata."""
    for metadata in root.iter("metadata"):
        if len(metadata) and metadata[0].tag == _DELETED:
            record = metadata.getparent()
            record.find("header").set("status", "deleted")
            record.remove(metadata)


class Provider:
    """Datasets by name, replaceable while serving (one lock; each request reads one version)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._datasets: dict[str, dict] = {}
        self._versions: dict[str, int] = {}
        self._interfaces: dict[tuple[str, str, str], RecordsInterface] = {}

    def put(self, name: str, dataset: dict) -> None:
        with self._lock:
            self._datasets[name] = dataset
            self._versions[name] = self._versions.get(name, 0) + 1
            self._interfaces = {k: v for k, v in self._interfaces.items() if k[0] != name}

    def delete(self, name: str) -> bool:
        with self._lock:
            self._interfaces = {k: v for k, v in self._interfaces.items() if k[0] != name}
            return self._datasets.pop(name, None) is not None

    def interface(self, name: str, source_key: str, base_url: str) -> RecordsInterface | None:
        with self._lock:
            key = (name, source_key, base_url)
            if key not in self._interfaces:
                source = self._datasets.get(name, {}).get("sources", {}).get(source_key)
                if source is None:
                    return None
                self._interfaces[key] = RecordsInterface(source, base_url, self._versions[name])
            return self._interfaces[key]

    def respond(
        self, name: str, source_key: str, base_url: str, args: dict[str, str]
    ) -> bytes | None:
        data = self.interface(name, source_key, base_url)
        if data is None:
            return None
        response = OAIRepository(data).process(dict(args))
        root = response.root()
        _mark_deleted(root)
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a harvest is many requests to one host
    provider: Provider

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def _send(
        self, status: int, body: bytes, content_type: str = "text/xml; charset=utf-8"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _oai(self, args: dict[str, str]) -> None:
        parts = urlsplit(self.path)
        segments = [unquote(s) for s in parts.path.split("/") if s]
        if len(segments) != 3 or segments[0] != "oai":
            self._send(404, b"not found: /oai/<dataset>/<source_key>\n", "text/plain")
            return
        host = self.headers.get("Host", "127.0.0.1")
        base_url = f"http://{host}{parts.path}"
        body = self.provider.respond(segments[1], segments[2], base_url, args)
        if body is None:
            self._send(
                404, f"no source {segments[2]} in dataset {segments[1]}\n".encode(), "text/plain"
            )
        else:
            self._send(200, body)

    def do_GET(self) -> None:  # noqa: N802
        if urlsplit(self.path).path == "/health":
            self._send(200, b"ok\n", "text/plain")
            return
        self._oai(dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True)))

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        form = self.rfile.read(length).decode()
        self._oai(dict(parse_qsl(form, keep_blank_values=True)))

    def do_PUT(self) -> None:  # noqa: N802
        segments = [s for s in urlsplit(self.path).path.split("/") if s]
        length = int(self.headers.get("Content-Length", 0))
        if len(segments) != 2 or segments[0] != "datasets":
            self._send(404, b"PUT /datasets/<name>\n", "text/plain")
            return
        try:
            dataset = json.loads(self.rfile.read(length))
            assert isinstance(dataset.get("sources"), dict)
        except Exception:
            self._send(400, b'a dataset is JSON: {"sources": {...}}\n', "text/plain")
            return
        self.provider.put(unquote(segments[1]), dataset)
        self._send(204, b"")

    def do_DELETE(self) -> None:  # noqa: N802
        segments = [s for s in urlsplit(self.path).path.split("/") if s]
        found = len(segments) == 2 and self.provider.delete(unquote(segments[1]))
        self._send(204 if found else 404, b"")


class DatasetFileAdapter(requests.adapters.BaseAdapter):
    """`file://` OAI base URLs: a dataset file of exactly one source, answered in process.

    The file is read again when it changes (its modification time), which, like replacing a
    dataset on the server, invalidates the resumption tokens handed out for the old one. A
    missing or unreadable file is an HTTP-like 404 / 500 response naming the file, which the
    harvester reports as it would a server's."""

    def __init__(self) -> None:
        super().__init__()
        self.provider = Provider()
        self._loaded: dict[str, tuple[float, str]] = {}  # path → (mtime, its source key)

    def _source_key(self, path: Path) -> str:
        mtime = path.stat().st_mtime
        known = self._loaded.get(str(path))
        if known is None or known[0] != mtime:
            dataset = json.loads(path.read_text())
            sources = list(dataset.get("sources", {}))
            if len(sources) != 1:
                raise ValueError(f"a dataset file holds exactly one source, {path} has {sources}")
            self.provider.put(str(path), dataset)
            known = self._loaded[str(path)] = (mtime, sources[0])
        return known[1]

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        parts = urlsplit(request.url or "")
        path = Path(unquote(parts.path))
        status, body = 200, b""
        try:
            source_key = self._source_key(path)
            args = dict(parse_qsl(parts.query, keep_blank_values=True))
            body = self.provider.respond(str(path), source_key, f"file://{path}", args) or b""
        except FileNotFoundError:
            status, body = 404, f"no dataset file {path}\n".encode()
        except (OSError, ValueError) as exc:
            status, body = 500, f"unreadable dataset file {path}: {exc}\n".encode()
        response = requests.Response()
        response.status_code = status
        response._content = body
        response.headers["Content-Type"] = "text/xml; charset=utf-8"
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


def write_source_dataset(path: Path, dataset: dict, source_key: str) -> str:
    """One source of `dataset` as a dataset file at `path`; returns its `file://` base URL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    single = {"sources": {source_key: dataset["sources"][source_key]}}
    text = json.dumps(single, sort_keys=True)
    # Unchanged content keeps its modification time (and the resumption tokens it handed out).
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path.resolve().as_uri()


def make_server(host: str, port: int, provider: Provider | None = None) -> ThreadingHTTPServer:
    """A server bound to (host, port) serving `provider` (port 0: any free port)."""
    handler = type("BoundHandler", (Handler,), {"provider": provider or Provider()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def demo_dataset(page_size: int = 10) -> dict:
    """The records of `usage-stats generate`'s default repositories (seed 42)."""
    from usage_stats.demo.oai_records import planted_records, provider_dataset
    from usage_stats.demo.synthetic import SyntheticConfig, build_sources, items_per_site

    config = SyntheticConfig()
    sources = build_sources(config.sites)
    records = planted_records(sources, items_per_site(config), config.seed)
    return provider_dataset(sources, records, page_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--records", type=Path, help="a dataset JSON file to serve as `demo`")
    parser.add_argument("--page-size", type=int, default=10)
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    provider = Provider()
    dataset = json.loads(args.records.read_text()) if args.records else demo_dataset(args.page_size)
    provider.put("demo", dataset)
    server = make_server(args.host, args.port, provider)
    server.verbose = args.verbose  # type: ignore[attr-defined]
    print(
        f"OAI-PMH test provider on http://{args.host}:{args.port}/oai/<dataset>/<source_key>",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
