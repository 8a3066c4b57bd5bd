"""COUNTER R5.1 SUSHI under `/r51/`: status, members, reports, PR, PR_P1, IR, IR_A1.

A customer (admin DB) is an institution that may fetch the usage of the items of its sites
(repositories); PR is the platform total of those items, IR the same usage per item, so PR
totals equal the sum of IR totals by construction. Usage is counted on every site (the
repository itself, the national node and the portal).

Exceptions are those of the Code of Practice, Appendix D, Table D.1, with its HTTP statuses: a
request that cannot be served gets one Exception as the body (1000 and 1010 503, 1020 429,
1030 and 3020 400, 2000 and 2020 401, 2010 and 2011 403); when several apply, the lowest code
wins, as Appendix D prefers. Conditions under which a report can still be delivered are listed
in its header with HTTP 200 (3030, 3031, 3032, 3050, 3060, 3062, 3063). Every rule is a line in
`_report_request` / `_authenticate` / `_period`, so a reader can check them against Table D.1.

A month is "available" for a customer once every day from the first processed day of its sites
to the month's end has been processed (admin DB processing status): `/r51/reports` announces
exactly those months, and a report returns usage for exactly those, naming the others in 3031
(not processed yet) or 3032 (before the first processed month). Usage of a month still being
processed is never returned, so a harvester cannot store a partial month as final.

Item reports describe each item by its harvested record (`StatsStore.item_metadata`): title,
authors, dates, version, publisher, identifiers, and the COUNTER Data_Type, YOP and Access_Type
the vocabularies map its resource type, year and access rights to (`_item_rows`). Access_Type
is the item's on the day of use, so an embargo ending inside the period splits its usage. An
item without a record is Unspecified, YOP 0001, Open; IR_A1 (journal articles) leaves it out.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Annotated, NamedTuple

import orjson
import polars as pl
import pycountry
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from usage_stats.admin.db import AdminDbError, ensure_current
from usage_stats.admin.sushi import (
    Customer,
    get_customer,
    hash_api_key,
    list_customers,
    verify_api_key,
)
from usage_stats.metadata.vocabularies import (
    ARTICLE_VERSIONS,
    COUNTER_ITEM_DATA_TYPES,
    EMBARGOED_ACCESS,
    counter_access_type,
    counter_data_type,
)
from usage_stats.pipeline.identifiers import normalize_identifier
from usage_stats.pipeline.metrics import METRICS
from usage_stats.storage.store import StatsStoreError
from usage_stats.web.common import WebContext, today

logger = logging.getLogger("usage_stats.web.sushi")
router = APIRouter(prefix="/r51", tags=["COUNTER SUSHI R5.1"])

# --- Exceptions (Code of Practice, Appendix D, Table D.1) --------------------------------------

MESSAGES = {
    1000: "Service Not Available",
    1020: "Client has made too many requests",
    1030: "Insufficient Information to Process Request",
    2000: "Requestor Not Authorized to Access Service",
    2010: "Requestor is Not Authorized to Access Usage for Institution",
    2011: "Global Reports Not Supported",
    2020: "APIKey Invalid",
    3020: "Invalid Date Arguments",
    3030: "No Usage Available for Requested Dates",
    3031: "Usage Not Ready for Requested Dates",
    3032: "Usage No Longer Available for Requested Dates",
    3050: "Parameter Not Recognized in this Context",
    3060: "Invalid ReportFilter Value",
    3062: "Invalid ReportAttribute Value",
    3063: "Components Not Supported",
}
# Codes answered instead of a report, with Table D.1's HTTP status; all others go in a header.
STATUS = {1000: 503, 1020: 429, 1030: 400, 2000: 401, 2010: 403, 2011: 403, 2020: 401, 3020: 400}
GLOBAL_CUSTOMER = "0000000000000000"
# A date before this is a logic error (3020), not a request for old usage (3032): usage
# statistics predate neither the web nor COUNTER (Release 1, 2003) by this much, and it keeps
# month arithmetic far from year 1.
EARLIEST_MONTH = dt.date(2000, 1, 1)


class SushiError(Exception):
    """A request answered with a single Exception and a non-200 status instead of a report."""

    def __init__(self, code: int, data: str, retry_after: int | None = None) -> None:
        super().__init__(data)
        self.code = code
        self.data = data
        self.retry_after = retry_after


def exception(code: int, data: str | None = None) -> dict:
    out: dict = {"Code": code, "Message": MESSAGES[code]}
    if data:
        out["Data"] = data
    return out


def sushi_error_response(exc: SushiError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return JSONResponse(
        exception(exc.code, exc.data), status_code=STATUS.get(exc.code, 400), headers=headers
    )


def _printable(text: str, limit: int = 40) -> str:
    """User text echoed in an Exception's Data: bounded, no control characters."""
    return re.sub(r"[\x00-\x1f\x7f]", "?", text[:limit])


# --- Too many failed authentications (Exception 1020) -----------------------------------------


