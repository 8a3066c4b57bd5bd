"""The spellings repositories write, read into the vocabularies the guidelines name."""

from __future__ import annotations

import datetime as dt

import pytest

from usage_stats.metadata import vocabularies as vocab

RT = "http://purl.org/coar/resource_type/"
AR = "http://purl.org/coar/access_right/"


@pytest.mark.parametrize(
    ("value", "uri", "data_type"),
    [
        ("info:eu-repo/semantics/article", "c_6501", "Article"),
        ("info:eu-repo/semantics/bachelorThesis", "c_7a1f", "Thesis_or_Dissertation"),
        ("info:eu-repo/semantics/masterThesis", "c_bdcc", "Thesis_or_Dissertation"),
        ("info:eu-repo/semantics/doctoralThesis", "c_db06", "Thesis_or_Dissertation"),
        ("info:eu-repo/semantics/book", "c_2f33", "Book_Segment"),
        ("info:eu-repo/semantics/bookPart", "c_3248", "Book_Segment"),
        ("info:eu-repo/semantics/conferenceObject", "c_c94f", "Conference_Item"),
        ("info:eu-repo/semantics/report", "c_93fc", "Report"),
        ("info:eu-repo/semantics/workingPaper", "c_8042", "Report"),
        ("info:eu-repo/semantics/preprint", "c_816b", "Article"),
        ("info:eu-repo/semantics/review", "c_efa0", "Other"),
        ("info:eu-repo/semantics/lecture", "c_8544", "Other"),
        ("info:eu-repo/semantics/patent", "c_15cd", "Patent"),
        ("info:eu-repo/semantics/other", "c_1843", "Other"),
        ("info:eu-repo/semantics/dataset", "c_ddb1", "Dataset"),
        ("INFO:EU-REPO/SEMANTICS/ARTICLE", "c_6501", "Article"),
        ("http://purl.org/coar/resource_type/c_6501", "c_6501", "Article"),
        ("https://purl.org/coar/resource_type/c_2df8fbb1/", "c_2df8fbb1", "Article"),
        ("http://purl.org/coar/resource_type/c_5794", "c_5794", "Conference_Item"),
        ("http://purl.org/coar/resource_type/c_12ce", "c_12ce", "Audiovisual"),
        ("http://purl.org/coar/resource_type/c_998f", "c_998f", "News_Item"),
        ("http://purl.org/coar/resource_type/QH80-2R4E", "QH80-2R4E", "Software"),
        ("journal article", "c_6501", "Article"),
        ("Artigo", "c_6501", "Article"),
        ("artículo", "c_6501", "Article"),
        ("Artículo de revista", "c_6501", "Article"),
        ("Tesis", "c_46ec", "Thesis_or_Dissertation"),
        ("Tesis de maestría", "c_bdcc", "Thesis_or_Dissertation"),
        ("Dissertação", "c_bdcc", "Thesis_or_Dissertation"),
        ("Tese", "c_db06", "Thesis_or_Dissertation"),
        ("Trabalho de conclusão de curso", "c_7a1f", "Thesis_or_Dissertation"),
        ("Libro", "c_2f33", "Book_Segment"),
        ("Livro", "c_2f33", "Book_Segment"),
        ("Book chapter", "c_3248", "Book_Segment"),
        ("Capítulo de libro", "c_3248", "Book_Segment"),
        ("Ponencia", "c_5794", "Conference_Item"),
        ("Text", "c_18cf", "Unspecified"),
        ("Dataset", "c_ddb1", "Dataset"),
        ("Image", "c_c513", "Image"),
        ("Map", "c_12cd", "Image"),
        ("Video", "c_12ce", "Audiovisual"),
        ("Sound", "c_18cc", "Sound"),
        ("Software", "c_5ce6", "Software"),
        ("Learning Object", "c_e059", "Other"),
        ("Technical Report", "c_18gh", "Report"),
        ("  working   paper. ", "c_8042", "Report"),
    ],
)
def test_resource_types(value: str, uri: str, data_type: str) -> None:
    found = vocab.resource_type(value)
    assert found is not None
    assert found.uri == RT + uri
    assert found.data_type == data_type
    assert found.data_type in vocab.COUNTER_ITEM_DATA_TYPES
    assert found.journal_article is (data_type == "Article")
    assert vocab.counter_data_type(found.uri) == data_type


def test_resource_type_labels_are_coar_english_labels() -> None:
    assert vocab.resource_type("Artigo").label == "journal article"
    assert vocab.resource_type("info:eu-repo/semantics/masterThesis").label == "master thesis"


