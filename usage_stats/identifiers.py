"""Identifier normalisation: one item, one key, whatever spelling the tracker recorded.

Repositories record the same item as `oai:https://host/server:123/4`, `OAI:host:123/4`,
`oai:host:123/4 `…; counting before normalising splits its usage over several keys. The rules
are vectorised Polars expressions and are applied to the *distinct* raw identifiers of a day,
then joined back, because a day has far fewer spellings than events.
"""

from __future__ import annotations

import polars as pl

# oai:<optional scheme><host><optional path>:<local id>; the path after the host (e.g. the
# DSpace 7 "/server" endpoint) is not part of the repository identifier.
_OAI = r"(?i)^oai:(?:https?://)?([^:/\s]+)(?:/[^:\s]*)?:(\S.*)$"
_DOI = r"(?i)^(?:https?://(?:dx\.)?doi\.org/|doi:\s*)?(10\.\d{4,9}/\S+)$"
_HANDLE = r"(?i)^(?:https?://hdl\.handle\.net/|hdl:\s*)(\d[\w.]*/\S+)$"


def normalize_identifier_expr(raw: pl.Expr) -> pl.Expr:
    """Standard normalisation: OAI identifiers, DOIs (lower case, no resolver) and handles."""
    s = raw.str.strip_chars()
    oai = s.str.extract_groups(_OAI)
    doi = s.str.extract(_DOI, 1)
    handle = s.str.extract(_HANDLE, 1)
    return (
        pl.when(s.is_null() | (s == ""))
        .then(pl.lit(None, dtype=pl.String))
        .when(oai.struct.field("1").is_not_null())
        .then(
            pl.concat_str(
                [
                    pl.lit("oai:"),
                    oai.struct.field("1").str.to_lowercase(),
                    pl.lit(":"),
                    oai.struct.field("2"),
                ]
            )
        )
        .when(doi.is_not_null())
        .then(doi.str.to_lowercase())
        .when(handle.is_not_null())
        .then(pl.concat_str([pl.lit("hdl:"), handle]))
        .otherwise(s)
    )


def normalize_identifiers(raw: pl.Series) -> pl.Series:
    """Normalise a column through its distinct values (cheap on large days)."""
    distinct = raw.unique()
    normalized = distinct.to_frame("raw").select(normalize_identifier_expr(pl.col("raw")))
    return normalized.to_series().gather(distinct_index(raw, distinct)).alias(raw.name)


def distinct_index(values: pl.Series, distinct: pl.Series) -> pl.Series:
    """For each element of `values`, its position in `distinct` (its distinct values, null
    included when present).

    Matching millions of rows against their distinct values on the strings hashes each string
    again and compares it. When the 64-bit hashes of the distinct values do not collide
    (checked, not assumed), a row's hash names its value exactly, and the lookup runs on
    integers instead.
    """
    positions = pl.int_range(distinct.len(), dtype=pl.UInt32, eager=True)
    hashes = distinct.hash()
    if hashes.n_unique() == distinct.len():
        rows = values.hash().to_frame("value")
        table = pl.DataFrame({"value": hashes, "_index": positions})
        on_strings = False
    else:
        rows = values.to_frame("value")
        table = pl.DataFrame({"value": distinct, "_index": positions})
        on_strings = True
    joined = rows.join(table, on="value", how="left", nulls_equal=on_strings, maintain_order="left")
    return joined.get_column("_index")


def normalize_identifier(raw: str | None) -> str | None:
    """Scalar form for registry prefixes, API parameters and tests."""
    return pl.select(normalize_identifier_expr(pl.lit(raw, dtype=pl.String))).item()


def oai_prefix_expr(item_id: pl.Expr) -> pl.Expr:
    """`oai:host:` of a normalised OAI identifier: the key that resolves an item's owner."""
    return item_id.str.extract(r"^(oai:[^:]+:)", 1)
