"""Which repository owns an item, from its key and the prefixes repositories declare.

Usage is attributed to the repository that holds the item (`owner_site_id`) wherever it
happened, so a repository sees its items' use on national nodes and the portal (the `source`
rollup). National nodes and the portal record items under whatever spelling they harvested:
an OAI identifier, a handle or a DOI. The key names its naming authority, and a repository
declares the authorities that are its own:

- OAI `oai:<host>:…`: `identifier_prefix` (`oai:<host>:`);
- handle `hdl:<prefix>/…`: `handle_prefixes` (`1721.1`, `20.500.12345`);
- DOI `10.<registrant>/…`: `doi_prefixes` (`10.1234`).

A declared prefix that is a whole naming authority matches it exactly: `1721.1` owns
`hdl:1721.1/5` but not `hdl:1721.10/5`, and `10.1234` owns `10.1234/x` but neither
`10.12345/x` nor `10.1234.5/x` (a dotted registrant is another DOI prefix). A longer prefix
(`10.1234/ufsc.`, `oai:host:10669/`) matches the start of the identifier, so repositories that
share a publisher's DOI prefix can each claim their own part; the longest matching prefix wins.
Only active repositories (type R) own items; two of them declaring the same prefix is refused
when the registry is saved (`usage_stats.admin.sources.prefix_conflicts`), and a frame that
still has one (a hand-made registry) gives the prefix to the repository listed first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import polars as pl

from usage_stats.pipeline.identifiers import clean_identifier, normalize_identifier

if TYPE_CHECKING:
    from usage_stats.admin.sources import Source

KINDS = ("oai", "hdl", "doi")
# Source frame column of each kind's declared prefixes (a string, or a list of strings).
COLUMNS = {"oai": "identifier_prefix", "hdl": "handle_prefixes", "doi": "doi_prefixes"}

DECLARATION_SCHEMA: dict[str, pl.DataType] = {
    "kind": pl.String(),
    "prefix": pl.String(),
    "owner_site_id": pl.Int32(),
}

_DOI_KEY = r"^10\.\d+(?:\.\d+)*/"
_NAMING_AUTHORITY = re.compile(r"\d+(?:\.\d+)*")
_DOI_PREFIX = re.compile(r"10\.\d+(?:\.\d+)*(?:/.+)?")
_SEPARATORS = re.compile(r"[;\s]+")
_SPACED_SCHEME = re.compile(r"(?i)\b(doi|hdl):\s+")


class PrefixError(ValueError):
    """A declared prefix that cannot be read as what it is declared to be."""


def split_prefixes(value: object) -> list[str]:
    """The prefixes of a cell or option, separated by `;` or white space (`doi: 10.1234` is one
    prefix, not two)."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [
        p for item in items for p in _SEPARATORS.split(_SPACED_SCHEME.sub(r"\1:", str(item))) if p
    ]


def _stem(text: str) -> str:
    """The declared prefix without invisible characters, white space and a trailing slash,
    ready to take a sample suffix: what an operator pastes is rarely clean."""
    return (clean_identifier(text) or "").rstrip("/")


def normalize_handle_prefix(text: str) -> str:
    """`1721.1` from `1721.1`, `hdl:1721.1`, `info:hdl/1721.1`, `https://hdl.handle.net/1721.1/`
    or a repository's `https://host/handle/1721.1`: normalised as the identifiers are (a sample
    suffix is appended, the key normalised, the suffix taken off again), so a declared prefix
    always matches the keys it is meant to."""
    key = normalize_identifier(f"{_stem(text)}/0") or ""
    if key.startswith("10.") and key.endswith("/0"):
        raise PrefixError(f"handle prefix {text!r} is a DOI prefix: declare it as a DOI prefix")
    if not key.startswith("hdl:") or not key.endswith("/0"):
        raise PrefixError(f"handle prefix {text!r} is not a handle prefix (e.g. 1721.1)")
    prefix = key[len("hdl:") : -len("/0")]
    if not _NAMING_AUTHORITY.fullmatch(prefix.split("/")[0]):
        raise PrefixError(
            f"handle prefix {text!r} is not a handle naming authority (digits and dots, "
            "e.g. 1721.1 or 20.500.12345)"
        )
    return prefix


