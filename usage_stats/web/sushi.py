"""COUNTER R5.1 SUSHI under `/r51/`: status, members, reports, PR, PR_P1, IR, IR_A1.

A customer (admin DB) is an institution that may fetch the usage of the items of its sites
(repositories); PR is the platform total of those items, IR the same usage per item, so PR
totals equal the sum of IR totals by construction. Usage is counted on every site (the
repository itself, the national node and the portal). Exceptions follow Appendix D: request
errors (1030, 3020) are HTTP 400, authorisation (2000, 2020) 401; conditions that still give a
report (3030 no usage, 3031 not ready, 3050 unknown parameter, 3060/3062 bad filter or
attribute values) are listed in the report header's Exceptions, HTTP 200.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import re
from typing import Annotated

import polars as pl
import pycountry
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from usage_stats.admin.sushi import Customer, get_customer, verify_api_key
from usage_stats.web.common import WebContext, today

router = APIRouter(prefix="/r51", tags=["COUNTER SUSHI R5.1"])

MESSAGES = {
    1030: "Insufficient Information to Process Request",
    2000: "Requestor Not Authorized to Access Service",
    2020: "APIKey Invalid",
    3020: "Invalid Date Arguments",
    3030: "No Usage Available for Requested Dates",
    3031: "Usage Not Ready for Requested Dates",
    3050: "Parameter Not Recognized in this Context",
    3060: "Invalid ReportFilter Value",
    3062: "Invalid ReportAttribute Value",
}
STATUS = {1030: 400, 2000: 401, 2020: 401, 3020: 400}
METRIC_COLUMNS = {
    "Total_Item_Investigations": "total_item_investigations",
    "Total_Item_Requests": "total_item_requests",
    "Unique_Item_Investigations": "unique_item_investigations",
    "Unique_Item_Requests": "unique_item_requests",
}
REQUESTS = ("Total_Item_Requests", "Unique_Item_Requests")
COMMON = {"customer_id", "requestor_id", "api_key", "platform", "begin_date", "end_date", "format"}
REPORTS = {
    "pr": {
        "name": "Platform Report",
        "id": "PR",
        "params": COMMON
        | {"metric_type", "data_type", "access_method", "attributes_to_show", "granularity"},
        "attributes": ("Access_Method", "Country_Code", "Country_Name"),
        "description": "Platform-level usage of the customer's repositories, every level.",
    },
    "pr_p1": {
        "name": "Platform Usage",
        "id": "PR_P1",
        "params": COMMON,
        "attributes": (),
        "description": "Standard View of PR: requests of the customer's repositories.",
    },
    "ir": {
        "name": "Item Report",
        "id": "IR",
        "params": COMMON
        | {
            "metric_type",
            "data_type",
            "access_method",
            "access_type",
            "attributes_to_show",
            "granularity",
            "item_id",
            "include_parent_details",
            "include_component_details",
        },
        "attributes": ("Access_Method", "Access_Type", "Country_Code", "Country_Name"),
        "description": "Usage of each item of the customer's repositories.",
    },
    "ir_a1": {
        "name": "Journal Article Requests",
        "id": "IR_A1",
        "params": COMMON,
        "attributes": (),
        "description": "Standard View of IR: requests per item (repository items are open).",
    },
}


class SushiError(Exception):
    def __init__(self, code: int, data: str) -> None:
        super().__init__(data)
        self.code = code
        self.data = data


def exception(code: int, data: str | None = None) -> dict:
    out: dict = {"Code": code, "Message": MESSAGES[code]}
    if data:
        out["Data"] = data
    return out


def sushi_error_response(exc: SushiError) -> JSONResponse:
    return JSONResponse(exception(exc.code, exc.data), status_code=STATUS.get(exc.code, 400))


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx


def _authenticate(ctx: WebContext, request: Request) -> Customer:
    q = request.query_params
    customer_id = (q.get("customer_id") or "").strip()
    if not customer_id:
        raise SushiError(1030, "customer_id is required")
    if len(customer_id) > 100:
        raise SushiError(2000, "customer_id is not known")
    api_key = q.get("api_key") or ""
    customer = get_customer(ctx.admin_db_url, customer_id)
    if customer is None or not customer.active:
        raise SushiError(2000, "customer_id is not known or not active")
    if customer.requestor_id and (q.get("requestor_id") or "") != customer.requestor_id:
        raise SushiError(2000, "requestor_id is missing or not authorised for this customer")
    if not api_key:
        raise SushiError(1030, "api_key is required")
    if not verify_api_key(api_key, customer.api_key_hash):
        raise SushiError(2020, "api_key is not valid for this customer")
    return customer


def _month_date(text: str, parameter: str, end: bool) -> dt.date:
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}", text):
            year, month = int(text[:4]), int(text[5:])
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = dt.date.fromisoformat(text)
            year, month = day.year, day.month
        else:
            raise ValueError
        if end:
            return dt.date(year, month, calendar.monthrange(year, month)[1])
        return dt.date(year, month, 1)
    except ValueError:
        raise SushiError(
            3020, f"{parameter} must be yyyy-mm or yyyy-mm-dd, got {text[:40]!r}"
        ) from None


def _months(first: dt.date, last: dt.date) -> list[str]:
    out, year, month = [], first.year, first.month
    while (year, month) <= (last.year, last.month):
        out.append(f"{year}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _month_end(month: str) -> dt.date:
    year, number = int(month[:4]), int(month[5:])
    return dt.date(year, number, calendar.monthrange(year, number)[1])


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split("|") if v.strip()]


def _platform(ctx: WebContext) -> str:
    return ctx.platform if len(ctx.platform) >= 2 else "usage-stats"


def _item_id(key: str) -> dict:
    if re.fullmatch(r"10\.[1-9][0-9]{3}[0-9.]*/.+", key):
        return {"DOI": key}
    if re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_./]{1,17}:.+", key):
        return {"Proprietary": key}
    return {"Proprietary": f"item:{key}"}


def _counts(frame: pl.DataFrame, column: str, granularity: str, first_month: str) -> dict:
    """`{yyyy-mm: n}` without zero months (Counts forbids them); Total puts the period's sum
    under its first month, the only key form the schema's Counts allows."""
    if granularity == "Total":
        total = int(frame.get_column(column).sum()) if frame.height else 0
        return {first_month: total} if total else {}
    return {
        row["month"].strftime("%Y-%m"): int(row[column])
        for row in frame.iter_rows(named=True)
        if row[column]
    }


