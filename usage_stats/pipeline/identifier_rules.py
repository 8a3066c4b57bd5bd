"""Per-source identifier rules, applied after the standard normalisation.

Some repositories spell their identifiers in ways the standard OAI rule cannot merge (a legacy
handle prefix, a renamed host); the admin DB gives such a source a `regex` rule (pattern and
replacement) or a `mapping` table. A rule belongs to the source that owns the identifiers, so
it applies to every event of that source's items, wherever they were recorded: on its own
site, and on the national node and the portal when the identifier carries one of its prefixes
(OAI, handle or DOI, resolved as `usage_stats.pipeline.ownership` resolves owners).

The rules run on distinct identifiers only and leave sources with the standard rule untouched;
the cleaning step normalises again, which changes nothing for identifiers already normal.
"""

from __future__ import annotations

import polars as pl

from usage_stats.admin.sources import Source, load_mapping, sources_frame
from usage_stats.pipeline.identifiers import normalize_identifiers
from usage_stats.pipeline.ownership import declarations, owner_ids


def apply_identifier_rules(events: pl.DataFrame, sources: list[Source]) -> pl.DataFrame:
    """`events` with `raw_identifier` rewritten by the rule of the source owning each item."""
    ruled = [s for s in sources if s.identifier_rule != "standard"]
    if not ruled or events.is_empty():
        return events
    # The ruled sources' own prefixes, whatever their type: a rule follows its identifiers.
    declared = declarations(sources_frame(ruled), types=("R", "N", "L"))
    rule_sites = [s.site_id for s in ruled]
    pairs = events.select("site_id", "raw_identifier").unique()
    normal = normalize_identifiers(pairs.get_column("raw_identifier").cast(pl.String))
    pairs = (
        pairs.with_columns(normal.alias("_normal"))
        .with_columns(owner_ids(normal, declared).alias("_by_prefix"))
        .with_columns(
            pl.coalesce(
                pl.col("_by_prefix"),
                pl.when(pl.col("site_id").is_in(rule_sites)).then(pl.col("site_id")),
            ).alias("_rule_site")
        )
        .filter(pl.col("_rule_site").is_not_null() & pl.col("_normal").is_not_null())
    )
    if pairs.is_empty():
        return events
    rewritten = []
    for source in ruled:
        part = pairs.filter(pl.col("_rule_site") == source.site_id)
        if part.is_empty():
            continue
        if source.identifier_rule == "regex":
            part = part.with_columns(
                pl.col("_normal")
                .str.replace(source.rule_pattern or "", source.rule_replacement or "")
                .alias("_ruled")
            )
        else:
            mapping = load_mapping(source.mapping_file or "")
            part = part.join(
                mapping.rename({"from": "_normal", "to": "_to"}), on="_normal", how="left"
            ).with_columns(pl.coalesce("_to", "_normal").alias("_ruled"))
        rewritten.append(part.select("site_id", "raw_identifier", "_ruled"))
    table = pl.concat(rewritten)
    return (
        events.join(table, on=["site_id", "raw_identifier"], how="left", maintain_order="left")
        .with_columns(
            pl.coalesce(
                pl.col("_ruled").cast(events.schema["raw_identifier"]), "raw_identifier"
            ).alias("raw_identifier")
        )
        .drop("_ruled")
    )