@dataclass
class FailedAuthLimiter:
    """Failed authentications per client address in a sliding window.

    A client that failed `limit` times within `window_seconds` gets Exception 1020 (HTTP 429)
    for every SUSHI request, correct credentials included, until its oldest failure leaves the
    window: otherwise a key could be guessed between valid requests. Failures are unknown
    customer_id (2010), unknown or wrong requestor_id (2000, 2010) and wrong api_key (2020);
    missing parameters and outages are not. At most `max_clients` addresses are remembered
    (the least recently failing are forgotten first), so a flood of addresses cannot exhaust
    memory. `limit` 0 turns the limit off."""

    limit: int = 10
    window_seconds: float = 900.0
    max_clients: int = 100_000
    clock: Callable[[], float] = time.monotonic
    _failures: OrderedDict[str, deque[float]] = field(
        default_factory=OrderedDict, repr=False, compare=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FailedAuthLimiter:
        env = os.environ if env is None else env
        values = {}
        for name, key, kind in (
            ("USAGE_STATS_SUSHI_AUTH_FAILURES", "limit", int),
            ("USAGE_STATS_SUSHI_AUTH_WINDOW_SECONDS", "window_seconds", float),
        ):
            raw = (env.get(name) or "").strip()
            if raw:
                try:
                    values[key] = kind(raw)
                except ValueError:
                    raise ValueError(f"{name} must be a number, got {raw!r}") from None
                if values[key] < 0:
                    raise ValueError(f"{name} must not be negative, got {raw!r}")
        return cls(**values)

    def _recent(self, client: str, now: float) -> deque[float] | None:
        failures = self._failures.get(client)
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        if failures is not None and not failures:
            del self._failures[client]
            return None
        return failures

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None when it is not blocked."""
        if self.limit <= 0:
            return None
        with self._lock:
            now = self.clock()
            failures = self._recent(client, now)
            if failures is None or len(failures) < self.limit:
                return None
            return max(1, int(failures[-self.limit] + self.window_seconds - now + 0.999))

    def record(self, client: str) -> None:
        if self.limit <= 0:
            return
        with self._lock:
            now = self.clock()
            failures = self._recent(client, now)
            if failures is None:
                failures = self._failures[client] = deque(maxlen=self.limit)
            failures.append(now)
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def explain(self, retry_after: int) -> str:
        return (
            f"This server allows {self.limit} failed authentications (unknown customer_id or "
            f"requestor_id, invalid api_key) per client address within "
            f"{self.window_seconds:g} seconds; retry after {retry_after} seconds."
        )


class KeyChecker:
    """API key checks that cost the same for every refusal and cannot exhaust the CPU.

    A key is checked against its scrypt hash (`admin.sushi.verify_api_key`, ~80 ms of CPU by
    design, so that a stolen admin DB does not give keys away). Three things keep that cost
    from becoming a weapon:

    - an unknown or inactive customer is checked against `DUMMY_HASH`, so refusing it takes
      as long as refusing a known one with a wrong key: timing does not tell which
      customer_ids exist;
    - keys are checked at most `per_second` per process (a token bucket of `burst`), one at a
      time; a request that cannot get a turn within `wait_seconds` gets Exception 1020, so a
      flood of wrong keys from many addresses costs at most `per_second` × 80 ms of CPU a
      second and the widgets keep the rest;
    - a key that passed is remembered for `remember_seconds` (as an HMAC of the stored hash
      and the key under a per-process secret: the memory holds no usable key), so a
      harvester's next requests skip the hash.
    """

    def __init__(
        self,
        per_second: float = 5.0,
        burst: float = 5.0,
        wait_seconds: float = 2.0,
        remember_seconds: float = 300.0,
        max_remembered: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.burst = max(1.0, burst)
        self.wait_seconds = wait_seconds
        self.remember_seconds = remember_seconds
        self.max_remembered = max_remembered
        self.clock = clock
        self._secret = secrets.token_bytes(32)
        self._passed: OrderedDict[bytes, float] = OrderedDict()
        self._tokens = self.burst
        self._refilled = clock()
        self._lock = threading.Lock()
        self._hashing = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KeyChecker:
        env = os.environ if env is None else env
        raw = (env.get("USAGE_STATS_SUSHI_KEY_CHECKS_PER_SECOND") or "").strip()
        if not raw:
            return cls()
        try:
            rate = float(raw)
        except ValueError:
            raise ValueError(
                f"USAGE_STATS_SUSHI_KEY_CHECKS_PER_SECOND must be a number, got {raw!r}"
            ) from None
        if rate <= 0:
            raise ValueError(f"USAGE_STATS_SUSHI_KEY_CHECKS_PER_SECOND must be > 0, got {raw!r}")
        return cls(per_second=rate, burst=max(1.0, rate))

    def _mark(self, api_key: str, stored: str) -> bytes:
        message = stored.encode() + b"\0" + api_key.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def _take(self) -> bool:
        """A turn of the token bucket, waiting up to `wait_seconds` for one."""
        deadline = self.clock() + self.wait_seconds
        while True:
            with self._lock:
                now = self.clock()
                self._tokens = min(
                    self.burst, self._tokens + (now - self._refilled) * self.per_second
                )
                self._refilled = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return True
                wait = (1 - self._tokens) / self.per_second
            if now + wait > deadline:
                return False
            time.sleep(wait)

    def check(self, api_key: str, stored: str | None) -> bool | None:
        """True: the key matches `stored` (None: no such customer, checked against the dummy
        and always False); False: it does not; None: no turn to check it now (Exception
        1020)."""
        target = stored or DUMMY_HASH
        mark = self._mark(api_key, target)
        with self._lock:
            seen = self._passed.get(mark)
            if seen is not None and self.clock() - seen <= self.remember_seconds:
                return stored is not None
        if not self._take():
            return None
        with self._hashing:
            ok = verify_api_key(api_key, target)
        if ok and stored is not None:
            with self._lock:
                self._passed[mark] = self.clock()
                self._passed.move_to_end(mark)
                while len(self._passed) > self.max_remembered:
                    self._passed.popitem(last=False)
            return True
        return False


# A hash of a random key nobody knows, with the parameters of real ones: checking a key
# against it costs what checking a real customer's does.
DUMMY_HASH = hash_api_key(secrets.token_urlsafe(24))


def _client(request: Request) -> str:
    """The peer address; behind a reverse proxy, uvicorn's proxy headers set it (its
    `--forwarded-allow-ips`), so every harvester does not share the proxy's address."""
    return request.client.host if request.client else "unknown"


def _limiter(request: Request) -> FailedAuthLimiter:
    return request.app.state.sushi_limiter


def _checker(request: Request) -> KeyChecker:
    return request.app.state.sushi_key_checker


# --- Authentication ---------------------------------------------------------------------------


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx


def _authenticate(ctx: WebContext, request: Request, required: tuple[str, ...] = ()) -> Customer:
    """Appendix D's authorisation exceptions, lowest code first: 1020 (blocked client), 1030
    (customer_id, api_key or a `required` parameter missing), 2011 (the global customer),
    2010 (customer unknown or inactive, or a requestor_id of another customer), 1030 (this
    customer's requestor_id missing), 2000 (requestor_id unknown), 2020 (api_key wrong)."""
    limiter = _limiter(request)
    client = _client(request)
    wait = limiter.retry_after(client)
    if wait is not None:
        raise SushiError(1020, limiter.explain(wait), retry_after=wait)
    q = request.query_params
    customer_id = (q.get("customer_id") or "").strip()
    api_key = q.get("api_key") or ""
    missing = [p for p in ("customer_id", "api_key", *required) if not (q.get(p) or "").strip()]
    if missing:
        raise SushiError(1030, f"{', '.join(missing)} required")
    if customer_id == GLOBAL_CUSTOMER:
        raise SushiError(
            2011, "this server reports usage to customers, not global reports to The World"
        )

    def refuse(code: int, data: str) -> SushiError:
        limiter.record(client)
        return SushiError(code, data)

    customer = get_customer(ctx.admin_db_url, customer_id) if len(customer_id) <= 100 else None
    if customer is not None and not customer.active:
        customer = None
    # The key is checked first, whatever the customer: an unknown customer_id is refused after
    # the same work as a wrong key (KeyChecker), so timing does not reveal which exist.
    key_ok = _checker(request).check(api_key, customer.api_key_hash if customer else None)
    if key_ok is None:
        raise SushiError(
            1020,
            "too many API key checks at this moment; retry after 1 second",
            retry_after=1,
        )
    if customer is None:
        raise refuse(2010, "customer_id is not known or not active")
    requestor_id = (q.get("requestor_id") or "").strip()
    if customer.requestor_id and requestor_id != customer.requestor_id:
        if not requestor_id:
            raise SushiError(1030, "requestor_id required for this customer_id")
        others = {c.requestor_id for c in list_customers(ctx.admin_db_url) if c.requestor_id}
        if requestor_id in others:
            raise refuse(2010, "requestor_id is not authorised for this customer_id")
        raise refuse(2000, "requestor_id is not known")
    if not key_ok:
        raise refuse(2020, "api_key is not valid for this customer_id")
    return customer


def _guarded(build: Callable[[], Response]) -> Response:
    """Every SUSHI answer is a COUNTER body: refusals as their Exception, an unreachable stats
    store or admin DB as Exception 1000 (HTTP 503, Table D.1). Anything else is a bug: logged
    with its traceback and answered as Exception 1000 with HTTP 500, so it stays visible."""
    try:
        return build()
    except SushiError as exc:
        return sushi_error_response(exc)
    except StatsStoreError as exc:
        logger.error("SUSHI: stats store unavailable: %s", exc)
        return sushi_error_response(SushiError(1000, "the usage store cannot be reached"))
    except (AdminDbError, SQLAlchemyError) as exc:
        logger.error("SUSHI: admin DB unavailable: %s", exc)
        return sushi_error_response(SushiError(1000, "the customer database cannot be reached"))
    except Exception:
        logger.exception("SUSHI: unexpected error")
        return JSONResponse(exception(1000, "internal error"), status_code=500)


