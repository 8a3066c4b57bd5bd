"""Planted referrers of the synthetic visits: Matomo's `referer_type`, `referer_name` and
`referer_url` of `log_visit`, and the referrer value the pipeline must make of each.

Derived from the visit id alone (`idvisit % len(PLANTED)`), never drawn from the generator's
random stream: every other planted figure of a seed stays what it was. The expected values
are written out by hand here (not computed by `usage_stats.pipeline.referrers`), so a test
comparing the two can fail.
"""

from __future__ import annotations

import polars as pl

# (referer_type, referer_name, referer_url, the referrer value expected)
PLANTED: tuple[tuple[int, str | None, str | None, str], ...] = (
    (1, None, None, "direct"),
    (1, None, None, "direct"),
    (1, None, None, "direct"),
    (2, "Google", "https://www.google.com/search?q=tesis+agua", "search:google"),
    (2, "Google Scholar", "https://scholar.google.com/scholar?q=x", "search:google scholar"),
    (3, "www.scielo.org", "https://www.scielo.org/article/abc?lang=es", "website:scielo.org"),
    (3, "redalyc.org", "http://REDALYC.org:80/articulo.oa?id=1", "website:redalyc.org"),
    (6, "Boletín", "https://lareferencia.info/?mtm_campaign=boletin", "campaign:boletín"),
    (7, "Facebook", "https://m.facebook.com/", "social:facebook"),
    (3, None, "https://repositorio.example.cr/handle/1/2", "website:repositorio.example.cr"),
)


def _slot() -> pl.Expr:
    return (pl.col("idvisit").cast(pl.Int64) % len(PLANTED)).cast(pl.UInt32)


def referrer_columns() -> list[pl.Expr]:
    """The three Matomo columns of each visit, from its `idvisit`."""
    kinds, names, urls, _ = zip(*PLANTED, strict=True)
    return [
        pl.lit(pl.Series(kinds, dtype=pl.UInt8)).gather(_slot()).alias("referer_type"),
        pl.lit(pl.Series(names, dtype=pl.String)).gather(_slot()).alias("referer_name"),
        pl.lit(pl.Series(urls, dtype=pl.String)).gather(_slot()).alias("referer_url"),
    ]


def planted_referrer(idvisit: int) -> str:
    """The referrer value the pipeline must give visit `idvisit`."""
    return PLANTED[idvisit % len(PLANTED)][3]
