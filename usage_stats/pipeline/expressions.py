"""Polars expressions shared by the pipeline's stages and the synthetic generator."""

from __future__ import annotations

import polars as pl


def lookup_expr(expr: pl.Expr, mapping: dict, default: object, dtype: pl.DataType) -> pl.Expr:
    """`mapping[value]`, or `default` for any other value including null.

    What `replace_strict(mapping, default=...)` does, as a chain of comparisons: for the
    handful of keys of the Matomo code tables this runs in half the time on large days.
    """
    chain = None
    for key, value in mapping.items():
        test = expr == key
        chain = (pl.when(test) if chain is None else chain.when(test)).then(
            pl.lit(value, dtype=dtype)
        )
    fallback = pl.lit(default, dtype=dtype)
    if chain is None:  # still one value per row
        chain = pl.when(expr.is_null()).then(fallback)
    return chain.otherwise(fallback)