def _country_name(code: str) -> str:
    country = pycountry.countries.get(alpha_2=code)
    return country.name if country else "Unknown"


def _attribute_groups(
    frame: pl.DataFrame, attributes: list[str]
) -> list[tuple[dict, pl.DataFrame]]:
    """Split one item's (or the platform's) monthly rows by the attributes asked to show."""
    by_country = "Country_Code" in attributes or "Country_Name" in attributes
    fixed: dict = {}
    if "Access_Type" in attributes:
        fixed["Access_Type"] = "Open"
    if "Access_Method" in attributes:
        fixed["Access_Method"] = "Regular"
    if not by_country:
        summed = frame.group_by("month").agg(*[pl.col(c).sum() for c in METRIC_COLUMNS.values()])
        return [(fixed, summed.sort("month"))]
    groups = []
    for (code,), part in sorted(frame.partition_by("country", as_dict=True).items()):
        extra = dict(fixed)
        if "Country_Code" in attributes and re.fullmatch(r"[A-Z]{2}", code or ""):
            extra["Country_Code"] = code
        if "Country_Name" in attributes:
            extra["Country_Name"] = _country_name(code or "ZZ")
        summed = part.group_by("month").agg(*[pl.col(c).sum() for c in METRIC_COLUMNS.values()])
        groups.append((extra, summed.sort("month")))
    return groups


def _performance(
    frame: pl.DataFrame, metrics: list[str], granularity: str, first_month: str
) -> dict:
    out = {}
    for metric in metrics:
        counts = _counts(frame, METRIC_COLUMNS[metric], granularity, first_month)
        if counts:
            out[metric] = counts
    return out