# --- Months -----------------------------------------------------------------------------------


def _index(day: dt.date) -> int:
    """A month as one integer, so ranges up to year 9999 are arithmetic, not lists."""
    return day.year * 12 + day.month - 1


def _first_day(index: int) -> dt.date:
    return dt.date(index // 12, index % 12 + 1, 1)


def _last_day(index: int) -> dt.date:
    year, month = divmod(index, 12)
    return dt.date(year, month + 1, calendar.monthrange(year, month + 1)[1])


def month_label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _ranges(first: int, last: int) -> str:
    return month_label(first) if first == last else f"{month_label(first)} to {month_label(last)}"


_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})(?:-([0-9]{2}))?")


def _parse_month(text: str, parameter: str) -> int:
    """`yyyy-mm` or `yyyy-mm-dd` (the day must exist; the month is what counts)."""
    text = text.strip()
    match = _MONTH.fullmatch(text)
    try:
        if not match:
            raise ValueError
        year, month, day = int(match[1]), int(match[2]), int(match[3] or 1)
        dt.date(year, month, day)
    except ValueError:
        raise SushiError(
            3020, f"{parameter} must be yyyy-mm or yyyy-mm-dd, got {_printable(text)!r}"
        ) from None
    if dt.date(year, month, 1) < EARLIEST_MONTH:
        raise SushiError(3020, f"{parameter} {_printable(text)} is before {EARLIEST_MONTH:%Y-%m}")
    return year * 12 + month - 1


@dataclass(frozen=True)
class Availability:
    """The customer's months that are processed and available: [first, last] (month indices);
    `first` is None when none of its sites was ever processed, last < first when no month is
    complete yet."""

    first: int | None
    last: int | None

    def months(self) -> tuple[str, str]:
        """First_Month_Available and Last_Month_Available of `/r51/reports`; with nothing
        available yet an empty range (the last before the first), as the schema needs both."""
        current = _index(today())
        first = self.first if self.first is not None else current
        last = self.last if self.last is not None and self.last >= first else first - 1
        return month_label(first), month_label(last)


def _availability(ctx: WebContext, customer: Customer) -> Availability:
    firsts = [ctx.first_processed(s) for s in customer.site_ids]
    completes = [ctx.complete_through(s) for s in customer.site_ids]
    if not firsts or any(f is None for f in firsts) or any(c is None for c in completes):
        return Availability(None, None)
    first = _index(max(f for f in firsts if f is not None))
    complete = min(c for c in completes if c is not None)
    last = _index(complete) if complete == _last_day(_index(complete)) else _index(complete) - 1
    return Availability(first, last)


@dataclass(frozen=True)
class Period:
    """The months a report covers (Begin_Date/End_Date) and the exceptions about the others."""

    first: int
    last: int
    ready: tuple[int, int] | None
    exceptions: tuple[dict, ...]


def _period(requested_first: int, requested_last: int, available: Availability) -> Period:
    """3020 for a begin in the current month or later; months before the first available are
    3032, months after the last available (unprocessed, current or future) 3031; only the
    remaining months are queried, and Begin_Date/End_Date are narrowed to them (Table 3.f's
    example: a 3031 with the period ending at the last available month). With no month left,
    the requested period is kept, its end at most the previous month (3031's note)."""
    current = _index(today())
    if requested_first >= current:
        raise SushiError(3020, "begin_date is the current or a future month")
    if requested_last < requested_first:
        raise SushiError(3020, "end_date is before begin_date")
    exceptions = []
    first, last = requested_first, min(requested_last, current - 1)
    if available.first is not None and requested_first < available.first:
        exceptions.append(
            exception(
                3032,
                f"usage is available from {month_label(available.first)}; not for "
                f"{_ranges(requested_first, min(requested_last, available.first - 1))}",
            )
        )
        first = max(first, available.first)
    ready_last = available.last if available.first is not None else None
    unready_from = max(requested_first, (ready_last + 1) if ready_last is not None else 0)
    if available.first is not None:
        unready_from = max(unready_from, available.first)
    if unready_from <= requested_last:
        exceptions.append(exception(3031, _ranges(unready_from, requested_last)))
    ready_end = min(last, ready_last) if ready_last is not None else first - 1
    if first <= ready_end:
        return Period(first, ready_end, (first, ready_end), tuple(exceptions))
    return Period(requested_first, last, None, tuple(exceptions))


# --- Reports ----------------------------------------------------------------------------------

METRIC_COLUMNS = {
    "Total_Item_Investigations": "total_item_investigations",
    "Total_Item_Requests": "total_item_requests",
    "Unique_Item_Investigations": "unique_item_investigations",
    "Unique_Item_Requests": "unique_item_requests",
}
REQUESTS = ("Total_Item_Requests", "Unique_Item_Requests")
# What an item's harvested record does not say (and what the platform report, which is not split
# by item, shows): no item type is Unspecified, an unknown year of publication is 0001 (COUNTER);
# without an access right the item is Open, as a repository's items are open to everyone unless
# its record says otherwise. There is no text and data mining channel: every use is Regular.
DATA_TYPE = "Unspecified"
ACCESS_METHOD = "Regular"
ACCESS_TYPE = "Open"
YOP_UNKNOWN = "0001"
# Item-level elements of IR (Attributes_To_Show; always in IR_A1): shown beside Item, not in
# Attribute_Performance.
ITEM_ELEMENTS = ("Authors", "Publication_Date", "Article_Version")
IR_DATA_TYPES = tuple(sorted(COUNTER_ITEM_DATA_TYPES))
MAX_AUTHORS = 3  # the specification's Authors holds at most three
# The Code of Practice's value lists (COUNTER_SUSHI API enums), to tell a value we do not
# support (3060) from one we apply.
PR_DATA_TYPES = (
    "Article", "Audiovisual", "Book", "Book_Segment", "Conference", "Conference_Item",
    "Database_Full_Item", "Dataset", "Image", "Interactive_Resource", "Journal", "Multimedia",
    "News_Item", "Newspaper_or_Newsletter", "Other", "Patent", "Platform", "Reference_Item",
    "Reference_Work", "Report", "Software", "Sound", "Standard", "Thesis_or_Dissertation",
    "Unspecified",
)  # fmt: skip
ACCESS_METHODS = ("Regular", "TDM")
ACCESS_TYPES = ("Controlled", "Open", "Free_To_Read")
COUNTRIES = {c.alpha_2: c.name for c in pycountry.countries}  # ISO 3166-1: Country_Code, _Name
COMMON = ("customer_id", "requestor_id", "api_key", "platform", "begin_date", "end_date", "format")
EXTENSION_FILTERS = ("attributed", "country_code", "subdivision_code")


@dataclass(frozen=True)
class ReportSpec:
    path: str
    report_id: str
    name: str
    description: str
    params: frozenset[str]
    # attributes_to_show values we support, in the tabular column order of the Code of Practice
    attributes: tuple[str, ...] = ()
    item_report: bool = False
    standard_view: bool = False


