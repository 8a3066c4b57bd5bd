"""JSON, CSV and XLSX responses of one table, chosen by `format=` or the Accept header.

Downloads get a file name that says what they hold (scope, key, range, granularity), made of
safe characters only, so a browser saves `item-oai_repo1.example.org_1001_0-2026-01-01_…csv`
rather than `stats`.
"""

from __future__ import annotations

import csv
import io
import re

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from usage_stats.web.common import ApiError

FORMATS = ("json", "csv", "xlsx")
_MEDIA = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def negotiate(request: Request, format_: str | None) -> str:
    """`format=` wins; otherwise the first of CSV/XLSX named in Accept; JSON by default."""
    if format_:
        text = format_.strip().lower()
        if text not in FORMATS:
            raise ApiError(400, "format", f"format must be one of {', '.join(FORMATS)}")
        return text
    accept = request.headers.get("accept", "").lower()
    if "text/csv" in accept:
        return "csv"
    if "spreadsheetml" in accept:
        return "xlsx"
    return "json"


def file_name(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p).strip("_")[:80] for p in parts if p)


def _csv(rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue().encode()


def _xlsx(rows: list[dict], title: str) -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(title=re.sub(r"[^A-Za-z0-9 ]", "", title)[:31] or "stats")
    if rows:
        sheet.append(list(rows[0]))
        for row in rows:
            sheet.append([_cell(v) for v in row.values()])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _cell(value):
    """Spreadsheets evaluate cells starting with = + - @; identifiers are shown as text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def respond(payload: dict, rows: list[dict], fmt: str, name: str) -> Response:
    if fmt == "json":
        return JSONResponse(payload)
    if fmt == "csv":
        body = _csv([{k: _cell(v) for k, v in r.items()} for r in rows])
    else:
        body = _xlsx(rows, name.split("-")[0])
    return Response(
        body,
        media_type=_MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )
