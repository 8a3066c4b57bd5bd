"""One harvested record → the fields of `ITEM_METADATA_SCHEMA`.

A record may come in several formats at once: `oai_dc`, which every OAI-PMH data provider
must offer, and a richer one where the source has it (`oai_openaire` of the OpenAIRE
guidelines v4, which LA Referencia's network follows; DSpace's `dim` or `xoai`). The richer
format is read first because it says more precisely what each value is (an issued date rather
than one of several `dc:date`s, a COAR URI rather than a free-text type); `oai_dc` fills the
fields it leaves empty. Identifiers are the exception: every identifier any format carries is
kept, because each is a spelling under which usage may have been recorded. Files (count and
bytes) come as a pair from the first format that lists them (xoai bitstreams, dim extents,
oai_openaire `oaire:file` with `datacite:size`), never a count from one and bytes from another.

Values are read through `usage_stats.metadata.vocabularies`. A field none of whose values can
be read stays empty and each unreadable value is named in `problems` as `field: value`; a
value that could not be read is not a problem when another value (or format) filled the field.
One unreadable format is a problem of the record; a record with no readable format is an
error (`MetadataError`), which the harvester reports for that record alone.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import polars as pl
from lxml import etree

from usage_stats.metadata import vocabularies as vocab
from usage_stats.metadata.schema import ITEM_METADATA_SCHEMA
from usage_stats.pipeline.identifiers import normalize_distinct

DC = "http://purl.org/dc/elements/1.1/"
OAI_DC = "http://www.openarchives.org/OAI/2.0/oai_dc/"
OAIRE = "http://namespace.openaire.eu/schema/oaire/"
DATACITE = "http://datacite.org/schema/kernel-4"
DIM = "http://www.dspace.org/xmlns/dspace/dim"
XOAI = "http://www.lyncode.com/xoai"

# Richest first: the order in which formats fill the fields.
FORMAT_PRIORITY = ("oai_openaire", "dim", "xoai", "oai_dc")

FIELDS = (
    "metadata_format",
    "title",
    "creators",
    "publication_date",
    "publication_year",
    "resource_type",
    "access_rights",
    "embargo_end",
    "language",
    "subjects",
    "publisher",
    "funders",
    "projects",
    "affiliations",
    "formats",
    "file_count",
    "file_bytes",
    "identifiers",
    "item_keys",
    "doi",
    "handle",
    "urls",
    "article_version",
    "problems",
)
_LISTS = frozenset(name for name in FIELDS if isinstance(ITEM_METADATA_SCHEMA[name], pl.List))

# External entities and DTDs are never fetched: records come from the network.
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, remove_comments=True, remove_pis=True
)
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*(?:\s*;.*)?$")
_URL = re.compile(r"(?i)^https?://")
# DSpace identifier qualifiers that name the container (journal, book series) or are a
# bibliographic citation: shared by many records, so no key of this one.
_NOT_ITEM_IDENTIFIERS = frozenset(
    {"citation", "issn", "eissn", "isbn", "ismn", "bibliographiccitation"}
)
_DIM_RIGHTS = frozenset(
    {
        "dc.rights",
        "dc.rights.accessrights",
        "dc.rights.access",
        "dc.rights.driver",
        "datacite.rights",
    }
)
_DIM_EMBARGO = frozenset(
    {
        "dc.date.embargo",
        "dc.date.embargoend",
        "dc.embargo.lift",
        "dc.embargo.enddate",
        "dc.rights.embargoend",
    }
)
_DIM_VERSION = frozenset({"dc.type.version", "dc.description.version", "oaire.version"})


class MetadataError(ValueError):
    """No format of a record could be read; names each prefix and its parse error."""


class _Raw:
    """The values of one format, sorted by field, before any vocabulary is applied.

    Vocabulary fields hold groups: values that say the same thing (an element's COAR URI and
    its label); a group is read when one of its values is, and a problem names its first value.
    Files: `files` one entry per file the format lists (its size as written, or None when it
    gives none), `files_said` non-empty when the format lists the record's files at all (so an
    empty `files` means "no files", not "does not say"), `sizes` sizes the record states
    without tying them to a file (`datacite:size`).
    """

    __slots__ = (
        "title",
        "creators",
        "dates",
        "types",
        "versions",
        "rights",
        "embargo",
        "languages",
        "subjects",
        "publisher",
        "funders",
        "grants",
        "awards",
        "affiliations",
        "formats",
        "identifiers",
        "files",
        "files_said",
        "sizes",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, [])


def _text(element: etree._Element) -> str:
    text = element.text if len(element) == 0 else "".join(element.itertext())
    return " ".join(text.split()) if text else ""


def _local(tag: object) -> tuple[str, str]:
    if not isinstance(tag, str):
        return "", ""
    if tag[0] == "{":
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return "", tag


def _read_dc(element: etree._Element, name: str, raw: _Raw) -> None:
    """A Dublin Core element, in `oai_dc` or inside `oai_openaire`."""
    value = _text(element)
    if not value:
        return
    if name == "title":
        raw.title.append(value)
    elif name == "creator":
        raw.creators.append(value)
    elif name == "date":
        raw.dates.append(value)
    elif name == "type":
        raw.types.append((value,))
    elif name == "rights":
        raw.rights.append((value,))
    elif name == "language":
        raw.languages.append((value,))
    elif name == "subject":
        raw.subjects.append(value)
    elif name == "publisher":
        raw.publisher.append(value)
    elif name == "format":
        raw.formats.append(value)
    elif name == "identifier":
        raw.identifiers.append(value)
    elif name == "relation" and vocab.is_grant(value):
        raw.grants.append(value)


def _read_oai_dc(root: etree._Element) -> _Raw:
    raw = _Raw()
    for child in root:
        namespace, name = _local(child.tag)
        if namespace == DC:
            _read_dc(child, name, raw)
    return raw


def _read_oai_openaire(root: etree._Element) -> _Raw:
    """OpenAIRE guidelines for literature repositories v4 (`oaire:resource`)."""
    raw = _Raw()
    for child in root:
        namespace, name = _local(child.tag)
        if namespace == DC:
            _read_dc(child, name, raw)
        elif namespace == DATACITE:
            _read_datacite(child, name, raw)
        elif namespace == OAIRE:
            _read_oaire(child, name, raw)
    return raw


def _read_datacite(element: etree._Element, name: str, raw: _Raw) -> None:
    if name == "titles":
        titles = [(t.get("titleType"), _text(t)) for t in element if _local(t.tag)[1] == "title"]
        # The main title has no titleType; subtitles and translations come after it.
        raw.title.extend(v for kind, v in sorted(titles, key=lambda t: t[0] is not None) if v)
    elif name == "creators":
        for creator in element:
            for part in creator:
                part_name = _local(part.tag)[1]
                value = _text(part)
                if part_name == "creatorName" and value:
                    raw.creators.append(value)
                elif part_name == "affiliation" and value:
                    raw.affiliations.append(value)
    elif name == "dates":
        for date in element:
            kind = (date.get("dateType") or "").lower()
            value = _text(date)
            if kind == "issued" and value:
                raw.dates.append(value)
            elif kind == "available" and value:
                # The guidelines put the end of an embargo in the Available date.
                raw.embargo.append(value)
    elif name == "identifier":
        if value := _text(element):
            raw.identifiers.append(value)
    elif name == "alternateIdentifiers":
        raw.identifiers.extend(v for v in map(_text, element) if v)
    elif name == "rights":
        group = tuple(v for v in (element.get("rightsURI"), _text(element)) if v)
        if group:
            raw.rights.append(group)
    elif name == "subjects":
        raw.subjects.extend(v for v in map(_text, element) if v)
    elif name == "sizes":
        # Free text ("15 pages", "6 MB"): only byte sizes are the record's volume.
        raw.sizes.extend(v for v in map(_text, element) if v and vocab.is_size_statement(v))


def _read_oaire(element: etree._Element, name: str, raw: _Raw) -> None:
    if name == "resourceType":
        group = tuple(v for v in (element.get("uri"), _text(element)) if v)
        if group:
            raw.types.append(group)
    elif name == "version":
        group = tuple(v for v in (element.get("uri"), _text(element)) if v)
        if group:
            raw.versions.append(group)
    elif name == "file":
        # One file each (the guidelines: "repeat the property for each associated file");
        # its size is not an attribute, datacite:size may state the record's.
        raw.files.append(None)
        raw.files_said.append(True)
        if mime := element.get("mimeType"):
            raw.formats.append(mime)
    elif name == "fundingReferences":
        for reference in element:
            parts = {_local(p.tag)[1]: p for p in reference}
            if "funderName" in parts and (funder := _text(parts["funderName"])):
                raw.funders.append(funder)
            award = parts.get("awardNumber")
            if award is not None and (project := award.get("awardURI") or _text(award)):
                # The funder is named beside the award: its grant URI's funder code would
                # name it twice.
                (raw.awards if "funderName" in parts else raw.grants).append(project)


def _dim_fields(root: etree._Element) -> list[tuple[str, str]]:
    """(`schema.element[.qualifier]` in lower case, value) of a DSpace `dim:dim`."""
    out = []
    for field in root:
        if _local(field.tag) != (DIM, "field"):
            continue
        value = _text(field)
        if not value:
            continue
        key = f"{field.get('mdschema', '')}.{field.get('element', '')}"
        if qualifier := field.get("qualifier"):
            key += "." + qualifier
        out.append((key.lower(), value))
    return out


def _xoai_fields(root: etree._Element) -> list[tuple[str, str]]:
    """The same pairs from DSpace's `xoai` format, where a value sits in
    `element[schema]/element[element]/element[qualifier]?/element[language]/field[@name=value]`;
    the item's handle comes from its `others` part (its files, `_xoai_files`, from `bundles`)."""
    out: list[tuple[str, str]] = []

    def walk(element: etree._Element, path: tuple[str, ...]) -> None:
        for child in element:
            namespace, tag = _local(child.tag)
            if namespace != XOAI:
                continue
            name = child.get("name", "")
            if tag == "element":
                walk(child, (*path, name))
            elif tag == "field" and (value := _text(child)):
                if name == "value" and len(path) >= 3 and path[0] not in ("bundles", "others"):
                    out.append((".".join(path[:-1]).lower(), value))
                elif path[:1] == ("others",) and name in ("handle", "identifier"):
                    out.append(("dc.identifier.xoai", value))

    walk(root, ())
    return out


_XOAI_NS = {"x": XOAI}


def _xoai_field(element: etree._Element, name: str) -> str:
    return " ".join(
        str(element.xpath(f"string(x:field[@name='{name}'])", namespaces=_XOAI_NS)).split()
    )


def _xoai_files(root: etree._Element) -> tuple[list[str | None], list[str]] | None:
    """The bitstreams of the ORIGINAL bundle (the deposited files; THUMBNAIL, TEXT and
    LICENSE hold DSpace's derivatives and the deposit licence): each one's `size` (bytes, as
    written; None when absent) and the formats; None when the record has no `bundles`."""
    bundles = root.xpath(
        "x:element[@name='bundles']/x:element[@name='bundle']", namespaces=_XOAI_NS
    )
    if not bundles and not root.xpath("x:element[@name='bundles']", namespaces=_XOAI_NS):
        return None
    sizes: list[str | None] = []
    formats: list[str] = []
    for bundle in bundles:
        if _xoai_field(bundle, "name").upper() != "ORIGINAL":
            continue
        for bitstream in bundle.xpath(
            "x:element[@name='bitstreams']/x:element[@name='bitstream']", namespaces=_XOAI_NS
        ):
            sizes.append(_xoai_field(bitstream, "size") or None)
            if mime := _xoai_field(bitstream, "format"):
                formats.append(mime)
    return sizes, formats