REPORTS = {
    spec.path: spec
    for spec in (
        ReportSpec(
            "pr",
            "PR",
            "Platform Report",
            "Platform-level usage of the customer's repositories, every level.",
            frozenset(
                (*COMMON, "metric_type", "data_type", "access_method", "attributes_to_show")
                + ("granularity", "exclude_monthly_details", *EXTENSION_FILTERS)
            ),
            ("Access_Method", "Country_Name", "Country_Code"),
        ),
        ReportSpec(
            "pr_p1",
            "PR_P1",
            "Platform Usage",
            "Standard View of PR: requests of the customer's repositories.",
            frozenset(COMMON),
            standard_view=True,
        ),
        ReportSpec(
            "ir",
            "IR",
            "Item Report",
            "Usage of each item of the customer's repositories.",
            frozenset(
                (*COMMON, "metric_type", "data_type", "access_method", "access_type", "yop")
                + ("attributes_to_show", "granularity", "include_parent_details")
                + ("include_component_details", "item_id", "author", "exclude_monthly_details")
                + EXTENSION_FILTERS
            ),
            (*ITEM_ELEMENTS, "YOP", "Access_Type", "Access_Method", "Country_Name", "Country_Code"),
            item_report=True,
        ),
        ReportSpec(
            "ir_a1",
            "IR_A1",
            "Journal Article Requests",
            "Standard View of IR: requests of the journal articles (harvested records whose "
            "type is a journal article, Data_Type Article).",
            frozenset(COMMON),
            item_report=True,
            standard_view=True,
        ),
    )
}


@dataclass
class ReportRequest:
    """A report request once parsed: what is applied, and the 3050/3060/3062/3063 exceptions
    for what is not (each ignored, as Appendix D asks, and the report still delivered)."""

    spec: ReportSpec
    tabular: bool
    metrics: list[str]
    filters: dict = field(default_factory=dict)  # applied Report_Filters besides the dates
    attributes: list[str] = field(default_factory=list)
    granularity: str = "Month"
    parent_details: bool = False
    exclude_monthly: bool = False
    item_key: str | None = None
    country: str | None = None
    excluded: bool = False  # an applied filter no usage of ours can pass
    exceptions: list[dict] = field(default_factory=list)


def _values(raw: str | None) -> list[str]:
    out: list[str] = []
    for value in (raw or "").split("|"):
        value = value.strip()
        if value and value not in out:
            out.append(value)
    return out


def _canonical(value: str, allowed: tuple[str, ...]) -> str | None:
    return next((a for a in allowed if a.lower() == value.lower()), None)


def _boolean(raw: str | None) -> bool | None:
    """COUNTER's True/False (case-insensitive); None for anything else."""
    text = (raw or "").strip().lower()
    return {"true": True, "false": False}.get(text)


def _report_request(request: Request, spec: ReportSpec) -> ReportRequest:
    q = request.query_params
    fmt = (q.get("format") or "json").strip().lower()
    parsed = ReportRequest(spec, fmt == "tsv", list(METRIC_COLUMNS))
    bad_filters: list[str] = []
    bad_attributes: list[str] = []
    unknown = sorted(p for p in q if p not in spec.params)
    if fmt not in ("json", "tsv"):
        unknown.append(f"format={_printable(fmt)} (json or tsv)")
    tabular_only = "exclude_monthly_details"
    if not parsed.tabular and tabular_only in q and tabular_only in spec.params:
        unknown.append(f"{tabular_only} (tabular reports; JSON has granularity)")
    if unknown:
        names = ", ".join(_printable(u, 60) for u in unknown[:20])
        parsed.exceptions.append(exception(3050, names))
    if spec.standard_view:
        parsed.metrics = list(REQUESTS)
        return parsed

    def given(name: str) -> bool:
        return name in spec.params and name in q

    if given("metric_type"):
        values = _values(q["metric_type"])
        asked = {v.lower() for v in values}
        supported = [m for m in METRIC_COLUMNS if m.lower() in asked]
        bad_filters += [
            f"metric_type={_printable(v)}"
            for v in values
            if not _canonical(v, tuple(METRIC_COLUMNS))
        ]
        if supported:
            parsed.metrics = supported
            parsed.filters["Metric_Type"] = supported
    if given("data_type"):
        # IR: any item Data_Type, applied to each item's (from its harvested record). PR is
        # not split by item, so its one Data_Type is Unspecified.
        values = _values(q["data_type"])
        allowed = IR_DATA_TYPES if spec.item_report else (DATA_TYPE,)
        why = "not an item Data_Type" if spec.item_report else "the platform is not split by type"
        applied = [c for c in allowed if c.lower() in {v.lower() for v in values}]
        bad_filters += [
            f"data_type={_printable(v)}" + (f" ({why})" if _canonical(v, PR_DATA_TYPES) else "")
            for v in values
            if not _canonical(v, allowed)
        ]
        if applied:
            parsed.filters["Data_Type"] = applied
    for name, label, allowed, ours in (
        ("access_type", "Access_Type", ACCESS_TYPES, ACCESS_TYPE),
        ("access_method", "Access_Method", ACCESS_METHODS, ACCESS_METHOD),
    ):
        if given(name):
            values = _values(q[name])
            asked = {v.lower() for v in values}
            applied = [c for c in allowed if c.lower() in asked]
            bad_filters += [f"{name}={_printable(v)}" for v in values if not _canonical(v, allowed)]
            if applied:
                parsed.filters[label] = applied
                # Access_Type is an item's, applied to its rows by the report builder.
                parsed.excluded |= name == "access_method" and ours not in applied
    if given("yop"):
        ranges = []
        for value in _values(q["yop"]):
            match = re.fullmatch(r"([0-9]{4})(?:-([0-9]{4}))?", value)
            if not match or (match[2] and match[2] < match[1]):
                bad_filters.append(f"yop={_printable(value)}")
            else:
                ranges.append(value)
        if ranges:
            parsed.filters["YOP"] = ranges  # applied to each item's YOP by the report builder
    if given("item_id"):
        raw = q["item_id"].strip()
        key = normalize_identifier(raw) if raw and len(raw) <= 1000 and "\x00" not in raw else None
        if key:
            parsed.item_key = key
            parsed.filters["Item_ID"] = key if len(key) >= 2 else f"id:{key}"
        else:
            bad_filters.append(f"item_id={_printable(raw)}")
    if given("author"):
        bad_filters.append(f"author={_printable(q['author'])} (authors are not known here)")
    if given("country_code"):
        values = _values(q["country_code"])
        code = values[0].upper() if len(values) == 1 else ""
        if code in COUNTRIES:
            parsed.country = code
            parsed.filters["Country_Code"] = code
        else:
            bad_filters.append(f"country_code={_printable(q['country_code'])} (one ISO code)")
    for name in ("attributed", "subdivision_code"):
        if given(name):
            bad_filters.append(f"{name}={_printable(q[name])} (not supported)")
    if given("attributes_to_show"):
        chosen = set()
        for value in _values(q["attributes_to_show"]):
            canonical = _canonical(value, spec.attributes)
            if canonical:
                chosen.add(canonical)
            else:
                bad_attributes.append(f"attributes_to_show={_printable(value)}")
        parsed.attributes = [a for a in spec.attributes if a in chosen]
    if given("granularity"):
        granularity = _canonical(q["granularity"].strip(), ("Month", "Total"))
        if granularity:
            parsed.granularity = granularity
        else:
            bad_attributes.append(f"granularity={_printable(q['granularity'])}")
    if given("include_parent_details"):
        value = _boolean(q["include_parent_details"])
        if value is None:
            bad_attributes.append(
                f"include_parent_details={_printable(q['include_parent_details'])}"
            )
        parsed.parent_details = bool(value)
    if given("include_component_details"):
        value = _boolean(q["include_component_details"])
        if value:
            parsed.exceptions.append(exception(3063, "include_component_details=True"))
        elif value is None:
            bad_attributes.append(
                f"include_component_details={_printable(q['include_component_details'])}"
            )
    if parsed.tabular and given("exclude_monthly_details"):
        value = _boolean(q["exclude_monthly_details"])
        if value is None:
            bad_attributes.append(
                f"exclude_monthly_details={_printable(q['exclude_monthly_details'])}"
            )
        parsed.exclude_monthly = bool(value)
    if parsed.tabular and parsed.granularity == "Total":
        parsed.exclude_monthly = True
    if bad_filters:
        parsed.exceptions.append(exception(3060, "; ".join(bad_filters[:20])))
    if bad_attributes:
        parsed.exceptions.append(exception(3062, "; ".join(bad_attributes[:20])))
    return parsed


