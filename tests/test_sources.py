"""The CSV source registry: what operators edit until the admin DB exists."""

from pathlib import Path

import pytest

from usage_stats.admin.sources import (
    CsvSourceRegistry,
    SourceRegistryError,
    sources_frame,
    write_sources_csv,
)
from usage_stats.demo.synthetic import build_sources

HEADER = "site_id,source_key,name,type,country,identifier_prefix,custom_var_slot\n"


def registry_file(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "sources.csv"
    path.write_text(header + body)
    return path


def test_round_trip(tmp_path):
    sources = build_sources(5)
    path = tmp_path / "sources.csv"
    write_sources_csv(path, sources)
    assert CsvSourceRegistry(path).sources() == sources
    assert sources_frame(sources).height == 5


def test_defaults_and_prefix_normalisation(tmp_path):
    path = registry_file(
        tmp_path, "7,,,l,,,\n8,opendoar::8,Kerwa,R,cr,oai:https://www.Kerwa.ucr.ac.cr/server:,\n"
    )
    portal, repo = CsvSourceRegistry(path).sources()
    assert (portal.type, portal.custom_var_slot, portal.name) == ("L", 6, "Site 7")
    assert (repo.country, repo.custom_var_slot) == ("CR", 1)
    assert repo.identifier_prefix == "oai:www.kerwa.ucr.ac.cr:"


def test_edits_are_seen_without_restart(tmp_path):
    path = registry_file(tmp_path, "1,a,A,R,CR,,\n")
    registry = CsvSourceRegistry(path)
    assert [s.site_id for s in registry.sources()] == [1]
    path.write_text(HEADER + "1,a,A,R,CR,,\n2,b,B,N,AR,,\n")
    assert [s.site_id for s in registry.sources()] == [1, 2]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("x,a,A,R,CR,,\n", "line 2: column 'site_id' must be an integer, got 'x'"),
        (",a,A,R,CR,,\n", "line 2: column 'site_id' is required"),
        ("1,a,A,Q,CR,,\n", "line 2: column 'type' must be one of R, N, L, got 'Q'"),
        ("1,a,A,R,Costa Rica,,\n", "line 2: column 'country' must be an ISO 3166 alpha-2 code"),
        ("1,a,A,R,CR,,42\n", "line 2: column 'custom_var_slot' must be 1..10, got 42"),
        ("1,a,A,R,CR,,\n1,b,B,R,CR,,\n", "line 3: site_id 1 already defined on line 2"),
    ],
)
def test_bad_rows_are_named(tmp_path, body, message):
    path = registry_file(tmp_path, body)
    with pytest.raises(SourceRegistryError) as error:
        CsvSourceRegistry(path).sources()
    assert str(error.value).startswith(str(path))
    assert message in str(error.value)


def test_missing_file_and_columns(tmp_path):
    with pytest.raises(SourceRegistryError, match="source registry file does not exist"):
        CsvSourceRegistry(tmp_path / "nope.csv").sources()
    path = registry_file(tmp_path, "1\n", header="site_id\n")
    with pytest.raises(SourceRegistryError, match="missing required column\\(s\\) type"):
        CsvSourceRegistry(path).sources()


PREFIXES = "site_id,type,handle_prefixes,doi_prefixes\n"


def test_prefix_columns_are_normalised_and_round_trip(tmp_path):
    path = registry_file(
        tmp_path,
        '1,R,"https://hdl.handle.net/10669/ ; hdl:20.500.11764",DOI: 10.15517\n'
        "2,R,1721.1 1721.1/,https://doi.org/10.5555/UCR.\n"
        "3,N,,\n",
        header=PREFIXES,
    )
    one, two, node = CsvSourceRegistry(path).sources()
    assert (one.handle_prefixes, one.doi_prefixes) == (("10669", "20.500.11764"), ("10.15517",))
    assert (two.handle_prefixes, two.doi_prefixes) == (("1721.1",), ("10.5555/ucr.",))
    assert (node.handle_prefixes, node.doi_prefixes) == ((), ())
    frame = sources_frame([one, two, node])
    assert frame.get_column("handle_prefixes").to_list() == [
        ["10669", "20.500.11764"],
        ["1721.1"],
        [],
    ]
    out = tmp_path / "out.csv"
    write_sources_csv(out, [one, two, node])
    assert CsvSourceRegistry(out).sources() == [one, two, node]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1,R,kerwa,\n", "line 2: column 'handle_prefixes': handle prefix 'kerwa' is not"),
        ("1,R,,10669\n", "line 2: column 'doi_prefixes': DOI prefix '10669' is not a DOI prefix"),
        ("1,R,10.1234,\n", "line 2: column 'handle_prefixes': handle prefix '10.1234' is a DOI"),
        ("1,N,10669,\n", "line 2: handle_prefixes: only repositories (type R) own items"),
        (
            "1,R,,10.1234\n2,R,,doi:10.1234/\n",
            "line 3: DOI prefix 10.1234 is already declared by site_id 1 on line 2",
        ),
    ],
)
def test_bad_or_shared_prefixes_are_named_by_row_and_column(tmp_path, body, message):
    path = registry_file(tmp_path, body, header=PREFIXES)
    with pytest.raises(SourceRegistryError) as error:
        CsvSourceRegistry(path).sources()
    assert message in str(error.value)


def test_a_disabled_repository_may_keep_a_prefix_another_declares(tmp_path):
    path = registry_file(
        tmp_path, "1,R,10669,,false\n2,R,10669,,true\n", header=PREFIXES.strip() + ",active\n"
    )
    assert [s.site_id for s in CsvSourceRegistry(path).sources()] == [2]
