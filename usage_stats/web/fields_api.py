"""`/api/v1/breakdowns` and `/api/v1/items/metadata`: what a client needs to show the
breakdown endpoints without hard-coding them.

`/api/v1/breakdowns` lists the subcount fields the usage breakdowns
(`/api/v1/{sources|nodes|global}/breakdown/<field>`) and the record breakdowns
(`/api/v1/records/…/breakdown/<field>`) answer, read from the pipeline's own field lists, so a
field the pipeline adds (a referrer, say) is offered as soon as it is counted; with the
readable labels of the controlled values (COAR resource types and access rights, from
`usage_stats/data/coar_vocabularies.json`). Languages are ISO 639-3 codes, which browsers
name themselves (`Intl.DisplayNames`).

`/api/v1/items/metadata?key=…` describes items (a breakdown's `item` values) by their
harvested record: title, type, year, repository.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Query, Request

from usage_stats.pipeline.records import LIST_FIELDS, SUBCOUNT_FIELDS
from usage_stats.pipeline.usage_subcounts import USAGE_SUBCOUNT_FIELDS
from usage_stats.web.api import _ctx
from usage_stats.web.common import ApiError

router = APIRouter(prefix="/api/v1", tags=["usage breakdowns"])
MAX_KEYS = 100
MAX_KEY_BYTES = 512  # OpenSearch's limit on a document id, and far above any identifier
# Field names as a reader says them; a field not listed here is named by the client from its
# key (underscores as spaces).
FIELD_LABELS = {
    "resource_type": "Resource type",
    "access_status": "Access status",
    "language": "Language",
    "subject": "Subject",
    "publisher": "Publisher",
    "funder": "Funder",
    "affiliation": "Affiliation",
    "file_format": "File format",
    "referrer": "Referrer",
    "country": "Visitor country",
    "item": "Item",
}
# Which vocabulary labels the values of a field.
VOCABULARY_OF = {"resource_type": "resource_types", "access_status": "access_rights"}


@cache
def _labels() -> dict[str, dict[str, str]]:
    path = resources.files("usage_stats") / "data" / "coar_vocabularies.json"
    coar = json.loads(path.read_text(encoding="utf-8"))
    return {
        field: {uri: str(concept["label"]) for uri, concept in sorted(coar[vocabulary].items())}
        for field, vocabulary in VOCABULARY_OF.items()
    }


@router.get(
    "/breakdowns",
    summary="The fields the usage and record breakdowns answer, and their values' labels",
)
def breakdown_fields() -> dict:
    """`usage`: the fields of `/api/v1/{sources|nodes|global}/breakdown/<field>`; `records`:
    those of `/api/v1/records/…/breakdown/<field>`; `multi_valued`: the fields an item can
    count under several values of (their shares may add up to more than 1); `field_labels`:
    each field's name; `value_labels`: field → value → label for the controlled values."""
    fields = list(dict.fromkeys([*USAGE_SUBCOUNT_FIELDS, *SUBCOUNT_FIELDS]))
    return {
        "usage": list(USAGE_SUBCOUNT_FIELDS),
        "records": list(SUBCOUNT_FIELDS),
        "multi_valued": list(LIST_FIELDS),
        "field_labels": {f: FIELD_LABELS.get(f, f.replace("_", " ").capitalize()) for f in fields},
        "value_labels": _labels(),
    }


Keys = Annotated[
    list[str],
    Query(alias="key", description=f"item keys (1..{MAX_KEYS}), e.g. an item breakdown's"),
]


@router.get(
    "/items/metadata",
    summary="What items are: title, type, year and repository of their harvested records",
)
def items_metadata(request: Request, key: Keys) -> dict:
    """One entry per requested key that has a harvested record (`items`, in the order asked);
    keys without one are listed in `unknown`."""
    wanted = list(dict.fromkeys(k for k in key if k))
    if not wanted or len(wanted) > MAX_KEYS:
        raise ApiError(400, "key", f"give 1 to {MAX_KEYS} item keys")
    if any(len(k.encode()) > MAX_KEY_BYTES for k in wanted):
        raise ApiError(400, "key", f"an item key is at most {MAX_KEY_BYTES} bytes")
    ctx = _ctx(request)
    shown = ("title", "resource_type", "publication_year", "access_rights", "source_key", "deleted")
    rows = {
        r["item_key"]: r
        for r in ctx.store.item_metadata(tuple(wanted), shown).iter_rows(named=True)
    }
    sources = {s.source_key: s for s in ctx.sources()}
    types = _labels()["resource_type"]
    items = []
    for item_key in wanted:
        row = rows.get(item_key)
        if row is None:
            continue
        source = sources.get(row["source_key"])
        items.append(
            {
                "key": item_key,
                "title": row["title"],
                "resource_type": row["resource_type"],
                "resource_type_label": types.get(row["resource_type"] or ""),
                "publication_year": row["publication_year"],
                "access_status": row["access_rights"],
                "source_key": row["source_key"],
                "source_name": source.name if source else None,
                "deleted": bool(row["deleted"]),
            }
        )
    known = {i["key"] for i in items}
    return {"items": items, "unknown": [k for k in wanted if k not in known]}