def _platform(ctx: WebContext) -> str:
    return ctx.platform if len(ctx.platform) >= 2 else "usage-stats"


@functools.lru_cache(maxsize=64)
def namespace(platform: str) -> str:
    """The platform ID as an identifier namespace (COUNTER: a letter, then 1-17 of
    `[a-zA-Z0-9_./]`), for customer IDs and proprietary item IDs (cached: an item report
    asks it once per item)."""
    cleaned = re.sub(r"[^a-zA-Z0-9_./]", "_", platform)
    if not cleaned[:1].isalpha():
        cleaned = "p" + cleaned
    return (cleaned + "__")[:18] if len(cleaned) < 2 else cleaned[:18]


_DOI = re.compile(r"10\.[1-9][0-9]{3}[0-9.]*/.+")
_WEB_ADDRESS = re.compile(r"https?://\S+")


def _doi_uri(doi: str) -> str:
    return "https://doi.org/" + urllib.parse.quote(doi, safe="/:;()._-")


def _handle_uri(handle: str) -> str | None:
    return (
        "https://hdl.handle.net/" + urllib.parse.quote(handle[4:], safe="/._-")
        if handle.startswith("hdl:") and "/" in handle
        else None
    )


def item_ids(
    key: str,
    platform: str,
    doi: str | None = None,
    handle: str | None = None,
    urls: tuple[str, ...] | list[str] = (),
) -> dict:
    """Item_ID of an item key: always a proprietary ID in our namespace (every key is one);
    the DOI of the key, else of its harvested record; a URI: the one the key implies (DOI or
    handle resolver, a URL key), else the record's DOI, handle, then first web address, so a
    persistent identifier is preferred to a landing page that may move."""
    ids: dict = {}
    uri = None
    # the prefixes first: most keys are OAI identifiers, which no pattern matches (an item
    # report asks this of every item)
    if key.startswith("10.") and _DOI.fullmatch(key):
        ids["DOI"] = key
        uri = _doi_uri(key)
    elif key.startswith("hdl:") and "/" in key:
        uri = _handle_uri(key)
    elif key.startswith("http") and _WEB_ADDRESS.fullmatch(key):
        uri = key
    if "DOI" not in ids and doi and _DOI.fullmatch(doi):
        ids["DOI"] = doi
    if uri is None:
        if "DOI" in ids:
            uri = _doi_uri(ids["DOI"])
        elif handle and (resolved := _handle_uri(handle)):
            uri = resolved
        else:
            web = next((u.strip() for u in urls if _WEB_ADDRESS.fullmatch(u.strip())), None)
            if web:
                uri = urllib.parse.quote(web, safe=":/?#[]@!$&'()*+,;=%~")
    ids["Proprietary"] = f"{namespace(platform)}:{key}"
    if uri:
        ids["URI"] = uri
    return ids


def _country_code(country: pl.Expr) -> pl.Expr:
    """A visitor country as COUNTER's Country_Code, or null where it is unknown ("ZZ", or
    anything Matomo recorded that is not an ISO 3166-1 code): missing, never "Unknown"."""
    code = country.str.to_uppercase()
    return pl.when(code.is_in(list(COUNTRIES))).then(code).otherwise(None)


@dataclass(slots=True)
class Entry:
    """One report item (the platform, or one repository item) and its usage per attribute
    combination: `(attributes, {metric: {yyyy-mm: n}})`, non-zero months and metrics only
    (an attributes dict may be shared by several groups and entries: never changed).
    `elements` are the item-level elements the JSON shows beside Item (Authors,
    Publication_Date, Article_Version); `columns` the same values as tabular cells, worked
    out only when a tabular report asks (a dict of nine per item cost the JSON form ~2 ms a
    month of 1,000 items). The JSON and the tabular form are both written from these, so
    they cannot disagree."""

    key: str
    platform: str
    item_id: dict
    groups: list[tuple[dict[str, str], dict[str, dict[str, int]]]]
    elements: dict = field(default_factory=dict)
    title: str = ""
    publisher: str = ""
    item: ReportedItem | None = None  # None: the platform's entry (PR)

    @property
    def columns(self) -> dict[str, str]:
        if self.item is None:
            return {"Platform": self.platform}
        return {
            "Item": self.title,
            "Publisher": self.publisher,
            "Platform": self.platform,
            "Authors": "; ".join(self.item.authors),
            "Publication_Date": self.item.published or "",
            "Article_Version": self.elements.get("Article_Version", ""),
            "DOI": self.item_id.get("DOI", ""),
            "Proprietary_ID": self.item_id["Proprietary"],
            "URI": self.item_id.get("URI", ""),
        }


def _shown(request: ReportRequest) -> list[str]:
    """The attribute columns a report's rows are split by: IR_A1 by Access_Type (its one
    attribute), IR by Data_Type and the YOP / Access_Type asked for, PR by its Data_Type."""
    if request.spec.report_id == "IR_A1":
        return ["Access_Type"]
    if not request.spec.item_report:
        return ["Data_Type"]
    return ["Data_Type", *(a for a in ("YOP", "Access_Type") if a in request.attributes)]


Groups = list[tuple[dict[str, str], dict[str, dict[str, int]]]]
# what a row is described by: (Data_Type, YOP, Access_Type), or None to leave it out
Describe = Callable[[str, dt.date], tuple[str, str, str] | None]


def _groups(frame: pl.DataFrame, request: ReportRequest) -> Groups:
    """The platform's monthly rows (`month`, `country`, the metrics), split by the attributes
    shown (PR: its one Data_Type)."""
    constant = (DATA_TYPE, YOP_UNKNOWN, ACCESS_TYPE)
    rows = sorted(
        frame.select(pl.lit(""), "month", "country", *_summed(request)).iter_rows(),
        key=itemgetter(1),
    )
    return _grouped(rows, request, lambda _key, _day: constant).get("", [])


def _group_order(group: tuple[tuple, dict]) -> tuple:
    """Groups ordered by their split values, a null as "" but before it (two groups)."""
    split = group[0]
    return (*["" if v is None else v for v in split], *[v is not None for v in split])


def _grouped(
    rows: Iterable[tuple], request: ReportRequest, describe: Describe
) -> dict[str, Groups]:
    """Rows `(key, day, country, *_summed(request))`, ordered by key and day (a month's first
    day, or a day of use), as each key's groups: rows whose shown attributes (`describe`d by
    key and day) and country (when shown) are equal are one group, its metrics' non-zero
    months in order. Keys without usage have no entry, groups are in `_group_order`.

    One pass in Python over a repository's month (~1,000 rows), with dicts: grouping them
    as frames (joins for the attributes, a group-by, a sort, the rows as tuples) took ~8 ms of
    an item report's CPU, a few small frame operations per item before that ~1 ms an item."""
    shown = _shown(request)
    by_country = bool({"Country_Code", "Country_Name"} & set(request.attributes))
    columns = _summed(request)
    metrics = [(metric, 3 + columns.index(METRIC_COLUMNS[metric])) for metric in request.metrics]
    labels: dict[dt.date, str] = {}
    # a row's (Data_Type, YOP, Access_Type, country) -> its group's split values
    splits: dict[tuple, tuple] = {}
    grouped: dict[str, dict[tuple, dict[str, dict[str, int]]]] = {}
    for row in rows:
        key, day, country = row[0], row[1], row[2]
        described = describe(key, day)
        if described is None:
            continue
        split_of = (*described, country if by_country else None)
        split = splits.get(split_of)
        if split is None:
            values = dict(zip(("Data_Type", "YOP", "Access_Type"), described, strict=True))
            code = (split_of[3] or "").upper()
            split = splits[split_of] = (
                *[values[name] for name in shown],
                code if code in COUNTRIES else None,
            )
        label = labels.get(day)
        if label is None:
            label = labels[day] = f"{day.year:04d}-{day.month:02d}"
        groups = grouped.get(key)
        if groups is None:
            groups = grouped[key] = {}
        performance = groups.get(split)
        if performance is None:
            performance = groups[split] = {}
        for metric, at in metrics:
            value = row[at]
            if value:  # counts of events, never negative: a month's total is 0 only unused
                counts = performance.get(metric)
                if counts is None:
                    performance[metric] = {label: int(value)}
                else:
                    counts[label] = counts.get(label, 0) + int(value)
    attribute_sets: dict[tuple, dict[str, str]] = {}
    out: dict[str, Groups] = {}
    for key in sorted(grouped):
        groups = grouped[key]
        entry: Groups = []
        for split, performance in (
            sorted(groups.items(), key=_group_order) if len(groups) > 1 else groups.items()
        ):
            if not performance:
                continue
            attributes = attribute_sets.get(split)
            if attributes is None:
                attributes = attribute_sets[split] = _attributes(request, shown, list(split))
            entry.append((attributes, performance))  # attributes shared: never changed
        if entry:
            out[key] = entry
    return out


def _summed(request: ReportRequest) -> tuple[str, ...]:
    """The stored metrics a report's metric types are sums of (only these are asked of the
    store: each sum is a pass over the rows), in `METRICS` order: the order the store's sums
    and their rows (`sum_rows`) hold them in."""
    wanted = {METRIC_COLUMNS[metric] for metric in request.metrics}
    return tuple(m for m in METRICS if m in wanted)


def _attributes(request: ReportRequest, shown: list[str], values: list) -> dict[str, str]:
    """A group's attributes from its split values (the shown attributes', then the visitor
    country code), in the order COUNTER lists them."""
    given = {name: value for name, value in zip(shown, values, strict=False)}
    attributes = {k: given[k] for k in ("Data_Type", "YOP", "Access_Type") if k in given}
    if "Access_Method" in request.attributes:
        attributes["Access_Method"] = ACCESS_METHOD
    code = values[-1]
    if code and "Country_Name" in request.attributes:
        attributes["Country_Name"] = COUNTRIES[code]
    if code and "Country_Code" in request.attributes:
        attributes["Country_Code"] = code
    return attributes


def _yop(year: int | None) -> str:
    """COUNTER's YOP: four digits, 0001 when the year is unknown (or not a year 1-9999)."""
    return f"{year:04d}" if year is not None and 1 <= year <= 9999 else YOP_UNKNOWN


class ReportedItem(NamedTuple):
    """An item as item reports describe it, from its harvested record (all None but `title`,
    `ids`, Data_Type and YOP when it has none): worked out once per worker and data version
    (`WebContext.reported_items`), as a repository's items come back in every month and for
    every customer asking. `ids` is shared by every report showing the item: never changed.
    A tuple: a frozen dataclass took ~4 ms more to build for a month of 1,000 items."""

    title: str  # the record's, else the title stored for the key, else the key itself
    publisher: str | None
    ids: dict
    authors: tuple[str, ...]
    published: str | None  # ISO date
    version: str | None
    data_type: str
    yop: str
    access_rights: str | None
    embargo_end: dt.date | None


def _reported_items(ctx: WebContext, keys: list[str]) -> dict[str, ReportedItem]:
    """`ReportedItem`s of `keys` (every one: an item without a record too), from the store's
    records (`_REPORTED_FIELDS`) and, for those without a title, the titles stored for keys;
    each distinct resource type mapped once by `counter_data_type`, the vocabularies' one
    mapping. Columns to lists and zipped: no query per record."""
    platform = _platform(ctx)
    metadata = ctx.store.item_metadata(tuple(keys), _REPORTED_FIELDS)
    records = dict(
        zip(
            metadata.get_column("item_key").to_list(),
            zip(*(metadata.get_column(c).to_list() for c in _REPORTED_FIELDS), strict=True),
            strict=True,
        )
    )
    untitled = [key for key in keys if not records.get(key, _NO_RECORD)[0]]
    titles = ctx.store.titles(tuple(untitled)) if untitled else {}
    data_types: dict[str | None, str] = {None: DATA_TYPE}
    items = {}
    for key in keys:
        (
            title,
            publisher,
            doi,
            handle,
            urls,
            creators,
            published,
            version,
            resource_type,
            year,
            rights,
            embargo_end,
        ) = records.get(key, _NO_RECORD)
        data_type = data_types.get(resource_type)
        if data_type is None:
            data_type = data_types[resource_type] = counter_data_type(resource_type)
        items[key] = ReportedItem(
            title or titles.get(key) or key,
            publisher,
            item_ids(key, platform, doi, handle, urls or ()),
            tuple(_authors(creators)),
            published.isoformat() if published else None,
            version,
            data_type,
            _yop(year),
            rights,
            embargo_end,
        )
    return items


def _row_filter(request: ReportRequest) -> Callable[[str, str, str], bool] | None:
    """The filters on item attributes, as a test of a row's (Data_Type, YOP, Access_Type):
    IR_A1's Data_Type Article, and IR's Data_Type, YOP and Access_Type filters, applied to
    each row's own values (unknown: Unspecified, 0001, Open). None: every row is kept."""
    data_types = ["Article"] if request.spec.report_id == "IR_A1" else None
    data_types = request.filters.get("Data_Type", data_types)
    access_types = request.filters.get("Access_Type")
    years = [(r[:4], r[5:] or r[:4]) for r in request.filters.get("YOP", ())]
    if data_types is None and access_types is None and not years:
        return None

    def keep(data_type: str, yop: str, access_type: str) -> bool:
        return (
            (data_types is None or data_type in data_types)
            and (access_types is None or access_type in access_types)
            and (not years or any(low <= yop <= high for low, high in years))
        )

    return keep