def _report(request: Request, report: str) -> Response:
    ctx = _ctx(request)
    spec = REPORTS[report]
    q = request.query_params
    try:
        customer = _authenticate(ctx, request)
        missing = [p for p in ("begin_date", "end_date") if not (q.get(p) or "").strip()]
        if missing:
            raise SushiError(1030, f"{' and '.join(missing)} required")
        first = _month_date(q["begin_date"], "begin_date", end=False)
        last = _month_date(q["end_date"], "end_date", end=True)
        if last < first:
            raise SushiError(3020, "end_date is before begin_date")
        this_month = today().replace(day=1)
        if first >= this_month:
            raise SushiError(3020, "begin_date is the current or a future month")
    except SushiError as exc:
        return sushi_error_response(exc)

    exceptions: list[dict] = []
    unknown = sorted(set(q) - spec["params"])
    if unknown:
        exceptions.append(exception(3050, ", ".join(u[:40] for u in unknown)))
    if last >= this_month:
        last = this_month - dt.timedelta(days=1)
        exceptions.append(exception(3031, ", ".join(_months(this_month, this_month))))
    complete = min(
        (ctx.complete_through(s) or dt.date.min for s in customer.site_ids), default=dt.date.min
    )
    not_ready = [m for m in _months(first, last) if _month_end(m) > complete]
    if not_ready and not any(e["Code"] == 3031 for e in exceptions):
        exceptions.append(exception(3031, ", ".join(not_ready)))

    if report in ("pr_p1", "ir_a1"):
        metrics, attributes, granularity = list(REQUESTS), [], "Month"
    else:
        metrics = [m for m in METRIC_COLUMNS if m in _list(q.get("metric_type"))] or list(
            METRIC_COLUMNS
        )
        bad = [m for m in _list(q.get("metric_type")) if m not in METRIC_COLUMNS]
        if bad:
            exceptions.append(exception(3060, "metric_type: " + ", ".join(b[:40] for b in bad)))
        attributes = [a for a in _list(q.get("attributes_to_show")) if a in spec["attributes"]]
        bad = [a for a in _list(q.get("attributes_to_show")) if a not in spec["attributes"]]
        if bad:
            exceptions.append(
                exception(3062, "attributes_to_show: " + ", ".join(b[:40] for b in bad))
            )
        granularity = q.get("granularity") or "Month"
        if granularity not in ("Month", "Total"):
            exceptions.append(exception(3062, f"granularity: {granularity[:40]}"))
            granularity = "Month"

    by = ("month", "country") if attributes else ("month",)
    first_month = first.strftime("%Y-%m")
    platform = _platform(ctx)
    items: list[dict] = []
    item_key = None
    if report in ("pr", "pr_p1"):
        frame = ctx.store.sums(
            "source", first, last, keys=tuple(str(s) for s in customer.site_ids), by=by
        )
        if "country" not in frame.columns:
            frame = frame.with_columns(pl.lit("ZZ").alias("country"))
        performances = []
        for extra, part in _attribute_groups(frame, attributes):
            performance = _performance(part, metrics, granularity, first_month)
            if performance:
                performances.append(
                    {"Data_Type": "Unspecified", **extra, "Performance": performance}
                )
        if performances:
            items = [{"Platform": platform, "Attribute_Performance": performances}]
    else:
        keys = None
        if q.get("item_id") and report == "ir":
            from usage_stats.identifiers import normalize_identifier

            item_key = normalize_identifier(q["item_id"][:1000]) or ""
            keys = (item_key,)
        frame = ctx.store.sums(
            "item", first, last, keys=keys, owner_site_ids=customer.site_ids, by=("key", *by)
        )
        if "country" not in frame.columns:
            frame = frame.with_columns(pl.lit("ZZ").alias("country"))
        names = {s.site_id: s.name for s in ctx.sources()}
        publisher = ", ".join(names.get(s, str(s)) for s in customer.site_ids)
        report_items = []
        for (key,), part in sorted(frame.partition_by("key", as_dict=True).items()):
            performances = []
            for extra, group in _attribute_groups(part, attributes):
                performance = _performance(group, metrics, granularity, first_month)
                if not performance or (report == "ir_a1" and len(performance) < 2):
                    continue
                if report == "ir_a1":
                    performances.append({"Access_Type": "Open", "Performance": performance})
                else:
                    performances.append(
                        {"Data_Type": "Unspecified", **extra, "Performance": performance}
                    )
            if performances:
                report_items.append(
                    {
                        "Item": key,
                        "Publisher": publisher,
                        "Platform": platform,
                        "Item_ID": _item_id(key),
                        "Attribute_Performance": performances,
                    }
                )
        if report_items:
            items = [{"Items": report_items}]
    if not items:
        exceptions.append(exception(3030, f"{first.isoformat()} to {last.isoformat()}"))

    filters: dict = {"Begin_Date": first.isoformat(), "End_Date": last.isoformat()}
    report_attributes: dict = {}
    if report == "pr_p1":
        filters |= {
            "Access_Method": ["Regular"],
            "Metric_Type": [
                "Searches_Platform",
                "Total_Item_Requests",
                "Unique_Item_Requests",
                "Unique_Title_Requests",
            ],
        }
    elif report == "ir_a1":
        filters |= {
            "Access_Method": ["Regular"],
            "Data_Type": ["Article"],
            "Metric_Type": list(REQUESTS),
        }
    else:
        if _list(q.get("metric_type")):
            filters["Metric_Type"] = metrics
        if item_key:
            filters["Item_ID"] = item_key if len(item_key) >= 2 else f"id:{item_key}"
        if attributes:
            report_attributes["Attributes_To_Show"] = attributes
        if granularity == "Total":
            report_attributes["Granularity"] = "Total"
    header: dict = {
        "Release": "5.1",
        "Report_ID": spec["id"],
        "Report_Name": spec["name"],
        "Created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Created_By": platform,
        "Institution_ID": {"Proprietary": [f"{_namespace(platform)}:{customer.customer_id}"]},
        "Institution_Name": customer.name,
        "Registry_Record": "",
        "Report_Filters": filters,
    }
    if report_attributes:
        header["Report_Attributes"] = report_attributes
    if exceptions:
        header["Exceptions"] = exceptions
    body = {"Report_Header": header, "Report_Items": items}
    if (q.get("format") or "").lower() == "tsv":
        return _tsv(body, metrics, report)
    return JSONResponse(body)


