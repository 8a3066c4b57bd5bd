"""COUNTER R5.1 SUSHI: every report validates against the specification, PR = sum of IR,
exact numbers from the manifest, and each exception case with its code and HTTP status."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from web_support import CUSTOMER, REQUESTOR, sums, web_client

from usage_stats import DATA_DIR

# The COUNTER SUSHI 5.1 OpenAPI document (CC BY-SA, licence beside it), shipped with the project.
SPEC = json.loads((DATA_DIR / "COUNTER_SUSHI_API_5.1_openapi3.1.json").read_text())
COUNTER = {
    "Total_Item_Investigations": "total_item_investigations",
    "Total_Item_Requests": "total_item_requests",
    "Unique_Item_Investigations": "unique_item_investigations",
    "Unique_Item_Requests": "unique_item_requests",
}

web = pytest.fixture(scope="module", params=["duckdb", "opensearch"])(web_client)


def validate(body, schema: dict) -> None:
    """Validate against a schema that may $ref the specification's components."""
    document = {**SPEC, **schema}
    validator = Draft202012Validator(document, format_checker=FormatChecker())
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message[:300]}" for e in errors[:5])


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def auth(loaded, **extra) -> dict:
    return {
        "customer_id": CUSTOMER,
        "requestor_id": REQUESTOR,
        "api_key": loaded.api_key,
        "begin_date": "2026-01",
        "end_date": "2026-02",
        **extra,
    }


def codes(body: dict) -> list[int]:
    return [e["Code"] for e in body["Report_Header"].get("Exceptions", [])]


def test_status_members_reports(web):
    client, loaded = web
    status = client.get("/r51/status")
    assert status.status_code == 200
    validate(status.json(), {"type": "array", "minItems": 1, "items": ref("Status")})
    assert status.json()[0]["Service_Active"] is True
    params = {k: v for k, v in auth(loaded).items() if "date" not in k}
    members = client.get("/r51/members", params=params).json()
    validate(members, {"type": "array", "minItems": 1, "items": ref("Member")})
    assert members[0]["Customer_ID"] == CUSTOMER
    reports = client.get("/r51/reports", params=params).json()
    validate(reports, {"type": "array", "minItems": 1, "items": ref("Report")})
    assert {r["Report_ID"] for r in reports} == {"PR", "PR_P1", "IR", "IR_A1"}
    assert {(r["First_Month_Available"], r["Last_Month_Available"]) for r in reports} == {
        ("2026-01", "2026-02")
    }


@pytest.mark.parametrize(
    ("report", "schema", "extra"),
    [
        ("pr", "PR", {}),
        ("pr", "PR", {"attributes_to_show": "Access_Method|Country_Code|Country_Name"}),
        (
            "pr",
            "PR",
            {"granularity": "Total", "metric_type": "Total_Item_Requests|Unique_Item_Requests"},
        ),
        ("pr_p1", "PR_P1", {}),
        ("ir", "IR", {}),
        ("ir", "IR", {"attributes_to_show": "Access_Type|Access_Method|Country_Code"}),
        ("ir", "IR", {"granularity": "Total"}),
        ("ir_a1", "IR_A1", {}),
    ],
)
def test_reports_validate_against_the_specification(web, report, schema, extra):
    client, loaded = web
    response = client.get(f"/r51/reports/{report}", params=auth(loaded, **extra))
    assert response.status_code == 200, response.text
    body = response.json()
    validate(body, ref(schema))
    assert body["Report_Items"], "the customer's repository has usage in these months"


def monthly(body: dict) -> dict:
    out: dict = defaultdict(int)
    for report_item in body["Report_Items"]:
        for item in report_item.get("Items", [report_item]):
            for performance in item["Attribute_Performance"]:
                for metric, counts in performance["Performance"].items():
                    for month, n in counts.items():
                        out[(metric, month)] += n
    return dict(out)


def test_pr_equals_sum_of_ir_equals_manifest(web):
    client, loaded = web
    pr = client.get("/r51/reports/pr", params=auth(loaded)).json()
    ir = client.get("/r51/reports/ir", params=auth(loaded)).json()
    assert monthly(pr) == monthly(ir)
    prefix = loaded.prefixes[1]
    expected = sums(
        loaded.manifest, lambda i: i["item_id"].startswith(prefix), by=lambda i: i["date"][:7]
    )
    want = {
        (metric, month): values[column]
        for month, values in expected.items()
        for metric, column in COUNTER.items()
        if values[column]
    }
    assert monthly(pr) == want
    items = {i["Item"] for i in ir["Report_Items"][0]["Items"]}
    assert all(i.startswith(prefix) for i in items)
    by_country = client.get(
        "/r51/reports/ir", params=auth(loaded, attributes_to_show="Country_Code")
    ).json()
    assert monthly(by_country) == monthly(ir)