def _item_groups(
    ctx: WebContext,
    customer: Customer,
    request: ReportRequest,
    first: dt.date,
    last: dt.date,
) -> tuple[dict[str, Groups], dict[str, ReportedItem]]:
    """The customer's items' groups (`_grouped`, in key order), and how they are described.

    Each row's Data_Type and YOP are its item's, its Access_Type the item's on the day of use:
    an embargo that ends inside the period splits the item's usage at its end date. Months
    are evaluated on their first day, except for the few items whose embargo ends on another
    day of the period: those are read per day."""
    countries = request.country or {"Country_Code", "Country_Name"} & set(request.attributes)
    extra = ("country",) if countries else ()
    columns = _summed(request)
    # The requested Item_ID as the cross-walk counted it: a record's DOI or handle asks for
    # the record's OAI item (the filter in the header still echoes what was asked).
    keys = (ctx.item_key(request.item_key),) if request.item_key else None
    # rows as (key, day, country, *metrics): the month's first day, or the day of use
    rows = _with_country(
        ctx.store.sum_rows(
            "item",
            first,
            last,
            keys=keys,
            owner_site_ids=customer.site_ids,
            by=("key", "month", *extra),
            metrics=columns,
        ),
        bool(extra),
        request.country,
    )
    keys_used = sorted({row[0] for row in rows})
    items = ctx.reported_items.get_many(keys_used, functools.partial(_reported_items, ctx))
    mid_month = {
        key
        for key in keys_used
        if (item := items[key]).access_rights == EMBARGOED_ACCESS
        and (end := item.embargo_end) is not None
        and first < end <= last
        and end.day != 1
    }
    if mid_month:
        rows = [row for row in rows if row[0] not in mid_month]
        daily = ctx.store.sum_rows(
            "item",
            first,
            last,
            keys=tuple(sorted(mid_month)),
            owner_site_ids=customer.site_ids,
            by=("key", "date", *extra),
            metrics=columns,
        )
        rows += _with_country(daily, bool(extra), request.country)
    rows.sort(key=itemgetter(0, 1))  # each group's months in order (linear when they are)
    keep = _row_filter(request)
    access_on: dict[tuple, str] = {}

    def describe(key: str, day: dt.date) -> tuple[str, str, str] | None:
        item = items[key]
        condition = (item.access_rights, item.embargo_end, day)
        access = access_on.get(condition)
        if access is None:
            access = access_on[condition] = counter_access_type(*condition) or ACCESS_TYPE
        if keep is not None and not keep(item.data_type, item.yop, access):
            return None
        return item.data_type, item.yop, access

    return _grouped(rows, request, describe), items


def _authors(creators: list[str] | None) -> list[str]:
    """The first three distinct creators the specification accepts (a name of two characters
    or more), in the record's order."""
    names: list[str] = []
    for name in creators or []:
        name = " ".join(name.split())
        if len(name) >= 2 and name not in names:
            names.append(name)
    return names[:MAX_AUTHORS]


def _entries(
    ctx: WebContext, customer: Customer, request: ReportRequest, first: dt.date, last: dt.date
) -> list[Entry]:
    platform = _platform(ctx)
    countries = request.country or {"Country_Code", "Country_Name"} & set(request.attributes)
    by = ("month", "country") if countries else ("month",)
    if not request.spec.item_report:
        sources = tuple(str(s) for s in customer.site_ids)
        frame = ctx.store.sums("source", first, last, keys=sources, by=by, metrics=_summed(request))
        frame = _only_country(frame, request.country)
        groups = _groups(frame, request)
        return [Entry(platform, platform, {}, groups)] if groups else []
    groups_by_key, items = _item_groups(ctx, customer, request, first, last)
    repository = ", ".join(
        (source.name if (source := ctx.source(s)) and source.name else str(s))
        for s in customer.site_ids
    )
    shown = set(request.attributes) | (
        set(ITEM_ELEMENTS) if request.spec.report_id == "IR_A1" else set()
    )
    authors, published, version = (e in shown for e in ITEM_ELEMENTS)
    entries = []
    for key, groups in groups_by_key.items():  # in key order
        item = items[key]
        elements: dict = {}
        if authors and item.authors:
            elements["Authors"] = [{"Name": name} for name in item.authors]
        if published and item.published:
            elements["Publication_Date"] = item.published
        if version and item.version in ARTICLE_VERSIONS:
            elements["Article_Version"] = item.version
        entries.append(
            Entry(
                key,
                platform,
                item.ids,
                groups,
                elements,
                item.title,
                item.publisher or repository,
                item,
            )
        )
    return entries


# What an item report shows of an item's record (`ReportedItem`), in `_reported_items`'s
# order, and the same for an item without one
_REPORTED_FIELDS = (
    "title",
    "publisher",
    "doi",
    "handle",
    "urls",
    "creators",
    "publication_date",
    "article_version",
    "resource_type",
    "publication_year",
    "access_rights",
    "embargo_end",
)
_NO_RECORD = (None,) * len(_REPORTED_FIELDS)


def _with_country(rows: list[tuple], by_country: bool, country: str | None) -> list[tuple]:
    """Rows (key, day, [country,] *metrics) as (key, day, country, *metrics): the country
    None where the rows are not by country, only `country`'s rows where one is asked (as
    `_only_country` keeps them)."""
    if not by_country:
        return [(row[0], row[1], None, *row[2:]) for row in rows]
    if country:
        return [row for row in rows if row[2] is not None and row[2].upper() == country]
    return rows


def _only_country(frame: pl.DataFrame, country: str | None) -> pl.DataFrame:
    if "country" not in frame.columns:  # a column beside the others, not a query
        nulls = pl.Series("country", [None] * frame.height, dtype=pl.String)
        return pl.DataFrame([*frame.get_columns(), nulls])
    if country:
        return frame.filter(pl.col("country").str.to_uppercase() == country)
    return frame


def _json_items(entries: list[Entry], request: ReportRequest, first_month: str) -> list[dict]:
    def performance(counts: dict[str, dict[str, int]]) -> dict:
        if request.granularity == "Total":
            # Counts only allows yyyy-mm keys: the period's total sits under its first month.
            return {m: {first_month: sum(c.values())} for m, c in counts.items()}
        return counts

    if not entries:
        return []
    if not request.spec.item_report:
        [entry] = entries
        return [
            {
                "Platform": entry.platform,
                "Attribute_Performance": [
                    {**attrs, "Performance": performance(c)} for attrs, c in entry.groups
                ],
            }
        ]
    monthly = request.granularity != "Total"
    items = [
        {
            "Item": entry.title,
            "Publisher": entry.publisher,
            "Platform": entry.platform,
            **entry.elements,
            "Item_ID": entry.item_id,
            "Attribute_Performance": [
                attrs | {"Performance": c if monthly else performance(c)}
                for attrs, c in entry.groups
            ],
        }
        for entry in entries
    ]
    return [{"Items": items}]


def _header(
    ctx: WebContext,
    customer: Customer,
    request: ReportRequest,
    period: Period,
    exceptions: list[dict],
) -> dict:
    spec = request.spec
    platform = _platform(ctx)
    filters: dict = {}
    if spec.report_id == "PR_P1":
        filters["Metric_Type"] = [
            "Searches_Platform",
            "Total_Item_Requests",
            "Unique_Item_Requests",
            "Unique_Title_Requests",
        ]
    elif spec.report_id == "IR_A1":
        filters["Metric_Type"] = list(REQUESTS)
    elif "Metric_Type" in request.filters:
        filters["Metric_Type"] = request.filters["Metric_Type"]
    filters["Begin_Date"] = _first_day(period.first).isoformat()
    filters["End_Date"] = _last_day(period.last).isoformat()
    if spec.report_id == "IR_A1":
        filters["Data_Type"] = ["Article"]
    if spec.standard_view:
        filters["Access_Method"] = ["Regular"]
    for name in ("Data_Type", "Access_Type", "Access_Method", "YOP", "Item_ID", "Country_Code"):
        if name in request.filters:
            filters[name] = request.filters[name]
    attributes: dict = {}
    if request.attributes:
        attributes["Attributes_To_Show"] = request.attributes
    if request.parent_details:
        attributes["Include_Parent_Details"] = "True"
    if request.granularity == "Total" and not request.tabular:
        attributes["Granularity"] = "Total"
    if request.exclude_monthly:
        attributes["Exclude_Monthly_Details"] = "True"
    header: dict = {
        "Release": "5.1",
        "Report_ID": spec.report_id,
        "Report_Name": spec.name,
        "Created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Created_By": platform,
        "Institution_ID": {"Proprietary": [f"{namespace(platform)}:{customer.customer_id}"]},
        "Institution_Name": customer.name,
        "Registry_Record": "",
        "Report_Filters": filters,
    }
    if attributes:
        header["Report_Attributes"] = attributes
    if exceptions:
        header["Exceptions"] = sorted(exceptions, key=lambda e: e["Code"])
    return header


