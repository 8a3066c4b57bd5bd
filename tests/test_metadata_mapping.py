"""map_record on real-shaped records of each format, with planted truth for every field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from usage_stats.metadata.mapping import (
    FIELDS,
    MetadataError,
    map_record,
    map_records,
    metadata_frame,
)
from usage_stats.metadata.schema import ITEM_METADATA_SCHEMA
from usage_stats.metadata.store import MetadataStore
from usage_stats.metadata.vocabularies import is_size_statement, parse_size
from usage_stats.storage.lake import LakeReadError, LocalLake

DATA = Path(__file__).parent / "data" / "metadata"
RT = "http://purl.org/coar/resource_type/"
AR = "http://purl.org/coar/access_right/"
GRANT_EC = "info:eu-repo/grantAgreement/EC/H2020/776609/EU/Water JPI/WATERJPI"


def xml(prefix: str) -> bytes:
    return (DATA / f"{prefix}.xml").read_bytes()


OAI_DC = {
    "metadata_format": "oai_dc",
    "title": "Calidad del agua en la cuenca del río Reventazón",
    "creators": ["Mora Vargas, Ana", "Silva, João"],
    # dc:date holds a deposit timestamp (2020) and the publication (2019-05): the earliest
    "publication_date": dt.date(2019, 5, 1),
    "publication_year": 2019,
    "resource_type": RT + "c_6501",
    "access_rights": AR + "c_f1cf",
    "embargo_end": dt.date(2021, 6, 30),
    "language": "spa",
    "subjects": ["Calidad del agua", "Hidrología"],
    "publisher": "Universidad de Costa Rica",
    "funders": ["EC"],
    "projects": [GRANT_EC],
    "affiliations": [],
    "formats": ["application/pdf"],  # "24 p." is an extent, not a format
    "file_count": None,  # oai_dc lists no files
    "file_bytes": None,
    "identifiers": [
        "https://repositorio.ucr.ac.cr/handle/10669/81234",
        "https://doi.org/10.15517/RBT.V67I2.35000",
        "Revista de Biología Tropical, 67(2), 2019",
    ],
    # the citation is no key of the item
    "item_keys": ["hdl:10669/81234", "10.15517/rbt.v67i2.35000"],
    "doi": "10.15517/rbt.v67i2.35000",
    "handle": "hdl:10669/81234",
    "urls": [
        "https://repositorio.ucr.ac.cr/handle/10669/81234",
        "https://doi.org/10.15517/RBT.V67I2.35000",
    ],
    "article_version": "VoR",
    "problems": [],
}

OAI_OPENAIRE = {
    "metadata_format": "oai_openaire",
    "title": "Calidad del agua en la cuenca del río Reventazón",  # not the TranslatedTitle
    "creators": ["Mora Vargas, Ana", "Silva, João"],
    "publication_date": dt.date(2019, 5, 17),  # the Issued date, not Accepted
    "publication_year": 2019,
    "resource_type": RT + "c_2df8fbb1",
    "access_rights": AR + "c_f1cf",
    "embargo_end": dt.date(2021, 6, 30),  # the Available date
    "language": "spa",
    "subjects": ["Water quality", "551.48"],
    "publisher": "Universidad de Costa Rica",
    "funders": ["European Commission"],
    "projects": [GRANT_EC],
    "affiliations": ["Universidad de Costa Rica", "Universidade de São Paulo"],
    "formats": ["application/pdf"],
    "file_count": 1,  # one oaire:file, no datacite:size
    "file_bytes": None,
    "identifiers": [
        "https://repositorio.ucr.ac.cr/handle/10669/81234",
        "10.15517/rbt.v67i2.35000",
    ],
    "item_keys": ["hdl:10669/81234", "10.15517/rbt.v67i2.35000"],
    "doi": "10.15517/rbt.v67i2.35000",
    "handle": "hdl:10669/81234",
    "urls": ["https://repositorio.ucr.ac.cr/handle/10669/81234"],
    "article_version": "AM",
    "problems": [],
}

DIM = {
    "metadata_format": "dim",
    "title": "Ensino de ciências na escola pública",
    "creators": ["Oliveira, Maria de Souza"],  # not the advisor
    "publication_date": dt.date(2018, 1, 1),  # dc.date.issued, not accessioned
    "publication_year": 2018,
    "resource_type": RT + "c_bdcc",
    "access_rights": AR + "c_abf2",
    "embargo_end": None,
    "language": "por",
    "subjects": ["Educação", "Education"],
    "publisher": "Universidade Federal do Rio Grande do Sul",
    "funders": ["CAPES"],
    "projects": ["info:eu-repo/grantAgreement/CAPES/PROEX/88887.123456/BR"],
    "affiliations": ["Universidade Federal do Rio Grande do Sul"],
    "formats": ["application/pdf"],
    "file_count": None,  # no dc.format.extent
    "file_bytes": None,
    "identifiers": ["http://hdl.handle.net/10183/184567", "001079953"],  # not the ISSN
    "item_keys": ["hdl:10183/184567"],
    "doi": None,
    "handle": "hdl:10183/184567",
    "urls": ["http://hdl.handle.net/10183/184567"],
    "article_version": "VoR",
    "problems": [],
}

XOAI = {
    "metadata_format": "xoai",
    "title": "Relaves mineros en el norte de Chile",
    "creators": ["Rojas, Pedro"],
    "publication_date": dt.date(2021, 7, 1),
    "publication_year": 2021,
    "resource_type": RT + "c_3248",
    "access_rights": AR + "c_abf2",
    "embargo_end": None,
    "language": "spa",
    "subjects": ["Minería"],
    "publisher": None,
    "funders": [],
    "projects": [],
    "affiliations": [],
    "formats": ["application/pdf"],
    "file_count": 1,  # the ORIGINAL bundle's bitstream
    "file_bytes": 123456,
    "identifiers": [
        "https://repositorio.uchile.cl/handle/2250/181234",
        "doi:10.1016/J.EXAMPLE.2021.04.001",
        "2250/181234",
        "oai:repositorio.uchile.cl:2250/181234",
    ],
    "item_keys": [
        "hdl:2250/181234",
        "10.1016/j.example.2021.04.001",
        "oai:repositorio.uchile.cl:2250/181234",
    ],
    "doi": "10.1016/j.example.2021.04.001",
    "handle": "hdl:2250/181234",
    "urls": ["https://repositorio.uchile.cl/handle/2250/181234"],
    "article_version": None,
    "problems": [],
}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("oai_dc", OAI_DC), ("oai_openaire", OAI_OPENAIRE), ("dim", DIM), ("xoai", XOAI)],
)
def test_each_format(prefix: str, expected: dict[str, object]) -> None:
    mapped = map_record({prefix: xml(prefix)})
    assert list(mapped) == list(FIELDS)
    for field in FIELDS:
        assert mapped[field] == expected[field], field


def test_richer_format_wins_and_oai_dc_fills_gaps() -> None:
    mapped = map_record({"oai_dc": xml("oai_dc"), "oai_openaire": xml("oai_openaire")})
    expected = dict(OAI_OPENAIRE)
    # every identifier of every format, richest first
    expected["identifiers"] = [
        *OAI_OPENAIRE["identifiers"],
        "https://doi.org/10.15517/RBT.V67I2.35000",
        "Revista de Biología Tropical, 67(2), 2019",
    ]
    expected["urls"] = OAI_DC["urls"]
    assert mapped == expected


def test_gaps_filled_from_oai_dc() -> None:
    openaire = (
        b'<oaire:resource xmlns:oaire="http://namespace.openaire.eu/schema/oaire/"'
        b' xmlns:datacite="http://datacite.org/schema/kernel-4">'
        b"<datacite:titles><datacite:title>Only a title</datacite:title></datacite:titles>"
        b"</oaire:resource>"
    )
    mapped = map_record({"oai_openaire": openaire, "oai_dc": xml("oai_dc")})
    assert mapped["metadata_format"] == "oai_openaire"
    assert mapped["title"] == "Only a title"
    for field in ("creators", "resource_type", "access_rights", "language", "publication_date"):
        assert mapped[field] == OAI_DC[field], field


DC_HEAD = (
    '<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/"'
    ' xmlns:dc="http://purl.org/dc/elements/1.1/">'
)


def dc(*elements: str) -> bytes:
    return (DC_HEAD + "".join(elements) + "</oai_dc:dc>").encode()


def test_unknown_values_are_problems_and_fields_stay_empty() -> None:
    mapped = map_record(
        {
            "oai_dc": dc(
                "<dc:title>T</dc:title>",
                "<dc:date>sin fecha</dc:date>",
                "<dc:type>Cosa rara</dc:type>",
                "<dc:type>info:eu-repo/semantics/weirdThing</dc:type>",
                "<dc:rights>info:eu-repo/semantics/halfOpenAccess</dc:rights>",
                "<dc:rights>Todos los derechos reservados</dc:rights>",
                "<dc:date>info:eu-repo/date/embargoEnd/pronto</dc:date>",
                "<dc:language>Lengua rara</dc:language>",
                "<dc:relation>info:eu-repo/grantAgreement/EC</dc:relation>",
            )
        }
    )
    assert mapped["publication_date"] is None
    assert mapped["publication_year"] is None
    assert mapped["resource_type"] is None
    assert mapped["access_rights"] is None
    assert mapped["embargo_end"] is None
    assert mapped["language"] is None
    assert mapped["funders"] == []
    assert mapped["projects"] == ["info:eu-repo/grantAgreement/EC"]  # as written
    assert mapped["problems"] == [
        "publication_date: sin fecha",
        "resource_type: Cosa rara",
        "resource_type: info:eu-repo/semantics/weirdThing",
        "access_rights: info:eu-repo/semantics/halfOpenAccess",
        "embargo_end: info:eu-repo/date/embargoEnd/pronto",
        "language: Lengua rara",
        "funders: info:eu-repo/grantAgreement/EC",  # its funder could not be read
    ]


def test_unknown_value_beside_a_known_one_is_no_problem() -> None:
    mapped = map_record(
        {
            "oai_dc": dc(
                "<dc:type>Cosa rara</dc:type>",
                "<dc:type>Text</dc:type>",
                "<dc:type>info:eu-repo/semantics/bachelorThesis</dc:type>",
                "<dc:date>s.f.</dc:date>",
                "<dc:date>2017</dc:date>",
            )
        }
    )
    # the specific type wins over "Text"
    assert mapped["resource_type"] == RT + "c_7a1f"
    assert mapped["publication_date"] == dt.date(2017, 1, 1)
    assert mapped["problems"] == []


def test_problem_of_a_richer_format_filled_by_oai_dc_is_none() -> None:
    openaire = (
        b'<oaire:resource xmlns:oaire="http://namespace.openaire.eu/schema/oaire/">'
        b'<oaire:resourceType uri="http://purl.org/coar/resource_type/c_nope">nope'
        b"</oaire:resourceType></oaire:resource>"
    )
    mapped = map_record(
        {"oai_openaire": openaire, "oai_dc": dc("<dc:type>info:eu-repo/semantics/book</dc:type>")}
    )
    assert mapped["resource_type"] == RT + "c_2f33"
    assert mapped["problems"] == []
    alone = map_record({"oai_openaire": openaire})
    # a URI and its label are one statement: one problem, named by the URI
    assert alone["problems"] == ["resource_type: http://purl.org/coar/resource_type/c_nope"]


def test_malformed_format_is_a_problem_and_the_record_is_kept() -> None:
    mapped = map_record({"oai_openaire": b"<oaire:resource><unclosed>", "oai_dc": xml("oai_dc")})
    assert mapped["metadata_format"] == "oai_dc"
    assert mapped["title"] == OAI_DC["title"]
    assert len(mapped["problems"]) == 1
    assert mapped["problems"][0].startswith("metadata: oai_openaire: ")


def test_wrong_root_element_is_unreadable() -> None:
    mapped = map_record({"dim": xml("oai_dc"), "oai_dc": xml("oai_dc")})
    assert mapped["metadata_format"] == "oai_dc"
    assert mapped["problems"] == [
        "metadata: dim: root element {http://www.openarchives.org/OAI/2.0/oai_dc/}dc,"
        " expected {http://www.dspace.org/xmlns/dspace/dim}dim"
    ]


def test_no_readable_format_raises() -> None:
    with pytest.raises(MetadataError, match=r"oai_openaire: empty; oai_dc: Namespace prefix"):
        map_record({"oai_dc": b"<oai_dc:dc", "oai_openaire": b""})
    with pytest.raises(MetadataError, match="no supported format"):
        map_record({"mods": b"<mods/>"})


def test_unsupported_format_beside_a_readable_one() -> None:
    mapped = map_record({"mods": b"<mods/>", "oai_dc": dc("<dc:title>T</dc:title>")})
    assert mapped["title"] == "T"
    assert mapped["problems"] == ["metadata: mods: format not read"]


def test_entities_are_not_expanded() -> None:
    record = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + dc(
        "<dc:title>a&e;b</dc:title>"
    )
    assert "root:" not in (map_record({"oai_dc": record})["title"] or "")


def test_map_records_keeps_order_and_errors_in_place() -> None:
    records = [
        {"oai_dc": xml("oai_dc")},
        {"oai_dc": b"not xml"},
        {"dim": xml("dim")},
    ]
    mapped = map_records(records)
    assert mapped[0] == map_record(records[0])
    assert isinstance(mapped[1], MetadataError)
    assert mapped[2] == map_record(records[2])


def test_metadata_frame_has_the_schema() -> None:
    rows = [
        {
            "source_key": "opendoar::1",
            "oai_identifier": "oai:x:1",
            **map_record({"dim": xml("dim")}),
        },
        {"source_key": "opendoar::1", **map_record({"oai_dc": dc("<dc:title>T</dc:title>")})},
    ]
    frame = metadata_frame(rows)
    assert frame.schema == ITEM_METADATA_SCHEMA
    assert frame.height == 2
    assert frame.get_column("publication_date").to_list() == [dt.date(2018, 1, 1), None]
    assert frame.get_column("item_keys").to_list() == [["hdl:10183/184567"], []]
    assert frame.get_column("oai_identifier").to_list() == ["oai:x:1", None]
    assert frame.get_column("deleted").dtype == pl.Boolean


# --- files and data volume ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("123456 bytes", 123456),  # DSpace's dc.format.extent
        ("123,456 bytes", 123456),  # bytes are whole: separators group thousands
        ("1.234.567 bytes", 1234567),
        ("1 234 567 bytes", 1234567),
        ("1.23 MB", 1_230_000),  # KB, MB, GB decimal
        ("1,5 MB", 1_500_000),  # decimal comma
        ("1,234.5 kB", 1_234_500),
        ("1.234,5 kB", 1_234_500),
        ("700 KB", 700_000),
        ("2 GiB", 2 * 1024**3),  # KiB, MiB, GiB binary
        ("512 KiB", 512 * 1024),
        ("3 Mo", 3_000_000),  # French
        ("10 MB.", 10_000_000),
        ("12.5 bytes", None),  # no fraction of a byte
        ("ca. 2 MB", None),
        ("1.2.3 MB", None),
        ("MB", None),
        ("123456", None),  # a bare number only where the format says bytes
    ],
)
def test_parse_size(written: str, size: int | None) -> None:
    assert parse_size(written) == size
    assert is_size_statement(written) == (written != "123456")


def test_extents_that_are_no_sizes() -> None:
    for extent in ("24 p.", "120 páginas", "1 h 20 min", "2 volumes", "Tomo 2"):
        assert not is_size_statement(extent), extent


XOAI_HEAD = '<metadata xmlns="http://www.lyncode.com/xoai">'


def xoai(bundles: str | None) -> bytes:
    title = (
        '<element name="dc"><element name="title"><element name="es">'
        '<field name="value">Con archivos</field></element></element></element>'
    )
    body = "" if bundles is None else f'<element name="bundles">{bundles}</element>'
    return (XOAI_HEAD + title + body + "</metadata>").encode()


def bundle(name: str, *bitstreams: tuple[str, str | None]) -> str:
    streams = "".join(
        '<element name="bitstream"><field name="format">'
        + mime
        + "</field>"
        + ("" if size is None else f'<field name="size">{size}</field>')
        + "</element>"
        for mime, size in bitstreams
    )
    return (
        f'<element name="bundle"><field name="name">{name}</field>'
        f'<element name="bitstreams">{streams}</element></element>'
    )


def test_xoai_counts_the_original_bundle_only() -> None:
    mapped = map_record(
        {
            "xoai": xoai(
                bundle("ORIGINAL", ("application/pdf", "1000"), ("application/zip", "2500000"))
                + bundle("THUMBNAIL", ("image/jpeg", "7000"))
                + bundle("LICENSE", ("text/plain", "1748"))
            )
        }
    )
    assert (mapped["file_count"], mapped["file_bytes"]) == (2, 2_501_000)
    # a thumbnail's format is DSpace's rendition, not a format of the record
    assert mapped["formats"] == ["application/pdf", "application/zip"]
    assert mapped["problems"] == []


def test_xoai_sizes_missing_or_unreadable() -> None:
    missing = map_record(
        {"xoai": xoai(bundle("ORIGINAL", ("application/pdf", "1000"), ("application/pdf", None)))}
    )
    assert (missing["file_count"], missing["file_bytes"], missing["problems"]) == (2, None, [])
    bad = map_record({"xoai": xoai(bundle("ORIGINAL", ("application/pdf", "12x")))})
    assert (bad["file_count"], bad["file_bytes"]) == (1, None)
    assert bad["problems"] == ["file_bytes: 12x"]
    # bundles, none ORIGINAL: the record says it has no files
    none = map_record({"xoai": xoai(bundle("LICENSE", ("text/plain", "1748")))})
    assert (none["file_count"], none["file_bytes"]) == (0, 0)
    # no bundles at all: it does not say
    silent = map_record({"xoai": xoai(None)})
    assert (silent["file_count"], silent["file_bytes"]) == (None, None)


DIM_HEAD = '<dim:dim xmlns:dim="http://www.dspace.org/xmlns/dspace/dim">'


def dim(*extents: str) -> bytes:
    fields = "".join(
        f'<dim:field mdschema="dc" element="format" qualifier="extent">{e}</dim:field>'
        for e in extents
    )
    title = '<dim:field mdschema="dc" element="title">Con extensión</dim:field>'
    return (DIM_HEAD + title + fields + "</dim:dim>").encode()


def test_dim_extents() -> None:
    mapped = map_record({"dim": dim("123456 bytes", "1,5 MB", "24 p.")})
    assert (mapped["file_count"], mapped["file_bytes"]) == (2, 1_623_456)
    assert mapped["problems"] == []
    bad = map_record({"dim": dim("123456 bytes", "ca. 2 MB")})
    assert (bad["file_count"], bad["file_bytes"]) == (2, None)
    assert bad["problems"] == ["file_bytes: ca. 2 MB"]
    pages = map_record({"dim": dim("24 p.")})
    assert (pages["file_count"], pages["file_bytes"], pages["problems"]) == (None, None, [])


OPENAIRE_HEAD = (
    '<oaire:resource xmlns:oaire="http://namespace.openaire.eu/schema/oaire/"'
    ' xmlns:datacite="http://datacite.org/schema/kernel-4">'
    "<datacite:titles><datacite:title>Con archivos</datacite:title></datacite:titles>"
)


def openaire(files: int, *sizes: str) -> bytes:
    body = "".join(
        f'<oaire:file mimeType="application/pdf" objectType="fulltext">https://x.org/{i}.pdf'
        "</oaire:file>"
        for i in range(files)
    )
    if sizes:
        body += (
            "<datacite:sizes>"
            + "".join(f"<datacite:size>{s}</datacite:size>" for s in sizes)
            + "</datacite:sizes>"
        )
    return (OPENAIRE_HEAD + body + "</oaire:resource>").encode()


def test_oai_openaire_files_and_sizes() -> None:
    sized = map_record({"oai_openaire": openaire(2, "15 pages", "6 MB", "512 KiB")})
    assert (sized["file_count"], sized["file_bytes"]) == (2, 6_000_000 + 512 * 1024)
    unsized = map_record({"oai_openaire": openaire(3)})
    assert (unsized["file_count"], unsized["file_bytes"]) == (3, None)
    bad = map_record({"oai_openaire": openaire(1, "about 6 MB")})
    assert (bad["file_count"], bad["file_bytes"]) == (1, None)
    assert bad["problems"] == ["file_bytes: about 6 MB"]
    # no oaire:file: the record does not say (oai_dc beside it does not either)
    silent = map_record({"oai_openaire": openaire(0), "oai_dc": xml("oai_dc")})
    assert (silent["file_count"], silent["file_bytes"]) == (None, None)


def test_old_state_files_without_file_columns_stay_readable(tmp_path: Path) -> None:
    row = {name: None for name in ITEM_METADATA_SCHEMA} | {
        "source_key": "opendoar::1",
        "oai_identifier": "oai:x:1",
        "deleted": False,
    }
    old = pl.DataFrame([row], schema=ITEM_METADATA_SCHEMA).drop("file_count", "file_bytes")
    path = tmp_path / "warehouse" / "item_metadata" / "source=opendoar%3A%3A1"
    path.mkdir(parents=True)
    old.write_parquet(path / "current.parquet")
    read = MetadataStore(LocalLake(tmp_path / "warehouse")).read_current("opendoar::1")
    assert read.schema == ITEM_METADATA_SCHEMA
    assert read.select("file_count", "file_bytes").row(0) == (None, None)


def test_all_sources_read_together_equal_each_read_alone(tmp_path: Path) -> None:
    """`read_all_current` decodes every source's file at once: the same frame as reading
    each alone (old files without newer columns, a file with a column since dropped, a
    source with no records), and a broken file is still named."""
    lake = LocalLake(tmp_path / "warehouse")
    store = MetadataStore(lake)

    def state(source: str, n: int) -> pl.DataFrame:
        rows = [
            {name: None for name in ITEM_METADATA_SCHEMA}
            | {
                "source_key": source,
                "oai_identifier": f"oai:{source}:{i}",
                "item_key": f"oai:{source}:{i}",
                "deleted": i % 3 == 0,
                "file_count": i,
                "languages": ["spa", "por"][: i % 3],
            }
            for i in range(n)
        ]
        return pl.DataFrame(rows, schema=ITEM_METADATA_SCHEMA)

    store._write(store._current_key("opendoar::1"), state("a", 4))
    store._write(store._current_key("opendoar::2"), state("b", 3).drop("file_count", "file_bytes"))
    store._write(
        store._current_key("opendoar::3"), state("c", 2).with_columns(pl.lit(1).alias("gone"))
    )
    store._write(store._current_key("opendoar::4"), state("d", 0))
    alone = pl.concat([store.read_current(s) for s in store.sources()])
    together = store.read_all_current()
    assert together.schema == ITEM_METADATA_SCHEMA
    assert together.height == 9
    assert together.equals(alone)
    assert together.filter(pl.col("source_key") == "b").get_column("file_count").null_count() == 3

    broken = lake.root / store._current_key("opendoar::3")
    broken.write_bytes(b"not parquet")
    with pytest.raises(LakeReadError, match="source=opendoar%3A%3A3/current.parquet"):
        store.read_all_current()
