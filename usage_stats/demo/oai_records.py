"""Planted OAI-PMH records for the synthetic repositories: what the test data provider serves.

Every item the usage generator (`synthetic.py`) plants for a repository gets a record whose
identifier, DOI (the one its outlinks point at) and title agree with its usage events, and
whose type, access rights, language, subjects and dates are drawn from a generator of its own
(seeded from the config's seed and the repository), so the events' random stream, and with it
every usage figure, stays what it was. `expected` holds what a correct harvest-and-map must
read from each record (values normalised: COAR URIs, ISO 639-3, bare DOIs, `hdl:` handles).

Each value is written in one of the spellings repositories really use (`info:eu-repo` or COAR
types, `es` / `spa` / `Español`, `doi:` / resolver URLs), in `oai_dc` for every repository,
plus OpenAIRE Guidelines v4 `oai_openaire` or DSpace `dim` for some: the cross-walk and the
mapping both have to cope with all of them.

`epoch` 2 is the repository after a round of edits: some records revised (new title, new
datestamp), some deleted, two new ones; the test serves epoch 1, harvests, serves epoch 2 and
harvests again.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field, replace
from xml.sax.saxutils import escape, quoteattr

from usage_stats.admin.sources import Source

COAR_TYPE = "http://purl.org/coar/resource_type/"
COAR_ACCESS = "http://purl.org/coar/access_right/"
# (as written in oai_dc / dim, COAR URI, OpenAIRE label)
RESOURCE_TYPES = [
    ("info:eu-repo/semantics/article", COAR_TYPE + "c_6501", "journal article"),
    ("info:eu-repo/semantics/bachelorThesis", COAR_TYPE + "c_7a1f", "bachelor thesis"),
    ("info:eu-repo/semantics/masterThesis", COAR_TYPE + "c_bdcc", "master thesis"),
    ("info:eu-repo/semantics/doctoralThesis", COAR_TYPE + "c_db06", "doctoral thesis"),
    ("info:eu-repo/semantics/conferenceObject", COAR_TYPE + "c_c94f", "conference object"),
    ("info:eu-repo/semantics/book", COAR_TYPE + "c_2f33", "book"),
    ("info:eu-repo/semantics/report", COAR_TYPE + "c_93fc", "report"),
]
ACCESS_RIGHTS = [
    ("info:eu-repo/semantics/openAccess", COAR_ACCESS + "c_abf2", "open access"),
    ("info:eu-repo/semantics/embargoedAccess", COAR_ACCESS + "c_f1cf", "embargoed access"),
    ("info:eu-repo/semantics/restrictedAccess", COAR_ACCESS + "c_16ec", "restricted access"),
    ("info:eu-repo/semantics/closedAccess", COAR_ACCESS + "c_14cb", "metadata only access"),
]
# (as written, ISO 639-3)
LANGUAGES = [
    ("spa", "spa"),
    ("es", "spa"),
    ("Español", "spa"),
    ("por", "por"),
    ("pt_BR", "por"),
    ("eng", "eng"),
    ("en", "eng"),
    ("English", "eng"),
]
SUBJECTS = [
    "Biodiversidad",
    "Educación",
    "Salud pública",
    "Agricultura",
    "Economía",
    "Historia",
    "Ingeniería",
    "Climate change",
]
DOI_SPELLINGS = ["https://doi.org/{}", "doi:{}", "{}", "info:doi/{}", "http://dx.doi.org/{}"]
HANDLE_SPELLINGS = ["https://hdl.handle.net/{}", "http://hdl.handle.net/{}", "hdl:{}"]
GRANULARITY = "YYYY-MM-DDThh:mm:ssZ"
EPOCH1_BASE = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class PlantedRecord:
    source_key: str
    site_id: int
    owner: int
    item: int
    identifier: str
    datestamp: dt.datetime
    sets: tuple[str, ...]
    deleted: bool
    title: str
    creators: tuple[str, ...]
    date_written: str
    type_written: str
    access_written: str
    embargo_end: dt.date | None
    language_written: str
    subjects: tuple[str, ...]
    doi: str | None
    doi_written: str | None
    handle: str
    handle_written: str
    url: str
    project: str | None
    expected: dict = field(default_factory=dict, compare=False)


def source_formats(source: Source) -> list[str]:
    """oai_dc everywhere; OpenAIRE v4 on the first two repositories, DSpace dim on the third."""
    if source.site_id == 3:
        return ["oai_dc", "dim"]
    if source.site_id in (1, 2):
        return ["oai_dc", "oai_openaire"]
    return ["oai_dc"]


def item_key(owner: int) -> str:
    return f"oai:repo{owner}.example.org:{1000 + owner}"


def handle_prefix(owner: int) -> str:
    return f"20.500.{12000 + owner}"


def _date_written(rng: random.Random, item: int) -> tuple[str, dt.date | None, int | None]:
    """A publication date as repositories write it, and what it means; every 17th unreadable."""
    if item % 17 == 5:
        return "s.f.", None, None
    year = rng.randint(1995, 2025)
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    kind = rng.randrange(3)
    if kind == 0:
        return str(year), dt.date(year, 1, 1), year
    if kind == 1:
        return f"{year}-{month:02d}", dt.date(year, month, 1), year
    return f"{year}-{month:02d}-{day:02d}", dt.date(year, month, day), year


def _datestamp(owner: int, item: int, base: dt.datetime, span_days: int | None) -> dt.datetime:
    """Every 7 hours an item (the owner's hour apart): from `base` on, or wrapped within
    `span_days` days of it (the demo: records on every day of its window)."""
    hours = 7 * item + owner
    if span_days:
        hours %= 24 * span_days
    return base + dt.timedelta(hours=hours)


def _planted(
    source: Source,
    owner: int,
    item: int,
    seed: int,
    base: dt.datetime = EPOCH1_BASE,
    span_days: int | None = None,
) -> PlantedRecord:
    rng = random.Random(f"{seed}:metadata:{owner}:{item}")
    type_written, type_uri, _ = rng.choice(RESOURCE_TYPES)
    problems = []
    if item % 19 == 7:  # a vocabulary no guideline knows: kept, counted, not guessed
        type_written, type_uri = "info:eu-repo/semantics/somethingElse", None
        problems.append("resource_type")
    access_written, access_uri, _ = rng.choice(ACCESS_RIGHTS)
    embargo_end = None
    if access_uri.endswith("c_f1cf"):
        embargo_end = dt.date(2027, rng.randint(1, 12), 1)
    language_written, language = rng.choice(LANGUAGES)
    date_written, publication_date, year = _date_written(rng, item)
    if publication_date is None:
        problems.append("publication_date")
    subjects = tuple(rng.sample(SUBJECTS, rng.randint(1, 3)))
    creators = tuple(
        f"{rng.choice(['Pérez', 'Silva', 'Gómez', 'Souza', 'Rojas'])}{k}, {rng.choice('AJMR')}."
        for k in range(rng.randint(1, 3))
    )
    doi = f"10.5555/{owner}.{item}" if item % 5 != 3 else None  # as the outlinks point at
    doi_written = rng.choice(DOI_SPELLINGS).format(doi) if doi else None
    handle = f"{handle_prefix(owner)}/{item}"
    handle_written = rng.choice(HANDLE_SPELLINGS).format(handle)
    project = f"info:eu-repo/grantAgreement/ANID/FONDECYT/{11000 + item}" if item % 6 == 1 else None
    local = f"{1000 + owner}/{item}"
    identifier = f"{item_key(owner)}/{item}"
    record = PlantedRecord(
        source_key=source.source_key,
        site_id=source.site_id,
        owner=owner,
        item=item,
        identifier=identifier,
        datestamp=_datestamp(owner, item, base, span_days),
        sets=(f"col_{1000 + owner}_{item % 3}",),
        deleted=item % 13 == 12,
        title=f"Study {item} of repository {owner}",
        creators=creators,
        date_written=date_written,
        type_written=type_written,
        access_written=access_written,
        embargo_end=embargo_end,
        language_written=language_written,
        subjects=subjects,
        doi=doi,
        doi_written=doi_written,
        handle=handle,
        handle_written=handle_written,
        url=f"https://repo{owner}.example.org/items/{local}",
        project=project,
    )
    expected = {
        "source_key": source.source_key,
        "oai_identifier": identifier,
        "item_key": identifier,
        "title": record.title,
        "creators": list(creators),
        "publication_date": publication_date.isoformat() if publication_date else None,
        "publication_year": year,
        "resource_type": type_uri,
        "access_rights": access_uri,
        "embargo_end": embargo_end.isoformat() if embargo_end else None,
        "language": language,
        "subjects": list(subjects),
        "doi": doi,
        "handle": f"hdl:{handle}",
        "projects": [project] if project else [],
        "sets": list(record.sets),
        "problem_fields": problems,
    }
    return replace(record, expected=expected)


def planted_records(
    sources: list[Source],
    n_items: int,
    seed: int,
    epoch: int = 1,
    changed_at: dt.datetime | None = None,
    base: dt.datetime = EPOCH1_BASE,
    span_days: int | None = None,
) -> list[PlantedRecord]:
    """The records of every repository at `epoch` (1, or 2: after edits stamped `changed_at`),
    datestamped from `base` (wrapped within `span_days` days of it when given)."""
    records = []
    for source in sources:
        if source.type != "R":
            continue
        owner = source.site_id
        items = range(n_items + (2 if epoch == 2 else 0))
        for item in items:
            record = _planted(source, owner, item, seed, base, span_days)
            if epoch == 2:
                if item >= n_items:  # new in epoch 2
                    record = replace(record, datestamp=changed_at, deleted=False)
                elif item % 10 == 7 and not record.deleted:  # revised
                    title = record.title + " (revised)"
                    record = replace(
                        record,
                        title=title,
                        datestamp=changed_at,
                        expected={**record.expected, "title": title},
                    )
                elif item % 11 == 4 and not record.deleted:  # withdrawn
                    record = replace(record, deleted=True, datestamp=changed_at)
            records.append(record)
    return records


def epoch_changes(sources: list[Source], n_items: int, seed: int) -> dict[str, dict[str, str]]:
    """Per source, the identifiers epoch 2 changed and how: the change log a second harvest
    must write."""
    before = {r.identifier: r for r in planted_records(sources, n_items, seed, 1)}
    after = planted_records(sources, n_items, seed, 2, EPOCH1_BASE)
    changes: dict[str, dict[str, str]] = {}
    for record in after:
        old = before.get(record.identifier)
        change = None
        if old is None:
            change = "added"
        elif record.deleted and not old.deleted:
            change = "deleted"
        elif record.title != old.title:
            change = "updated"
        if change:
            changes.setdefault(record.source_key, {})[record.identifier] = change
    return changes


# --- serialisation: the <metadata> child of each record, per format ----------------------------


def _el(tag: str, text: str | None, **attrs: str) -> str:
    if text is None:
        return ""
    attributes = "".join(
        f" {k.replace('_', ':', 1) if k.startswith('xml_') else k}={quoteattr(v)}"
        for k, v in attrs.items()
    )
    return f"<{tag}{attributes}>{escape(text)}</{tag}>"


def oai_dc(record: PlantedRecord) -> str:
    parts = [_el("dc:title", record.title)]
    parts += [_el("dc:creator", c) for c in record.creators]
    parts += [_el("dc:subject", s) for s in record.subjects]
    parts += [
        _el("dc:publisher", f"Universidad {record.owner}"),
        _el("dc:date", record.date_written),
        _el("dc:type", record.type_written),
        _el("dc:type", "info:eu-repo/semantics/publishedVersion"),
        _el("dc:identifier", record.url),
        _el("dc:identifier", record.handle_written),
        _el("dc:identifier", record.doi_written),
        _el("dc:language", record.language_written),
        _el("dc:rights", record.access_written),
        _el("dc:format", "application/pdf"),
        _el("dc:relation", record.project),
    ]
    if record.embargo_end:
        parts.append(_el("dc:date", f"info:eu-repo/date/embargoEnd/{record.embargo_end}"))
    return (
        '<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/">' + "".join(parts) + "</oai_dc:dc>"
    )


def oai_openaire(record: PlantedRecord) -> str:
    """OpenAIRE Guidelines for Literature Repositories v4 (`oai_openaire`)."""
    type_uri = next((u for w, u, _ in RESOURCE_TYPES if w == record.type_written), None)
    type_label = next(
        (label for w, _, label in RESOURCE_TYPES if w == record.type_written), record.type_written
    )
    access = next(a for a in ACCESS_RIGHTS if a[0] == record.access_written)
    creators = "".join(
        f"<datacite:creator>{_el('datacite:creatorName', c)}</datacite:creator>"
        for c in record.creators
    )
    subjects = "".join(_el("datacite:subject", s) for s in record.subjects)
    identifier = (
        _el("datacite:identifier", record.doi, identifierType="DOI")
        if record.doi
        else _el("datacite:identifier", record.url, identifierType="URL")
    )
    dates = _el("datacite:date", record.date_written, dateType="Issued")
    if record.embargo_end:
        dates += _el("datacite:date", str(record.embargo_end), dateType="Available")
    funding = ""
    if record.project:
        funding = (
            "<oaire:fundingReferences><oaire:fundingReference>"
            + _el("oaire:funderName", "ANID")
            + _el("oaire:awardNumber", record.project.rsplit("/", 1)[1], awardURI=record.project)
            + "</oaire:fundingReference></oaire:fundingReferences>"
        )
    resource_type = (
        _el("oaire:resourceType", type_label, resourceTypeGeneral="literature", uri=type_uri)
        if type_uri
        else _el("oaire:resourceType", type_label, resourceTypeGeneral="literature")
    )
    return (
        '<oaire:resource xmlns:oaire="http://namespace.openaire.eu/schema/oaire/" '
        'xmlns:datacite="http://datacite.org/schema/kernel-4" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:dcterms="http://purl.org/dc/terms/">'
        f"<datacite:titles>{_el('datacite:title', record.title)}</datacite:titles>"
        f"<datacite:creators>{creators}</datacite:creators>"
        + funding
        + identifier
        + "<datacite:alternateIdentifiers>"
        + _el(
            "datacite:alternateIdentifier", record.handle_written, alternateIdentifierType="Handle"
        )
        + _el("datacite:alternateIdentifier", record.url, alternateIdentifierType="URL")
        + "</datacite:alternateIdentifiers>"
        + f"<datacite:dates>{dates}</datacite:dates>"
        + _el("dc:language", record.language_written)
        + _el("dc:publisher", f"Universidad {record.owner}")
        + resource_type
        + _el("dc:format", "application/pdf")
        + _el("datacite:rights", access[2], rightsURI=access[1])
        + f"<datacite:subjects>{subjects}</datacite:subjects>"
        + _el("oaire:version", "VoR", uri="http://purl.org/coar/version/c_970fb48d4fbd8a85")
        + _el(
            "oaire:file",
            record.url + "/document.pdf",
            accessRightsURI=access[1],
            mimeType="application/pdf",
            objectType="fulltext",
        )
        + "</oaire:resource>"
    )


def dim(record: PlantedRecord) -> str:
    """DSpace's internal metadata (`dim`), as DSpace 6/7 OAI exposes it."""

    def field(
        element: str, qualifier: str | None, value: str | None, lang: str | None = None
    ) -> str:
        if value is None:
            return ""
        attrs = {"mdschema": "dc", "element": element}
        if qualifier:
            attrs["qualifier"] = qualifier
        if lang:
            attrs["lang"] = lang
        return _el("dim:field", value, **attrs)

    parts = [field("title", None, record.title, "es")]
    parts += [field("contributor", "author", c) for c in record.creators]
    parts += [field("subject", None, s, "es") for s in record.subjects]
    parts += [
        field("date", "issued", record.date_written),
        field("identifier", "uri", record.handle_written),
        field("identifier", "doi", record.doi_written),
        field("identifier", "url", record.url),
        field("language", "iso", record.language_written),
        field("type", None, record.type_written),
        field("rights", None, record.access_written),
        field("publisher", None, f"Universidad {record.owner}"),
        field("format", "mimetype", "application/pdf"),
        field("relation", None, record.project),
    ]
    if record.embargo_end:
        parts.append(field("date", "embargoEnd", str(record.embargo_end)))
    return (
        '<dim:dim xmlns:dim="http://www.dspace.org/xmlns/dspace/dim">'
        + "".join(parts)
        + "</dim:dim>"
    )


WRITERS = {"oai_dc": oai_dc, "oai_openaire": oai_openaire, "dim": dim}


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def provider_dataset(
    sources: list[Source],
    records: list[PlantedRecord],
    page_size: int = 10,
    earliest: dt.datetime = EPOCH1_BASE,
) -> dict:
    """What `usage_stats.demo.oai_server` serves: per source key its formats, sets and records
    (each format's metadata already serialised, so the server only frames it)."""
    by_source: dict[str, dict] = {}
    for source in sources:
        if source.type != "R":
            continue
        formats = source_formats(source)
        by_source[source.source_key] = {
            "name": source.name,
            "formats": formats,
            "page_size": page_size,
            "granularity": GRANULARITY,
            "earliest_datestamp": _stamp(earliest),
            "sets": {},
            "records": [],
        }
    for record in records:
        entry = by_source[record.source_key]
        for spec in record.sets:
            entry["sets"][spec] = f"Collection {spec}"
        entry["records"].append(
            {
                "identifier": record.identifier,
                "datestamp": _stamp(record.datestamp),
                "sets": list(record.sets),
                "deleted": record.deleted,
                "metadata": {}
                if record.deleted
                else {prefix: WRITERS[prefix](record) for prefix in entry["formats"]},
            }
        )
    return {"sources": by_source}


def planted_metadata_manifest(sources: list[Source], n_items: int, seed: int) -> dict:
    """The manifest's `metadata` section: per record of epoch 1, what a harvest must read."""
    records = planted_records(sources, n_items, seed, 1)
    return {
        "formats": {s.source_key: source_formats(s) for s in sources if s.type == "R"},
        "records": [{**r.expected, "deleted": r.deleted} for r in records],
        "epoch2_changes": epoch_changes(sources, n_items, seed),
    }