def _namespace(platform: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9_./]", "_", platform)
    if not cleaned[:1].isalpha():
        cleaned = "p" + cleaned
    return (cleaned + "__")[:18] if len(cleaned) < 2 else cleaned[:18]


def _tsv(body: dict, metrics: list[str], report: str) -> Response:
    """The tabular form: the 13 header rows, a blank row, then one row per item × metric with
    Reporting_Period_Total and one column per month."""
    header = body["Report_Header"]
    filters = header["Report_Filters"]
    months = _months(
        dt.date.fromisoformat(filters["Begin_Date"]), dt.date.fromisoformat(filters["End_Date"])
    )
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    exceptions = "; ".join(
        f"{e['Code']}: {e['Message']}" + (f" ({e['Data']})" if e.get("Data") else "")
        for e in header.get("Exceptions", [])
    )
    rows = [
        ("Report_Name", header["Report_Name"]),
        ("Report_ID", header["Report_ID"]),
        ("Release", "5.1"),
        ("Institution_Name", header["Institution_Name"]),
        (
            "Institution_ID",
            "; ".join(f"Proprietary:{v}" for v in header["Institution_ID"]["Proprietary"]),
        ),
        ("Metric_Types", "; ".join(metrics)),
        ("Report_Filters", f"Begin_Date={filters['Begin_Date']}; End_Date={filters['End_Date']}"),
        ("Report_Attributes", ""),
        ("Exceptions", exceptions),
        ("Reporting_Period", f"Begin_Date={filters['Begin_Date']}; End_Date={filters['End_Date']}"),
        ("Created", header["Created"]),
        ("Created_By", header["Created_By"]),
        ("Registry_Record", ""),
    ]
    writer.writerows(rows)
    writer.writerow([])
    item_report = report.startswith("ir")
    first_columns = (
        ["Item", "Publisher", "Platform", "Proprietary_ID"] if item_report else ["Platform"]
    )
    writer.writerow([*first_columns, "Metric_Type", "Reporting_Period_Total", *months])
    entries = []
    for report_item in body["Report_Items"]:
        for item in report_item.get("Items", [report_item]):
            entries.append(item)
    for item in entries:
        for performance in item["Attribute_Performance"]:
            for metric, counts in performance["Performance"].items():
                lead = (
                    [item["Item"], item["Publisher"], item["Platform"], item["Item"]]
                    if item_report
                    else [item["Platform"]]
                )
                writer.writerow(
                    [*lead, metric, sum(counts.values()), *[counts.get(m, 0) for m in months]]
                )
    return Response(
        out.getvalue(),
        media_type="text/tab-separated-values; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{header["Report_ID"]}.tsv"'},
    )