def _read_xoai(root: etree._Element) -> _Raw:
    raw = _read_dspace(_xoai_fields(root))
    files = _xoai_files(root)
    if files is not None:
        # The bitstreams themselves say it better than any dc.format.extent beside them.
        raw.files, formats = list(files[0]), files[1]
        raw.files_said = [True]
        raw.formats.extend(formats)
    return raw


def _read_dspace(fields: Iterable[tuple[str, str]]) -> _Raw:
    """`dim` and `xoai` share DSpace's qualified Dublin Core (and the `oaire`/`datacite`
    schemas of DSpace 7 for OpenAIRE)."""
    raw = _Raw()
    for key, value in fields:
        schema, _, rest = key.partition(".")
        element, _, qualifier = rest.partition(".")
        if vocab.is_grant(value):
            raw.grants.append(value)
            continue
        if key == "dc.title":
            raw.title.append(value)
        elif key in ("dc.contributor.author", "dc.creator"):
            raw.creators.append(value)
        elif key == "dc.date.issued":
            raw.dates.append(value)
        elif key in _DIM_VERSION:
            raw.versions.append((value,))
        elif key == "dc.type" or (key.startswith("dc.type.")):
            raw.types.append((value,))
        elif key in _DIM_RIGHTS:
            raw.rights.append((value,))
        elif key in _DIM_EMBARGO:
            raw.embargo.append(value)
        elif schema == "dc" and element == "language":
            raw.languages.append((value,))
        elif schema == "dc" and element == "subject":
            raw.subjects.append(value)
        elif key == "dc.publisher":
            raw.publisher.append(value)
        elif key in ("dc.contributor.funder", "oaire.fundername"):
            raw.funders.append(value)
        elif qualifier == "affiliation":
            raw.affiliations.append(value)
        elif key in ("dc.format.mimetype", "dc.format"):
            raw.formats.append(value)
        elif key == "dc.format.extent" and vocab.is_size_statement(value):
            # DSpace writes one "<n> bytes" extent per deposited file; pages are no size.
            raw.files.append(value)
            raw.files_said.append(True)
        elif schema == "dc" and element == "identifier":
            if qualifier.lower() not in _NOT_ITEM_IDENTIFIERS:
                raw.identifiers.append(value)
    return raw


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _interpret(raw: _Raw) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Fields of one format and, per field, the values that could not be read."""
    fields: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}

    def problem(field: str, value: str) -> None:
        problems.setdefault(field, []).append(value)

    fields["title"] = raw.title[0] if raw.title else None
    fields["creators"] = _unique(raw.creators)

    embargo_values = list(raw.embargo)
    dates: list[dt.date] = []
    for value in raw.dates:
        if vocab.is_embargo_statement(value):
            embargo_values.append(value)
        elif (parsed := vocab.parse_date(value)) is not None:
            dates.append(parsed)
        else:
            problem("publication_date", value)
    # oai_dc repeats dc:date for deposit and availability (DSpace: accessioned, available,
    # issued); publication comes first, so the earliest date is the publication date.
    fields["publication_date"] = min(dates) if dates else None

    found_types: list[vocab.ResourceType] = []
    versions: list[str] = []
    for group in raw.types:
        for value in group:
            if (found := vocab.resource_type(value)) is not None:
                found_types.append(found)
                break
            if (version := vocab.article_version(value)) is not None:
                versions.append(version)
                break
        else:
            problem("resource_type", group[0])
    # "Text" and "Other" say least: a more specific type written beside them wins.
    specific = [t for t in found_types if t.data_type not in ("Unspecified", "Other")]
    chosen = (specific or found_types or [None])[0]
    fields["resource_type"] = chosen.uri if chosen else None

    for group in raw.versions:
        for value in group:
            if (version := vocab.article_version(value)) is not None:
                versions.append(version)
                break
        # Other version statements (a dataset's "1.0.3", "NA") are no article version.
    fields["article_version"] = versions[0] if versions else None

    rights: list[str] = []
    for group in raw.rights:
        for value in group:
            if vocab.is_embargo_statement(value):
                embargo_values.append(value)
                break
            if (uri := vocab.access_rights(value)) is not None:
                rights.append(uri)
                break
        else:
            if any(vocab.looks_like_access_rights(v) for v in group):
                problem("access_rights", group[0])
    fields["access_rights"] = rights[0] if rights else None

    ends: list[dt.date] = []
    for value in embargo_values:
        end = vocab.embargo_end(value) if vocab.is_embargo_statement(value) else None
        end = end or vocab.parse_date(value)
        if end is None:
            problem("embargo_end", value)
        else:
            ends.append(end)
    fields["embargo_end"] = ends[0] if ends else None

    languages = []
    for group in raw.languages:
        for value in group:
            if (code := vocab.language(value)) is not None:
                languages.append(code)
                break
        else:
            problem("language", group[0])
    fields["language"] = languages[0] if languages else None

    fields["subjects"] = _unique(raw.subjects)
    fields["publisher"] = raw.publisher[0] if raw.publisher else None

    funders = list(raw.funders)
    projects = []
    for value in raw.grants:
        projects.append(value)
        if vocab.is_grant(value):
            if (found_grant := vocab.grant(value)) is None:
                problem("funders", value)
            else:
                funders.append(found_grant.funder)
    fields["funders"] = _unique(funders)
    fields["projects"] = _unique([*raw.awards, *projects])
    fields["affiliations"] = _unique(raw.affiliations)
    formats = [v.lower() for v in raw.formats]
    # dc:format also holds extents ("120 p.", "3 MB"): only media types are formats.
    fields["formats"] = _unique(v.split(";")[0].strip() for v in formats if _MIME.match(v))
    fields["file_count"], fields["file_bytes"] = _files(raw, problem)
    fields["identifiers"] = _unique(raw.identifiers)
    return fields, problems


def _files(raw: _Raw, problem: Callable[[str, str], None]) -> tuple[int | None, int | None]:
    """(file count, bytes) of one format: both None when it does not list files; bytes the
    sum of every file's size when each has one (xoai's are bare bytes), else of the sizes the
    record states (`datacite:size`), else None. A size that cannot be read is a problem and
    leaves bytes None: a partial sum would pass for the whole."""
    if not raw.files_said:
        return None, None
    if not raw.files:
        return 0, 0
    stated = raw.files if all(v is not None for v in raw.files) else raw.sizes
    if not stated:
        return len(raw.files), None
    total = 0
    readable = True
    for value in stated:
        size = vocab.parse_size(value, bare_bytes=True) if value else None
        if size is None:
            problem("file_bytes", value or "")
            readable = False
        else:
            total += size
    return len(raw.files), total if readable else None


_READERS = {
    "oai_dc": _read_oai_dc,
    "oai_openaire": _read_oai_openaire,
    "dim": lambda root: _read_dspace(_dim_fields(root)),
    "xoai": _read_xoai,
}
_ROOTS = {
    "oai_dc": (OAI_DC, "dc"),
    "oai_openaire": (OAIRE, "resource"),
    "dim": (DIM, "dim"),
    "xoai": (XOAI, "metadata"),
}


def _parse(prefix: str, xml: bytes) -> etree._Element:
    if not xml or not xml.strip():
        raise ValueError("empty")
    root = etree.fromstring(xml, _PARSER)
    if _local(root.tag) != _ROOTS[prefix]:
        namespace, name = _local(root.tag)
        want_namespace, want_name = _ROOTS[prefix]
        raise ValueError(
            f"root element {{{namespace}}}{name}, expected {{{want_namespace}}}{want_name}"
        )
    return root


def _map_unkeyed(metadata: Mapping[str, bytes]) -> dict[str, Any]:
    """The record's fields without the identifier keys (computed per batch of records)."""
    parsed: list[tuple[str, tuple[dict[str, Any], dict[str, list[str]]]]] = []
    record_problems: list[str] = []
    errors: list[str] = []
    for prefix in FORMAT_PRIORITY:
        if prefix not in metadata:
            continue
        try:
            root = _parse(prefix, metadata[prefix])
        except (etree.XMLSyntaxError, ValueError) as error:
            message = f"{prefix}: {error}"
            errors.append(message)
            record_problems.append(f"metadata: {message}")
            continue
        parsed.append((prefix, _interpret(_READERS[prefix](root))))
    for prefix in metadata:
        if prefix not in _READERS:
            record_problems.append(f"metadata: {prefix}: format not read")
    if not parsed:
        detail = "; ".join(errors) if errors else f"no supported format in {sorted(metadata)}"
        raise MetadataError(f"no readable metadata: {detail}")

    out: dict[str, Any] = {"metadata_format": parsed[0][0]}
    names = [n for n in parsed[0][1][0] if n not in ("identifiers", "file_count", "file_bytes")]
    for name in names:
        empty: Any = [] if name in _LISTS else None
        out[name] = next((f[name] for _, (f, _) in parsed if f[name] not in (None, [])), empty)
    # Count and bytes as a pair, from the first format that lists the files.
    files = next((f for _, (f, _) in parsed if f["file_count"] is not None), None)
    out["file_count"] = files["file_count"] if files else None
    out["file_bytes"] = files["file_bytes"] if files else None
    out["identifiers"] = _unique(i for _, (f, _) in parsed for i in f["identifiers"])
    problems = list(record_problems)
    for _, (_, found) in parsed:
        for name, values in found.items():
            if out[name] in (None, []):
                problems.extend(f"{name}: {v}" for v in values)
    date = out["publication_date"]
    out["publication_year"] = date.year if date is not None else None
    out["problems"] = _unique(problems)
    return out