def test_item_filter_and_tsv(web):
    client, loaded = web
    per_item = sums(loaded.manifest, by=lambda i: i["item_id"])
    item = max(
        (k for k in per_item if k.startswith(loaded.prefixes[1])),
        key=lambda k: per_item[k]["total_item_requests"],
    )
    body = client.get("/r51/reports/ir", params=auth(loaded, item_id=item.upper())).json()
    validate(body, ref("IR"))
    [only] = body["Report_Items"][0]["Items"]
    assert only["Item"] == item
    total = sum(only["Attribute_Performance"][0]["Performance"]["Total_Item_Requests"].values())
    assert total == per_item[item]["total_item_requests"]
    tsv = client.get("/r51/reports/pr", params=auth(loaded, format="tsv"))
    lines = tsv.text.splitlines()
    assert lines[0] == "Report_Name\tPlatform Report"
    assert lines[13] == ""
    assert lines[14].split("\t")[:3] == ["Platform", "Metric_Type", "Reporting_Period_Total"]
    rows = {line.split("\t")[1]: int(line.split("\t")[2]) for line in lines[15:]}
    pr = monthly(client.get("/r51/reports/pr", params=auth(loaded)).json())
    assert rows["Total_Item_Requests"] == sum(
        n for (m, _), n in pr.items() if m == "Total_Item_Requests"
    )


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"customer_id": None}, 400, 1030),
        ({"api_key": None}, 400, 1030),
        ({"begin_date": None}, 400, 1030),
        ({"customer_id": "nobody"}, 401, 2000),
        ({"customer_id": "' OR 1=1 --"}, 401, 2000),
        ({"requestor_id": "someone-else"}, 401, 2000),
        ({"api_key": "wrong"}, 401, 2020),
        ({"begin_date": "2026-13"}, 400, 3020),
        ({"begin_date": "January"}, 400, 3020),
        ({"begin_date": "2026-02", "end_date": "2026-01"}, 400, 3020),
        ({"begin_date": "2999-01", "end_date": "2999-02"}, 400, 3020),
    ],
)
def test_request_exceptions(web, change, status, code):
    client, loaded = web
    params = {k: v for k, v in {**auth(loaded), **change}.items() if v is not None}
    for report in ("pr", "ir"):
        response = client.get(f"/r51/reports/{report}", params=params)
        assert response.status_code == status, response.text
        validate(response.json(), ref(f"Exception_{code}"))


def test_exceptions_in_the_report_header(web):
    client, loaded = web
    # 3030: nothing in these months
    body = client.get(
        "/r51/reports/ir", params=auth(loaded, begin_date="2025-01", end_date="2025-02")
    ).json()
    validate(body, ref("IR"))
    assert codes(body) == [3030] and body["Report_Items"] == []
    # 3031: data complete through 2026-02-04 only, so February is not ready
    body = client.get("/r51/reports/pr", params=auth(loaded)).json()
    assert 3031 in codes(body)
    assert [e for e in body["Report_Header"]["Exceptions"] if e["Code"] == 3031][0][
        "Data"
    ] == "2026-02"
    january = client.get("/r51/reports/pr", params=auth(loaded, end_date="2026-01-31")).json()
    assert codes(january) == []
    # 3050: a parameter this report does not know; the report is still delivered
    body = client.get("/r51/reports/pr_p1", params=auth(loaded, item_id="x", colour="red")).json()
    validate(body, ref("PR_P1"))
    assert 3050 in codes(body) and body["Report_Items"]
    assert (
        "colour" in [e for e in body["Report_Header"]["Exceptions"] if e["Code"] == 3050][0]["Data"]
    )
    # 3060 / 3062: filter and attribute values we do not know
    body = client.get(
        "/r51/reports/ir",
        params=auth(loaded, metric_type="Searches_Regular", attributes_to_show="YOP"),
    ).json()
    validate(body, ref("IR"))
    assert {3060, 3062} <= set(codes(body))