Auth = Annotated[str | None, Query()]
Date = Annotated[str | None, Query(description="yyyy-mm or yyyy-mm-dd")]


@router.get("/status", summary="Server status")
def status(request: Request, customer_id: Auth = None, platform: Auth = None) -> list[dict]:
    ctx = _ctx(request)
    try:
        ctx.store.days()
        active = True
    except Exception:  # any store failure means: cannot deliver reports now
        active = False
    return [
        {
            "Description": f"COUNTER R5.1 usage reports of {_platform(ctx)}",
            "Service_Active": active,
            "Note": "Usage of open-access repository items, counted on every network level.",
        }
    ]


@router.get("/members", summary="The customer's member list")
def members(
    request: Request,
    customer_id: Auth = None,
    requestor_id: Auth = None,
    api_key: Auth = None,
    platform: Auth = None,
) -> Response:
    try:
        customer = _authenticate(_ctx(request), request)
    except SushiError as exc:
        return sushi_error_response(exc)
    member: dict = {"Customer_ID": customer.customer_id, "Institution_Name": customer.name}
    if customer.requestor_id and customer.requestor_id != (requestor_id or ""):
        member["Requestor_ID"] = customer.requestor_id
    return JSONResponse([member])


@router.get("/reports", summary="The supported reports")
def reports(
    request: Request,
    customer_id: Auth = None,
    requestor_id: Auth = None,
    api_key: Auth = None,
    platform: Auth = None,
) -> Response:
    ctx = _ctx(request)
    try:
        _authenticate(ctx, request)
    except SushiError as exc:
        return sushi_error_response(exc)
    days = ctx.store.days()
    first = (days[0] if days else today()).strftime("%Y-%m")
    last = (days[-1] if days else today()).strftime("%Y-%m")
    return JSONResponse(
        [
            {
                "Report_Name": spec["name"],
                "Report_ID": spec["id"],
                "Release": "5.1",
                "Report_Description": spec["description"],
                "Path": f"/r51/reports/{name}",
                "First_Month_Available": first,
                "Last_Month_Available": last,
            }
            for name, spec in REPORTS.items()
        ]
    )


def _endpoint(name: str):
    def handler(
        request: Request,
        customer_id: Auth = None,
        requestor_id: Auth = None,
        api_key: Auth = None,
        begin_date: Date = None,
        end_date: Date = None,
        metric_type: Auth = None,
        attributes_to_show: Auth = None,
        granularity: Auth = None,
        item_id: Auth = None,
        platform: Auth = None,
        format: Annotated[str | None, Query(description="json (default) or tsv")] = None,
    ) -> Response:
        return _report(request, name)

    handler.__name__ = f"report_{name}"
    return handler


for _name, _spec in REPORTS.items():
    router.add_api_route(
        f"/reports/{_name}",
        _endpoint(_name),
        methods=["GET"],
        summary=f"{_spec['id']} - {_spec['name']}",
    )