def normalize_doi_prefix(text: str) -> str:
    """`10.1234` from `10.1234`, `doi:10.1234`, `https://doi.org/10.1234/`, `10.1234/ABC` →
    `10.1234/abc` (DOIs are case-insensitive, keys are lower case)."""
    key = normalize_identifier(f"{_stem(text)}/0") or ""
    prefix = key[: -len("/0")] if key.endswith("/0") else ""
    if not _DOI_PREFIX.fullmatch(prefix):
        raise PrefixError(
            f"DOI prefix {text!r} is not a DOI prefix (10.<registrant>, e.g. 10.1234)"
        )
    return prefix


def normalize_prefixes(value: object, kind: str) -> tuple[str, ...]:
    """Every prefix of a cell or option, normalised, once each, in order (equal lists compare
    equal, so a re-import of an unchanged file changes nothing)."""
    normalize = normalize_handle_prefix if kind == "hdl" else normalize_doi_prefix
    return tuple(sorted({normalize(p) for p in split_prefixes(value)}))


def declarations(sources: pl.DataFrame, types: Iterable[str] = ("R",)) -> pl.DataFrame:
    """(kind, prefix, owner) of every prefix the sources of `types` declare, first listed
    first; a prefix declared twice keeps its first owner."""
    owners = sources.filter(pl.col("type").is_in(list(types)))
    parts = []
    for kind, column in COLUMNS.items():
        if column not in owners.columns:
            continue
        prefix = pl.col(column)
        part = owners.select(pl.lit(kind).alias("kind"), prefix.alias("prefix"), "site_id")
        if isinstance(owners.schema[column], pl.List):
            part = part.explode("prefix")
        parts.append(part.filter(pl.col("prefix").is_not_null() & (pl.col("prefix") != "")))
    if not parts:
        return pl.DataFrame(schema=DECLARATION_SCHEMA)
    return (
        pl.concat(parts)
        .select("kind", "prefix", pl.col("site_id").cast(pl.Int32).alias("owner_site_id"))
        .unique(["kind", "prefix"], keep="first", maintain_order=True)
    )


def _authority(kind: pl.Expr, text: pl.Expr) -> pl.Expr:
    """The naming authority at the start of a key or declared prefix, in its `text` form (a
    handle without `hdl:`): `oai:host:`, `1721.1`, `10.1234`; null when there is none."""
    return (
        pl.when(kind == "oai")
        .then(text.str.extract(r"^(oai:[^:]+:)", 1))
        .otherwise(text.str.extract(r"^([^/]+)/", 1))
    )


def owner_ids(item_ids: pl.Series, declared: pl.DataFrame) -> pl.Series:
    """The owner of each normalised key (null where no repository declares its prefix).

    Keys are a day's distinct items (a few hundred thousand). The whole authorities are one
    join; the longer prefixes are compared, longest first, only with the keys under their
    authority, so a hundred of them cost little more than none."""
    key = pl.col("key")
    kind = (
        pl.when(key.str.starts_with("oai:"))
        .then(pl.lit("oai"))
        .when(key.str.starts_with("hdl:"))
        .then(pl.lit("hdl"))
        .when(key.str.contains(_DOI_KEY))
        .then(pl.lit("doi"))
    )
    frame = (
        item_ids.cast(pl.String)
        .to_frame("key")
        .with_columns(kind.alias("kind"))
        .with_columns(
            # what a prefix is compared with: a handle without its `hdl:`
            pl.when(pl.col("kind") == "hdl").then(key.str.slice(4)).otherwise(key).alias("text")
        )
        .with_columns(_authority(pl.col("kind"), pl.col("text")).alias("authority"))
    )
    marked = declared.with_columns(
        _authority(pl.col("kind"), pl.col("prefix")).alias("authority")
    ).with_columns(
        # a whole authority: `1721.1`, `10.1234`, `oai:host:` (itself its own authority)
        (pl.col("authority").is_null() | (pl.col("authority") == pl.col("prefix"))).alias("whole")
    )
    exact = marked.filter(pl.col("whole")).select(
        "kind", pl.col("prefix").alias("authority"), pl.col("owner_site_id").alias("_owner")
    )
    owner = (
        frame.join(exact, on=["kind", "authority"], how="left", maintain_order="left")
        .get_column("_owner")
        .cast(pl.Int32)
    )
    longer = marked.filter(~pl.col("whole")).sort(
        pl.col("prefix").str.len_chars(), descending=True, maintain_order=True
    )
    if longer.height:
        under = (
            frame.with_row_index("_row")
            .join(longer.select("kind", "authority").unique(), on=["kind", "authority"])
            .sort("_row")
        )
        matches = [
            pl.when((pl.col("kind") == k) & pl.col("text").str.starts_with(p)).then(pl.lit(o))
            for k, p, o in longer.select("kind", "prefix", "owner_site_id").iter_rows()
        ]
        found = under.select(pl.coalesce(*matches).cast(pl.Int32)).to_series()
        rows = under.get_column("_row")
        previous = owner.gather(rows)
        owner = owner.scatter(rows, found.zip_with(found.is_not_null(), previous))
    return owner.alias("owner_site_id")


