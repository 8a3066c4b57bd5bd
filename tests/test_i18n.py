"""The pages' languages (web/i18n.py): Accept-Language negotiation, the catalogues (every
message of the templates, scripts and file names translated in es and pt, placeholders
kept), CLDR country names, translated export file names, and the embeddable repository
view's headers and 404 page. The pages in a browser are test_i18n_browser's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from babel import Locale
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from web_support import END, START, load

from usage_stats.storage.duckdb_store import DuckDBStatsStore
from usage_stats.web import create_app, i18n
from usage_stats.web.dashboard import embed_frame_ancestors

ROOT = Path(__file__).resolve().parent.parent
KEYWORDS = {"_": None, "gettext": None, "pgettext": ((1, "c"), 2)}
PLACEHOLDER = re.compile(r"\{(\w+)\}")

# --- negotiation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("es-AR,es;q=0.9,en;q=0.8", ["es-AR", "es", "en"]),
        ("en;q=0.1, pt-BR;q=0.8, es;q=0.5", ["pt-BR", "es", "en"]),
        ("fr, es;q=0, pt;q=0.3", ["fr", "pt"]),  # q=0: not this language
        ("es;q=0.5, pt;q=0.5", ["es", "pt"]),  # ties keep the header's order
        ("pt;q=abc, es;q=2, en;q=1.0", ["en"]),  # malformed q-values skipped
        ("x y z, ;q=1, <script>", []),
        ("", []),
        (None, []),
    ],
)
def test_accept_language_is_parsed_by_q_value(header, expected):
    assert i18n.parse_accept_language(header) == expected


@pytest.mark.parametrize(
    ("query", "cookie", "header", "language", "locale"),
    [
        (None, None, None, "en", "en"),
        (None, None, "de-DE,de;q=0.9", "en", "en"),  # no German: English, English numbers
        (None, None, "de-DE, pt;q=0.4, es;q=0.6", "es", "es-419"),
        (None, None, "es-AR,es;q=0.9", "es", "es-AR"),  # Argentina's numbers: 12.345
        (None, None, "pt-PT;q=0.2, pt-BR;q=0.9", "pt", "pt-BR"),
        (None, None, "en-GB;q=0.3, pt;q=0.6", "pt", "pt-BR"),
        (None, "pt", "es-MX", "pt", "pt-BR"),  # the menu's cookie beats the header
        ("es", "pt", "en-US", "es", "es-419"),  # ?lang= beats both
        ("ES", None, None, "es", "es-419"),
        ("fr", None, "pt-BR", "pt", "pt-BR"),  # an unknown ?lang= is ignored
        ("", "xx", "es-CL", "es", "es-CL"),
        (None, None, "*", "en", "en"),
        (None, None, "es-QQ, es-zz-x;q=0.9, es;q=0.8", "es", "es-419"),  # no such regions
        (None, None, "pt-" + "x" * 5000, "en", "en"),
    ],
)
def test_language_is_chosen_by_query_cookie_then_header(query, cookie, header, language, locale):
    assert i18n.negotiate(query, cookie, header) == i18n.Choice(language, locale)


# --- catalogues --------------------------------------------------------------------------


def _extracted() -> set[tuple[str | None, str]]:
    """Every message of the sources, extracted as scripts/i18n.sh does (babel.cfg)."""
    method_map = [
        ("usage_stats/web/i18n.py", "python"),
        ("usage_stats/web/dashboard.py", "python"),
        ("usage_stats/web/templates/**.html", "jinja2"),
        ("usage_stats/web/static/*.js", "javascript"),
    ]
    found = set()
    for _file, _line, message, _comments, context in extract_from_dir(
        str(ROOT), method_map, keywords=KEYWORDS
    ):
        found.add((context, message))
    return found


@pytest.mark.parametrize("language", ["es", "pt"])
def test_every_message_is_translated(language):
    path = i18n.LOCALES / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    entries = {(m.context, m.id): m for m in catalog if m.id}
    extracted = _extracted()
    assert len(extracted) > 150
    missing = sorted(str(k) for k in extracted - entries.keys())
    assert missing == [], f"{path}: not in the catalogue (run scripts/i18n.sh): {missing}"
    stale = sorted(str(k) for k in entries.keys() - extracted)
    assert stale == [], f"{path}: no longer used (run scripts/i18n.sh): {stale}"
    for key, message in entries.items():
        assert message.string.strip(), f"{path}: {key} is not translated"
        assert "fuzzy" not in message.flags, f"{path}: {key} is fuzzy"
        assert set(PLACEHOLDER.findall(message.id)) == set(PLACEHOLDER.findall(message.string)), (
            f"{path}: {key}: the placeholders differ in {message.string!r}"
        )
    # the words a reader sees most, as Latin America writes them
    expected = {
        "es": {"Views": "Visualizaciones", "Downloads": "Descargas", "Country": "País"},
        "pt": {"Views": "Visualizações", "Downloads": "Downloads", "Country": "País"},
    }[language]
    assert {k: i18n.script_messages(language)[k] for k in expected} == expected


def test_the_scripts_catalogue_and_the_templates_translations_agree():
    for language in ("es", "pt"):
        messages = i18n.script_messages(language)
        gettext = i18n.translations(language).gettext
        for message, translation in messages.items():
            assert gettext(message) == translation
        assert i18n.translations(language).pgettext("file name", "year") != "year"
    assert i18n.script_messages("en") == {}


def test_country_names_come_from_cldr_in_the_language():
    assert i18n.territories("es")["BR"] == "Brasil"
    assert i18n.territories("pt")["MX"] == "México"
    assert i18n.territories("en")["DE"] == "Germany"
    assert i18n.territories("es") == {
        k: v for k, v in Locale.parse("es").territories.items() if len(k) == 2 and k.isalpha()
    }
    assert i18n.language_names() == {"en": "English", "es": "Español", "pt": "Português"}


def test_file_names_are_translated_word_by_word():
    name = "usage-global-resource_type-views-series-2026-01-01"
    assert i18n.translate_file_name(name, "es") == (
        "uso-global-tipo_de_recurso-visualizaciones-serie-2026-01-01"
    )
    assert i18n.translate_file_name(name, "en") == name
    assert i18n.translate_file_name("source_7-2026-01-01-year.csv", "es") == (
        "source_7-2026-01-01-año.csv"
    )
    assert i18n.disposition("global-2026-year", "es") == (
        b"filename=\"global-2026-ano\"; filename*=UTF-8''global-2026-a%C3%B1o"
    )


def test_frame_ancestors_setting_is_checked():
    assert embed_frame_ancestors("*") == "*"
    assert embed_frame_ancestors("  https://repo.example.org   'self' ") == (
        "https://repo.example.org 'self'"
    )
    assert embed_frame_ancestors("") == "*"
    for bad in ("*; script-src *", "https://a.example,https://b.example", "'unsafe-inline'"):
        with pytest.raises(ValueError, match="USAGE_STATS_EMBED_FRAME_ANCESTORS"):
            embed_frame_ancestors(bad)


# --- the pages over HTTP -----------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    store = DuckDBStatsStore(tmp_path_factory.mktemp("duckdb") / "stats.duckdb")
    return store, load(store, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def client(loaded):
    from fastapi.testclient import TestClient

    store, data = loaded
    with TestClient(create_app(store, data.admin_db_url)) as test_client:
        yield test_client


def _i18n_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="i18n">(.*?)</script>', html, re.S)
    assert match, "the page carries no i18n data"
    return json.loads(match.group(1))


@pytest.mark.parametrize(
    ("path", "headers", "language", "title"),
    [
        ("/dashboard", {}, "en", "<title>Usage statistics</title>"),
        ("/dashboard?lang=es", {}, "es", "<title>Estadísticas de uso</title>"),
        ("/dashboard/node/cr", {"Accept-Language": "pt-BR"}, "pt", "Estatísticas de uso"),
        ("/widget/item?identifier=x", {"Accept-Language": "es-CO,es;q=0.9"}, "es", "Uso del ítem"),
        ("/widget/item?identifier=x&lang=pt", {}, "pt", "<title>Uso do item</title>"),
    ],
)
def test_pages_are_rendered_in_the_language(client, path, headers, language, title):
    response = client.get(path, headers=headers)
    assert response.status_code == 200
    assert f'<html lang="{language}">' in response.text
    assert title in response.text
    assert response.headers["vary"].startswith("Accept-Language, Cookie")
    assert response.headers["content-language"] == language
    data = _i18n_data(response.text)
    assert data["lang"] == language
    assert data["territories"]["AR"] == i18n.territories(language)["AR"]
    assert data["messages"] == i18n.script_messages(language)


def test_the_language_cookie_is_read(client):
    response = client.get("/dashboard", cookies={"lang": "pt"}, headers={"Accept-Language": "es"})
    assert '<html lang="pt">' in response.text
    assert '<option value="pt" lang="pt" selected>Português</option>' in response.text


def test_catalogue_data_cannot_break_out_of_its_script_element(client):
    # tojson escapes <, > and &: a repository name or message with </script> stays data
    html = client.get("/dashboard?lang=es").text
    block = html.split('id="i18n">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block and ">" not in block


def test_export_file_names_follow_lang(client):
    params = {"start": START.isoformat(), "end": END.isoformat(), "granularity": "month"}
    plain = client.get("/api/v1/global", params={**params, "format": "csv"})
    spanish = client.get("/api/v1/global", params={**params, "format": "csv", "lang": "es"})
    portuguese = client.get(
        "/api/v1/global", params={**params, "format": "csv", "table": "country", "lang": "pt"}
    )
    span = f"{START.isoformat()}-{END.isoformat()}"
    assert plain.headers["content-disposition"] == f'attachment; filename="global-{span}-month.csv"'
    assert spanish.headers["content-disposition"] == (
        f"attachment; filename=\"global-{span}-mes.csv\"; filename*=UTF-8''global-{span}-mes.csv"
    )
    assert portuguese.headers["content-disposition"].endswith(f"global-{span}-pa%C3%ADs.csv")
    assert spanish.content == plain.content  # the same table, only its name translated
    assert client.get("/api/v1/global", params={**params, "lang": "xx"}).status_code == 200


# --- the embeddable repository view --------------------------------------------------------


def test_embed_is_framable_and_the_other_pages_are_not(client):
    embed = client.get("/embed/repository/opendoar::1001?lang=es")
    assert embed.status_code == 200
    policy = embed.headers["content-security-policy"]
    assert policy.endswith("frame-ancestors *")
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "x-frame-options" not in embed.headers
    assert '<h1 id="embed-title">Repository 1</h1>' in embed.text
    assert 'data-site-id="1"' in embed.text
    assert "Estadísticas completas" in embed.text
    references = re.findall(r'(?:src|href)="([^"]+)"', embed.text)
    assert {r for r in references if not r.startswith("/static/")} == {
        "/dashboard/source/opendoar%3A%3A1001?lang=es"
    }
    for ref in references:
        if ref.startswith("/static/"):
            assert client.get(ref).status_code == 200, ref
    for path in ("/dashboard", "/dashboard/source/opendoar::1001"):
        assert "frame-ancestors 'self'" in client.get(path).headers["content-security-policy"]
    api = client.get("/api/v1/coverage")
    assert "frame-ancestors 'none'" in api.headers["content-security-policy"]


def test_embed_frame_ancestors_are_configurable(loaded):
    from fastapi.testclient import TestClient

    store, data = loaded
    app = create_app(
        store, data.admin_db_url, embed_frame_ancestors="https://repo.example.org 'self'"
    )
    with TestClient(app) as test_client:
        embed = test_client.get("/embed/repository/opendoar::1002")
        assert embed.headers["content-security-policy"].endswith(
            "frame-ancestors https://repo.example.org 'self'"
        )
        widget = test_client.get("/widget/item?identifier=x")
        assert widget.headers["content-security-policy"].endswith("frame-ancestors *")


@pytest.mark.parametrize(
    ("key", "language", "text"),
    [
        ("opendoar::9999", "en", "No repository is registered with the key “opendoar::9999”."),
        ("nope", "es", "No hay ningún repositorio registrado con la clave “nope”."),
        ("national::CR", "pt", "Não há nenhum repositório registrado com a chave “national::CR”."),
        ("<script>alert(1)</script>", "en", "“&lt;script&gt;alert(1)&lt;/script&gt;”"),
        ("x" * 5000, "en", "No repository is registered"),
        ("%00%ff", "en", "No repository is registered"),
    ],
)
def test_an_unknown_repository_is_a_404_page_in_the_language(client, key, language, text):
    response = client.get(f"/embed/repository/{key}", params={"lang": language})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert f'<html lang="{language}">' in response.text
    assert text in response.text
    assert "<script>alert" not in response.text


def test_embed_over_a_real_socket_answers_the_api_it_reads(loaded):
    """The figures the embed's script asks for exist for the repository (the browser test
    compares what it shows)."""
    from browser_support import serving

    store, data = loaded
    with serving(create_app(store, data.admin_db_url)) as base:
        with httpx.Client(base_url=base) as http:
            page = http.get("/embed/repository/OPENDOAR::1003")  # keys ignore case
            assert page.status_code == 200 and 'data-site-id="3"' in page.text
            body = http.get("/api/v1/sources/3", params={"granularity": "month"})
            assert body.status_code == 200