@pytest.mark.parametrize(
    "value",
    [
        "info:eu-repo/semantics/publishedVersion",  # a version, not a type
        "info:eu-repo/semantics/unknownThing",
        "http://purl.org/coar/resource_type/c_zzzz",
        "Artículo científico de divulgación regional",
        "artic",
        "",
    ],
)
def test_unknown_resource_types(value: str) -> None:
    assert vocab.resource_type(value) is None


def test_counter_data_type_without_type() -> None:
    assert vocab.counter_data_type(None) == "Unspecified"
    assert vocab.counter_data_type("http://purl.org/coar/resource_type/c_zzzz") == "Unspecified"


@pytest.mark.parametrize(
    ("value", "uri"),
    [
        ("info:eu-repo/semantics/openAccess", "c_abf2"),
        ("info:eu-repo/semantics/embargoedAccess", "c_f1cf"),
        ("info:eu-repo/semantics/restrictedAccess", "c_16ec"),
        ("info:eu-repo/semantics/closedAccess", "c_14cb"),
        ("http://purl.org/coar/access_right/c_abf2", "c_abf2"),
        ("https://purl.org/coar/access_right/c_16ec/", "c_16ec"),
        ("open access", "c_abf2"),
        ("Open Access", "c_abf2"),
        ("Acesso aberto", "c_abf2"),
        ("Acceso abierto", "c_abf2"),
        ("acesso embargado", "c_f1cf"),
        ("embargoed access", "c_f1cf"),
        ("Acceso restringido", "c_16ec"),
        ("metadata only access", "c_14cb"),
        ("open.access", "c_abf2"),  # DSpace 7 access status
        ("metadata.only", "c_14cb"),
    ],
)
def test_access_rights(value: str, uri: str) -> None:
    assert vocab.access_rights(value) == AR + uri


@pytest.mark.parametrize(
    "value",
    [
        "Attribution-NonCommercial 4.0 International",
        "http://creativecommons.org/licenses/by/4.0/",
        "info:eu-repo/semantics/halfOpenAccess",
        "http://purl.org/coar/access_right/c_0000",
    ],
)
def test_unknown_access_rights(value: str) -> None:
    assert vocab.access_rights(value) is None


def test_only_access_statements_are_reported_when_unknown() -> None:
    assert vocab.looks_like_access_rights("info:eu-repo/semantics/halfOpenAccess")
    assert vocab.looks_like_access_rights("http://purl.org/coar/access_right/c_0000")
    assert not vocab.looks_like_access_rights("Attribution 4.0 International")


def test_embargo_end() -> None:
    assert vocab.embargo_end("info:eu-repo/date/embargoEnd/2025-01-31") == dt.date(2025, 1, 31)
    assert vocab.embargo_end("info:eu-repo/date/embargoEnd/2025") == dt.date(2025, 1, 1)
    assert vocab.embargo_end("info:eu-repo/date/embargoEnd/soon") is None
    assert vocab.embargo_end("2025-01-31") is None
    assert vocab.is_embargo_statement("info:eu-repo/date/embargoEnd/soon")


EMBARGO_END = dt.date(2025, 1, 31)


@pytest.mark.parametrize(
    ("rights", "end", "used", "access_type"),
    [
        (vocab.OPEN_ACCESS, None, dt.date(2024, 1, 1), "Open"),
        (vocab.EMBARGOED_ACCESS, EMBARGO_END, dt.date(2025, 1, 30), "Controlled"),
        (vocab.EMBARGOED_ACCESS, EMBARGO_END, dt.date(2025, 1, 31), "Open"),
        (vocab.EMBARGOED_ACCESS, EMBARGO_END, dt.date(2026, 3, 1), "Open"),
        (vocab.EMBARGOED_ACCESS, None, dt.date(2030, 1, 1), "Controlled"),
        (vocab.RESTRICTED_ACCESS, None, dt.date(2024, 1, 1), "Controlled"),
        (vocab.METADATA_ONLY_ACCESS, None, dt.date(2024, 1, 1), "Controlled"),
        (None, None, dt.date(2024, 1, 1), None),
    ],
)
def test_counter_access_type(
    rights: str | None, end: dt.date | None, used: dt.date, access_type: str | None
) -> None:
    assert vocab.counter_access_type(rights, end, used) == access_type


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("pt", "por"),
        ("por", "por"),
        ("pt_BR", "por"),
        ("pt-BR", "por"),
        ("pt-br", "por"),
        ("Português", "por"),
        ("portugues", "por"),
        ("Portugués", "por"),
        ("Portuguese", "por"),
        ("spa", "spa"),
        ("es", "spa"),
        ("es_ES", "spa"),
        ("ES", "spa"),
        ("Español", "spa"),
        ("Espanhol", "spa"),
        ("Spanish", "spa"),
        ("Castellano", "spa"),
        ("English", "eng"),
        ("Inglés", "eng"),
        ("Inglês", "eng"),
        ("eng", "eng"),
        ("en", "eng"),
        ("en_US", "eng"),
        ("fre", "fra"),  # ISO 639-2 bibliographic
        ("fra", "fra"),
        ("Francés", "fra"),
        ("ger", "deu"),
        ("Alemão", "deu"),
        ("qu", "que"),
        ("Quechua", "que"),
        ("gn", "grn"),
        ("Guaraní", "grn"),
    ],
)
def test_languages(value: str, code: str) -> None:
    assert vocab.language(value) == code


