"""`usage-stats db|sources|status`: every command, every validation message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from openpyxl import Workbook

from usage_stats.admin.registry import list_sources
from usage_stats.admin.sources import CSV_COLUMNS
from usage_stats.cli import main

HEADER = ",".join(CSV_COLUMNS[:9]) + ",identifier_rule,rule_pattern,rule_replacement,mapping_file\n"


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("USAGE_STATS_DATA_DIR", str(tmp_path / "data"))
    url = f"sqlite:///{tmp_path / 'data' / 'admin.db'}"

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    run.url = url  # type: ignore[attr-defined]
    assert run("db", "upgrade")[0] == 0
    return run


def add_repo(cli, site: int = 1, *extra: str):
    return cli(
        "sources", "add", "--site-id", str(site), "--key", f"opendoar::{site}",
        "--name", f"Repo {site}", "--type", "R", "--country", "CR", *extra,
    )  # fmt: skip


def test_db_upgrade_current_downgrade(cli):
    code, out, _ = cli("db", "current")
    assert (code, out.split()) == (0, ["0006", "(newest:", "0006)"])
    assert cli("db", "downgrade", "-1")[1].strip() == "admin DB at migration 0005"
    assert cli("db", "upgrade")[1].strip() == "admin DB at migration 0006 (newest)"


def test_console_script_is_installed(tmp_path):
    exe = Path(sys.executable).parent / "usage-stats"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for command in ("generate", "summary", "db", "sources", "status"):
        assert command in result.stdout


def test_add_list_show_update_disable(cli):
    code, out, err = add_repo(cli, 1, "--prefix", "oai:https://www.Kerwa.ucr.ac.cr/server:")
    assert (code, out.strip(), err) == (0, "added source 1 (opendoar::1)", "")
    add_repo(cli, 2)
    code, out, _ = cli("sources", "list")
    assert code == 0 and "2 source(s)" in out and "oai:www.kerwa.ucr.ac.cr:" in out
    code, out, _ = cli("sources", "show", "1")
    assert "identifier_prefix" in out and "oai:www.kerwa.ucr.ac.cr:" in out
    code, out, _ = cli("sources", "update", "1", "--name", "Kerwa UCR", "--slot", "3")
    assert out.strip() == "updated source 1: custom_var_slot, name"
    assert cli("sources", "disable", "2")[1].strip() == "disabled source 2"
    assert "1 source(s)" in cli("sources", "list")[1]
    assert "2 source(s)" in cli("sources", "list", "--all")[1]
    assert cli("sources", "update", "2", "--active", "true")[0] == 0
    assert [s.name for s in list_sources(cli.url)] == ["Kerwa UCR", "Repo 2"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--country", "XX"), "country 'XX' is not an ISO 3166-1 alpha-2 code"),
        (("--type", "Q"), "type must be one of R, N, L, got 'Q'"),
        (("--slot", "11"), "custom_var_slot must be 1..10, got 11"),
        (("--rule", "fancy"), "identifier_rule must be one of standard, regex, mapping"),
        (("--rule", "regex"), "identifier_rule 'regex' needs a rule_pattern"),
        (("--rule", "regex", "--pattern", "x"), "needs a rule_replacement"),
        (("--rule", "regex", "--pattern", "(", "--replacement", "x"), "does not compile"),
        (
            ("--rule", "regex", "--pattern", ".*", "--replacement", ""),
            "into an empty identifier",
        ),
        (
            ("--rule", "regex", "--pattern", "(.*)", "--replacement", "\\1"),
            "uses \\1-style references; write $1",
        ),
        (("--rule", "mapping"), "identifier_rule 'mapping' needs a mapping_file"),
        (
            ("--rule", "mapping", "--mapping-file", "/nope.csv"),
            "mapping file /nope.csv does not exist",
        ),
    ],
)
def test_add_rejects_invalid_sources(cli, extra, message):
    code, out, err = add_repo(cli, 1, *extra)
    assert code == 2
    assert message in err
    assert list_sources(cli.url, include_inactive=True) == []


def test_mapping_file_must_parse(cli, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("old,new\na,b\n")
    code, _, err = add_repo(cli, 1, "--rule", "mapping", "--mapping-file", str(bad))
    assert code == 2 and "needs the columns 'from' and 'to'" in err
    empty = tmp_path / "empty.csv"
    empty.write_text("from,to\n")
    assert "has no rows" in add_repo(cli, 1, "--rule", "mapping", "--mapping-file", str(empty))[2]
    good = tmp_path / "map.csv"
    good.write_text("from,to\noai:repo.org:1,oai:repo.org:2\n")
    assert add_repo(cli, 1, "--rule", "mapping", "--mapping-file", str(good))[0] == 0


def test_duplicates_and_unknown_sources(cli):
    add_repo(cli, 1)
    code, _, err = add_repo(cli, 1)
    assert code == 2 and "a source with site_id 1 already exists" in err
    code, _, err = cli(
        "sources", "add", "--site-id", "2", "--key", "opendoar::1", "--name", "x", "--type", "R"
    )
    assert "a source with source_key 'opendoar::1' already exists" in err
    assert "no source with site_id 7" in cli("sources", "show", "7")[2]
    assert "nothing to update" in cli("sources", "update", "1")[2]


def test_bad_arguments_are_named(cli):
    with pytest.raises(SystemExit):
        cli("sources", "show", "abc")
    with pytest.raises(SystemExit):
        cli("status", "--from", "2026-13-01")


def write_csv(path: Path, *rows: str) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def test_import_dry_run_then_import_then_export_roundtrip(cli, tmp_path):
    file = write_csv(
        tmp_path / "sources.csv",
        "1,opendoar::1,Repo 1,R,CR,oai:repo1.org:,1,4,5,standard,,,",
        "4,national::CR,National,N,CR,,1,,5,standard,,,",
        "5,regional::LA,Portal,L,,,6,,,standard,,,",
    )
    code, out, _ = cli("sources", "import", str(file), "--dry-run")
    assert out.strip() == "would add 3, would update 0, unchanged 0 (dry run: nothing written)"
    assert list_sources(cli.url) == []
    assert cli("sources", "import", str(file))[1].strip() == "added 3, updated 0, unchanged 0"
    assert cli("sources", "import", str(file))[1].strip() == "added 0, updated 0, unchanged 3"
    for name in ("out.csv", "out.xlsx"):
        assert cli("sources", "export", str(tmp_path / name))[1].strip().startswith("wrote 3")
        assert cli("sources", "import", str(tmp_path / name))[1].strip().endswith("unchanged 3")


def test_import_with_bad_rows_is_rejected_whole_with_every_row_listed(cli, tmp_path):
    file = write_csv(
        tmp_path / "sources.csv",
        "1,opendoar::1,Repo 1,R,CR,,1,,,standard,,,",
        "2,opendoar::2,Repo 2,X,CR,,1,,,standard,,,",
        "3,opendoar::3,Repo 3,R,ZZ,,1,,,standard,,,",
        "1,opendoar::9,Again,R,CR,,1,,,standard,,,",
        "4,opendoar::4,Repo 4,R,CR,,1,,,regex,[,x,",
    )
    code, out, err = cli("sources", "import", str(file))
    assert code == 2
    assert f"{file} rejected, nothing written" in err
    assert f"{file}, line 3: column 'type' must be one of R, N, L, got 'X'" in err
    assert f"{file}, line 4: country 'ZZ' is not an ISO 3166-1 alpha-2 code" in err
    assert f"{file}, line 5: site_id 1 already defined on line 2" in err
    assert f"{file}, line 6: rule_pattern '[' does not compile" in err
    assert list_sources(cli.url, include_inactive=True) == []


def test_import_xlsx_as_operators_keep_it(cli, tmp_path):
    book = Workbook()
    sheet = book.active
    sheet.append(["site_id", "source_key", "name", "type", "country", "identifier_prefix"])
    sheet.append([12, "opendoar::12", "Repositorio", "R", "cr", "oai:repo12.org:"])
    sheet.append([None, None, None, None, None, None])  # trailing empty rows are common
    path = tmp_path / "sources.xlsx"
    book.save(path)
    assert cli("sources", "import", str(path))[0] == 0
    (source,) = list_sources(cli.url)
    assert (source.site_id, source.country, source.custom_var_slot) == (12, "CR", 1)


def test_status_command(cli):
    import datetime as dt

    from usage_stats.admin.registry import DayStatus, record_processing

    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    day = dt.date(2026, 1, 1)
    reasons = {"thumbnail": 1, "robot_behaviour": 2}
    record_processing(
        cli.url,
        [
            DayStatus(1, day, 10, 7, 3, reasons, "abcdef123", now),
            DayStatus(2, day, 5, 5, 0, {}, "abcdef123", now),
        ],
    )
    code, out, _ = cli("status", "--site", "1", "--from", "2026-01-01", "--to", "2026-01-31")
    assert code == 0
    assert "processing status (1 site-day(s))" in out
    assert "robot_behaviour 2, thumbnail 1" in out
    assert "2026-01-02 03:04:05" in out


def test_handle_and_doi_prefixes_on_add_update_list_show(cli):
    code, out, err = add_repo(
        cli, 1,
        "--handle-prefix", "https://hdl.handle.net/10669/ ",
        "--handle-prefix", "hdl:20.500.11764",
        "--doi-prefix", "doi:10.15517; https://doi.org/10.5555/UCR.",
    )  # fmt: skip
    assert (code, err) == (0, "")
    (source,) = list_sources(cli.url)
    assert source.handle_prefixes == ("10669", "20.500.11764")
    assert source.doi_prefixes == ("10.15517", "10.5555/ucr.")
    out = cli("sources", "list")[1]
    assert "handle prefixes" in out and "10669 20.500.11764" in out
    assert "10.15517 10.5555/ucr." in out
    out = cli("sources", "show", "1")[1]
    assert "handle_prefixes" in out and "10669 20.500.11764" in out
    code, out, _ = cli("sources", "update", "1", "--doi-prefix", "10.15517")
    assert out.strip() == "updated source 1: doi_prefixes"
    assert list_sources(cli.url)[0].doi_prefixes == ("10.15517",)
    assert list_sources(cli.url)[0].handle_prefixes == ("10669", "20.500.11764")
    assert cli("sources", "update", "1", "--handle-prefix", "")[0] == 0
    assert list_sources(cli.url)[0].handle_prefixes == ()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--handle-prefix", "kerwa"), "handle_prefixes: handle prefix 'kerwa' is not a handle"),
        (("--handle-prefix", "10.15517"), "is a DOI prefix: declare it as a DOI prefix"),
        (("--doi-prefix", "10669"), "doi_prefixes: DOI prefix '10669' is not a DOI prefix"),
    ],
)
def test_bad_prefixes_are_refused(cli, extra, message):
    code, _, err = add_repo(cli, 1, *extra)
    assert code == 2 and message in err
    assert list_sources(cli.url, include_inactive=True) == []


def test_a_prefix_declared_by_another_repository_is_refused(cli):
    assert add_repo(cli, 1, "--handle-prefix", "10669")[0] == 0
    code, _, err = add_repo(cli, 2, "--handle-prefix", "hdl:10669/")
    assert code == 2
    assert (
        "source 2: handle prefix 10669 is already declared by source 1 (opendoar::1); two "
        "active repositories cannot own the same prefix" in err
    )
    assert add_repo(cli, 2, "--handle-prefix", "10669/kerwa.")[0] == 0  # longer: no conflict


PREFIX_HEADER = "site_id,source_key,name,type,country,handle_prefixes,doi_prefixes\n"


def test_import_export_prefix_columns_csv_and_xlsx(cli, tmp_path):
    file = tmp_path / "sources.csv"
    file.write_text(
        PREFIX_HEADER
        + '1,opendoar::1,Repo 1,R,CR,"10669; hdl:20.500.11764 ",https://doi.org/10.15517/\n'
        + "2,opendoar::2,Repo 2,R,AR,1721.1,doi:10.5555 DOI: 10.1000.10\n"
        + "4,national::CR,National,N,CR,,\n"
    )
    assert cli("sources", "import", str(file))[1].strip() == "added 3, updated 0, unchanged 0"
    by_site = {s.site_id: s for s in list_sources(cli.url)}
    assert by_site[1].handle_prefixes == ("10669", "20.500.11764")
    assert by_site[1].doi_prefixes == ("10.15517",)
    assert by_site[2].doi_prefixes == ("10.1000.10", "10.5555")
    assert by_site[4].handle_prefixes == by_site[4].doi_prefixes == ()
    for name in ("out.csv", "out.xlsx"):
        assert cli("sources", "export", str(tmp_path / name))[0] == 0
        assert cli("sources", "import", str(tmp_path / name))[1].strip().endswith("unchanged 3")
    exported = (tmp_path / "out.csv").read_text().splitlines()
    assert exported[0].endswith(",handle_prefixes,doi_prefixes,oai_sets,distributed_robots")
    assert exported[1].endswith(",10669;20.500.11764,10.15517,,on")


def test_import_names_row_and_column_of_bad_or_clashing_prefixes(cli, tmp_path):
    assert add_repo(cli, 9, "--doi-prefix", "10.9999")[0] == 0
    file = tmp_path / "sources.csv"
    file.write_text(
        PREFIX_HEADER
        + "1,opendoar::1,Repo 1,R,CR,kerwa,\n"
        + "2,opendoar::2,Repo 2,R,CR,,10669\n"
        + "3,opendoar::3,Repo 3,R,CR,1721.1,\n"
        + "4,opendoar::4,Repo 4,R,CR,hdl:1721.1,\n"
        + "5,opendoar::5,Repo 5,R,CR,,doi:10.9999\n"
        + "6,national::CR,Node,N,CR,1234,\n"
    )
    code, _, err = cli("sources", "import", str(file))
    assert code == 2
    assert f"{file}, line 2: column 'handle_prefixes': handle prefix 'kerwa' is not" in err
    assert f"{file}, line 3: column 'doi_prefixes': DOI prefix '10669' is not a DOI" in err
    assert f"{file}, line 5: handle prefix 1721.1 is already declared by site_id 3 on line 4" in err
    assert (
        f"{file}: site_id 5: DOI prefix 10.9999 is already declared by site_id 9 "
        "(opendoar::9) in the admin DB" in err
    )
    assert f"{file}, line 7: handle_prefixes: only repositories (type R) own items" in err
    assert [s.site_id for s in list_sources(cli.url, include_inactive=True)] == [9]
