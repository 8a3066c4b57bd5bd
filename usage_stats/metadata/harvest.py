"""Incremental OAI-PMH harvesting of a source's records (Sickle over requests + lxml).

One harvest of one source: `Identify` (the response date that the *next* harvest starts
from, and the date granularity), `ListMetadataFormats` (oai_dc, plus the richest format the
source offers: OpenAIRE v4, DSpace dim, DSpace xoai), then `ListRecords` per format and
configured set, following resumption tokens, with `from` = the last completed harvest's
response date. The records are returned whole or not at all: any error raises
`HarvestError` naming the source and the request, so nothing partial is ever stored and the
next run starts again from the same `from`.

Using the Identify response's date as the next `from` (rather than the last page's) means
a record changed while the harvest was running is harvested again next time instead of
being missed; seeing a record twice is harmless (an unchanged record is no change).

The client is polite: a delay between requests, `Retry-After` honoured on 503 (and 429),
bounded retries with exponential backoff on connection errors and 5xx, timeouts. A
response that is not well-formed XML is an error, never "recovered" into fewer records
(Sickle's own parser recovers silently, so responses are parsed here).

No Dagster here: the asset, the CLI and the benchmark call `harvest_source`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import requests
from lxml import etree
from sickle import Sickle, oaiexceptions
from sickle.iterator import OAIResponseIterator
from sickle.response import OAIResponse

log = logging.getLogger(__name__)

OAI_NS = "{http://www.openarchives.org/OAI/2.0/}"
# Richer formats in order of preference; oai_dc is always harvested beside the first offered.
RICH_FORMATS = ("oai_openaire", "dim", "xoai")
BASE_FORMAT = "oai_dc"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
# Sickle raises one exception class per OAI-PMH error code (none share a base class).
_OAI_ERRORS = tuple(
    c
    for c in vars(oaiexceptions).values()
    if isinstance(c, type) and issubclass(c, Exception) and c.__module__ == oaiexceptions.__name__
)


@dataclass(frozen=True)
class ClientSettings:
    """How the harvester treats a server: what a repository manager would call polite."""

    delay: float = 0.5  # seconds between two requests to one source
    timeout: float = 60.0  # seconds to connect and to wait for each read
    max_retries: int = 3  # further attempts of one request after a failure
    backoff: float = 2.0  # seconds before the first retry without Retry-After; doubles
    max_retry_after: float = 600.0  # a longer Retry-After fails the harvest instead
    user_agent: str = "usage-stats-harvester (OAI-PMH; +https://www.lareferencia.info)"


@dataclass(frozen=True)
class HarvestTarget:
    source_key: str
    site_id: int
    base_url: str
    sets: tuple[str, ...] = ()


class HarvestError(RuntimeError):
    """A harvest that could not complete; the message names the source and the request."""

    def __init__(self, source_key: str, url: str, problem: str) -> None:
        super().__init__(f"source {source_key}: {problem} (request: {url})")
        self.source_key = source_key
        self.url = url
        self.problem = problem


@dataclass
class HarvestedRecord:
    identifier: str
    datestamp: str
    deleted: bool
    sets: tuple[str, ...]
    metadata: dict[str, bytes] = field(default_factory=dict)  # prefix → <metadata> child


@dataclass
class SourceHarvest:
    target: HarvestTarget
    formats: tuple[str, ...]
    granularity: str
    since: str | None  # the `from` sent (None: everything)
    response_date: str  # the next harvest's `from`
    records: list[HarvestedRecord]
    requests: int


class _ParsedResponse(OAIResponse):
    """A response parsed once, strictly: Sickle re-parses `.xml` on every access, leniently."""

    def __init__(self, http_response: requests.Response, params: dict, xml: etree._Element):
        super().__init__(http_response, params)
        self._xml = xml

    @property
    def xml(self) -> etree._Element:
        return self._xml


def _with_query(url: str, params: dict[str, str]) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


def _retry_after(response: requests.Response) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class PoliteSickle(Sickle):
    """Sickle with the harvester's manners and strict parsing; every error names the request."""

    def __init__(
        self,
        target: HarvestTarget,
        settings: ClientSettings,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(target.base_url, iterator=OAIResponseIterator, max_retries=0)
        self.target = target
        self.settings = settings
        self.session = session or requests.Session()
        # A file:// base URL is a dataset file of the project's own data provider (the demo,
        # which runs with no server), answered in process; no server to be polite to.
        self.local = target.base_url.startswith("file://")
        if self.local:
            try:
                from usage_stats.demo.oai_server import DatasetFileAdapter
            except ImportError as exc:  # oai-repo is in the dev extra
                raise HarvestError(
                    target.source_key,
                    target.base_url,
                    f"a file:// OAI base URL is read by the demo's data provider, which needs "
                    f"the dev extra (pip install -e '.[dev]'): {exc}",
                ) from exc
            self.session.mount("file://", DatasetFileAdapter())
        self.session.headers["User-Agent"] = settings.user_agent
        self.sleep = sleep
        self.requests = 0
        self.last_url = target.base_url
        self._last_request_at: float | None = None

    def _fail(self, problem: str) -> HarvestError:
        return HarvestError(self.target.source_key, self.last_url, problem)

    def _wait_politely(self) -> None:
        if self.local:
            return
        if self._last_request_at is not None and self.settings.delay > 0:
            wait = self._last_request_at + self.settings.delay - time.monotonic()
            if wait > 0:
                self.sleep(wait)

    def harvest(self, **kwargs: str) -> _ParsedResponse:
        """One OAI request, retried within bounds; a parsed response or a HarvestError."""
        kwargs = {"verb": kwargs.pop("verb"), **kwargs}  # the verb first, as people read URLs
        # requests adds `params` to http(s) URLs only: a file:// request carries them itself.
        url, params = (_with_query(self.endpoint, kwargs), None) if self.local else (None, kwargs)
        self.last_url = (
            url or requests.Request("GET", self.endpoint, params=kwargs).prepare().url or ""
        )
        settings = self.settings
        for attempt in range(settings.max_retries + 1):
            last = attempt == settings.max_retries
            self._wait_politely()
            self._last_request_at = time.monotonic()
            self.requests += 1
            try:
                response = self.session.get(
                    url or self.endpoint,
                    params=params,
                    timeout=(settings.timeout, settings.timeout),
                )
            except requests.RequestException as exc:
                if last:
                    raise self._fail(
                        f"unreachable after {attempt + 1} attempt(s): {exc.__class__.__name__}: "
                        f"{exc}"
                    ) from exc
                self.sleep(settings.backoff * 2**attempt)
                continue
            status = response.status_code
            if status in (429, 503) or status >= 500:
                wait = _retry_after(response) if status in (429, 503) else None
                if wait is not None and wait > settings.max_retry_after:
                    raise self._fail(
                        f"HTTP {status} with Retry-After {wait:.0f} s, longer than the "
                        f"{settings.max_retry_after:.0f} s allowed"
                    )
                if last:
                    raise self._fail(f"HTTP {status} after {attempt + 1} attempt(s)")
                wait = settings.backoff * 2**attempt if wait is None else wait
                log.warning(
                    "%s: HTTP %s, retrying in %.1f s: %s",
                    self.target.source_key,
                    status,
                    wait,
                    self.last_url,
                )
                self.sleep(wait)
                continue
            if status >= 400:
                raise self._fail(f"HTTP {status}")
            try:
                xml = etree.fromstring(response.content, _PARSER)
            except etree.XMLSyntaxError as exc:
                raise self._fail(f"the response is not well-formed XML: {exc}") from exc
            if xml.tag != f"{OAI_NS}OAI-PMH":
                raise self._fail(f"the response is not OAI-PMH (root element {xml.tag})")
            return _ParsedResponse(response, kwargs, xml)
        raise AssertionError("unreachable")  # pragma: no cover

    def pages(self, **params: str) -> Iterator[etree._Element]:
        """The responses of a list request, following resumption tokens; OAI errors raised as
        HarvestError, except noRecordsMatch, which is an empty list."""
        try:
            iterator = OAIResponseIterator(self, params)
            for response in iterator:
                yield response.xml
        except oaiexceptions.NoRecordsMatch:
            return
        except _OAI_ERRORS as exc:
            code = exc.__class__.__name__
            code = code[0].lower() + code[1:]
            raise self._fail(f"OAI-PMH error {code}: {exc}".rstrip(": ")) from exc


def _text(element: etree._Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def choose_formats(offered: list[str]) -> tuple[str, ...]:
    """oai_dc (when offered) and the richest other format offered."""
    chosen = [BASE_FORMAT] if BASE_FORMAT in offered else []
    rich = next((f for f in RICH_FORMATS if f in offered), None)
    if rich:
        chosen.append(rich)
    return tuple(chosen)


def _from_value(since: str, granularity: str) -> str:
    """`since` in the source's granularity (a day-granular source refuses a time)."""
    return since[:10] if granularity == "YYYY-MM-DD" else since


def harvest_source(
    target: HarvestTarget,
    since: str | None = None,
    settings: ClientSettings | None = None,
    session: requests.Session | None = None,
    progress: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SourceHarvest:
    """Every record changed since `since` (None: every record), in each chosen format."""
    settings = settings or ClientSettings()
    client = PoliteSickle(target, settings, session, sleep)
    identify = client.harvest(verb="Identify").xml
    response_date = _text(identify.find(f"{OAI_NS}responseDate"))
    if identify.find(f".//{OAI_NS}error") is not None:
        raise client._fail(
            f"Identify answered an error: {_text(identify.find(f'.//{OAI_NS}error'))}"
        )
    if not response_date:
        raise client._fail("the Identify response has no responseDate")
    granularity = _text(identify.find(f".//{OAI_NS}granularity")) or "YYYY-MM-DD"
    offered = [
        _text(e.find(f"{OAI_NS}metadataPrefix"))
        for page in client.pages(verb="ListMetadataFormats")
        for e in page.iter(f"{OAI_NS}metadataFormat")
    ]
    formats = choose_formats(offered)
    if not formats:
        raise client._fail(
            f"offers none of the formats read here ({', '.join((BASE_FORMAT, *RICH_FORMATS))}); "
            f"it offers {', '.join(offered) or 'none'}"
        )
    records: dict[str, HarvestedRecord] = {}
    for prefix in formats:
        for spec in target.sets or (None,):
            params = {"verb": "ListRecords", "metadataPrefix": prefix}
            if since:
                params["from"] = _from_value(since, granularity)
            if spec:
                params["set"] = spec
            for page in client.pages(**params):
                n = _read_page(page, prefix, records)
                if progress:
                    progress(
                        f"{target.source_key}: {prefix}{' set ' + spec if spec else ''}: "
                        f"{n} record(s), {len(records)} distinct so far"
                    )
    return SourceHarvest(
        target,
        formats,
        granularity,
        since,
        response_date,
        list(records.values()),
        client.requests,
    )


def _read_page(page: etree._Element, prefix: str, records: dict[str, HarvestedRecord]) -> int:
    """Add a page's records; a record seen again (another format, another set, or changed
    during the harvest) keeps its newest header and every format's metadata."""
    n = 0
    for record in page.iter(f"{OAI_NS}record"):
        header = record.find(f"{OAI_NS}header")
        if header is None:
            continue
        identifier = _text(header.find(f"{OAI_NS}identifier"))
        if not identifier:
            continue
        n += 1
        datestamp = _text(header.find(f"{OAI_NS}datestamp"))
        deleted = header.get("status") == "deleted"
        sets = tuple(_text(s) for s in header.iterfind(f"{OAI_NS}setSpec"))
        metadata = record.find(f"{OAI_NS}metadata")
        payload = None
        if not deleted and metadata is not None and len(metadata):
            payload = etree.tostring(metadata[0])
        seen = records.get(identifier)
        if seen is None:
            seen = records[identifier] = HarvestedRecord(identifier, datestamp, deleted, sets)
        elif datestamp > seen.datestamp:
            seen.datestamp, seen.deleted = datestamp, deleted
            seen.sets = tuple(dict.fromkeys((*sets, *seen.sets)))
            if deleted:
                seen.metadata.clear()
        else:
            seen.sets = tuple(dict.fromkeys((*seen.sets, *sets)))
        if payload is not None and not seen.deleted:
            seen.metadata[prefix] = payload
    return n