@pytest.mark.parametrize("value", ["xx", "other", "Outro", "zz-ZZ", "", "Lengua rara"])
def test_unknown_languages(value: str) -> None:
    assert vocab.language(value) is None


@pytest.mark.parametrize(
    ("value", "version"),
    [
        ("info:eu-repo/semantics/draft", "AO"),
        ("info:eu-repo/semantics/submittedVersion", "SMUR"),
        ("info:eu-repo/semantics/acceptedVersion", "AM"),
        ("info:eu-repo/semantics/publishedVersion", "VoR"),
        ("info:eu-repo/semantics/updatedVersion", "CVoR"),
        ("http://purl.org/coar/version/c_970fb48d4fbd8a85", "VoR"),
        ("http://purl.org/coar/version/c_ab4af688f83e57aa", "AM"),
        ("VoR", "VoR"),
        ("versión publicada", "VoR"),
        ("accepted manuscript", "AM"),
    ],
)
def test_article_versions(value: str, version: str) -> None:
    assert vocab.article_version(value) == version


@pytest.mark.parametrize(
    "value",
    ["http://purl.org/coar/version/c_be7fb7dd8ff6fe43", "NA", "1.0.3", "manuscrito aceptado"],
)
def test_no_article_version(value: str) -> None:
    # "not applicable", a software version, a label COAR gives to two versions (AM and P)
    assert vocab.article_version(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "info:eu-repo/grantAgreement/EC/FP7/123456/EU/Title/ACRONYM",
            ("EC", "FP7", "123456"),
        ),
        ("info:eu-repo/grantAgreement/EC/H2020/776609", ("EC", "H2020", "776609")),
        ("info:eu-repo/grantAgreement/ANID//1190123/CL", ("ANID", None, "1190123")),
        (
            "info:eu-repo/grantAgreement/CAPES/PROEX/88887.123456/BR",
            ("CAPES", "PROEX", "88887.123456"),
        ),
    ],
)
def test_grants(value: str, expected: tuple[str, str | None, str]) -> None:
    found = vocab.grant(value)
    assert found is not None
    assert (found.funder, found.program, found.project_id) == expected
    assert found.uri == value


@pytest.mark.parametrize(
    "value",
    ["info:eu-repo/grantAgreement/EC", "info:eu-repo/grantAgreement/EC/FP7/", "Projeto X"],
)
def test_unreadable_grants(value: str) -> None:
    assert vocab.grant(value) is None


@pytest.mark.parametrize(
    ("value", "date"),
    [
        ("2019", dt.date(2019, 1, 1)),
        ("2019-05", dt.date(2019, 5, 1)),
        ("2019-05-17", dt.date(2019, 5, 17)),
        ("2019-5-7", dt.date(2019, 5, 7)),
        ("05/2019", dt.date(2019, 5, 1)),
        ("17/05/2019", dt.date(2019, 5, 17)),
        ("17.05.2019", dt.date(2019, 5, 17)),
        ("03/04/2019", dt.date(2019, 4, 3)),  # day first, the network's convention
        ("2019-05-17T12:34:56Z", dt.date(2019, 5, 17)),
        ("2019-05-17T23:34:56.123-03:00", dt.date(2019, 5, 17)),
        ("2019-05-17 12:34:56", dt.date(2019, 5, 17)),
        ("[2019]", dt.date(2019, 1, 1)),
        ("c2019", dt.date(2019, 1, 1)),
        (" 2019 ", dt.date(2019, 1, 1)),
    ],
)
def test_dates(value: str, date: dt.date) -> None:
    assert vocab.parse_date(value) == date


@pytest.mark.parametrize(
    "value",
    ["2019-13", "2019-02-30", "12/31/2019", "0000", "s.f.", "sin fecha", "May 2019", "19", ""],
)
def test_unparseable_dates(value: str) -> None:
    assert vocab.parse_date(value) is None