def _add_keys(record: dict[str, Any], keys: Mapping[str, str | None]) -> dict[str, Any]:
    item_keys = []
    for identifier in record["identifiers"]:
        key = keys.get(identifier)
        # Only spellings the cross-walk can resolve are keys: an ISSN, a citation or a local
        # number also written as dc:identifier would tie unrelated items together.
        if key and (key.startswith(("hdl:", "oai:")) or key[:3] == "10." or _URL.match(key)):
            item_keys.append(key)
    item_keys = _unique(item_keys)
    record["item_keys"] = item_keys
    record["doi"] = next((k for k in item_keys if k[:3] == "10."), None)
    record["handle"] = next((k for k in item_keys if k.startswith("hdl:")), None)
    record["urls"] = [i for i in record["identifiers"] if _URL.match(i)]
    return {name: record[name] for name in FIELDS}


def _keys_of(identifiers: Iterable[str]) -> dict[str, str | None]:
    distinct = list(dict.fromkeys(identifiers))
    if not distinct:
        return {}
    keys = normalize_distinct(pl.Series(distinct, dtype=pl.String)).to_list()
    return dict(zip(distinct, keys, strict=True))


def map_record(metadata: Mapping[str, bytes]) -> dict[str, object]:
    """The `ITEM_METADATA_SCHEMA` fields of one record (keys: `FIELDS`), from its metadata
    by prefix ("oai_dc", "oai_openaire", "dim", "xoai" → the serialized root element of that
    format). Raises `MetadataError` when no format can be read.

    For many records use `map_records`: identifier keys are then normalised in one pass."""
    record = _map_unkeyed(metadata)
    return _add_keys(record, _keys_of(record["identifiers"]))


def map_records(
    records: Sequence[Mapping[str, bytes]],
) -> list[dict[str, object] | MetadataError]:
    """`map_record` of each record, in order, with a `MetadataError` in place of a record that
    has no readable format (so one bad record does not stop a page)."""
    mapped: list[dict[str, Any] | MetadataError] = []
    for metadata in records:
        try:
            mapped.append(_map_unkeyed(metadata))
        except MetadataError as error:
            mapped.append(error)
    keys = _keys_of(i for r in mapped if not isinstance(r, MetadataError) for i in r["identifiers"])
    return [r if isinstance(r, MetadataError) else _add_keys(r, keys) for r in mapped]


def metadata_frame(rows: Iterable[Mapping[str, object]]) -> pl.DataFrame:
    """A frame with `ITEM_METADATA_SCHEMA` from mapped records (with any header columns the
    caller adds: source_key, oai_identifier, datestamp...); columns a row lacks are null."""
    return pl.from_dicts(list(rows), schema=ITEM_METADATA_SCHEMA)
