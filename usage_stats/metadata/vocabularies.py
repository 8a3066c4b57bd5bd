"""Controlled values from the spellings repositories really write.

The network's repositories describe the same thing many ways: `info:eu-repo/semantics/article`
(DRIVER and the LA Referencia guidelines), a COAR URI (OpenAIRE guidelines v4), the COAR label in
English, Spanish or Portuguese ("journal article", "artículo", "artigo"), a DSpace default type
("Book chapter"). Statistics broken down by type, access or language need one value per
concept, so each spelling is read into the vocabulary the guidelines name: COAR resource types
and access rights (URIs), the NISO JAV article versions (COAR version types), ISO 639-3.

The tables come from their maintainers, not from this module: the COAR vocabularies' labels
(`usage_stats/data/coar_vocabularies.json`, built by `scripts/build_coar_vocabularies.py` from
COAR's CC0 files), ISO 639 from pycountry, language names in Spanish, Portuguese and English
from CLDR (Babel). What is written here are the DRIVER `info:eu-repo` terms, the COUNTER
mapping, and a short list of repository spellings no vocabulary has.

A value none of these recognises gives None: the caller leaves the field empty and names the
value in the record's problems. Nothing is guessed from a partial match.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from functools import cache, lru_cache
from importlib import resources
from typing import NamedTuple

import pycountry

COAR_RESOURCE_TYPE = "http://purl.org/coar/resource_type/"
COAR_ACCESS_RIGHT = "http://purl.org/coar/access_right/"
COAR_VERSION = "http://purl.org/coar/version/"

OPEN_ACCESS = COAR_ACCESS_RIGHT + "c_abf2"
EMBARGOED_ACCESS = COAR_ACCESS_RIGHT + "c_f1cf"
RESTRICTED_ACCESS = COAR_ACCESS_RIGHT + "c_16ec"
METADATA_ONLY_ACCESS = COAR_ACCESS_RIGHT + "c_14cb"

# COUNTER R5.1 Data_Types an Item Report may carry (Table 3.p, and the IR enumeration of the
# COUNTER_SUSHI API 5.1 shipped in usage_stats/data). Book, Journal, Conference, Reference_Work
# and Newspaper_or_Newsletter are title-level types of the TR, not item types.
COUNTER_ITEM_DATA_TYPES = frozenset(
    {
        "Article",
        "Audiovisual",
        "Book_Segment",
        "Conference_Item",
        "Database_Full_Item",
        "Dataset",
        "Image",
        "Interactive_Resource",
        "Multimedia",
        "News_Item",
        "Other",
        "Patent",
        "Reference_Item",
        "Report",
        "Software",
        "Sound",
        "Standard",
        "Thesis_or_Dissertation",
        "Unspecified",
    }
)
COUNTER_ACCESS_TYPES = ("Open", "Controlled", "Free_To_Read")
ARTICLE_VERSIONS = ("AO", "SMUR", "AM", "P", "VoR", "CVoR", "EVoR")


class ResourceType(NamedTuple):
    uri: str  # COAR resource type
    label: str  # its English preferred label
    data_type: str  # COUNTER R5.1 item Data_Type
    journal_article: bool  # counted in IR_A1 (COUNTER Data_Type Article)


class Grant(NamedTuple):
    funder: str
    program: str | None
    project_id: str
    uri: str  # as written


# DRIVER / OpenAIRE 3 / LA Referencia `info:eu-repo/semantics/` types (case kept apart from the
# labels: these are the terms of the guidelines, e.g. "conferenceObject").
_EU_REPO_TYPES = {
    "article": "c_6501",
    "bachelorthesis": "c_7a1f",
    "masterthesis": "c_bdcc",
    "doctoralthesis": "c_db06",
    "book": "c_2f33",
    "bookpart": "c_3248",
    "review": "c_efa0",
    "conferenceobject": "c_c94f",
    "lecture": "c_8544",
    "workingpaper": "c_8042",
    "preprint": "c_816b",
    "report": "c_93fc",
    "reportpart": "c_ba1f",
    "annotation": "c_1162",
    "contributiontoperiodical": "c_3e5a",
    "patent": "c_15cd",
    "other": "c_1843",
    "dataset": "c_ddb1",
    "conferencepaper": "c_5794",
    "conferenceposter": "c_6670",
    "conferenceproceedings": "c_f744",
    "researchproposal": "c_baaf",
    "technicaldocumentation": "c_71bd",
    "studentthesis": "c_46ec",
    "thesis": "c_46ec",
    "software": "c_5ce6",
    "image": "c_c513",
    "video": "c_12ce",
    "sound": "c_18cc",
}

# Type words repositories write that no COAR label spells: DSpace's default `dc.type` values
# and common Spanish/Portuguese forms of the network (normalised as `_key` does).
_TYPE_ODDITIES = {
    "book chapter": "c_3248",
    "capitulo de libro": "c_3248",
    "capitulo de livro": "c_3248",
    "technical report": "c_18gh",
    "presentation": "R60J-J5BD",
    "animation": "c_8a7e",
    "recording, acoustical": "c_18cc",
    "recording, musical": "c_18cc",
    "recording, oral": "c_18cc",
    "musical score": "c_18cw",
    "plan or blueprint": "c_c513",
    "image, 3-d": "c_c513",
    "artigo de periodico": "c_6501",
    "articulo de revista": "c_6501",
    "artigo cientifico": "c_6501",
    "tesis de grado": "c_7a1f",
    "trabajo de grado": "c_7a1f",
    "trabajo de grado - pregrado": "c_7a1f",
    "trabalho de conclusao de curso": "c_7a1f",
    "tcc": "c_7a1f",
    "monografia": "c_7a1f",
    "tesis de licenciatura": "c_7a1f",
    "tesis de maestria": "c_bdcc",
    "trabajo de grado - maestria": "c_bdcc",
    "dissertacao": "c_bdcc",
    "dissertacao de mestrado": "c_bdcc",
    "tesis doctoral": "c_db06",
    "tesis de doctorado": "c_db06",
    "trabajo de grado - doctorado": "c_db06",
    "tese": "c_db06",
    "tese de doutorado": "c_db06",
    "ponencia": "c_5794",
    "documento de trabajo": "c_8042",
    "documento de conferencia": "c_c94f",
    "objeto de conferencia": "c_c94f",
    "informe tecnico": "c_18gh",
    "relatorio tecnico": "c_18gh",
    "conjunto de datos": "c_ddb1",
}

# COUNTER Data_Type of a COAR concept: the nearest entry among the concept and its broader
# concepts; a concept none of whose ancestors is listed is "Other" (COUNTER: "labelled with a
# data type that does not exist within and cannot be mapped"). "text" alone says nothing about
# the kind of work, so it is Unspecified, and is not inherited (a letter is Other, not text).
_COUNTER_BY_COAR = {
    "c_6501": "Article",  # journal article and its kinds (research, review, data paper...)
    "c_3e5a": "Article",  # contribution to journal (deprecated, DRIVER contributionToPeriodical)
    "c_b239": "Article",  # editorial
    "c_545b": "Article",  # letter to the editor
    "c_816b": "Article",  # preprint: COUNTER's Article includes preprints in repositories
    "c_998f": "News_Item",
    "43KC-T6DC": "News_Item",  # magazine article
    # A whole book in a repository is counted as one Book_Segment (COUNTER R5.1, Table 3.p).
    "c_2f33": "Book_Segment",
    "c_3248": "Book_Segment",
    "c_c94f": "Conference_Item",  # conference output: papers, posters, presentations, proceedings
    "c_46ec": "Thesis_or_Dissertation",
    "c_93fc": "Report",
    "c_18ww": "Report",
    "c_18wq": "Report",
    "c_18hj": "Report",
    "c_ba1f": "Report",
    "c_8042": "Report",  # working paper
    "c_ddb1": "Dataset",
    "EHVM-H119": "Dataset",  # research data (deprecated)
    "c_5ce6": "Software",
    "c_393c": "Software",  # workflow
    "c_c513": "Image",
    "c_12cc": "Image",  # cartographic material, maps
    "c_8a7e": "Audiovisual",  # moving image, video
    "c_18cc": "Sound",
    "c_e9a0": "Interactive_Resource",
    "c_15cd": "Patent",
}
_UNSPECIFIED = {"c_18cf"}

_ACCESS_EU_REPO = {
    "openaccess": OPEN_ACCESS,
    "embargoedaccess": EMBARGOED_ACCESS,
    "restrictedaccess": RESTRICTED_ACCESS,
    "closedaccess": METADATA_ONLY_ACCESS,
}
# DSpace 7's access status values and plain words the network writes.
_ACCESS_ODDITIES = {
    "open.access": OPEN_ACCESS,
    "embargo": EMBARGOED_ACCESS,
    "restricted": RESTRICTED_ACCESS,
    "metadata.only": METADATA_ONLY_ACCESS,
    "open": OPEN_ACCESS,
    "embargoed": EMBARGOED_ACCESS,
    "closed access": METADATA_ONLY_ACCESS,
    "acceso cerrado": METADATA_ONLY_ACCESS,
    "acesso fechado": METADATA_ONLY_ACCESS,
    "acceso embargado": EMBARGOED_ACCESS,
    "acesso restrito": RESTRICTED_ACCESS,
}

_VERSION_EU_REPO = {
    "draft": "AO",
    "authorversion": "AO",
    "submittedversion": "SMUR",
    "acceptedversion": "AM",
    "publishedversion": "VoR",
    "updatedversion": "CVoR",
}

# Language spellings neither ISO 639 nor CLDR's names cover.
_LANGUAGE_ODDITIES = {
    "castellano": "spa",
    "espanol (castellano)": "spa",
    "portugues do brasil": "por",
    "portugues (brasil)": "por",
    "portuguese (brazil)": "por",
    "brazilian portuguese": "por",
    "ingles (estados unidos)": "eng",
}

_EU_REPO = re.compile(r"(?i)^\s*info:eu-repo/semantics/([a-z]+)\s*$")
_EMBARGO = re.compile(r"(?i)^\s*info:eu-repo/date/embargoend/(.+?)\s*$")
_GRANT = re.compile(r"(?i)^\s*info:eu-repo/grantagreement/(.*)$")
_COAR_URI = re.compile(
    r"(?i)^\s*https?://purl\.org/coar/(resource_type|access_right|version)/(\S+?)/?\s*$"
)
_LANGUAGE_TAG = re.compile(r"^([a-z]{2,3})(?:[-_][a-z0-9]{2,8})*$")


def _key(value: str) -> str:
    """Case, accents, surrounding punctuation and white space do not distinguish spellings."""
    text = unicodedata.normalize("NFKD", value.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(text.replace("_", " ").split()).strip(" .;:")


@cache
def _coar() -> dict[str, dict[str, dict[str, object]]]:
    path = resources.files("usage_stats") / "data" / "coar_vocabularies.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _label_index(vocabulary: str) -> dict[str, str]:
    """Label → concept URI over en/es/pt labels. A preferred label wins over an alternative
    one; a label two concepts share at the same rank is left out (ambiguous, not guessed)."""
    index: dict[str, str] = {}
    for rank in ("alt", "pref"):
        seen: dict[str, set[str]] = {}
        for uri, concept in _coar()[vocabulary].items():
            for label in concept[rank]:
                seen.setdefault(_key(label), set()).add(uri)
        for label, uris in seen.items():
            if len(uris) == 1:
                index[label] = next(iter(uris))
            elif rank == "pref":
                index.pop(label, None)
    return index


@cache
def _resource_type_index() -> dict[str, str]:
    index = _label_index("resource_types")
    index.update({k: COAR_RESOURCE_TYPE + v for k, v in _TYPE_ODDITIES.items()})
    return index


@cache
def _access_index() -> dict[str, str]:
    index = _label_index("access_rights")
    index.update(_ACCESS_ODDITIES)
    return index


@cache
def _version_index() -> dict[str, str]:
    """Label → JAV abbreviation (the English preferred labels of COAR version types)."""
    labels = {uri: c["label"] for uri, c in _coar()["version_types"].items()}
    return {key: labels[uri] for key, uri in _label_index("version_types").items()}


def _coar_uri(value: str, kind: str) -> str | None:
    """The canonical COAR URI (http, no trailing slash) of a COAR URI of `kind`, if it is one."""
    match = _COAR_URI.match(value)
    if match and match.group(1).lower() == kind:
        return f"http://purl.org/coar/{kind}/{match.group(2)}"
    return None


def _counter_data_type(uri: str) -> str:
    concepts = _coar()["resource_types"]
    pending, seen = [uri], set()
    while pending:
        current = pending.pop(0)
        code = current.removeprefix(COAR_RESOURCE_TYPE)
        if code in _COUNTER_BY_COAR:
            return _COUNTER_BY_COAR[code]
        if current == uri and code in _UNSPECIFIED:
            return "Unspecified"
        seen.add(current)
        pending.extend(b for b in concepts.get(current, {}).get("broader", ()) if b not in seen)
    return "Other"


@lru_cache(maxsize=4096)
def resource_type(value: str) -> ResourceType | None:
    """The COAR resource type of a `dc:type`-like value: a COAR URI or label (en/es/pt), an
    `info:eu-repo/semantics/` type, or a listed repository spelling; None when unknown (also
    for a version such as `info:eu-repo/semantics/publishedVersion`, which is no type)."""
    uri = _coar_uri(value, "resource_type")
    if uri is None:
        match = _EU_REPO.match(value)
        if match:
            code = _EU_REPO_TYPES.get(match.group(1).lower())
            uri = COAR_RESOURCE_TYPE + code if code else None
        else:
            uri = _resource_type_index().get(_key(value))
    concept = _coar()["resource_types"].get(uri) if uri else None
    if concept is None:
        return None
    data_type = _counter_data_type(uri)
    return ResourceType(uri, str(concept["label"]), data_type, data_type == "Article")


def counter_data_type(resource_type_uri: str | None) -> str:
    """COUNTER R5.1 item Data_Type of a COAR resource type URI; "Unspecified" without one
    (COUNTER: content that cannot be classified for lack of information)."""
    if not resource_type_uri:
        return "Unspecified"
    found = resource_type(resource_type_uri)
    return found.data_type if found else "Unspecified"


@lru_cache(maxsize=1024)
def access_rights(value: str) -> str | None:
    """The COAR access right URI of an `info:eu-repo/semantics/…Access` term, a COAR access
    right URI or label (en/es/pt), or a listed plain spelling; None when unknown.

    `closedAccess` (DRIVER) becomes metadata only access, as the OpenAIRE guidelines v4 map it.
    """
    uri = _coar_uri(value, "access_right")
    if uri is None:
        match = _EU_REPO.match(value)
        if match:
            uri = _ACCESS_EU_REPO.get(match.group(1).lower())
        else:
            uri = _access_index().get(_key(value))
    return uri if uri in _coar()["access_rights"] else None


def looks_like_access_rights(value: str) -> bool:
    """Whether a rights statement claims to be an access right (a DRIVER term or a COAR URI):
    only those are reported when unknown; other `dc:rights` values are licences and notices."""
    text = value.strip().lower()
    return text.startswith(
        (
            "info:eu-repo/semantics/",
            "http://purl.org/coar/access_right",
            "https://purl.org/coar/access_right",
        )
    )


def embargo_end(value: str) -> dt.date | None:
    """The date of `info:eu-repo/date/embargoEnd/YYYY-MM-DD` (None for anything else)."""
    match = _EMBARGO.match(value)
    if not match:
        return None
    parsed = parse_date(match.group(1))
    return parsed


def is_embargo_statement(value: str) -> bool:
    return _EMBARGO.match(value) is not None


def counter_access_type(
    access_rights_uri: str | None, embargo_end_date: dt.date | None, usage_date: dt.date
) -> str | None:
    """COUNTER R5.1 Access_Type of an item on the day it was used, or None when the record
    states no access right (the report then shows no Access_Type rather than a guessed one).

    Open access is Open. An embargoed item is Controlled until its embargo ends and Open from
    the end date on (R5.1: Open items "may have been Open ... after expiry of an embargo");
    without an end date it stays Controlled. Restricted and metadata-only items are Controlled:
    their full text is not available to every user on the platform. Free_To_Read (free but not
    under an open access model) has no COAR access right, so no record yields it.
    """
    if access_rights_uri == OPEN_ACCESS:
        return "Open"
    if access_rights_uri == EMBARGOED_ACCESS:
        if embargo_end_date is not None and usage_date >= embargo_end_date:
            return "Open"
        return "Controlled"
    if access_rights_uri in (RESTRICTED_ACCESS, METADATA_ONLY_ACCESS):
        return "Controlled"
    return None


@lru_cache(maxsize=1024)
def article_version(value: str) -> str | None:
    """NISO JAV abbreviation (AO, SMUR, AM, P, VoR, CVoR, EVoR) of an `info:eu-repo/semantics/
    …Version` term, a COAR version URI or label; None when unknown or "not applicable"."""
    uri = _coar_uri(value, "version")
    if uri is not None:
        concept = _coar()["version_types"].get(uri)
        label = str(concept["label"]) if concept else None
    else:
        match = _EU_REPO.match(value)
        if match:
            label = _VERSION_EU_REPO.get(match.group(1).lower())
        else:
            label = _version_index().get(_key(value))
    return label if label in ARTICLE_VERSIONS else None


@cache
def _language_names() -> dict[str, str]:
    """Language names (CLDR, in Spanish, Portuguese and English, as Babel ships them) and ISO
    639 names (pycountry) → ISO 639-3. A name two languages share is left out."""
    from babel import Locale

    names: dict[str, set[str]] = {}
    for locale in ("en", "es", "pt"):
        for code, name in Locale(locale).languages.items():
            found = _iso639_code(code.split("_")[0].lower())
            if found:
                names.setdefault(_key(name), set()).add(found)
    for language in pycountry.languages:
        names.setdefault(_key(language.name), set()).add(language.alpha_3)
    index = {name: next(iter(codes)) for name, codes in names.items() if len(codes) == 1}
    index.update(_LANGUAGE_ODDITIES)
    return index


def _iso639_code(code: str) -> str | None:
    if len(code) == 2:
        found = pycountry.languages.get(alpha_2=code)
    elif len(code) == 3:
        found = pycountry.languages.get(alpha_3=code) or pycountry.languages.get(bibliographic=code)
    else:
        return None
    return found.alpha_3 if found else None


@lru_cache(maxsize=1024)
def language(value: str) -> str | None:
    """ISO 639-3 code of a language code (ISO 639-1/2/3, also the bibliographic 639-2 codes and
    locale tags such as `pt_BR`, `pt-BR`, `en_US`) or name in English, Spanish or Portuguese
    ("Português", "Español", "Inglés"); None when unknown."""
    key = _key(value)
    tag = _LANGUAGE_TAG.match(value.strip().lower())
    if tag:
        found = _iso639_code(tag.group(1))
        if found:
            return found
    return _language_names().get(key)


def grant(value: str) -> Grant | None:
    """Funder, programme and project id of `info:eu-repo/grantAgreement/FUNDER/PROGRAM/ID/…`
    (positions as the OpenAIRE guidelines define them; an empty programme is allowed); None
    when the value is not such a URI or lacks the funder or the project id."""
    match = _GRANT.match(value)
    if not match:
        return None
    parts = [part.strip() for part in match.group(1).split("/")]
    if len(parts) < 3 or not parts[0] or not parts[2]:
        return None
    return Grant(parts[0], parts[1] or None, parts[2], value.strip())


def is_grant(value: str) -> bool:
    return _GRANT.match(value) is not None


_ISO_DATE = re.compile(
    r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?"
    r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|[+-]\d{2}:?\d{2})?)?$"
)
_SLASH_DATE = re.compile(r"^(?:(\d{1,2})[/.-])?(\d{1,2})[/.-](\d{4})$")
_YEAR_ONLY = re.compile(r"^\[?c?(\d{4})\]?\.?$")


def parse_date(value: str) -> dt.date | None:
    """The date of a W3CDTF value ("2019", "2019-05", "2019-05-17", with a time and zone as
    DSpace writes `2019-05-17T12:00:00Z`), a year in brackets or with "c" ("[2019]", "c2019"),
    or "MM/YYYY" / "DD/MM/YYYY" (day first: the network's convention; also with "." or "-").
    A year or month alone gives the first day of that period. None when unparseable or the year
    is outside 1000–2999. Time zones are ignored: the date is the one written."""
    text = value.strip()
    match = _ISO_DATE.match(text)
    if match:
        year, month, day = match.groups()
    else:
        match = _SLASH_DATE.match(text)
        if match:
            day, month, year = match.groups()
        else:
            match = _YEAR_ONLY.match(text)
            if not match:
                return None
            year, month, day = match.group(1), None, None
    try:
        parsed = dt.date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None
    return parsed if 1000 <= parsed.year <= 2999 else None


# --- file sizes ------------------------------------------------------------------------------
# Units as repositories write them (DSpace's "123456 bytes", people's "1.2 MB", French "Mo").
# KB, MB, GB, TB are decimal (SI, as DataCite's examples and most software today write them);
# KiB, MiB... are binary. A size is approximate anyway unless written in bytes.
_SIZE_UNITS = {
    **dict.fromkeys(("b", "byte", "bytes", "octet", "octets", "o"), 1),
    **dict.fromkeys(("kb", "kbytes", "kilobyte", "kilobytes", "ko"), 10**3),
    **dict.fromkeys(("mb", "mbytes", "megabyte", "megabytes", "mo"), 10**6),
    **dict.fromkeys(("gb", "gbytes", "gigabyte", "gigabytes", "go"), 10**9),
    **dict.fromkeys(("tb", "tbytes", "terabyte", "terabytes"), 10**12),
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^(?P<number>\d[\d.,\s\u00a0\u202f']*?)\s*(?P<unit>[a-z]+)\.?$")
# A byte unit anywhere: what makes an extent a size statement (not "24 p." or "1 h 20 min").
_SIZE_WORD = re.compile(
    r"(?<![a-z])(?:[kmgt]i?b|bytes?|octets?|(?:kilo|mega|giga|tera)bytes?|[kmgt]bytes)(?![a-z])"
    r"|\d\s*[kmg]?o(?![a-z])"
)
_GROUPS = {sep: re.compile(rf"\d{{1,3}}(?:{re.escape(sep)}\d{{3}})+") for sep in ".,"}


def _size_number(text: str, whole: bool) -> float | None:
    """A number as written: `1.5`, `1,5` (decimal comma), `1,234,567` / `1.234.567` (grouped
    thousands), `1,234.5` / `1.234,5` (both: the last is the decimal mark), `1 234 567`.

    `whole` (a count of bytes): separators can only group thousands, so `123,456` is
    123456; in a larger unit one separator is a decimal mark, so `1,234 MB` is 1.234 MB."""
    text = re.sub(r"[\s\u00a0\u202f']", "", text)
    if not text or text[-1] in ".,":
        return None
    marks = [c for c in text if c in ".,"]
    if not marks:
        return float(text)
    kinds = set(marks)
    if whole:
        if len(kinds) == 1 and _GROUPS[marks[0]].fullmatch(text):
            return float(text.replace(marks[0], ""))
        return None
    decimal = marks[-1]
    if len(kinds) == 2:
        thousands = "," if decimal == "." else "."
        head, _, tail = text.rpartition(decimal)
        if not (head.isdigit() or _GROUPS[thousands].fullmatch(head)):
            return None
        return float(f"{head.replace(thousands, '')}.{tail}")
    if len(marks) == 1:
        return float(text.replace(",", "."))
    if _GROUPS[decimal].fullmatch(text):
        return float(text.replace(decimal, ""))
    return None


def is_size_statement(value: str) -> bool:
    """Whether a value claims to be a size in bytes (names a byte unit): a DSpace
    `dc.format.extent` or DataCite `size` also holds pages and durations, which are not."""
    return _SIZE_WORD.search(value.lower()) is not None


def parse_size(value: str, bare_bytes: bool = False) -> int | None:
    """Bytes from a size as written: `123456 bytes`, `1.23 MB`, `1,5 MB`, `2 GiB`, `700 KB`,
    `1.234.567 bytes`, `3 Mo`; a bare number only with `bare_bytes` (DSpace xoai's bitstream
    `size`, always bytes). None when it cannot be read (no unit, an unknown unit, a number
    that is not one, a fraction of a byte)."""
    text = value.strip().lower()
    if bare_bytes and text.isdigit():
        return int(text)
    match = _SIZE.fullmatch(text)
    if match is None or (factor := _SIZE_UNITS.get(match["unit"])) is None:
        return None
    number = _size_number(match["number"], whole=factor == 1)
    if number is None:
        return None
    return round(number * factor)
