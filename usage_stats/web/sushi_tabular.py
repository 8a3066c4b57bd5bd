"""The tabular (TSV) form of the SUSHI reports, in the COUNTER R5.1 layout.

Code of Practice §3.2 and COUNTER's published sample reports (`*_sample_r51.tsv`): a UTF-8 byte
order mark, 13 header rows of label and value, a blank 14th row, the column headings, then one
row per report item × attribute combination × Metric_Type with Reporting_Period_Total and one
`Mmm-yyyy` column per month (none with Exclude_Monthly_Details=True). Every row has as many
cells as the body; lines end in LF; cells are never quoted. The header values are written from
the same Report_Header as the JSON, so filters, attributes and exceptions cannot differ between
the two forms; the numbers come from the same entries, so neither can they.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from fastapi.responses import Response

if TYPE_CHECKING:
    from usage_stats.web.sushi import Entry, ReportRequest

MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
HEADER_LABELS = (
    "Report_Name",
    "Report_ID",
    "Release",
    "Institution_Name",
    "Institution_ID",
    "Metric_Types",
    "Report_Filters",
    "Report_Attributes",
    "Exceptions",
    "Reporting_Period",
    "Created",
    "Created_By",
    "Registry_Record",
)
ITEM_COLUMNS = ("Item", "Publisher", "Publisher_ID", "Platform")
ITEM_ELEMENTS = ("Authors", "Publication_Date", "Article_Version")
ITEM_IDENTIFIERS = ("DOI", "Proprietary_ID", "ISBN", "Print_ISSN", "Online_ISSN", "URI")
PARENT_COLUMNS = (
    "Parent_Title",
    "Parent_Authors",
    "Parent_Publication_Date",
    "Parent_Article_Version",
    "Parent_Data_Type",
    "Parent_DOI",
    "Parent_Proprietary_ID",
    "Parent_ISBN",
    "Parent_Print_ISSN",
    "Parent_Online_ISSN",
    "Parent_URI",
)
# IR_A1's columns are fixed (Table 4.p): its authors, dates, versions and parent elements are
# mandatory columns, left blank where unknown (Missing and Unknown Values, §3.3).
IR_A1_COLUMNS = (
    *ITEM_COLUMNS,
    "Authors",
    "Publication_Date",
    "Article_Version",
    "DOI",
    "Proprietary_ID",
    "Print_ISSN",
    "Online_ISSN",
    "URI",
    "Parent_Title",
    "Parent_Authors",
    "Parent_Article_Version",
    "Parent_DOI",
    "Parent_Proprietary_ID",
    "Parent_Print_ISSN",
    "Parent_Online_ISSN",
    "Parent_URI",
    "Access_Type",
)
# Filters shown in Metric_Types and Reporting_Period instead of Report_Filters (Table 3.y).
NOT_IN_REPORT_FILTERS = ("Metric_Type", "Begin_Date", "End_Date")


def month_column(month: str) -> str:
    """`yyyy-mm` as the `Mmm-yyyy` column heading (English, whatever the server's locale)."""
    return f"{MONTH_NAMES[int(month[5:7]) - 1]}-{month[:4]}"


def columns(request: ReportRequest) -> list[str]:
    """The columns before Metric_Type, in the order of Tables 4.b and 4.p: mandatory ones
    always, the others only when called for (Attributes_To_Show, Include_Parent_Details).
    Country_Name and Country_Code (common extensions, §11.5, whose position the Code leaves
    open) come last, just before Metric_Type."""
    report_id = request.spec.report_id
    if report_id == "IR_A1":
        return list(IR_A1_COLUMNS)
    if not request.spec.item_report:
        out = ["Platform", "Data_Type"]
    else:
        # Authors, Publication_Date and Article_Version are item columns: after Platform.
        elements = [a for a in ITEM_ELEMENTS if a in request.attributes]
        out = [*ITEM_COLUMNS, *elements, *ITEM_IDENTIFIERS]
        if request.parent_details:
            out += PARENT_COLUMNS
        out.append("Data_Type")
    return out + [a for a in request.attributes if a not in ITEM_ELEMENTS]


def _value(value: object) -> str:
    return "|".join(value) if isinstance(value, list) else str(value)


def _pairs(values: dict, skip: tuple[str, ...] = ()) -> str:
    return "; ".join(f"{k}={_value(v)}" for k, v in values.items() if k not in skip)


def _institution_ids(ids: dict[str, list[str]]) -> str:
    """`{namespace}:{value}`; a proprietary value already carries its namespace."""
    return "; ".join(
        value if namespace == "Proprietary" else f"{namespace}:{value}"
        for namespace, values in ids.items()
        for value in values
    )


def _exceptions(exceptions: list[dict]) -> str:
    return "; ".join(
        f"{e['Code']}: {e['Message']}" + (f" ({e['Data']})" if e.get("Data") else "")
        for e in exceptions
    )


def _cell(value: object) -> str:
    """One cell: no tab or line break can split a row, and text a spreadsheet would evaluate
    as a formula (= + - @, as in titles taken from web pages) is shown as text."""
    text = re.sub(r"[\t\r\n]+", " ", str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def render(header: dict, entries: list[Entry], request: ReportRequest, months: list[str]) -> str:
    filters = header["Report_Filters"]
    values = (
        header["Report_Name"],
        header["Report_ID"],
        header["Release"],
        header["Institution_Name"],
        _institution_ids(header["Institution_ID"]),
        "; ".join(filters.get("Metric_Type", [])),
        _pairs(filters, NOT_IN_REPORT_FILTERS),
        _pairs(header.get("Report_Attributes", {})),
        _exceptions(header.get("Exceptions", [])),
        f"Begin_Date={filters['Begin_Date']}; End_Date={filters['End_Date']}",
        header["Created"],
        header["Created_By"],
        header["Registry_Record"],
    )
    shown = [] if request.exclude_monthly else months
    headings = [*columns(request), "Metric_Type", "Reporting_Period_Total"]
    headings += [month_column(m) for m in shown]
    width = len(headings)
    rows: list[list[object]] = [
        [label, value] for label, value in zip(HEADER_LABELS, values, strict=True)
    ]
    rows += [[], headings]
    for entry in entries:
        for attributes, performance in entry.groups:
            described = {**entry.columns, **attributes}
            lead = [described.get(c, "") for c in headings[: width - 2 - len(shown)]]
            for metric, counts in performance.items():
                total = sum(counts.values())
                rows.append([*lead, metric, total, *[counts.get(m, 0) for m in shown]])
    lines = ("\t".join(_cell(c) for c in row + [""] * (width - len(row))) for row in rows)
    return "\ufeff" + "\n".join(lines) + "\n"


def tabular_response(
    header: dict, entries: list[Entry], request: ReportRequest, months: list[str]
) -> Response:
    filters = header["Report_Filters"]
    name = f"{header['Report_ID']}_{filters['Begin_Date'][:7]}_{filters['End_Date'][:7]}.tsv"
    return Response(
        render(header, entries, request, months).encode("utf-8"),
        media_type="text/tab-separated-values; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
