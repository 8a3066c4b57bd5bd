"""Identifier normalisation: one item, one key, whatever spelling the tracker recorded.

Repositories, national nodes and the portal record one item as `oai:https://host/server:1/2`,
`OAI:host:1/2`, `https://hdl.handle.net/1721.1/123`, `1721.1/123`, `info:doi/10.1234/X`,
`doi.org/10.1234%2Fx`, with a zero-width space pasted in…; counting before normalising would
split its usage over several keys. Every spelling reaches one key:

- OAI identifiers: `oai:<host, lower case>:<local id>` (a URL scheme, a port and an endpoint
  path such as DSpace 7's `/server` are not part of the repository's name);
- DOIs: `10.<registrant>/<suffix>` in lower case (DOIs are case-insensitive), also when reached
  through the handle system (`hdl:10.1234/x`: DOIs are handles under the `10.` prefix);
- handles: `hdl:<prefix>/<suffix>`, case kept (handles are case-sensitive by default), versions
  (`1721.1/140856.2`) kept apart: a version is a separate handle of its own.

Anything else is not an identifier this code understands and is kept as recorded, without its
invisible characters and surrounding white space: counted under that spelling, never guessed.

How, at the speed a day needs (normalisation runs on a day's distinct identifiers, a few
hundred thousand): a vectorised pass cleans every value and recognises the spellings that make
up nearly all of the data, OAI identifiers in all their forms and already canonical DOIs and
handles; the rest (resolver URLs, `info:` URIs, bare and repository-URL handles) goes value by
value through `idutils` (inveniosoftware's persistent-identifier library), which detects and
normalises DOIs and handles, after the few spellings it does not know are rewritten into ones
it does. Percent-decoding runs in Python too, on the values that hold an escape. Both paths give
the same key for the spellings they share (tests/test_identifiers.py checks this).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import idutils
import polars as pl

# Characters that do not show: controls, format characters (zero-width space and joiners,
# direction marks, the byte-order mark, the soft hyphen…) and the blank "letters" (Hangul
# fillers, the combining grapheme joiner) that survive copy and paste. Rust regex syntax.
_INVISIBLE = r"[\p{Cc}\p{Cf}\x{034F}\x{115F}\x{1160}\x{3164}\x{FFA0}]"
# Separators other than the ASCII space (no-break, thin, ideographic spaces, line separators).
_SEPARATOR = r"\p{Z}"
_ESCAPE = r"%[0-9A-Fa-f]{2}"
# Spellings that are URLs of a resolver or a repository: there `?` and `#` begin a query or a
# fragment (`?noredirect`, `?sequence=1`), not part of the identifier. Elsewhere (a bare DOI)
# they are characters of the identifier.
_URL = r"(?i)^(?:https?://|(?:www\.|dx\.)?doi\.org/|hdl\.handle\.net/)"

# oai:<host><port?><endpoint path?>:<local id>. With a URL scheme (`oai:https://host:8080/
# server:1/2`) port and path are unambiguous. Without one, `:NN:` after the host is read as a
# port (2-5 digits) only when the rest has a `/`, as a DSpace handle does (`oai:host:8080:
# 123/4`): `oai:host:2019:15` stays as it is, a local id that merely starts with digits.
_OAI = (
    r"(?i)^oai:(?:"
    r"https?://(?P<url_host>[^:/\s]+)(?::\d{1,5})?(?:/[^:\s]*)?:(?P<url_local>\S.*)"
    r"|(?P<port_host>[^:/\s]+):\d{2,5}:(?P<port_local>\S[^/]*/.*)"
    r"|(?P<host>[^:/\s]+)(?:/[^:\s]*)?:(?P<local>\S.*)"
    r")$"
)
# An OAI identifier already in its key's spelling: host in lower case, no scheme, port or path.
_CANONICAL_OAI = r"^oai:[^\p{Lu}\p{Lt}:/\s]+:\S"
_PORT_OR_SCHEME = r"(?i)^oai:(?:https?://|[^:/\s]+:\d{2,5}:)"
_CANONICAL_DOI = r"^10\.\d+(?:\.\d+)*/\S+$"
_CANONICAL_HANDLE = r"^hdl:\d+(?:\.\d+)*/\S+$"

# Spellings idutils does not know, rewritten into ones it does (or into `hdl:`).
_INFO_URI = re.compile(r"(?i)^(?:info:(doi|hdl)/|urn:(doi):)\s*")
_WWW_DOI = re.compile(r"(?i)^((?:https?://)?)www\.doi\.org/")
# A repository's handle URL: `https://host/handle/1721.1/123`, `…/xmlui/handle/…`, also a file's
# `…/bitstream/handle/1721.1/123/file.pdf`: the item is the first suffix segment.
_REPOSITORY_HANDLE = re.compile(
    r"(?i)^(?:https?://)?(?P<host>[a-z0-9-]+(?:\.[a-z0-9-]+)+)(?::\d+)?(?:/[^?#\s]*)?"
    r"/handle/(?P<handle>\d+(?:\.\d+)*/[^/?#\s]+)"
)
_EXPLICIT_HANDLE = re.compile(r"(?i)^(?:hdl:|(?:https?://)?hdl\.handle\.net/)")
# Handle prefixes are numeric naming authorities (`1721.1`, `20.500.12345`): the only kind of
# prefix read as a handle without a `hdl:` or resolver in front, so that any `a/b` is not one.
_NAMING_AUTHORITY = re.compile(r"\d+(?:\.\d+)*")


def _clean(raw: pl.Expr) -> pl.Expr:
    """Without invisible characters, odd spaces made plain, trimmed; empty → null."""
    text = raw.str.replace_all(_INVISIBLE, "").str.replace_all(_SEPARATOR, " ").str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text)


def _unquote(text: str) -> str:
    """Percent-decoded; twice-encoded values (`%252F`) are decoded again, at most three times."""
    for _ in range(3):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def _fast_keys(text: pl.Series) -> pl.Series:
    """The key of the spellings recognised without a per-value call; null for the rest.

    Most values are OAI identifiers already in their key's spelling; they are recognised by
    three cheap tests, and only the others pay for the capturing match (about 10x slower).
    """
    frame = text.to_frame("text").with_columns(
        pl.col("text").str.contains(r"(?i)^oai:").fill_null(False).alias("oai"),
        (
            pl.col("text").str.contains(_CANONICAL_OAI)
            & ~pl.col("text").str.contains(_PORT_OR_SCHEME)
        )
        .fill_null(False)
        .alias("canonical"),
    )
    handle_prefix = pl.col("text").str.extract(r"^hdl:(\d[\d.]*)/", 1)
    key = frame.select(
        pl.when(pl.col("canonical"))
        .then(pl.col("text"))
        .when(pl.col("oai"))
        .then(None)
        .when(pl.col("text").str.contains(_CANONICAL_DOI))
        .then(pl.col("text").str.to_lowercase())
        .when(
            pl.col("text").str.contains(_CANONICAL_HANDLE) & ~handle_prefix.str.starts_with("10.")
        )
        .then(pl.col("text"))
    ).to_series()
    other = (frame.get_column("oai") & ~frame.get_column("canonical")).arg_true()
    if other.len():
        parts = pl.col("parts").struct
        host = pl.coalesce(parts.field(f"{p}host") for p in ("url_", "port_", ""))
        local = pl.coalesce(parts.field(f"{p}local") for p in ("url_", "port_", ""))
        oai = (
            text.gather(other)
            .str.extract_groups(_OAI)
            .to_frame("parts")
            .select(
                pl.when(host.is_not_null()).then(
                    pl.concat_str([pl.lit("oai:"), host.str.to_lowercase(), pl.lit(":"), local])
                )
            )
        )
        key = key.scatter(other, oai.to_series())
    return key


def _library_key(text: str) -> str | None:
    """The DOI or handle key of one spelling the vectorised pass did not recognise, or None.

    idutils knows `doi:`, `doi.org/` and `dx.doi.org/` with or without a scheme and DOIs with
    dotted registrants (`10.1000.10/x`), and `hdl:` and `hdl.handle.net/` for handles; it does
    not know `www.doi.org`, `info:doi/`, `info:hdl/`, `urn:doi:` or a repository's `/handle/`
    URLs, which are rewritten first. Its handle test accepts any `a/b` (it is meant for values
    known to be identifiers), so a handle without an explicit marker must have a numeric prefix.
    """
    spelled = _INFO_URI.sub(lambda m: (m.group(1) or m.group(2)).lower() + ":", text, count=1)
    spelled = _WWW_DOI.sub(r"\1doi.org/", spelled, count=1)
    repository = _REPOSITORY_HANDLE.match(spelled)
    if repository and repository.group("host").lower() not in ("hdl.handle.net", "doi.org"):
        spelled = "hdl:" + repository.group("handle")
    if idutils.is_doi(spelled):
        return idutils.normalize_doi(spelled).lower()
    if not idutils.is_handle(spelled):
        return None
    handle = idutils.normalize_handle(spelled)
    if idutils.is_doi(handle):  # a DOI reached through the handle system
        return handle.lower()
    prefix, _, suffix = handle.partition("/")
    if not suffix or not prefix:
        return None
    if _EXPLICIT_HANDLE.match(spelled) or _NAMING_AUTHORITY.fullmatch(prefix):
        return f"hdl:{handle}"
    return None


def normalize_distinct(raw: pl.Series) -> pl.Series:
    """The key of each value (null for a missing or blank one); meant for distinct values,
    where the per-value library calls run once per spelling rather than once per event."""
    frame = raw.cast(pl.String).to_frame("raw").select(_clean(pl.col("raw")).alias("clean"))
    clean = frame.get_column("clean")
    is_url = clean.str.contains(_URL).fill_null(False)
    text = pl.select(
        pl.when(pl.lit(is_url)).then(pl.lit(clean).str.replace(r"[?#].*$", "")).otherwise(clean)
    ).to_series()
    escaped = text.str.contains(_ESCAPE).fill_null(False)
    if escaped.any():
        at = escaped.arg_true()
        decoded = pl.Series([_unquote(v) for v in text.gather(at).to_list()], dtype=pl.String)
        text = text.scatter(at, pl.select(_clean(pl.lit(decoded))).to_series())
    text = text.str.strip_chars_end("/")
    key = _fast_keys(text)
    pending = (key.is_null() & text.str.contains("/")).fill_null(False)
    if pending.any():
        at = pending.arg_true()
        found = [_library_key(v) for v in text.gather(at).to_list()]
        key = key.scatter(at, pl.Series(found, dtype=pl.String))
    return pl.select(pl.coalesce(pl.lit(key), pl.lit(clean))).to_series().alias(raw.name)


def normalize_identifiers(raw: pl.Series) -> pl.Series:
    """Normalise a column through its distinct values (cheap on large days)."""
    distinct = raw.unique()
    return normalize_distinct(distinct).gather(distinct_index(raw, distinct)).alias(raw.name)


def normalize_identifier_expr(raw: pl.Expr) -> pl.Expr:
    """`normalize_identifiers` as an expression, for frames that normalise a column in a query."""
    return raw.map_batches(normalize_identifiers, return_dtype=pl.String, is_elementwise=True)


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


# The canonical spellings `_fast_keys` recognises, for one plain ASCII value (no white space,
# controls, escapes or trailing `/`: what `_clean`, the URL cut and the decoding would change):
# there Python's `re` and the Rust patterns above agree, and `\S`, `\d` are ASCII.
_PLAIN_ASCII = re.compile(r"[!-~]+")
_SCALAR_CANONICAL_OAI = re.compile(r"oai:[^A-Z:/]+:\S")
_SCALAR_PORT_OR_SCHEME = re.compile(r"(?i)oai:(?:https?://|[^:/\s]+:\d{2,5}:)")
_SCALAR_DOI = re.compile(r"10\.\d+(?:\.\d+)*/\S+")
_SCALAR_HANDLE = re.compile(r"hdl:(\d[\d.]*)/\S+")


def _scalar_fast_key(raw: str) -> str | None:
    """The key of a value already in a canonical spelling (an own OAI key, a DOI, a handle),
    computed in plain Python, or None when the value needs the full path. One API request
    normalises one identifier: the vectorised path costs ~10 ms for it (a few dozen Polars
    expressions), this a few microseconds (issue 16). `tests/test_identifiers.py` checks that
    both give the same key."""
    if not _PLAIN_ASCII.fullmatch(raw) or "%" in raw or raw.endswith("/"):
        return None
    if raw[:4].lower() == "oai:":
        canonical = _SCALAR_CANONICAL_OAI.match(raw) and not _SCALAR_PORT_OR_SCHEME.match(raw)
        return raw if canonical else None
    if _SCALAR_DOI.fullmatch(raw):
        return raw.lower()
    handle = _SCALAR_HANDLE.fullmatch(raw)
    if handle and re.fullmatch(r"\d+(?:\.\d+)*", handle.group(1)):
        return raw if not handle.group(1).startswith("10.") else None
    return None


def normalize_identifier(raw: str | None) -> str | None:
    """Scalar form for registry prefixes, API parameters and tests: the same rules as the
    columns, so a query parameter finds exactly the key the pipeline counted under (the
    canonical spellings in plain Python, `_scalar_fast_key`; the rest by the column path)."""
    if raw is not None:
        fast = _scalar_fast_key(raw)
        if fast is not None:
            return fast
    return normalize_distinct(pl.Series([raw], dtype=pl.String))[0]


def clean_identifier(raw: str | None) -> str | None:
    """Without invisible characters and surrounding white space (None when nothing is left):
    what a spelling that is no identifier is kept as."""
    return pl.select(_clean(pl.lit(raw, dtype=pl.String))).item()


def oai_prefix_expr(item_id: pl.Expr) -> pl.Expr:
    """`oai:host:` of a normalised OAI identifier: the key that resolves an item's owner."""
    return item_id.str.extract(r"^(oai:[^:]+:)", 1)