_OAI_AUTHORITY = re.compile(r"(oai:[^:]+:)")
_OTHER_AUTHORITY = re.compile(r"([^/]+)/")
_DOI_KEY_START = re.compile(_DOI_KEY)


def _scalar_authority(kind: str | None, text: str) -> str | None:
    """`_authority` of one value."""
    found = (_OAI_AUTHORITY if kind == "oai" else _OTHER_AUTHORITY).match(text)
    return found.group(1) if found else None


class OwnerIndex:
    """`owner_ids` for one key at a time, in plain Python: built once from the declarations
    (a dict of whole authorities, the longer prefixes longest first), then a lookup costs
    microseconds where `owner_ids` on a one-row frame costs ~10 ms (the web services resolve
    an item's repository on every request; issue 16). The same rule, step by step;
    `tests/test_ownership.py` checks both agree."""

    def __init__(self, declared: pl.DataFrame) -> None:
        self._exact: dict[tuple[str, str], int] = {}
        longer: list[tuple[str, str, int]] = []
        for kind, prefix, owner in declared.select("kind", "prefix", "owner_site_id").iter_rows():
            authority = _scalar_authority(kind, prefix)
            if authority is None or authority == prefix:
                self._exact.setdefault((kind, prefix), owner)
            else:
                longer.append((kind, prefix, owner))
        longer.sort(key=lambda d: len(d[1]), reverse=True)  # stable: first declared first
        self._longer = longer
        self._longer_authorities = {(k, _scalar_authority(k, p)) for k, p, _ in longer}

    def owner_id(self, key: str) -> int | None:
        if key.startswith("oai:"):
            kind: str | None = "oai"
        elif key.startswith("hdl:"):
            kind = "hdl"
        elif _DOI_KEY_START.search(key):
            kind = "doi"
        else:
            return None  # no kind: the joins never match a null
        text = key[4:] if kind == "hdl" else key
        authority = _scalar_authority(kind, text)
        if authority is None:
            return None
        owner = self._exact.get((kind, authority))
        if (kind, authority) in self._longer_authorities:
            for declared_kind, prefix, declared_owner in self._longer:
                if declared_kind == kind and text.startswith(prefix):
                    return declared_owner
        return owner


def owner_index(sources: Iterable[Source]) -> OwnerIndex:
    """The index of the active sources' declarations (only active repositories own items)."""
    from usage_stats.admin.sources import sources_frame

    return OwnerIndex(declarations(sources_frame([s for s in sources if s.active])))


def owner_of(
    item_key: str, sources: Iterable[Source], index: OwnerIndex | None = None
) -> Source | None:
    """The repository owning one normalised key, by the same rule as the pipeline (for the web
    services, which resolve an item's repository from a query parameter). `index`: the
    sources' `owner_index`, when the caller keeps one."""
    listed = [s for s in sources if s.active]
    site = (index or owner_index(listed)).owner_id(item_key)
    return next((s for s in listed if s.site_id == site), None)