def _report(request: Request, spec: ReportSpec) -> Response:
    ctx = _ctx(request)
    customer = _authenticate(ctx, request, required=("begin_date", "end_date"))
    q = request.query_params
    requested_first = _parse_month(q["begin_date"], "begin_date")
    requested_last = _parse_month(q["end_date"], "end_date")
    period = _period(requested_first, requested_last, _availability(ctx, customer))
    parsed = _report_request(request, spec)
    exceptions = [*parsed.exceptions, *period.exceptions]
    entries: list[Entry] = []
    if period.ready is not None and not parsed.excluded:
        first, last = _first_day(period.ready[0]), _last_day(period.ready[1])
        entries = _entries(ctx, customer, parsed, first, last)
    if period.ready is not None and not entries:
        # Only the available months: 3030 never speaks for a month that is 3031 or 3032.
        exceptions.append(
            exception(
                3030,
                f"{_first_day(period.ready[0]).isoformat()} to "
                f"{_last_day(period.ready[1]).isoformat()}"
                + (" with the filters given" if parsed.excluded or parsed.filters else ""),
            )
        )
    header = _header(ctx, customer, parsed, period, exceptions)
    if parsed.tabular:
        from usage_stats.web.sushi_tabular import tabular_response

        months = [month_label(i) for i in range(period.first, period.last + 1)]
        return tabular_response(header, entries, parsed, months)
    items = _json_items(entries, parsed, month_label(period.first))
    # orjson: the JSON of an IR of 1,000 items (350 kB) in ~5 ms where `json` took ~50
    body = orjson.dumps({"Report_Header": header, "Report_Items": items})
    return Response(body, media_type="application/json")


# --- Routes -----------------------------------------------------------------------------------

Auth = Annotated[str | None, Query()]
Date = Annotated[str | None, Query(description="yyyy-mm or yyyy-mm-dd")]


@router.get("/status", summary="Server status")
def status(request: Request, platform: Auth = None) -> JSONResponse:
    """Public, no authentication (Code of Practice 8.1). Service_Active is whether reports can
    be delivered now, so both the stats store and the admin DB are tried; the reason for a
    false goes in Alerts, without internals (URLs, errors), which are logged instead."""
    ctx = _ctx(request)
    alerts = []
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        ctx.store.days()
    except Exception as exc:  # any store failure means: cannot deliver reports now
        logger.error("SUSHI status: stats store unavailable: %s", exc)
        alerts.append({"Date_Time": now, "Alert": "The usage store cannot be reached."})
    try:
        ensure_current(ctx.admin_db_url)
    except Exception as exc:  # any admin DB failure means: cannot authenticate now
        logger.error("SUSHI status: admin DB unavailable: %s", exc)
        alerts.append({"Date_Time": now, "Alert": "The customer database cannot be reached."})
    body: dict = {
        "Description": f"COUNTER R5.1 usage reports of {_platform(ctx)}",
        "Service_Active": not alerts,
        "Note": "Usage of open-access repository items, counted on every network level.",
    }
    if alerts:
        body["Alerts"] = alerts
    return JSONResponse([body])


@router.get("/members", summary="The customer's member list")
def members(
    request: Request,
    customer_id: Auth = None,
    requestor_id: Auth = None,
    api_key: Auth = None,
    platform: Auth = None,
) -> Response:
    def build() -> Response:
        customer = _authenticate(_ctx(request), request)
        member: dict = {"Customer_ID": customer.customer_id, "Institution_Name": customer.name}
        if customer.requestor_id and customer.requestor_id != (requestor_id or ""):
            member["Requestor_ID"] = customer.requestor_id
        return JSONResponse([member])

    return _guarded(build)


@router.get("/reports", summary="The supported reports")
def reports(
    request: Request,
    customer_id: Auth = None,
    requestor_id: Auth = None,
    api_key: Auth = None,
    platform: Auth = None,
) -> Response:
    def build() -> Response:
        ctx = _ctx(request)
        customer = _authenticate(ctx, request)
        first, last = _availability(ctx, customer).months()
        return JSONResponse(
            [
                {
                    "Report_Name": spec.name,
                    "Report_ID": spec.report_id,
                    "Release": "5.1",
                    "Report_Description": spec.description,
                    "Path": f"/r51/reports/{spec.path}",
                    "First_Month_Available": first,
                    "Last_Month_Available": last,
                }
                for spec in REPORTS.values()
            ]
        )

    return _guarded(build)


def _endpoint(spec: ReportSpec) -> Callable[..., Response]:
    def handler(
        request: Request,
        customer_id: Auth = None,
        requestor_id: Auth = None,
        api_key: Auth = None,
        begin_date: Date = None,
        end_date: Date = None,
        platform: Auth = None,
        format: Annotated[str | None, Query(description="json (default) or tsv")] = None,
    ) -> Response:
        return _guarded(lambda: _report(request, spec))

    handler.__name__ = f"report_{spec.path}"
    return handler


PARAMETER_DOCS = {
    "metric_type": "Report_Filter: Metric_Types separated by |",
    "data_type": "Report_Filter: Data_Types separated by | (IR: each item's, from its harvested "
    "record, Unspecified without one; PR: Unspecified)",
    "access_method": "Report_Filter: Regular and/or TDM",
    "access_type": "Report_Filter: Controlled, Open and/or Free_To_Read",
    "yop": "Report_Filter: years of publication yyyy or yyyy-yyyy separated by |",
    "item_id": "Report_Filter: one item identifier, any spelling",
    "author": "Report_Filter: not supported (3060)",
    "attributed": "Report_Filter (extension): not supported (3060)",
    "country_code": "Report_Filter (extension): one ISO 3166-1 alpha-2 code",
    "subdivision_code": "Report_Filter (extension): not supported (3060)",
    "attributes_to_show": "Report_Attribute: columns separated by |",
    "granularity": "Report_Attribute: Month (default) or Total",
    "include_parent_details": "Report_Attribute: True or False",
    "include_component_details": "Report_Attribute: components are not supported (3063)",
    "exclude_monthly_details": "Report_Attribute of the tabular form (format=tsv): True/False",
}
DECLARED = {"customer_id", "requestor_id", "api_key", "begin_date", "end_date"} | {
    "platform",
    "format",
}


def _openapi_parameters(spec: ReportSpec) -> list[dict]:
    """The report's own parameters, documented in the OpenAPI (they are read from the query
    string as a whole, so that unknown ones can be named in 3050)."""
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": PARAMETER_DOCS[name],
        }
        for name in sorted(spec.params - DECLARED)
    ]


for _spec in REPORTS.values():
    router.add_api_route(
        f"/reports/{_spec.path}",
        _endpoint(_spec),
        methods=["GET"],
        summary=f"{_spec.report_id} - {_spec.name}",
        openapi_extra={"parameters": _openapi_parameters(_spec)},
    )
